//! The delivery engine of a real `hookplane data` node: retries, failure reasons as a person reads
//! them, the SSRF guard, isolation between targets, and an admin's retry or recover of failed
//! deliveries.

use std::time::{Duration, Instant};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, DataNode, NodeSetup, Receiver, Respond, Standalone, api, eventually, fixture,
    hookctl_json, ingress,
};

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    control: ControlProcess,
    node: DataNode,
    client: Client,
    channel: String,
    sets: Vec<String>,
}

/// A control plane, a node (with `node_args`), and a channel forwarding to each of `urls`.
async fn setup(urls: &[String], node_args: &[&str]) -> Setup {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let (channel, sets) = api::channel_forwarding_to(&client, urls).await.unwrap();
    let node = DataNode::start(&control, node_args).await.unwrap();
    ingress::wait_for_channel(&node.ingress_url(), &channel)
        .await
        .unwrap();
    Setup {
        control,
        node,
        client,
        channel,
        sets,
    }
}

impl Setup {
    async fn post(&self, body: &[u8]) -> reqwest::Response {
        ingress::post_signed(&self.node.ingress_url(), &self.channel, body)
            .await
            .unwrap()
    }

    async fn attempts(&self, set: &str) -> Vec<v1::DeliveryAttempt> {
        api::set_attempts(&self.client, set).await.unwrap()
    }

    /// Waits until the log of `set` holds an attempt with `outcome`.
    async fn wait_attempt(&self, set: &str, outcome: v1::AttemptOutcome) -> v1::DeliveryAttempt {
        eventually(WAIT, &format!("a {outcome:?} attempt"), || async {
            self.attempts(set)
                .await
                .into_iter()
                .find(|a| a.outcome == outcome as i32)
        })
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn a_server_error_is_retried_with_the_same_event_id_until_it_succeeds() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&[receiver.url("/crm")], &["--retry-schedule", "300ms"]).await;
    s.post(&fixture("text.json")).await;
    receiver.wait_for(2, WAIT).await.unwrap();
    receiver.respond(Respond::Status(200));
    let done = s
        .wait_attempt(&s.sets[0], v1::AttemptOutcome::Succeeded)
        .await;

    let got = receiver.requests();
    let event_ids: Vec<_> = got
        .iter()
        .map(|r| r.header("x-hookplane-event-id"))
        .collect();
    assert!(
        event_ids.iter().all(|id| *id == event_ids[0]),
        "{event_ids:?}"
    );
    let numbers: Vec<_> = got
        .iter()
        .map(|r| r.header("x-hookplane-attempt").unwrap().to_owned())
        .collect();
    assert_eq!(numbers[..3], ["1", "2", "3"]);
    assert!(got.iter().all(|r| r.body == got[0].body));
    let retrying = s
        .wait_attempt(&s.sets[0], v1::AttemptOutcome::Retrying)
        .await;
    assert_eq!(retrying.reason, "503 Service Unavailable");
    assert_eq!(retrying.http_status, 503);
    assert_eq!(done.delivery_id, retrying.delivery_id);
}

#[tokio::test]
async fn a_not_found_target_fails_for_good_with_a_readable_reason() {
    let receiver = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let s = setup(&[receiver.url("/gone")], &["--retry-schedule", "100ms"]).await;
    s.post(&fixture("text.json")).await;
    let failed = s.wait_attempt(&s.sets[0], v1::AttemptOutcome::Failed).await;
    assert_eq!(failed.reason, "404 Not Found");
    assert_eq!(failed.http_status, 404);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_status_without_a_standard_phrase_reads_as_the_bare_code() {
    let receiver = Receiver::start_with(Respond::Status(530)).await.unwrap();
    let s = setup(&[receiver.url("/cf")], &[]).await;
    s.post(&fixture("text.json")).await;
    let retrying = s
        .wait_attempt(&s.sets[0], v1::AttemptOutcome::Retrying)
        .await;
    assert_eq!(retrying.reason, "530");
}

#[tokio::test]
async fn a_refused_connection_reads_as_a_remote_network_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let s = setup(&[url], &[]).await;
    s.post(&fixture("text.json")).await;
    let retrying = s
        .wait_attempt(&s.sets[0], v1::AttemptOutcome::Retrying)
        .await;
    assert!(
        retrying.reason.starts_with("remote network error"),
        "{}",
        retrying.reason
    );
    assert_eq!(retrying.http_status, 0);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start_with(Respond::RetryAfter(429, 2))
        .await
        .unwrap();
    let s = setup(&[receiver.url("/busy")], &["--retry-schedule", "100ms"]).await;
    s.post(&fixture("text.json")).await;
    receiver.wait_for(1, WAIT).await.unwrap();
    let first = Instant::now();
    receiver.respond(Respond::Status(200));
    receiver.wait_for(2, WAIT).await.unwrap();
    assert!(
        first.elapsed() >= Duration::from_millis(1800),
        "{:?}",
        first.elapsed()
    );
}

#[tokio::test]
async fn a_delivery_out_of_attempts_is_marked_failed() {
    let receiver = Receiver::start_with(Respond::Status(500)).await.unwrap();
    let s = setup(
        &[receiver.url("/crm")],
        &["--retry-schedule", "100ms", "--max-attempts", "3"],
    )
    .await;
    s.post(&fixture("text.json")).await;
    let failed = s.wait_attempt(&s.sets[0], v1::AttemptOutcome::Failed).await;
    assert_eq!(failed.attempt_number, 3);
    assert_eq!(failed.reason, "500 Internal Server Error");
}

#[tokio::test]
async fn a_target_outside_the_allowed_networks_is_refused_as_such() {
    // The harness allows 127.0.0.0/8 only, so the IPv6 loopback stays forbidden.
    let receiver = Receiver::start().await.unwrap();
    let url = format!("http://[::1]:{}/hook", receiver.addr.port());
    let s = setup(&[url], &[]).await;
    s.post(&fixture("text.json")).await;
    let failed = s.wait_attempt(&s.sets[0], v1::AttemptOutcome::Failed).await;
    assert_eq!(
        failed.reason,
        "refused: ::1 is a loopback address (allow with --allow-target-network)"
    );
}

#[tokio::test]
async fn targets_that_reach_forbidden_ipv4_addresses_through_ipv6_or_azures_wire_server_are_refused()
 {
    // IPv4-compatible, 6to4, Teredo (its server), site-local, local-use NAT64, Azure.
    let hosts = [
        "[::127.0.0.1]",
        "[2002:7f00:1::1]",
        "[2001:0:7f00:1::1]",
        "[fec0::1]",
        "[64:ff9b:1::7f00:1]",
        "168.63.129.16",
    ];
    let urls: Vec<String> = hosts
        .iter()
        .map(|host| format!("http://{host}:9/hook"))
        .collect();
    let s = setup(&urls, &[]).await;
    s.post(&fixture("text.json")).await;
    let expected = [
        "a loopback address",
        "a loopback address",
        "a loopback address",
        "a private address",
        "a reserved address",
        "a cloud metadata address",
    ];
    for (set, range) in s.sets.iter().zip(expected) {
        let failed = s.wait_attempt(set, v1::AttemptOutcome::Failed).await;
        assert!(
            failed.reason.starts_with("refused: ") && failed.reason.contains(range),
            "{set}: {}",
            failed.reason
        );
    }
}

#[tokio::test]
async fn a_hanging_target_does_not_delay_another_target() {
    let hanging = Receiver::start_with(Respond::Hang).await.unwrap();
    let fine = Receiver::start().await.unwrap();
    let s = setup(&[hanging.url("/slow"), fine.url("/fast")], &[]).await;
    let started = Instant::now();
    for n in 0..20 {
        assert_eq!(s.post(&ingress::text_event(n)).await.status(), 200);
    }
    fine.wait_for(20, WAIT).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_admin_retry_delivers_a_delivery_that_failed_for_good() {
    let receiver = Receiver::start_with(Respond::Status(400)).await.unwrap();
    let s = setup(&[receiver.url("/crm")], &[]).await;
    s.post(&fixture("text.json")).await;
    let failed = s.wait_attempt(&s.sets[0], v1::AttemptOutcome::Failed).await;
    receiver.respond(Respond::Status(200));
    s.client
        .deliveries()
        .retry_delivery(v1::RetryDeliveryRequest {
            id: failed.delivery_id.clone(),
        })
        .await
        .unwrap();
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    assert_eq!(
        got[0].header("x-hookplane-event-id"),
        got[1].header("x-hookplane-event-id")
    );
    let done = s
        .wait_attempt(&s.sets[0], v1::AttemptOutcome::Succeeded)
        .await;
    assert_eq!(done.delivery_id, failed.delivery_id);
    let _ = &s.control;
}

/// The distinct event ids among `requests`.
fn event_ids(requests: &[hookplane_tests::receiver::Received]) -> Vec<String> {
    let mut ids: Vec<String> = requests
        .iter()
        .filter_map(|r| r.header("x-hookplane-event-id").map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test]
async fn recover_resends_once_each_delivery_that_failed_for_good_since_the_time_given() {
    // One attempt a delivery: an endpoint down past it fails them for good (and four failures
    // stay below the breaker's run, which would otherwise space the attempts out).
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&[receiver.url("/crm")], &["--max-attempts", "1"]).await;
    let failed_count = |n: usize| {
        let s = &s;
        async move {
            let attempts = s.attempts(&s.sets[0]).await;
            let failed = attempts
                .iter()
                .filter(|a| a.outcome == v1::AttemptOutcome::Failed as i32)
                .count();
            (failed >= n).then_some(())
        }
    };
    // One failure before the outage this operator recovers from...
    s.post(&ingress::text_event(0)).await;
    eventually(WAIT, "the first delivery failed for good", || {
        failed_count(1)
    })
    .await
    .unwrap();
    let before = event_ids(&receiver.requests());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = std::time::SystemTime::now();
    // ...and three during it.
    for n in 1..=3 {
        s.post(&ingress::text_event(n)).await;
    }
    eventually(WAIT, "four deliveries failed for good", || failed_count(4))
        .await
        .unwrap();
    let during: Vec<String> = event_ids(&receiver.requests())
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(during.len(), 3, "{during:?}");

    receiver.respond(Respond::Status(200));
    let arrived_before = receiver.requests().len();
    let since_text = humantime::format_rfc3339_nanos(since).to_string();
    let recovered = hookctl_json(&s.control.hookctl(&[
        "--json",
        "recover",
        "--forwarding-set",
        &s.sets[0],
        "--since",
        &since_text,
    ]));
    assert_eq!(recovered["deliveryCount"], 3, "{recovered}");

    eventually(WAIT, "three recovered deliveries succeeded", || async {
        let attempts = s.attempts(&s.sets[0]).await;
        let succeeded = attempts
            .iter()
            .filter(|a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
            .count();
        (succeeded >= 3).then_some(())
    })
    .await
    .unwrap();
    // Recovering again finds nothing left to resend.
    let again = hookctl_json(&s.control.hookctl(&[
        "--json",
        "recover",
        "--forwarding-set",
        &s.sets[0],
        "--since",
        &since_text,
    ]));
    assert_eq!(again["deliveryCount"], 0, "{again}");
    let after = &receiver.requests()[arrived_before..];
    assert_eq!(after.len(), 3, "each recovered delivery arrives once");
    assert_eq!(event_ids(after), during);
}

/// The delivery runtime's threads, as `/proc` cuts their name (`hookplane-delivery`).
const DELIVERY_THREADS: &str = "hookplane-deliv";

/// Waits until every delivery thread of `node` runs at `niceness`.
async fn wait_delivery_niceness(node: &DataNode, niceness: i32, why: &str) {
    eventually(WAIT, why, || async {
        let threads = node.niceness_of_threads(DELIVERY_THREADS);
        (!threads.is_empty() && threads.iter().all(|n| *n == niceness)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn delivery_threads_yield_at_the_niceness_asked_while_webhooks_arrive_and_not_once_the_ingress_is_quiet()
 {
    let receiver = Receiver::start().await.unwrap();
    let s = setup(&[receiver.url("/crm")], &["--delivery-niceness", "3"]).await;
    // Nothing has arrived for a second: the delivery threads have nothing to yield to.
    wait_delivery_niceness(
        &s.node,
        0,
        "delivery threads at niceness 0 while quiet (raising a thread's priority back needs \
         root or CAP_SYS_NICE; CI runs as root)",
    )
    .await;

    // A webhook puts them back before it is answered.
    assert_eq!(s.post(&fixture("text.json")).await.status(), 200);
    let threads = s.node.niceness_of_threads(DELIVERY_THREADS);
    assert!(
        !threads.is_empty() && threads.iter().all(|n| *n == 3),
        "{threads:?}"
    );
    receiver.wait_for(1, WAIT).await.unwrap();
    wait_delivery_niceness(
        &s.node,
        0,
        "delivery threads at niceness 0 once quiet again",
    )
    .await;

    // The ingress's threads keep what the process was started with throughout.
    let main = s.node.niceness_of_threads("hookplane");
    let ingress = s.node.niceness_of_threads("tokio-rt-worker");
    assert!(
        !ingress.is_empty() && ingress.iter().all(|n| main.contains(n)),
        "{ingress:?} {main:?}"
    );
}

#[tokio::test]
async fn without_cap_sys_nice_delivery_threads_keep_the_niceness_asked_and_the_node_says_so() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let (channel, _) = api::channel_forwarding_to(&client, &[receiver.url("/crm")])
        .await
        .unwrap();
    // As in a container without CAP_SYS_NICE: lowering a priority is allowed, raising it not.
    let setup = NodeSetup {
        wrapper: Box::new(|_| {
            ["setpriv", "--bounding-set", "-sys_nice", "--"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        }),
        ..NodeSetup::default()
    };
    let node = DataNode::start_with(&control, &["--delivery-niceness", "3"], setup)
        .await
        .unwrap();
    ingress::wait_for_channel(&node.ingress_url(), &channel)
        .await
        .unwrap();
    eventually(
        WAIT,
        "the node to say it keeps --delivery-niceness",
        || async {
            node.log()
                .contains(
                    "the delivery threads keep --delivery-niceness while the ingress is quiet",
                )
                .then_some(())
        },
    )
    .await
    .unwrap();
    let threads = node.niceness_of_threads(DELIVERY_THREADS);
    assert!(
        !threads.is_empty() && threads.iter().all(|n| *n == 3),
        "{threads:?}"
    );
    // Said once, and deliveries go on.
    let response = ingress::post_signed(&node.ingress_url(), &channel, &fixture("text.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    receiver.wait_for(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let said = node
        .log()
        .matches("the delivery threads keep --delivery-niceness")
        .count();
    assert_eq!(said, 1, "{}", node.log());
}

#[tokio::test]
async fn by_default_delivery_threads_yield_at_niceness_10_while_requests_arrive() {
    let node = Standalone::start().await.unwrap();
    // Any request to the webhook route is the ingress's work, even one it turns away.
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/webhook/line/no-such-channel/events",
            node.ingress_url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let threads = node.niceness_of_threads(DELIVERY_THREADS);
    assert!(
        !threads.is_empty() && threads.iter().all(|n| *n == 10),
        "{threads:?}"
    );
}

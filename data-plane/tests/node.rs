//! A data-plane node end to end, in process: real sockets, a fake control plane, real receivers.

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hookplane_proto::v1::{AttemptOutcome, NodeSecret};
use support::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_forward_carries_the_identical_bytes_and_signature_with_hookplane_headers() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start(&control).await;
    let body = webhook("01HZZZZZZZZZZZZZZZZZZZZZZ1");
    let signature = sign(SECRET, &body);

    assert_eq!(node.post_signed(&body, &signature).await.status(), 200);

    let got = receiver.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.body.as_ref(), body.as_slice());
    assert_eq!(r.headers["x-line-signature"], signature.as_str());
    assert_eq!(r.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(r.headers["x-hookplane-attempt"], "1");
    assert_eq!(r.headers["x-hookplane-forwarding-set"], "fwd_a");
    assert!(
        r.headers["x-hookplane-event-id"]
            .to_str()
            .unwrap()
            .starts_with("evt_")
    );
}

#[tokio::test]
async fn every_enabled_forwarding_set_gets_the_event() {
    let a = Receiver::start(Answer::Status(200)).await;
    let b = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set("fwd_a", &a.url()),
        forwarding_set("fwd_b", &b.url()),
    ])
    .await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZZ2")).await;
    let got_a = a.wait_for(1, WAIT).await;
    let got_b = b.wait_for(1, WAIT).await;
    assert_eq!(
        got_a[0].headers["x-hookplane-event-id"],
        got_b[0].headers["x-hookplane-event-id"]
    );
}

#[tokio::test]
async fn the_verify_request_gets_200_and_is_not_forwarded() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start(&control).await;
    let body = br#"{"destination":"U0123456789abcdef0123456789abcdef","events":[]}"#;
    assert_eq!(node.post(body).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.got().is_empty());
}

#[tokio::test]
async fn a_wrong_or_missing_signature_gets_401_and_nothing_is_forwarded() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start(&control).await;
    let body = webhook("01HZZZZZZZZZZZZZZZZZZZZZZ3");
    let wrong = sign("another secret", &body);
    assert_eq!(node.post_signed(&body, &wrong).await.status(), 401);
    let unsigned = reqwest::Client::new()
        .post(node.webhook_url(CHANNEL))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.got().is_empty());
}

#[tokio::test]
async fn the_previous_secret_verifies_during_a_rotation_grace_period() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let grace_end = std::time::SystemTime::now() + Duration::from_secs(3600);
    let control = FakeControl::start(vec![
        tenant(),
        channel_with(vec![
            NodeSecret {
                secret: "the new secret".to_owned(),
                valid_until: None,
            },
            NodeSecret {
                secret: SECRET.to_owned(),
                valid_until: Some(grace_end.into()),
            },
        ]),
        forwarding_set("fwd_a", &receiver.url()),
    ])
    .await;
    let node = Node::start(&control).await;
    let body = webhook("01HZZZZZZZZZZZZZZZZZZZZZZ4");
    assert_eq!(
        node.post_signed(&body, &sign(SECRET, &body)).await.status(),
        200
    );
    assert_eq!(
        node.post_signed(&body, &sign("the new secret", &body))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn an_unknown_channel_gets_404() {
    let control = FakeControl::start(vec![tenant(), channel()]).await;
    let node = Node::start(&control).await;
    let body = webhook("01HZZZZZZZZZZZZZZZZZZZZZZ5");
    let r = reqwest::Client::new()
        .post(node.webhook_url("ch_nope"))
        .header("x-line-signature", sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let control = FakeControl::start(vec![tenant(), channel()]).await;
    let options = hookplane_data::NodeOptions {
        max_body_bytes: 1000,
        ..test_options()
    };
    let node = Node::start_fresh(&control, options).await;
    let body = vec![b' '; 1001];
    assert_eq!(node.post(&body).await.status(), 413);
}

#[tokio::test]
async fn methods_other_than_post_get_405() {
    let control = FakeControl::start(vec![tenant(), channel()]).await;
    let node = Node::start(&control).await;
    let client = reqwest::Client::new();
    let get = client.get(node.webhook_url(CHANNEL)).send().await.unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let put = client.put(node.webhook_url(CHANNEL)).send().await.unwrap();
    assert_eq!(put.status(), 405);
}

#[tokio::test]
async fn the_answer_does_not_wait_for_hanging_targets_nor_do_other_targets() {
    let hanging = Receiver::start(Answer::Hang).await;
    let fine = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set_with("fwd_a", &hanging.url(), Duration::from_secs(30)),
        forwarding_set("fwd_b", &fine.url()),
    ])
    .await;
    let node = Node::start(&control).await;
    for i in 0..5 {
        let started = Instant::now();
        let status = node
            .post(&webhook(&format!("01HZZZZZZZZZZZZZZZZZZZZZH{i}")))
            .await
            .status();
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    fine.wait_for(5, WAIT).await;
    // Well before the hanging target's 30 s timeout could have freed anything.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_server_error_is_retried_with_the_same_event_id_and_the_next_attempt_number() {
    let (receiver, control) = one_forward(Answer::Sequence(vec![503, 200])).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZZ6")).await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        got[0].headers["x-hookplane-event-id"],
        got[1].headers["x-hookplane-event-id"]
    );
    assert_eq!(got[0].headers["x-hookplane-attempt"], "1");
    assert_eq!(got[1].headers["x-hookplane-attempt"], "2");
    assert_eq!(got[0].body, got[1].body);
    let retrying = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Retrying as i32)
        .await;
    assert_eq!(retrying.reason, "503 Service Unavailable");
    assert_eq!(retrying.http_status, 503);
    let done = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Succeeded as i32)
        .await;
    assert_eq!(done.attempt_number, 2);
    assert_eq!(done.delivery_id, retrying.delivery_id);
    assert_eq!(done.node_id, "node_test");
    assert_eq!(done.channel_id, CHANNEL);
    assert_eq!(done.tenant_id, TENANT);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let (receiver, control) = one_forward(Answer::RetryAfter(429, 2)).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZZ7")).await;
    receiver.wait_for(1, WAIT).await;
    let first = Instant::now();
    receiver.answer(Answer::Status(200));
    receiver.wait_for(2, WAIT).await;
    assert!(
        first.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        first.elapsed()
    );
}

#[tokio::test]
async fn a_client_error_fails_for_good_after_one_attempt() {
    let (receiver, control) = one_forward(Answer::Status(404)).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZZ8")).await;
    let failed = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Failed as i32)
        .await;
    assert_eq!(failed.reason, "404 Not Found");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test]
async fn a_closed_port_reads_as_a_remote_network_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let control =
        FakeControl::start(vec![tenant(), channel(), forwarding_set("fwd_a", &url)]).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZZ9")).await;
    let attempt = control.wait_attempt(WAIT, |_| true).await;
    assert_eq!(attempt.reason, "remote network error: connection refused");
    assert_eq!(attempt.http_status, 0);
    assert_eq!(attempt.outcome, AttemptOutcome::Retrying as i32);
}

#[tokio::test]
async fn a_delivery_out_of_attempts_fails_for_good() {
    let (receiver, control) = one_forward(Answer::Status(500)).await;
    let options = hookplane_data::NodeOptions {
        max_attempts: 2,
        retry_schedule: vec![Duration::from_millis(50).into()],
        ..test_options()
    };
    let node = Node::start_fresh(&control, options).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ10")).await;
    let failed = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Failed as i32)
        .await;
    assert_eq!(failed.attempt_number, 2);
    assert_eq!(failed.reason, "500 Internal Server Error");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 2);
}

#[tokio::test]
async fn a_loopback_target_is_refused_unless_its_network_is_allowed() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start_guarded(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ11")).await;
    let refused = control.wait_attempt(WAIT, |_| true).await;
    assert_eq!(
        refused.reason,
        "refused: 127.0.0.1 is a loopback address (allow with --allow-target-network)"
    );
    assert_eq!(refused.outcome, AttemptOutcome::Failed as i32);
    assert!(receiver.got().is_empty());
}

#[tokio::test]
async fn a_hostname_that_resolves_to_loopback_is_refused() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let control =
        FakeControl::start(vec![tenant(), channel(), forwarding_set("fwd_a", &url)]).await;
    let node = Node::start_guarded(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ12")).await;
    let refused = control.wait_attempt(WAIT, |_| true).await;
    assert!(
        refused.reason.starts_with("refused: "),
        "{}",
        refused.reason
    );
    assert!(receiver.got().is_empty());
}

#[tokio::test]
async fn a_config_change_reaches_the_node_within_a_second() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![tenant(), channel()]).await;
    let node = Node::start(&control).await;
    control.change(vec![forwarding_set("fwd_new", &receiver.url())]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ13")).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].headers["x-hookplane-forwarding-set"], "fwd_new");
}

#[tokio::test]
async fn readiness_waits_for_the_first_snapshot() {
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", unreachable.local_addr().unwrap());
    drop(unreachable);
    let node = Node::spawn(url, test_options(), Arc::new(tempfile::tempdir().unwrap())).await;
    let ready = reqwest::get(format!("http://{}/readyz", node.ingress))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = reqwest::get(format!("http://{}/healthz", node.ingress))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let webhook = node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ14")).await;
    assert_eq!(webhook.status(), 503);
}

#[tokio::test]
async fn the_node_keeps_serving_while_the_control_plane_is_away_and_catches_up_after() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let later = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set("fwd_a", &receiver.url()),
    ])
    .await;
    let node = Node::start(&control).await;
    control.set_down(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ15"))
            .await
            .status(),
        200
    );
    receiver.wait_for(1, WAIT).await;

    control.change(vec![forwarding_set("fwd_b", &later.url())]);
    control.set_down(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ16")).await;
    later.wait_for(1, WAIT).await;
    let requests = control.watch_requests();
    assert!(requests.len() >= 2);
    assert!(requests.last().unwrap().last_revision >= 1);
    assert_eq!(requests.last().unwrap().node_id, "node_test");
}

#[tokio::test]
async fn outcomes_reach_the_control_plane_after_it_returns() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start(&control).await;
    control.set_down(true);
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ17")).await;
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(control.attempts().is_empty());
    control.set_down(false);
    control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Succeeded as i32)
        .await;
}

#[tokio::test]
async fn a_requested_retry_re_enqueues_a_failed_delivery() {
    let (receiver, control) = one_forward(Answer::Status(400)).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ18")).await;
    let failed = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Failed as i32)
        .await;
    receiver.answer(Answer::Status(200));
    control.retry_deliveries(vec![failed.delivery_id.clone()]);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].headers["x-hookplane-attempt"], "2");
    assert_eq!(
        got[0].headers["x-hookplane-event-id"],
        got[1].headers["x-hookplane-event-id"]
    );
    let done = control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Succeeded as i32)
        .await;
    assert_eq!(done.delivery_id, failed.delivery_id);
}

#[tokio::test]
async fn a_delivery_in_flight_when_the_node_stopped_is_made_after_a_restart() {
    let receiver = Receiver::start(Answer::Hang).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set_with("fwd_a", &receiver.url(), Duration::from_secs(60)),
    ])
    .await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ19")).await;
    receiver.wait_for(1, WAIT).await;
    let spool = node.stop().await;

    receiver.answer(Answer::Status(200));
    let _node = Node::start_with(&control, test_options(), spool).await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        got[0].headers["x-hookplane-event-id"],
        got[1].headers["x-hookplane-event-id"]
    );
    assert_eq!(got[0].body, got[1].body);
    control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Succeeded as i32)
        .await;
}

#[tokio::test]
async fn a_delivery_answered_while_the_node_stops_is_not_made_again_after_a_restart() {
    // Still in flight when the engine is told to stop (no drain grace), and answered within
    // the engine's own grace: its ack is applied before the node is gone.
    let receiver = Receiver::start(Answer::Late(200, Duration::from_millis(300))).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set_with("fwd_a", &receiver.url(), Duration::from_secs(60)),
    ])
    .await;
    let options = hookplane_data::NodeOptions {
        drain_grace: Duration::ZERO.into(),
        ..test_options()
    };
    let node = Node::start_fresh(&control, options.clone()).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ2A")).await;
    receiver.wait_for(1, WAIT).await;
    let spool = node.stop().await;

    // Had the ack been lost, the job would be due again at once.
    receiver.answer(Answer::Status(200));
    let _node = Node::start_with(&control, options, spool).await;
    control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Succeeded as i32)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test]
async fn a_retry_scheduled_before_a_restart_is_still_held_after_it() {
    let (receiver, control) = one_forward(Answer::Status(503)).await;
    let options = hookplane_data::NodeOptions {
        retry_schedule: vec![Duration::from_secs(3600).into()],
        ..test_options()
    };
    let node = Node::start_fresh(&control, options.clone()).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ22")).await;
    control
        .wait_attempt(WAIT, |a| a.outcome == AttemptOutcome::Retrying as i32)
        .await;
    let spool = node.stop().await;

    let node = Node::start_with(&control, options, spool).await;
    let metrics = reqwest::get(format!("http://{}/metrics", node.ingress))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hookplane_queue_depth 1"), "{metrics}");
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test]
async fn metrics_count_requests_and_attempts() {
    let (receiver, control) = one_forward(Answer::Status(200)).await;
    let node = Node::start(&control).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ20")).await;
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = reqwest::get(format!("http://{}/metrics", node.ingress))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "hookplane_ingress_requests_total{outcome=\"accepted\"} 1",
        "hookplane_delivery_attempts_total{outcome=\"succeeded\"} 1",
        "hookplane_ingress_ack_latency_seconds_count 1",
        "hookplane_delivery_latency_seconds_count 1",
        "hookplane_queue_depth 0",
        "hookplane_config_revision 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[tokio::test]
async fn a_dead_target_opens_its_breaker_and_stops_costing_attempts() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    drop(dead);
    let control =
        FakeControl::start(vec![tenant(), channel(), forwarding_set("fwd_a", &url)]).await;
    let options = hookplane_data::NodeOptions {
        retry_schedule: vec![Duration::from_millis(20).into()],
        ..test_options()
    };
    let node = Node::start_fresh(&control, options).await;
    node.post(&webhook("01HZZZZZZZZZZZZZZZZZZZZZ21")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Without a breaker a 20 ms schedule would have made ~100 attempts by now.
    let attempts = control.attempts().len();
    assert!((5..=7).contains(&attempts), "{attempts} attempts");
}

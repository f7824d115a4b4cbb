//! Faults under load: a node killed with `kill -9` while webhooks stream in, the control plane
//! gone for a while, and targets that hang, reset connections or fail slowly beside a healthy one.
//! Each test is bounded in time and asserts what was delivered, never how fast.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use hookplane_client::Client;
use hookplane_tests::{
    ControlProcess, DataNode, FIXTURE_CHANNEL_SECRET, NodeSetup, Receiver, ResettingReceiver,
    Respond, api::*, eventually, fixture, receiver::Received,
};
use hookplane_verify::line;
use tokio::task::JoinSet;

/// The bound on each whole test: far above what it takes, so only a hang trips it.
const TEST_LIMIT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(30);
/// Requests in flight at once from the load loop.
const SENDERS: usize = 4;
/// The load loop never sends more than this many events.
const MAX_EVENTS: u32 = 20_000;
/// The id `text.json` carries, replaced per event.
const FIXTURE_EVENT_ID: &str = "01JGKZ7Q3N8V5T2R6W9X4Y1B0C";

async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test finished within its bound");
}

/// The webhookEventId of event number `n` (26 characters, like LINE's ULIDs).
fn webhook_event_id(n: u32) -> String {
    format!("01JGKZ7Q3N8V5T2R6W9X{n:06}")
}

/// The text fixture as event number `n`.
fn text_event(n: u32) -> Vec<u8> {
    String::from_utf8(fixture("text.json"))
        .unwrap()
        .replace(FIXTURE_EVENT_ID, &webhook_event_id(n))
        .into_bytes()
}

/// The webhookEventId a forwarded body carries.
fn event_in(request: &Received) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    Some(body["events"][0]["webhookEventId"].as_str()?.to_owned())
}

fn events_at(receiver: &Receiver) -> HashSet<String> {
    receiver.requests().iter().filter_map(event_in).collect()
}

/// Deliveries per `x-hookplane-event-id` beyond the first: what at-least-once cost.
fn duplicates(receiver: &Receiver) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        if let Some(id) = request.header("x-hookplane-event-id") {
            *seen.entry(id.to_owned()).or_default() += 1;
        }
    }
    seen.values().map(|n| n - 1).sum()
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Option<reqwest::StatusCode> {
    let signature = line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), &body);
    client
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header("x-line-signature", signature)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

fn webhook_url(node: &DataNode, channel: &str) -> String {
    format!("{}/api/webhook/line/{channel}/events", node.ingress_url())
}

/// Signed LINE webhooks, each a new event, from a few concurrent senders until stopped.
struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    unacknowledged: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    senders: JoinSet<()>,
}

impl Load {
    fn start(url: String) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let unacknowledged = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU32::new(0));
        let client = reqwest::Client::new();
        let mut senders = JoinSet::new();
        for _ in 0..SENDERS {
            let (acked, unacknowledged, stop, next, client, url) = (
                Arc::clone(&acked),
                Arc::clone(&unacknowledged),
                Arc::clone(&stop),
                Arc::clone(&next),
                client.clone(),
                url.clone(),
            );
            senders.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= MAX_EVENTS {
                        return;
                    }
                    if post(&client, &url, text_event(n)).await == Some(reqwest::StatusCode::OK) {
                        acked.lock().unwrap().push(webhook_event_id(n));
                    } else {
                        unacknowledged.fetch_add(1, Ordering::Relaxed);
                        // A node that is down refuses at once; do not spin on it.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            });
        }
        Load {
            acked,
            unacknowledged,
            stop,
            senders,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn unacknowledged(&self) -> u64 {
        self.unacknowledged.load(Ordering::Relaxed)
    }

    /// Waits until `n` events in all were acknowledged.
    async fn wait_acked(&self, n: usize, what: &str) {
        eventually(WAIT, what, || async { (self.acked() >= n).then_some(()) })
            .await
            .unwrap();
    }

    /// Stops sending; every event acknowledged, in no particular order.
    async fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        while self.senders.join_next().await.is_some() {}
        self.acked.lock().unwrap().clone()
    }
}

/// A tenant and a channel signed with the fixture secret, forwarding to each of `urls`.
async fn channel_forwarding_to(client: &Client, urls: &[String]) -> String {
    let tenant = create_tenant(client, "Brand").await.unwrap();
    let channel = create_channel(client, &tenant.id, FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap()
        .id;
    for url in urls {
        create_forwarding_set(client, &channel, url).await.unwrap();
    }
    channel
}

/// Waits until an event sent to the node reaches every one of `receivers` (the node has the
/// channel and all its forwarding sets).
async fn wait_configured(node: &DataNode, channel: &str, receivers: &[&Receiver]) {
    let client = reqwest::Client::new();
    let url = webhook_url(node, channel);
    let mut n = MAX_EVENTS;
    eventually(WAIT, "the node to forward to every receiver", || {
        n += 1;
        let (client, url) = (&client, &url);
        async move {
            post(client, url, text_event(n)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            receivers
                .iter()
                .all(|r| !r.requests().is_empty())
                .then_some(())
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_event_acknowledged_around_a_kill_9_under_load_reaches_every_receiver() {
    bounded(async {
        let crm = Receiver::start().await.unwrap();
        let bot = Receiver::start().await.unwrap();
        let control = ControlProcess::start().await.unwrap();
        let client = control.admin().await.unwrap();
        let channel = channel_forwarding_to(&client, &[crm.url("/crm"), bot.url("/bot")]).await;
        let mut node = DataNode::start(&control, &["--retry-schedule", "200ms"])
            .await
            .unwrap();
        wait_configured(&node, &channel, &[&crm, &bot]).await;

        let load = Load::start(webhook_url(&node, &channel));
        load.wait_acked(50, "acknowledgements before the kill")
            .await;
        node.kill().await;
        let acked_before_kill = load.acked();
        node.restart().await.unwrap();
        load.wait_acked(acked_before_kill + 50, "acknowledgements after the restart")
            .await;
        let refused = load.unacknowledged();
        let acked = load.stop().await;

        for (name, receiver) in [("crm", &crm), ("bot", &bot)] {
            eventually(
                WAIT,
                &format!("every acknowledged event at {name}"),
                || async {
                    let got = events_at(receiver);
                    acked.iter().all(|id| got.contains(id)).then_some(())
                },
            )
            .await
            .unwrap();
            eprintln!(
                "{name}: {} acknowledged events ({acked_before_kill} before the kill, {refused} \
                 requests not acknowledged), {} deliveries, {} duplicates",
                acked.len(),
                receiver.requests().len(),
                duplicates(receiver)
            );
        }
    })
    .await;
}

#[tokio::test]
async fn with_the_control_plane_stopped_under_load_ingress_keeps_answering_and_forwarding() {
    bounded(async {
        let crm = Receiver::start().await.unwrap();
        let bot = Receiver::start().await.unwrap();
        let mut control = ControlProcess::start().await.unwrap();
        let client = control.admin().await.unwrap();
        let channel = channel_forwarding_to(&client, &[crm.url("/crm")]).await;
        let node = DataNode::start(&control, &[]).await.unwrap();
        wait_configured(&node, &channel, &[&crm]).await;

        let load = Load::start(webhook_url(&node, &channel));
        load.wait_acked(20, "acknowledgements before the stop")
            .await;
        control.kill().await;
        let at_stop = load.acked();
        load.wait_acked(at_stop + 200, "acknowledgements without a control plane")
            .await;
        let acked_while_away: Vec<String> = load.acked.lock().unwrap().clone();
        eventually(
            WAIT,
            "the events acknowledged meanwhile at the target",
            || async {
                let got = events_at(&crm);
                acked_while_away
                    .iter()
                    .all(|id| got.contains(id))
                    .then_some(())
            },
        )
        .await
        .unwrap();

        control.restart().await.unwrap();
        let client = control.admin().await.unwrap();
        create_forwarding_set(&client, &channel, &bot.url("/bot"))
            .await
            .unwrap();
        // The node reconnects (its backoff is capped at 5 s) and applies the new set.
        bot.wait_for(1, WAIT).await.unwrap();
        let refused = load.unacknowledged();
        let acked = load.stop().await;
        assert_eq!(refused, 0, "requests not acknowledged with 200");
        eventually(
            WAIT,
            "every acknowledged event at the first target",
            || async {
                let got = events_at(&crm);
                acked.iter().all(|id| got.contains(id)).then_some(())
            },
        )
        .await
        .unwrap();
        eprintln!(
            "{} events acknowledged, {} of them while the control plane was away",
            acked.len(),
            acked_while_away.len() - at_stop
        );
    })
    .await;
}

#[tokio::test]
async fn a_healthy_target_keeps_receiving_while_others_hang_reset_or_fail_slowly() {
    healthy_target_beside_broken_ones(&[]).await;
}

/// The same with the jobs in NATS JetStream, where one message carries a request's jobs for
/// every target: the broken targets' jobs leave it, and the healthy one's are not held back.
#[tokio::test]
async fn a_healthy_target_keeps_receiving_while_others_hang_reset_or_fail_slowly_on_nats() {
    let nats = hookplane_tests::nats::NatsCluster::single().unwrap();
    healthy_target_beside_broken_ones(&["--queue", &nats.queue_flag()]).await;
}

async fn healthy_target_beside_broken_ones(queue: &[&str]) {
    bounded(async {
        let healthy = Receiver::start().await.unwrap();
        let hanging = Receiver::start_with(Respond::Hang).await.unwrap();
        let slow_failing = Receiver::start_with(Respond::Slowly(Duration::from_millis(500), 500))
            .await
            .unwrap();
        let resetting = ResettingReceiver::start().await.unwrap();
        let control = ControlProcess::start().await.unwrap();
        let client = control.admin().await.unwrap();
        let channel = channel_forwarding_to(
            &client,
            &[
                healthy.url("/ok"),
                hanging.url("/hang"),
                slow_failing.url("/slow"),
                resetting.url("/reset"),
            ],
        )
        .await;
        let mut args = vec!["--retry-schedule", "100ms"];
        args.extend(queue);
        let node = DataNode::start(&control, &args).await.unwrap();
        wait_configured(&node, &channel, &[&healthy, &hanging, &slow_failing]).await;

        let http = reqwest::Client::new();
        let url = webhook_url(&node, &channel);
        // Two waves: the second arrives while the broken targets have every retry, slot and
        // breaker of theirs busy.
        for wave in 0..2u32 {
            let sent: Vec<String> = (0..50).map(|i| webhook_event_id(wave * 50 + i)).collect();
            for i in 0..50 {
                let status = post(&http, &url, text_event(wave * 50 + i)).await;
                assert_eq!(status, Some(reqwest::StatusCode::OK));
            }
            eventually(WAIT, "every event of the wave at the healthy target", || async {
                let got = events_at(&healthy);
                sent.iter().all(|id| got.contains(id)).then_some(())
            })
            .await
            .unwrap();
        }

        // The others were tried all along, and never answered 2xx.
        assert!(!hanging.requests().is_empty());
        assert!(slow_failing.requests().len() >= 2);
        assert!(resetting.connections() >= 1);
        eprintln!(
            "healthy: {} deliveries; hanging: {} requests; 500 slowly: {} requests; resetting: {} connections",
            healthy.requests().len(),
            hanging.requests().len(),
            slow_failing.requests().len(),
            resetting.connections()
        );
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_of_the_spool_loses_only_itself() {
    bounded(async {
        let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
        let control = ControlProcess::start().await.unwrap();
        let admin = control.admin().await.unwrap();
        let channel = channel_forwarding_to(&admin, &[receiver.url("/crm")]).await;
        let mut node = DataNode::start(&control, &[]).await.unwrap();
        let client = reqwest::Client::new();
        let url = webhook_url(&node, &channel);
        eventually(WAIT, "the node to know the channel", || async {
            (post(&client, &url, text_event(0)).await? == reqwest::StatusCode::OK).then_some(())
        })
        .await
        .unwrap();
        // Three events stored one after the other while the receiver refuses them.
        for n in 1..=3 {
            assert_eq!(
                post(&client, &url, text_event(n)).await,
                Some(reqwest::StatusCode::OK)
            );
        }
        node.kill().await;
        // A bad sector in the middle: the second event's stored body fails its checksum.
        let journal = node.dir.path().join("spool").join("journal");
        let marker = webhook_event_id(2);
        let mut corrupted = false;
        for entry in std::fs::read_dir(&journal).unwrap() {
            let path = entry.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
            {
                bytes[at] ^= 0xff;
                std::fs::write(&path, &bytes).unwrap();
                corrupted = true;
                break;
            }
        }
        assert!(
            corrupted,
            "the second event's record was not found in the journal"
        );

        receiver.respond(Respond::Status(200));
        let before = receiver.requests().len();
        node.restart().await.unwrap();
        // The records after the corrupt one were kept: the third event still arrives.
        eventually(WAIT, "the first and third events to arrive", || async {
            let seen: HashSet<String> = receiver.requests()[before..]
                .iter()
                .filter_map(event_in)
                .collect();
            (seen.contains(&webhook_event_id(1)) && seen.contains(&webhook_event_id(3)))
                .then_some(())
        })
        .await
        .unwrap();
        let skipped = node.metric("hookplane_spool_corrupt_bytes").await.unwrap();
        assert!(
            skipped.is_some_and(|n| n > 0),
            "corrupt bytes reported: {skipped:?}"
        );
        assert!(
            node.log().contains("corrupt records in the middle"),
            "the node did not say so:\n{}",
            node.log()
        );
    })
    .await;
}

#[tokio::test]
async fn the_spool_is_private_to_the_node() {
    use std::os::unix::fs::PermissionsExt as _;
    let control = ControlProcess::start().await.unwrap();
    let node = DataNode::start(&control, &[]).await.unwrap();
    let spool = node.dir.path().join("spool");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool), 0o700);
    assert_eq!(mode(&spool.join("journal")), 0o700);
    for entry in std::fs::read_dir(spool.join("journal")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// A control plane with a channel forwarding to one healthy receiver.
async fn forwarding_to_a_receiver() -> (Receiver, ControlProcess, String) {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let channel = channel_forwarding_to(&admin, &[receiver.url("/crm")]).await;
    (receiver, control, channel)
}

/// The journal's first segment in a fresh spool, where the tests below inject faults.
fn first_segment(spool: &std::path::Path) -> std::path::PathBuf {
    spool.join("journal").join(format!("{:020}.seg", 1))
}

async fn readyz(node: &DataNode) -> (reqwest::StatusCode, String) {
    let response = reqwest::get(format!("{}/readyz", node.ingress_url()))
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_failed_sync_answers_503_abandons_the_segment_and_lines_retry_is_stored_and_delivered() {
    bounded(async {
        let (receiver, control, channel) = forwarding_to_a_receiver().await;
        // Every fdatasync of the journal's first segment fails, as on a failing disk; the
        // segments after it sync normally. The channel is in the first snapshot, so the first
        // webhook is the first sync.
        let setup = NodeSetup {
            spool_dir: None,
            wrapper: Box::new(|spool| {
                [
                    "strace",
                    "-f",
                    "-qq",
                    "-o",
                    "/dev/null",
                    "-e",
                    "signal=none",
                    "-e",
                    "trace=fdatasync",
                    "-e",
                    "inject=fdatasync:error=EIO",
                    "-P",
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([first_segment(spool).to_str().unwrap().to_owned()])
                .collect()
            }),
            ..NodeSetup::default()
        };
        let node = DataNode::start_with(&control, &[], setup).await.unwrap();
        let client = reqwest::Client::new();
        let url = webhook_url(&node, &channel);

        assert_eq!(
            post(&client, &url, text_event(1)).await,
            Some(reqwest::StatusCode::SERVICE_UNAVAILABLE),
            "a webhook whose sync failed is not acknowledged"
        );
        // LINE sends the same webhook again: it is stored (in the next segment) and answered
        // 200, not skipped as already held.
        eventually(WAIT, "LINE's retry to be acknowledged", || async {
            (post(&client, &url, text_event(1)).await == Some(reqwest::StatusCode::OK))
                .then_some(())
        })
        .await
        .unwrap();
        eventually(WAIT, "the event to be delivered", || async {
            events_at(&receiver)
                .contains(&webhook_event_id(1))
                .then_some(())
        })
        .await
        .unwrap();
        assert_eq!(
            node.metric("hookplane_spool_segments_abandoned_total")
                .await
                .unwrap(),
            Some(1)
        );
        assert!(
            node.log().contains("the segment is abandoned"),
            "the node did not say so:\n{}",
            node.log()
        );
    })
    .await;
}

/// A tmpfs of its own, unmounted when dropped (CI runs as root).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        SmallDisk(dir)
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // The last pages too.
        while file.write_all(&[0u8; 512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_and_takes_the_same_webhook_again_once_space_is_freed() {
    bounded(async {
        let (receiver, control, channel) = forwarding_to_a_receiver().await;
        let disk = SmallDisk::mount("4m");
        // Journal segments grow as they are written (none is preallocated), so a full disk
        // shows at the first write after it fills.
        let setup = NodeSetup {
            spool_dir: Some(disk.path().join("spool")),
            ..NodeSetup::default()
        };
        let mut node = DataNode::start_with(&control, &[], setup).await.unwrap();
        let client = reqwest::Client::new();
        let url = webhook_url(&node, &channel);
        assert_eq!(
            post(&client, &url, text_event(1)).await,
            Some(reqwest::StatusCode::OK)
        );

        let filler = disk.fill();
        // The first few may still fit in the last page the journal's segment has.
        let mut refused = None;
        for n in 2..100 {
            match post(&client, &url, text_event(n)).await {
                Some(reqwest::StatusCode::OK) => {}
                Some(reqwest::StatusCode::SERVICE_UNAVAILABLE) => {
                    refused = Some(n);
                    break;
                }
                other => panic!("event {n} was answered {other:?}"),
            }
        }
        let refused = refused.expect("a webhook that could not be written is not acknowledged");
        let (status, why) = readyz(&node).await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{why}");
        assert!(why.contains("cannot store new work"), "{why}");
        assert!(
            node.metric("hookplane_spool_storage_failures_total")
                .await
                .unwrap()
                .is_some_and(|n| n > 0)
        );

        std::fs::remove_file(filler).unwrap();
        eventually(WAIT, "the node to be ready again", || async {
            (readyz(&node).await.0 == reqwest::StatusCode::OK).then_some(())
        })
        .await
        .unwrap();
        // LINE's retry of the refused webhook is stored and delivered, not skipped as held.
        assert_eq!(
            post(&client, &url, text_event(refused)).await,
            Some(reqwest::StatusCode::OK)
        );
        eventually(WAIT, "every event to be delivered", || async {
            let seen = events_at(&receiver);
            (1..=refused)
                .all(|n| seen.contains(&webhook_event_id(n)))
                .then_some(())
        })
        .await
        .unwrap();
        node.kill().await;
    })
    .await;
}

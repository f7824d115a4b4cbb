//! A tenant's data purged (TenantService.PurgeTenantData, `hookctl tenant purge`) and bodies
//! past `--payload-retention`, on real nodes: the LINE message leaves the node's spool files,
//! on a node that was offline at the time too, while another tenant's queued message stays and
//! is delivered; on NATS, the purged message is never sent again.

use std::{path::Path, time::Duration};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, DataNode, Receiver, Respond, api, eventually, fixture, hookctl_json, ingress,
    nats::NatsCluster,
};

/// Generous: a target that comes back is probed again after its breaker's rest.
const WAIT: Duration = Duration::from_secs(60);
/// Failing attempts come back often and never run out: the messages stay queued.
const NODE_ARGS: &[&str] = &["--retry-schedule", "500ms", "--max-attempts", "100000"];

/// A LINE webhook whose one text message is `text`.
fn message(text: &str) -> Vec<u8> {
    String::from_utf8(fixture("text.json"))
        .unwrap()
        .replace("Hi, where is my order #A1234?", text)
        .into_bytes()
}

/// Whether any file under `dir` holds `marker`.
fn on_disk(dir: &Path, marker: &str) -> bool {
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(marker.len()).any(|w| w == marker.as_bytes())
            {
                return true;
            }
        }
    }
    false
}

fn spool(node: &DataNode) -> std::path::PathBuf {
    node.dir.path().join("spool")
}

/// One brand: a tenant, a channel signed with the fixtures' secret, one forwarding set.
struct Brand {
    tenant: String,
    channel: String,
    set: String,
}

async fn brand(client: &Client, url: &str) -> Brand {
    let tenant = api::create_tenant(client, "Brand").await.unwrap();
    let channel = api::create_channel(client, &tenant.id, hookplane_tests::FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap();
    let set = api::create_forwarding_set(client, &channel.id, url)
        .await
        .unwrap();
    Brand {
        tenant: tenant.id,
        channel: channel.id,
        set: set.id,
    }
}

/// Posts `text` to the brand's channel on `node` and waits until its first attempt failed.
async fn queue_failing(client: &Client, node: &DataNode, brand: &Brand, text: &str) {
    ingress::wait_for_channel(&node.ingress_url(), &brand.channel)
        .await
        .unwrap();
    let answer = ingress::post_signed(&node.ingress_url(), &brand.channel, &message(text))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    eventually(WAIT, "a failed attempt", || async {
        let attempts = api::set_attempts(client, &brand.set).await.ok()?;
        (!attempts.is_empty()).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_purge_erases_the_tenants_queued_message_from_the_spool_files_and_another_tenants_is_still_delivered()
 {
    let dead = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let other = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let purged = brand(&client, &dead.url("/crm")).await;
    let kept = brand(&client, &other.url("/crm")).await;
    let node = DataNode::start(&control, NODE_ARGS).await.unwrap();
    queue_failing(&client, &node, &purged, "erase-me-4f1b9c").await;
    queue_failing(&client, &node, &kept, "keep-me-8d2e7a").await;
    assert!(on_disk(&spool(&node), "erase-me-4f1b9c"));

    let answer =
        hookctl_json(&control.hookctl(&["tenant", "purge", &purged.tenant, "--yes", "--json"]));

    assert_ne!(answer["attemptsDeleted"], "0", "{answer}");
    assert_eq!(answer["deliveriesDeleted"], "1", "{answer}");
    eventually(WAIT, "the purged message to leave the spool", || async {
        (!on_disk(&spool(&node), "erase-me-4f1b9c")).then_some(())
    })
    .await
    .unwrap();
    assert!(on_disk(&spool(&node), "keep-me-8d2e7a"));
    assert_eq!(
        node.metric("hookplane_purged_jobs_total{state=\"queued\"}")
            .await
            .unwrap(),
        Some(1)
    );
    other.respond(Respond::Status(200));
    delivered(&client, &kept).await;
    let after_purge = dead.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        dead.requests().len(),
        after_purge,
        "a purged job was attempted again"
    );
}

/// Waits until the brand's set has a delivered attempt.
async fn delivered(client: &Client, brand: &Brand) {
    eventually(WAIT, "a delivered attempt", || async {
        api::set_attempts(client, &brand.set)
            .await
            .ok()?
            .iter()
            .any(|a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_node_offline_during_the_purge_drops_the_tenants_message_when_it_comes_back() {
    let dead = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let other = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let purged = brand(&client, &dead.url("/crm")).await;
    let kept = brand(&client, &other.url("/crm")).await;
    let mut node = DataNode::start(&control, NODE_ARGS).await.unwrap();
    queue_failing(&client, &node, &purged, "offline-erase-2c9d").await;
    queue_failing(&client, &node, &kept, "offline-keep-6b1e").await;
    node.kill().await;

    hookctl_json(&control.hookctl(&["tenant", "purge", &purged.tenant, "--yes", "--json"]));
    assert!(on_disk(&spool(&node), "offline-erase-2c9d"));
    node.restart().await.unwrap();

    eventually(WAIT, "the purged message to leave the spool", || async {
        (!on_disk(&spool(&node), "offline-erase-2c9d")).then_some(())
    })
    .await
    .unwrap();
    assert!(on_disk(&spool(&node), "offline-keep-6b1e"));
    other.respond(Respond::Status(200));
    delivered(&client, &kept).await;
}

#[tokio::test]
async fn a_message_past_the_payload_retention_fails_for_good_saying_why_and_leaves_the_spool_files()
{
    let dead = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let brand = brand(&client, &dead.url("/crm")).await;
    let mut args = NODE_ARGS.to_vec();
    args.extend(["--payload-retention", "2s"]);
    let node = DataNode::start(&control, &args).await.unwrap();
    queue_failing(&client, &node, &brand, "expire-me-5a7c").await;

    let failed = eventually(WAIT, "the delivery to fail for good", || async {
        api::set_attempts(&client, &brand.set)
            .await
            .ok()?
            .into_iter()
            .find(|a| a.outcome == v1::AttemptOutcome::Failed as i32)
    })
    .await
    .unwrap();

    assert_eq!(
        failed.reason,
        "payload retention (2s) passed: dropped without an attempt"
    );
    eventually(WAIT, "the expired message to leave the spool", || async {
        (!on_disk(&spool(&node), "expire-me-5a7c")).then_some(())
    })
    .await
    .unwrap();
    let retried = client
        .deliveries()
        .retry_delivery(v1::RetryDeliveryRequest {
            id: failed.delivery_id.clone(),
        })
        .await;
    // The control plane still knows the failure; no node holds a body to send again.
    assert!(retried.is_ok(), "{retried:?}");
    let before = dead.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dead.requests().len(), before);
}

#[tokio::test]
async fn on_nats_a_purged_tenants_queued_message_is_never_sent_again_and_another_tenants_is() {
    let nats = NatsCluster::single().unwrap();
    let queue = nats.queue_flag();
    let once_down = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let other = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let purged = brand(&client, &once_down.url("/crm")).await;
    let kept = brand(&client, &other.url("/crm")).await;
    let node = DataNode::start(
        &control,
        &[
            "--queue",
            &queue,
            "--retry-schedule",
            "2s",
            "--max-attempts",
            "100000",
        ],
    )
    .await
    .unwrap();
    queue_failing(&client, &node, &purged, "nats-erase-3e8f").await;

    hookctl_json(&control.hookctl(&["tenant", "purge", &purged.tenant, "--yes", "--json"]));
    eventually(WAIT, "the node to apply the purge", || async {
        let log = node.log();
        assert!(!log.contains("could not purge"), "{log}");
        log.contains("tenant data purged from the queue")
            .then_some(())
    })
    .await
    .unwrap();
    // Erased from the jobs stream then, not only skipped when handed out.
    eventually(
        WAIT,
        "the queued message erased from the stream",
        || async {
            let erased = node
                .metric("hookplane_purged_jobs_total{state=\"queued\"}")
                .await
                .ok()?;
            (erased == Some(1)).then_some(())
        },
    )
    .await
    .unwrap();
    // Were the purged message attempted again, it would now be delivered.
    once_down.respond(Respond::Status(200));
    let before = once_down.requests().len();
    ingress::wait_for_channel(&node.ingress_url(), &kept.channel)
        .await
        .unwrap();
    let answer = ingress::post_signed(&node.ingress_url(), &kept.channel, &message("nats-keep"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    delivered(&client, &kept).await;
    // Past the purged message's retry time, twice over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        once_down.requests().len(),
        before,
        "the purged message was sent again"
    );
}

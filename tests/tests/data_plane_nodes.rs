//! Data-plane nodes as processes: an acknowledged event survives `kill -9`, several nodes share
//! one control plane, a node rides out the control plane's absence, and it refuses a control
//! plane whose store is not the one its config came from (or went back to an earlier revision).

use std::{collections::HashSet, time::Duration};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, DataNode, FIXTURE_CHANNEL_SECRET, Receiver, Respond, api::*, eventually,
    fixture, ingress,
};

const WAIT: Duration = Duration::from_secs(20);

async fn brand(client: &Client) -> String {
    let tenant = create_tenant(client, "Brand").await.unwrap();
    create_channel(client, &tenant.id, FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap()
        .id
}

/// A control plane, a brand's channel forwarding to `receiver`, and a node (with `args`) that
/// serves it.
async fn node_forwarding_to(
    receiver: &Receiver,
    args: &[&str],
) -> (ControlProcess, DataNode, String) {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let channel = brand(&client).await;
    create_forwarding_set(&client, &channel, &receiver.url("/crm"))
        .await
        .unwrap();
    let node = DataNode::start(&control, args).await.unwrap();
    wait_for_channel(&node, &channel).await;
    (control, node, channel)
}

async fn post(node: &DataNode, channel: &str, body: &[u8]) -> reqwest::StatusCode {
    // A node being killed or restarted answers nothing: report that as 502.
    ingress::post_signed(&node.ingress_url(), channel, body)
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
}

/// `/readyz`'s status and text.
async fn readyz(node: &DataNode) -> (reqwest::StatusCode, String) {
    match reqwest::get(format!("{}/readyz", node.ingress_url())).await {
        Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
        Err(_) => (reqwest::StatusCode::BAD_GATEWAY, String::new()),
    }
}

/// Waits until the node says it refuses the control plane's config; returns what /readyz says.
async fn wait_refusing(node: &DataNode) -> String {
    eventually(WAIT, "the node to refuse the control plane", || async {
        let (status, text) = readyz(node).await;
        (status == 503 && text.contains("refusing")).then_some(text)
    })
    .await
    .unwrap()
}

/// The event ids of the requests `receiver` got from the `from`th on.
fn event_ids_since(receiver: &Receiver, from: usize) -> HashSet<String> {
    receiver.requests()[from..]
        .iter()
        .filter_map(|r| r.header("x-hookplane-event-id").map(str::to_owned))
        .collect()
}

async fn wait_for_channel(node: &DataNode, channel: &str) {
    ingress::wait_for_channel(&node.ingress_url(), channel)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_event_acknowledged_before_kill_9_is_delivered_after_the_restart() {
    let receiver = Receiver::start_with(Respond::Hang).await.unwrap();
    let (_control, mut node, channel) = node_forwarding_to(&receiver, &[]).await;

    let body = fixture("text.json");
    assert_eq!(post(&node, &channel, &body).await, 200);
    // The forward is in flight (the target hangs) when the node dies without any shutdown code.
    receiver.wait_for(1, WAIT).await.unwrap();
    node.kill().await;

    receiver.respond(Respond::Status(200));
    node.restart().await.unwrap();
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    assert_eq!(got[1].body.as_ref(), body.as_slice());
    assert_eq!(
        got[0].header("x-hookplane-event-id"),
        got[1].header("x-hookplane-event-id")
    );
}

#[tokio::test]
async fn events_acknowledged_while_the_target_fails_survive_kill_9() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let (_control, mut node, channel) =
        node_forwarding_to(&receiver, &["--retry-schedule", "200ms"]).await;
    for n in 0..5 {
        assert_eq!(post(&node, &channel, &ingress::text_event(n)).await, 200);
    }
    node.kill().await;

    let failed_before = receiver.requests().len();
    receiver.respond(Respond::Status(200));
    node.restart().await.unwrap();
    eventually(
        WAIT,
        "all five events delivered after the restart",
        || async {
            let delivered: HashSet<String> = receiver.requests()[failed_before..]
                .iter()
                .filter_map(|r| r.header("x-hookplane-event-id").map(str::to_owned))
                .collect();
            (delivered.len() == 5).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn two_nodes_serve_ingress_with_the_same_config() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let channel = brand(&client).await;
    create_forwarding_set(&client, &channel, &receiver.url("/crm"))
        .await
        .unwrap();
    let a = DataNode::start(&control, &["--node-id", "node_a"])
        .await
        .unwrap();
    let b = DataNode::start(&control, &["--node-id", "node_b"])
        .await
        .unwrap();
    wait_for_channel(&a, &channel).await;
    wait_for_channel(&b, &channel).await;
    assert_eq!(post(&a, &channel, &ingress::text_event(1)).await, 200);
    assert_eq!(post(&b, &channel, &ingress::text_event(2)).await, 200);
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    let ids: HashSet<_> = got
        .iter()
        .map(|r| r.header("x-hookplane-event-id"))
        .collect();
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn an_admin_write_reaches_every_connected_node_within_a_second() {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let a = DataNode::start(&control, &[]).await.unwrap();
    let b = DataNode::start(&control, &[]).await.unwrap();
    let channel = brand(&client).await;
    let verify = fixture("verify.json");
    for node in [&a, &b] {
        eventually(
            Duration::from_secs(1),
            "the new channel on every node",
            || async { (post(node, &channel, &verify).await == 200).then_some(()) },
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_node_keeps_serving_while_the_control_plane_is_away_and_catches_up_after() {
    let first = Receiver::start().await.unwrap();
    let second = Receiver::start().await.unwrap();
    let (mut control, node, channel) = node_forwarding_to(&first, &[]).await;

    control.kill().await;
    assert_eq!(post(&node, &channel, &ingress::text_event(1)).await, 200);
    first.wait_for(1, WAIT).await.unwrap();

    control.restart().await.unwrap();
    let client = control.admin().await.unwrap();
    create_forwarding_set(&client, &channel, &second.url("/bot"))
        .await
        .unwrap();
    // Reconnecting is paced by a backoff capped at 5 s; the change arrives once it has.
    eventually(WAIT, "the new forwarding set on the node", || async {
        assert_eq!(post(&node, &channel, &ingress::text_event(2)).await, 200);
        let got = second.wait_for(1, Duration::from_millis(500)).await.ok()?;
        Some(got)
    })
    .await
    .unwrap();
}

/// The node's sealed copy of its config, once it has saved one.
async fn saved_config(node: &DataNode) -> std::path::PathBuf {
    let saved = node.dir.path().join("spool").join("config.sealed");
    eventually(WAIT, "the node to save its config", || async {
        saved.exists().then_some(())
    })
    .await
    .unwrap();
    saved
}

#[tokio::test]
async fn a_node_restarted_while_the_control_plane_is_away_serves_its_saved_config() {
    let receiver = Receiver::start().await.unwrap();
    let (mut control, mut node, channel) = node_forwarding_to(&receiver, &[]).await;
    let saved = saved_config(&node).await;
    // The secret it holds is not on disk in clear.
    let raw = std::fs::read(&saved).unwrap();
    assert!(
        !raw.windows(FIXTURE_CHANNEL_SECRET.len())
            .any(|w| w == FIXTURE_CHANNEL_SECRET.as_bytes())
    );

    control.kill().await;
    node.restart().await.unwrap();
    let readyz = reqwest::get(format!("{}/readyz", node.ingress_url()))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);
    let text = readyz.text().await.unwrap();
    assert!(text.contains("cached"), "{text}");
    let before = receiver.requests().len();
    assert_eq!(
        post(&node, &channel, &ingress::text_event(42)).await,
        reqwest::StatusCode::OK
    );
    receiver.wait_for(before + 1, WAIT).await.unwrap();
}

#[tokio::test]
async fn a_node_refuses_a_control_plane_with_another_store_and_keeps_its_work() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let (mut control, node, channel) = node_forwarding_to(
        &receiver,
        &["--retry-schedule", "300ms", "--max-attempts", "1000"],
    )
    .await;
    let set = control
        .admin()
        .await
        .unwrap()
        .forwarding()
        .list_forwarding_sets(v1::ListForwardingSetsRequest {
            channel_id: channel.clone(),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .forwarding_sets
        .remove(0)
        .id;
    assert_eq!(post(&node, &channel, &ingress::text_event(1)).await, 200);
    let queued = receiver.wait_for(1, WAIT).await.unwrap()[0]
        .header("x-hookplane-event-id")
        .unwrap()
        .to_owned();

    // The control plane's store is lost: another one, empty, takes its place and its address.
    control.kill().await;
    let mut other = ControlProcess::start_in_place_of(&control).await.unwrap();
    let text = wait_refusing(&node).await;
    assert!(text.contains("store"), "{text}");
    assert_eq!(
        node.metric("hookplane_config_refusing").await.unwrap(),
        Some(1)
    );
    assert!(
        node.metric("hookplane_config_refused_total{reason=\"store_id\"}")
            .await
            .unwrap()
            >= Some(1)
    );
    assert!(node.log().contains("refusing the control plane's config"));

    // It serves on with its own config, and the job queued before is still there.
    let before = receiver.requests().len();
    assert_eq!(post(&node, &channel, &ingress::text_event(2)).await, 200);
    receiver.wait_for(before + 1, WAIT).await.unwrap();
    let recovered = receiver.requests().len();
    receiver.respond(Respond::Status(200));
    eventually(WAIT, "both events delivered", || async {
        let ids = event_ids_since(&receiver, recovered);
        (ids.contains(&queued) && ids.len() == 2).then_some(())
    })
    .await
    .unwrap();

    // Its own store back, the control plane is followed again.
    other.kill().await;
    control.restart().await.unwrap();
    eventually(WAIT, "the node ready again", || async {
        (readyz(&node).await.0 == 200).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        node.metric("hookplane_config_refusing").await.unwrap(),
        Some(0)
    );
    // The attempts made meanwhile were kept for their own store, not given to the other one.
    let client = control.admin().await.unwrap();
    eventually(
        WAIT,
        "the delivery while refusing in its store's log",
        || async {
            set_attempts(&client, &set)
                .await
                .ok()?
                .into_iter()
                .find(|a| a.event_id == queued && a.outcome == v1::AttemptOutcome::Succeeded as i32)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_node_refuses_a_store_restored_to_an_earlier_revision_and_keeps_its_config() {
    let first = Receiver::start().await.unwrap();
    let second = Receiver::start().await.unwrap();
    let (mut control, node, channel) = node_forwarding_to(&first, &[]).await;
    control.terminate().await.unwrap();
    let backup = control.back_up_store().unwrap();
    control.restart().await.unwrap();
    let client = control.admin().await.unwrap();
    create_forwarding_set(&client, &channel, &second.url("/bot"))
        .await
        .unwrap();
    eventually(WAIT, "the second forwarding set on the node", || async {
        assert_eq!(post(&node, &channel, &ingress::text_event(1)).await, 200);
        second.wait_for(1, Duration::from_millis(500)).await.ok()
    })
    .await
    .unwrap();

    control.restore_store(&backup).await.unwrap();
    let text = wait_refusing(&node).await;
    assert!(text.contains("revision"), "{text}");
    assert!(
        node.metric("hookplane_config_refused_total{reason=\"revision\"}")
            .await
            .unwrap()
            >= Some(1)
    );
    // The set the restored store lacks is still served.
    let before = second.requests().len();
    assert_eq!(post(&node, &channel, &ingress::text_event(2)).await, 200);
    second.wait_for(before + 1, WAIT).await.unwrap();
}

#[tokio::test]
async fn a_node_moves_to_another_store_once_its_saved_config_is_deleted() {
    let receiver = Receiver::start().await.unwrap();
    let (mut control, mut node, channel) = node_forwarding_to(&receiver, &[]).await;
    let saved = saved_config(&node).await;
    control.kill().await;
    let other = ControlProcess::start_in_place_of(&control).await.unwrap();
    wait_refusing(&node).await;

    node.kill().await;
    std::fs::remove_file(&saved).unwrap();
    node.restart().await.unwrap();
    assert_eq!(
        readyz(&node).await,
        (reqwest::StatusCode::OK, "ready\n".into())
    );
    // It follows the new store, which has no such channel.
    assert_eq!(post(&node, &channel, &fixture("verify.json")).await, 404);
    let client = other.admin().await.unwrap();
    let moved = brand(&client).await;
    wait_for_channel(&node, &moved).await;
}

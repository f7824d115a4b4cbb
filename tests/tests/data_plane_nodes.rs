//! Data-plane nodes as processes: an acknowledged event survives `kill -9`, several nodes share
//! one control plane, and a node rides out the control plane's absence.

use std::{collections::HashSet, time::Duration};

use hookplane_client::Client;
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

#[tokio::test]
async fn a_node_restarted_while_the_control_plane_is_away_serves_its_saved_config() {
    let receiver = Receiver::start().await.unwrap();
    let (mut control, mut node, channel) = node_forwarding_to(&receiver, &[]).await;
    let saved = node.dir.path().join("spool").join("config.sealed");
    eventually(WAIT, "the node to save its config", || async {
        saved.exists().then_some(())
    })
    .await
    .unwrap();
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

//! A data-plane node's LINE ingress, end to end: the real `hookplane data` process behind a real
//! control plane, with LINE requests signed as LINE signs them and real receivers behind it.

use std::time::{Duration, Instant};

use hookplane_client::v1;
use hookplane_tests::{
    ControlProcess, DataNode, FIXTURE_CHANNEL_SECRET, PyReceiver, Receiver, Respond, api, api::*,
    eventually, fixture, ingress,
};
use hookplane_verify::line;

const WAIT: Duration = Duration::from_secs(15);

/// A tenant and a channel signed with the fixture secret, forwarding to each of `urls`.
async fn channel_forwarding_to(control: &ControlProcess, urls: &[String]) -> (String, Vec<String>) {
    let client = control.admin().await.unwrap();
    api::channel_forwarding_to(&client, urls).await.unwrap()
}

async fn post(
    node: &DataNode,
    channel_id: &str,
    body: &[u8],
    signature: Option<&str>,
) -> reqwest::Response {
    ingress::post(&node.ingress_url(), channel_id, body, signature)
        .await
        .unwrap()
}

async fn post_signed(node: &DataNode, channel_id: &str, body: &[u8]) -> reqwest::Response {
    ingress::post_signed(&node.ingress_url(), channel_id, body)
        .await
        .unwrap()
}

async fn wait_for_channel(node: &DataNode, channel_id: &str) {
    ingress::wait_for_channel(&node.ingress_url(), channel_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_signed_event_is_acknowledged_and_forwarded_byte_for_byte() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, sets) = channel_forwarding_to(&control, &[receiver.url("/crm")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    let body = fixture("text.json");
    let signature = line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), &body);

    let answer = post(&node, &channel, &body, Some(&signature)).await;
    assert_eq!(answer.status(), 200);

    let got = receiver.wait_for(1, WAIT).await.unwrap();
    let forwarded = &got[0];
    assert_eq!(forwarded.path, "/crm");
    assert_eq!(forwarded.body.as_ref(), body.as_slice());
    assert_eq!(
        forwarded.header("x-line-signature"),
        Some(signature.as_str())
    );
    assert_eq!(
        forwarded.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(forwarded.header("x-hookplane-attempt"), Some("1"));
    assert_eq!(
        forwarded.header("x-hookplane-forwarding-set"),
        Some(sets[0].as_str())
    );
    assert!(
        forwarded
            .header("x-hookplane-event-id")
            .unwrap()
            .starts_with("evt_")
    );
}

#[tokio::test]
async fn the_official_line_sdk_accepts_every_forwarded_request() {
    let sdk = PyReceiver::line_sdk(FIXTURE_CHANNEL_SECRET).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[sdk.url("/bot")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    for name in ["text.json", "sticker.json", "location.json"] {
        assert_eq!(
            post_signed(&node, &channel, &fixture(name)).await.status(),
            200
        );
    }
    let results = eventually(WAIT, "three verified forwards", || async {
        let results = sdk.results().await.ok()?;
        (results.len() >= 3).then_some(results)
    })
    .await
    .unwrap();
    for result in results {
        assert_eq!(result["verified"], true, "{result}");
    }
}

#[tokio::test]
async fn every_forwarding_set_of_the_channel_gets_the_event_with_one_event_id() {
    let a = Receiver::start().await.unwrap();
    let b = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[a.url("/a"), b.url("/b")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    post_signed(&node, &channel, &fixture("text.json")).await;
    let got_a = a.wait_for(1, WAIT).await.unwrap();
    let got_b = b.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        got_a[0].header("x-hookplane-event-id"),
        got_b[0].header("x-hookplane-event-id")
    );
}

#[tokio::test]
async fn a_wrong_signature_gets_401_and_nothing_is_forwarded() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[receiver.url("/crm")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    let body = fixture("text.json");
    let wrong = line::sign(b"some other channel's secret", &body);
    assert_eq!(
        post(&node, &channel, &body, Some(&wrong)).await.status(),
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_missing_signature_gets_401() {
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    assert_eq!(
        post(&node, &channel, &fixture("text.json"), None)
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn an_unknown_channel_gets_404() {
    let control = ControlProcess::start().await.unwrap();
    let node = DataNode::start(&control, &[]).await.unwrap();
    let status = post_signed(&node, "ch_doesnotexist", &fixture("text.json"))
        .await
        .status();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[]).await;
    let node = DataNode::start(&control, &["--max-body-bytes", "4096"])
        .await
        .unwrap();
    wait_for_channel(&node, &channel).await;
    let big = vec![b' '; 4097];
    assert_eq!(post_signed(&node, &channel, &big).await.status(), 413);
}

#[tokio::test]
async fn methods_other_than_post_get_405() {
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    let get = reqwest::get(ingress::webhook_url(&node.ingress_url(), &channel))
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
}

#[tokio::test]
async fn the_line_console_verify_request_gets_200_and_is_not_forwarded() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[receiver.url("/crm")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    assert_eq!(
        post_signed(&node, &channel, &fixture("verify.json"))
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn the_previous_secret_verifies_during_a_rotation_grace_period() {
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    let client = control.admin().await.unwrap();
    client
        .channels()
        .rotate_channel_secret(v1::RotateChannelSecretRequest {
            id: channel.clone(),
            new_secret: "fedcba9876543210fedcba9876543210".to_owned(),
            grace_period: Some(duration(Duration::from_secs(3600))),
        })
        .await
        .unwrap();
    let body = fixture("text.json");
    let new = line::sign(b"fedcba9876543210fedcba9876543210", &body);
    eventually(WAIT, "the new secret to verify", || async {
        (post(&node, &channel, &body, Some(&new)).await.status() == 200).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(post_signed(&node, &channel, &body).await.status(), 200);
}

#[tokio::test]
async fn the_previous_secret_stops_at_once_without_a_grace_period() {
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    let client = control.admin().await.unwrap();
    client
        .channels()
        .rotate_channel_secret(v1::RotateChannelSecretRequest {
            id: channel.clone(),
            new_secret: "fedcba9876543210fedcba9876543210".to_owned(),
            grace_period: None,
        })
        .await
        .unwrap();
    let body = fixture("text.json");
    eventually(WAIT, "the old secret to stop verifying", || async {
        (post_signed(&node, &channel, &body).await.status() == 401).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_answer_comes_at_once_while_every_target_hangs() {
    let hanging = Receiver::start_with(Respond::Hang).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let urls: Vec<String> = (0..10).map(|i| hanging.url(&format!("/t{i}"))).collect();
    let (channel, _) = channel_forwarding_to(&control, &urls).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    let body = fixture("text.json");
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(post_signed(&node, &channel, &body).await.status(), 200);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
}

#[tokio::test]
async fn readyz_healthz_and_metrics_are_served_on_the_ingress_port() {
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&control, &[receiver.url("/crm")]).await;
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node, &channel).await;
    post_signed(&node, &channel, &fixture("text.json")).await;
    receiver.wait_for(1, WAIT).await.unwrap();

    let health = reqwest::get(format!("{}/healthz", node.ingress_url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", node.ingress_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // A scrape reads the queue's depth before it renders the counters, and the engine counts an
    // attempt once the job is settled: a scrape taken in between shows the attempt counted with
    // the job still queued. So the page is read until it shows both.
    let metrics = eventually(
        WAIT,
        "the attempt to be counted and its job settled",
        || async {
            let text = reqwest::get(format!("{}/metrics", node.ingress_url()))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("hookplane_delivery_attempts_total{outcome=\"succeeded\"} 1")
                && text.contains("hookplane_queue_depth 0"))
            .then_some(text)
        },
    )
    .await
    .unwrap();
    for series in [
        "hookplane_ingress_requests_total{outcome=\"accepted\"} 1",
        "hookplane_ingress_ack_latency_seconds_bucket",
        "hookplane_delivery_latency_seconds_bucket",
        "hookplane_queue_depth 0",
        "hookplane_config_revision",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_node_is_not_ready_before_it_has_a_config_snapshot() {
    let mut control = ControlProcess::start().await.unwrap();
    control.kill().await;
    let node = DataNode::spawn(&control, &[]).await.unwrap();
    let ready = reqwest::get(format!("{}/readyz", node.ingress_url()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    control.restart().await.unwrap();
    hookplane_tests::process::wait_ready(node.ingress_addr)
        .await
        .unwrap();
}

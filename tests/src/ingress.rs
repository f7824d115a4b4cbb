//! Sending LINE webhooks to a node's ingress as LINE does: the exact bytes, signed with the
//! fixtures' channel secret.

use std::time::Duration;

use crate::{FIXTURE_CHANNEL_SECRET, eventually, fixture};

/// The channel's ingress URL on a node, e.g. `http://127.0.0.1:PORT/api/webhook/line/ch_x/events`.
pub fn webhook_url(ingress_url: &str, channel_id: &str) -> String {
    format!("{ingress_url}/api/webhook/line/{channel_id}/events")
}

/// POSTs `body` with `signature` as `x-line-signature` (none when `None`).
pub async fn post(
    ingress_url: &str,
    channel_id: &str,
    body: &[u8],
    signature: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = reqwest::Client::new()
        .post(webhook_url(ingress_url, channel_id))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-line-signature", signature);
    }
    request.send().await
}

/// POSTs `body` signed with [`FIXTURE_CHANNEL_SECRET`].
pub async fn post_signed(
    ingress_url: &str,
    channel_id: &str,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let signature = hookplane_verify::line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), body);
    post(ingress_url, channel_id, body, Some(&signature)).await
}

/// Waits until the node serves `channel_id`: its config carries the channel (a signed Verify
/// request answers 200).
pub async fn wait_for_channel(ingress_url: &str, channel_id: &str) -> anyhow::Result<()> {
    let verify = fixture("verify.json");
    eventually(
        Duration::from_secs(10),
        "the node to know the channel",
        || async {
            let answer = post_signed(ingress_url, channel_id, &verify).await.ok()?;
            (answer.status() == 200).then_some(())
        },
    )
    .await
}

/// The text fixture as a distinct event: its `webhookEventId` ends in `n`.
pub fn text_event(n: u32) -> Vec<u8> {
    String::from_utf8(fixture("text.json"))
        .expect("utf-8 fixture")
        .replace(
            "01JGKZ7Q3N8V5T2R6W9X4Y1B0C",
            &format!("01JGKZ7Q3N8V5T2R6W9X4Y{n:04}"),
        )
        .into_bytes()
}

//! The Genesys Cloud Open Messaging connector end to end: a real `hookplane standalone`, a fake
//! Genesys (OAuth token endpoint and inbound endpoint) and a fake LINE push API, each a real HTTP
//! server; the tests assert the requests that really arrive.

use std::{collections::HashMap, time::Duration};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, SmtpReceiver, Standalone, api,
    fake_genesys::{self, FakeGenesys},
    fake_line::{self, FakeLine},
    fixture, hookctl_json,
    ingress::{post_signed, text_event},
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
/// The LINE user of the fixtures.
const USER: &str = "U4af4980629f1b2c3d4e5f60718293a4b";

struct Setup {
    node: Standalone,
    client: Client,
    genesys: FakeGenesys,
    line: FakeLine,
    channel: String,
    set: String,
}

fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A standalone pushing to a fake LINE, and a channel (with metadata and an access token)
/// connected to a fake Genesys.
async fn setup() -> Setup {
    setup_with(&[], fake_genesys::CLIENT_SECRET).await
}

/// [`setup`] with extra flags for the standalone and the client secret the set is given.
async fn setup_with(flags: &[&str], client_secret: &str) -> Setup {
    let genesys = FakeGenesys::start().await.unwrap();
    let line = FakeLine::start().await.unwrap();
    let line_url = line.base_url();
    let mut args = vec![
        "--line-api-base-url",
        &line_url,
        "--retry-schedule",
        "200ms",
    ];
    args.extend_from_slice(flags);
    let node = Standalone::start_with(&args).await.unwrap();
    let client = node.admin().await.unwrap();
    let tenant = api::create_tenant(&client, "Retail Thai").await.unwrap();
    let channel = client
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: tenant.id.clone(),
            channel: Some(v1::Channel {
                line_channel_access_token: fake_line::ACCESS_TOKEN.to_owned(),
                metadata: strings(&[("market", "Taiwan"), ("tier", "gold")]),
                ..api::channel("Brand OA", hookplane_tests::FIXTURE_CHANNEL_SECRET)
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let set = client
        .forwarding()
        .create_forwarding_set(v1::CreateForwardingSetRequest {
            channel_id: channel.clone(),
            forwarding_set: Some(v1::ForwardingSet {
                name: "contact centre".to_owned(),
                kind: v1::ForwardingKind::GenesysOpenMessaging as i32,
                genesys: Some(v1::GenesysSettings {
                    login_base_url: genesys.base_url(),
                    api_base_url: genesys.base_url(),
                    client_id: fake_genesys::CLIENT_ID.to_owned(),
                    client_secret: client_secret.to_owned(),
                    integration_id: fake_genesys::INTEGRATION_ID.to_owned(),
                    outbound_signature_secret: fake_genesys::SIGNATURE_SECRET.to_owned(),
                    custom_attributes: strings(&[("market", "Thailand"), ("brand", "Retail_Thai")]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let s = Setup {
        node,
        client,
        genesys,
        line,
        channel,
        set,
    };
    // The set was written after the channel, so a node that knows the set knows both.
    hookplane_tests::eventually(WAIT, "the node to know the Genesys set", || async {
        let status = fake_genesys::post_outbound(&s.outbound_url(), b"{}", None)
            .await
            .ok()?
            .status();
        (status == 401).then_some(())
    })
    .await
    .unwrap();
    s
}

impl Setup {
    fn outbound_url(&self) -> String {
        format!(
            "{}/api/connector/genesys/{}/outbound",
            self.node.ingress_url(),
            self.set
        )
    }

    async fn post_line(&self, body: &[u8]) {
        let answer = post_signed(&self.node.ingress_url(), &self.channel, body)
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }

    async fn agent_says(&self, message_id: &str, text: &str) -> u16 {
        let body = fake_genesys::agent_text(message_id, USER, text);
        fake_genesys::post_outbound_signed(&self.outbound_url(), &body)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn attempts(&self) -> Vec<v1::DeliveryAttempt> {
        hookplane_tests::api::set_attempts(&self.client, &self.set)
            .await
            .unwrap()
    }

    /// Waits until the attempt log holds `n` attempts matching `filter`; returns them oldest first.
    async fn wait_attempts(
        &self,
        n: usize,
        filter: impl Fn(&v1::DeliveryAttempt) -> bool,
    ) -> Vec<v1::DeliveryAttempt> {
        hookplane_tests::eventually(WAIT, "attempts in the log", || async {
            let mut found: Vec<_> = self.attempts().await.into_iter().filter(&filter).collect();
            found.reverse();
            (found.len() >= n).then_some(found)
        })
        .await
        .unwrap()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.node.ingress_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

#[tokio::test]
async fn a_sticker_reaches_genesys_as_text_with_its_ids_and_keywords() {
    let s = setup().await;
    s.post_line(&fixture("sticker.json")).await;
    let got = s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(
        got[0]["text"],
        "[LINE sticker] package 11537, sticker 52002734; keywords: Brown, Cony, Happy, Yay"
    );
    assert_eq!(
        got[0]["channel"]["from"],
        json!({"id": USER, "idType": "Opaque"})
    );
    assert_eq!(got[0]["channel"]["messageId"], "537262011938475620");
    assert_eq!(got[0]["channel"]["time"], "2025-01-01T00:01:00.456Z");
}

#[tokio::test]
async fn a_location_reaches_genesys_with_title_address_and_a_maps_url() {
    let s = setup().await;
    s.post_line(&fixture("location.json")).await;
    let got = s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    let text = got[0]["text"].as_str().unwrap();
    assert!(text.contains("Taipei 101"), "{text}");
    assert!(
        text.contains("No. 7, Sec. 5, Xinyi Rd., Xinyi Dist., Taipei City 110, Taiwan"),
        "{text}"
    );
    assert!(
        text.contains("https://www.google.com/maps/search/?api=1&query=25.033976,121.564472"),
        "{text}"
    );
}

#[tokio::test]
async fn a_text_reaches_the_integrations_inbound_endpoint_with_a_bearer_token() {
    let s = setup().await;
    s.post_line(&fixture("text.json")).await;
    let got = s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(got[0]["text"], "Hi, where is my order #A1234?");
    let request = &s.genesys.inbound_requests()[0];
    assert_eq!(
        request.path,
        format!(
            "/api/v2/conversations/messages/{}/inbound/open/message",
            fake_genesys::INTEGRATION_ID
        )
    );
    assert_eq!(
        request.header("authorization"),
        Some("Bearer genesys-token-1")
    );
}

#[tokio::test]
async fn custom_attributes_merge_the_channels_metadata_and_the_sets_attributes() {
    let s = setup().await;
    s.post_line(&fixture("text.json")).await;
    let got = s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(
        got[0]["channel"]["metadata"]["customAttributes"],
        json!({"market": "Thailand", "brand": "Retail_Thai", "tier": "gold"})
    );
}

#[tokio::test]
async fn several_messages_share_one_token() {
    let s = setup().await;
    for n in 0..3 {
        s.post_line(&text_event(n)).await;
    }
    s.genesys.wait_for_accepted(3, WAIT).await.unwrap();
    assert_eq!(s.genesys.token_requests().len(), 1);
}

#[tokio::test]
async fn a_token_genesys_turns_down_is_replaced_once_and_the_message_still_arrives() {
    let s = setup().await;
    s.post_line(&text_event(1)).await;
    s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    s.genesys.revoke_tokens();
    s.post_line(&text_event(2)).await;
    s.genesys.wait_for_accepted(2, WAIT).await.unwrap();
    assert_eq!(s.genesys.token_requests().len(), 2);
    let auths: Vec<_> = s
        .genesys
        .inbound_requests()
        .iter()
        .map(|r| r.header("authorization").unwrap().to_owned())
        .collect();
    assert_eq!(
        auths,
        [
            "Bearer genesys-token-1",
            "Bearer genesys-token-1",
            "Bearer genesys-token-2"
        ]
    );
}

#[tokio::test]
async fn each_message_of_a_webhook_is_its_own_delivery() {
    let s = setup().await;
    let body = json!({"destination": "Ub3f", "events": [
        {"type": "message", "mode": "active", "timestamp": 1_735_689_600_000_i64,
         "source": {"type": "user", "userId": USER}, "webhookEventId": "01JGA",
         "deliveryContext": {"isRedelivery": false},
         "message": {"id": "1001", "type": "text", "text": "first"}},
        {"type": "message", "mode": "active", "timestamp": 1_735_689_601_000_i64,
         "source": {"type": "user", "userId": USER}, "webhookEventId": "01JGB",
         "deliveryContext": {"isRedelivery": false},
         "message": {"id": "1002", "type": "text", "text": "second"}}
    ]});
    s.post_line(body.to_string().as_bytes()).await;
    let got = s.genesys.wait_for_accepted(2, WAIT).await.unwrap();
    let mut texts: Vec<_> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["first", "second"]);
    let done = s
        .wait_attempts(2, |a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
        .await;
    assert_ne!(done[0].delivery_id, done[1].delivery_id);
}

#[tokio::test]
async fn non_message_events_are_skipped_and_counted() {
    let s = setup().await;
    let body = json!({"destination": "Ub3f", "events": [
        {"type": "follow", "mode": "active", "timestamp": 1_735_689_600_000_i64,
         "source": {"type": "user", "userId": USER}, "webhookEventId": "01JGF",
         "deliveryContext": {"isRedelivery": false}, "replyToken": "r", "follow": {"isUnblocked": false}},
        {"type": "message", "mode": "active", "timestamp": 1_735_689_601_000_i64,
         "source": {"type": "user", "userId": USER}, "webhookEventId": "01JGM",
         "deliveryContext": {"isRedelivery": false},
         "message": {"id": "2001", "type": "text", "text": "hello"}}
    ]});
    s.post_line(body.to_string().as_bytes()).await;
    s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    assert_eq!(s.genesys.inbound_requests().len(), 1);
    assert_eq!(
        s.metric("hookplane_genesys_events_skipped_total").await,
        1.0
    );
}

#[tokio::test]
async fn a_genesys_failure_is_retried_and_shows_in_the_attempt_log() {
    let s = setup().await;
    s.genesys.script_inbound(&[503]);
    s.post_line(&fixture("text.json")).await;
    s.genesys.wait_for_accepted(1, WAIT).await.unwrap();
    let retrying = s
        .wait_attempts(1, |a| a.outcome == v1::AttemptOutcome::Retrying as i32)
        .await;
    assert_eq!(retrying[0].reason, "503 Service Unavailable");
    assert_eq!(retrying[0].http_status, 503);
    let done = s
        .wait_attempts(1, |a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
        .await;
    assert_eq!(done[0].delivery_id, retrying[0].delivery_id);
    assert_eq!(done[0].attempt_number, 2);
}

#[tokio::test]
async fn refused_genesys_credentials_fail_for_good_with_a_readable_reason() {
    let s = setup_with(&[], "a-wrong-secret").await;
    s.post_line(&fixture("text.json")).await;
    let failed = s
        .wait_attempts(1, |a| a.outcome == v1::AttemptOutcome::Failed as i32)
        .await;
    assert_eq!(failed[0].reason, "401 Unauthorized (Genesys login)");
    assert_eq!(failed[0].http_status, 401);
    assert_eq!(failed[0].attempt_number, 1);
    assert!(s.genesys.inbound_requests().is_empty());
}

#[tokio::test]
async fn a_genesys_delivery_that_fails_for_good_emails_the_brand() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let s = setup_with(&["--smtp-url", &smtp.url()], "a-wrong-secret").await;
    s.post_line(&fixture("text.json")).await;
    let mails = smtp.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        mails[0].subject,
        "[System Notification] Brand OA -- LINE Webhook Forward Failure Reminder"
    );
    let text = mails[0].text();
    assert!(text.contains("401 Unauthorized (Genesys login)"), "{text}");
    assert!(
        text.contains(&format!(
            "{}/api/v2/conversations/messages/",
            s.genesys.base_url()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn an_agent_reply_is_pushed_to_the_line_user_with_the_channel_token() {
    let s = setup().await;
    assert_eq!(s.agent_says("gm-1", "Your order ships today.").await, 200);
    let pushes = s.line.wait_for_pushes(1, WAIT).await.unwrap();
    assert_eq!(pushes[0].status, 200, "the fake checks token, key and body");
    assert_eq!(
        pushes[0].json(),
        json!({"to": USER, "messages": [{"type": "text", "text": "Your order ships today."}]})
    );
    assert_eq!(
        pushes[0].request.header("authorization"),
        Some(format!("Bearer {}", fake_line::ACCESS_TOKEN).as_str())
    );
}

#[tokio::test]
async fn an_outbound_message_with_a_wrong_or_missing_signature_is_refused() {
    let s = setup().await;
    let body = fake_genesys::agent_text("gm-x", USER, "spoofed");
    let wrong = fake_genesys::hub_signature("not-the-secret", &body);
    let refused = fake_genesys::post_outbound(&s.outbound_url(), &body, Some(&wrong))
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let unsigned = fake_genesys::post_outbound(&s.outbound_url(), &body, None)
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // A signed message after them is the only one pushed.
    assert_eq!(s.agent_says("gm-ok", "genuine").await, 200);
    s.line.wait_for_pushes(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushes = s.line.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].json()["messages"][0]["text"], "genuine");
}

#[tokio::test]
async fn an_outbound_message_for_an_unknown_set_is_404() {
    let s = setup().await;
    let body = fake_genesys::agent_text("gm-1", USER, "hello");
    let url = format!(
        "{}/api/connector/genesys/fwd_unknown/outbound",
        s.node.ingress_url()
    );
    let answer = fake_genesys::post_outbound_signed(&url, &body)
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

#[tokio::test]
async fn receipts_and_typing_events_are_acknowledged_and_not_pushed() {
    let s = setup().await;
    for body in [
        fake_genesys::receipt("gm-0", USER),
        fake_genesys::typing(USER),
    ] {
        let answer = fake_genesys::post_outbound_signed(&s.outbound_url(), &body)
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(s.agent_says("gm-1", "after the receipt").await, 200);
    s.line.wait_for_pushes(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushes = s.line.pushes();
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].json()["messages"][0]["text"], "after the receipt");
}

#[tokio::test]
async fn a_genesys_retry_of_a_sent_message_reuses_the_retry_key_and_is_not_sent_twice() {
    let s = setup().await;
    assert_eq!(s.agent_says("gm-2", "Thanks for waiting").await, 200);
    s.line.wait_for_pushes(1, WAIT).await.unwrap();
    s.wait_attempts(1, |a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
        .await;
    // Genesys did not see our 200 in time and sends the same message again.
    assert_eq!(s.agent_says("gm-2", "Thanks for waiting").await, 200);
    let pushes = s.line.wait_for_pushes(2, WAIT).await.unwrap();
    assert_eq!(pushes[0].retry_key(), pushes[1].retry_key());
    assert_eq!(pushes[1].status, 409);
    assert_eq!(s.line.sent().len(), 1);
    // 409 means LINE already has it: the second delivery succeeded too.
    let done = s
        .wait_attempts(2, |a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
        .await;
    assert_eq!(done[1].http_status, 409);
}

#[tokio::test]
async fn our_retries_after_line_failures_keep_the_retry_key() {
    let s = setup().await;
    s.line.script(&[500, 429]);
    assert_eq!(s.agent_says("gm-3", "Your refund is on its way").await, 200);
    let pushes = s.line.wait_for_pushes(3, WAIT).await.unwrap();
    let statuses: Vec<u16> = pushes.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [500, 429, 200]);
    let key = pushes[0].retry_key().unwrap();
    assert!(pushes.iter().all(|p| p.retry_key() == Some(key)));
    assert_eq!(s.line.sent().len(), 1);
    let retrying = s
        .wait_attempts(2, |a| a.outcome == v1::AttemptOutcome::Retrying as i32)
        .await;
    let reasons: Vec<&str> = retrying.iter().map(|a| a.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["500 Internal Server Error", "429 Too Many Requests"]
    );
}

#[tokio::test]
async fn a_push_line_refuses_fails_for_good() {
    let s = setup().await;
    s.line.script(&[400]);
    assert_eq!(s.agent_says("gm-4", "hello").await, 200);
    let failed = s
        .wait_attempts(1, |a| a.outcome == v1::AttemptOutcome::Failed as i32)
        .await;
    assert_eq!(failed[0].reason, "400 Bad Request");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(s.line.pushes().len(), 1);
}

#[tokio::test]
async fn hookctl_creates_a_genesys_set_and_shows_it_without_secrets() {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let tenant = api::create_tenant(&client, "Brand").await.unwrap();
    let channel = api::create_channel(&client, &tenant.id, "s3cret")
        .await
        .unwrap();
    let created = hookctl_json(&control.hookctl(&[
        "--json",
        "forwarding",
        "create",
        "--channel",
        &channel.id,
        "--name",
        "contact centre",
        "--genesys-region",
        "mypurecloud.jp",
        "--genesys-client-id",
        "cid",
        "--genesys-client-secret",
        "CLIENT-SECRET-VALUE",
        "--genesys-integration-id",
        "iid",
        "--genesys-signature-secret",
        "SIGNATURE-SECRET-VALUE",
        "--genesys-attribute",
        "market=Japan",
    ]));
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["kind"], "GENESYS_OPEN_MESSAGING");
    let shown = control.hookctl(&["forwarding", "get", id]);
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("https://login.mypurecloud.jp"), "{text}");
    assert!(text.contains("https://api.mypurecloud.jp"), "{text}");
    assert!(text.contains("iid"), "{text}");
    assert!(text.contains("Japan"), "{text}");
    assert!(
        text.contains(&format!("/api/connector/genesys/{id}/outbound")),
        "{text}"
    );
    assert!(!text.contains("CLIENT-SECRET-VALUE"), "{text}");
    assert!(!text.contains("SIGNATURE-SECRET-VALUE"), "{text}");
    let shown = hookctl_json(&control.hookctl(&["--json", "forwarding", "get", id]));
    assert_eq!(shown["genesys"]["clientId"], "cid", "{shown}");
    for json in [&created, &shown] {
        let genesys = json["genesys"].as_object().unwrap();
        assert!(!genesys.contains_key("clientSecret"), "{json}");
        assert!(!genesys.contains_key("outboundSignatureSecret"), "{json}");
    }
}

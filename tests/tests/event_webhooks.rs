//! Outgoing event webhooks end to end: a producer publishes on a node's EventService, the node
//! delivers the event signed per the subscription's scheme, and real receivers verify it (the
//! `standardwebhooks` package, `cryptography`'s Ed25519 for `v1a` and a plain HMAC in Python,
//! `hookplane-verify` in Rust). Also the
//! secrets' rotation, stop / resume / delete, Send test, retries and the attempt log, the system
//! stop of a failing subscription, and zone entitlements.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, DataNode, PyReceiver, Receiver, Respond, Standalone, api::*, eventually,
};
use hookplane_verify::{maac, standard, standard_ed25519};
use prost_types::{Struct, Value, value::Kind};
use serde_json::Value as Json;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(20);
const POINTS: &str = "prize.points_added";

// ---------------------------------------------------------------- helpers

/// `{"line_uid": "U1", "points_count": n}` as a protobuf value.
fn points(n: f64) -> Value {
    let field = |kind| Value { kind: Some(kind) };
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: [
                ("line_uid".to_owned(), field(Kind::StringValue("U1".into()))),
                ("points_count".to_owned(), field(Kind::NumberValue(n))),
            ]
            .into_iter()
            .collect(),
        })),
    }
}

fn event(tenant_id: &str, n: f64, key: &str) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        tenant_id: tenant_id.to_owned(),
        topic: POINTS.to_owned(),
        data: Some(points(n)),
        idempotency_key: key.to_owned(),
    }
}

async fn publish(
    publisher: &Client,
    req: v1::PublishEventRequest,
) -> Result<v1::PublishEventResponse, tonic::Status> {
    publisher
        .events()
        .publish_event(req)
        .await
        .map(tonic::Response::into_inner)
}

/// The configuration revision a node serves, from its `/metrics`.
async fn node_revision(ingress_url: &str) -> Option<u64> {
    let text = reqwest::get(format!("{ingress_url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hookplane_config_revision "))
        .and_then(|v| v.trim().parse().ok())
}

/// The control plane's current revision, as a node connecting now would get it.
async fn control_revision(control_url: &str, node_token: &str) -> u64 {
    let client = Client::connect(control_url, node_token).await.unwrap();
    let mut updates = client
        .config()
        .watch_config(v1::WatchConfigRequest {
            node_id: "event-webhooks-test".into(),
            last_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    updates.message().await.unwrap().unwrap().revision
}

/// Waits until the node at `ingress_url` serves everything committed so far.
async fn sync_node(control_url: &str, node_token: &str, ingress_url: &str) {
    let committed = control_revision(control_url, node_token).await;
    eventually(
        WAIT,
        "the node to catch up with the control plane",
        || async { node_revision(ingress_url).await.filter(|r| *r >= committed) },
    )
    .await
    .unwrap();
}

/// What a Python receiver saw, once it has seen at least `n` requests.
async fn results(receiver: &PyReceiver, n: usize) -> Vec<Json> {
    eventually(WAIT, &format!("{n} request(s) at the receiver"), || async {
        let got = receiver.results().await.ok()?;
        (got.len() >= n).then_some(got)
    })
    .await
    .unwrap()
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A standalone process with one tenant (both zones for a year).
struct Setup {
    sa: Standalone,
    admin: Client,
    publisher: Client,
    tenant: String,
}

async fn setup(extra: &[&str]) -> Setup {
    let sa = Standalone::start_with(extra).await.unwrap();
    let admin = sa.admin().await.unwrap();
    let publisher = sa.publisher().await.unwrap();
    let tenant = create_tenant(&admin, "Brand").await.unwrap().id;
    Setup {
        sa,
        admin,
        publisher,
        tenant,
    }
}

impl Setup {
    async fn subscribe(&self, url: &str, scheme: v1::SignatureScheme) -> v1::Subscription {
        let mut sub = subscription("points", url, &[POINTS]);
        sub.signature_scheme = scheme as i32;
        let created = self
            .admin
            .subscriptions()
            .create_subscription(v1::CreateSubscriptionRequest {
                tenant_id: self.tenant.clone(),
                subscription: Some(sub),
            })
            .await
            .unwrap()
            .into_inner();
        self.sync().await;
        created
    }

    /// A subscription to a Python receiver that knows its share secret.
    async fn subscribe_py(
        &self,
        scheme: v1::SignatureScheme,
    ) -> (v1::Subscription, String, PyReceiver) {
        let receiver = PyReceiver::standard_webhooks().await.unwrap();
        let sub = self.subscribe(&receiver.url("/events"), scheme).await;
        let secret = self.secret(&sub.id).await;
        receiver.set_secrets(&[&secret]).await.unwrap();
        (sub, secret, receiver)
    }

    async fn secret(&self, id: &str) -> String {
        self.revealed(id).await.secret
    }

    async fn revealed(&self, id: &str) -> v1::RevealSecretResponse {
        self.admin
            .subscriptions()
            .reveal_secret(v1::RevealSecretRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner()
    }

    /// A subscription signing with ed25519 to a Python receiver, and its `whpk_` public key
    /// (which the receiver is not told yet).
    async fn subscribe_ed25519(&self) -> (v1::Subscription, String, PyReceiver) {
        let receiver = PyReceiver::standard_webhooks().await.unwrap();
        let sub = self
            .subscribe(
                &receiver.url("/events"),
                v1::SignatureScheme::StandardWebhooksEd25519,
            )
            .await;
        let revealed = self.revealed(&sub.id).await;
        assert!(revealed.secret.is_empty(), "the signing key stays inside");
        (sub, revealed.public_key, receiver)
    }

    async fn set_scheme(&self, id: &str, scheme: v1::SignatureScheme) {
        self.admin
            .subscriptions()
            .update_subscription(v1::UpdateSubscriptionRequest {
                subscription: Some(v1::Subscription {
                    id: id.to_owned(),
                    signature_scheme: scheme as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["signature_scheme".into()],
                }),
            })
            .await
            .unwrap();
        self.sync().await;
    }

    async fn rotate(&self, id: &str, grace: Duration) -> String {
        self.rotate_revealed(id, grace).await.secret
    }

    async fn rotate_revealed(&self, id: &str, grace: Duration) -> v1::RevealSecretResponse {
        let rotated = self
            .admin
            .subscriptions()
            .rotate_secret(v1::RotateSecretRequest {
                id: id.to_owned(),
                grace_period: Some(duration(grace)),
            })
            .await
            .unwrap()
            .into_inner();
        self.sync().await;
        rotated
    }

    async fn get(&self, id: &str) -> v1::Subscription {
        self.admin
            .subscriptions()
            .get_subscription(v1::GetSubscriptionRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner()
    }

    async fn stop(&self, id: &str) {
        self.admin
            .subscriptions()
            .stop_subscription(v1::StopSubscriptionRequest { id: id.to_owned() })
            .await
            .unwrap();
        self.sync().await;
    }

    async fn resume(&self, id: &str) {
        self.admin
            .subscriptions()
            .resume_subscription(v1::ResumeSubscriptionRequest { id: id.to_owned() })
            .await
            .unwrap();
        self.sync().await;
    }

    /// Waits until the node serves everything committed so far.
    async fn sync(&self) {
        let node_token = std::fs::read_to_string(self.sa.dir.path().join("node.token")).unwrap();
        sync_node(
            &self.sa.control_url(),
            node_token.trim(),
            &self.sa.ingress_url(),
        )
        .await;
    }

    async fn publish(&self, n: f64, key: &str) -> v1::PublishEventResponse {
        publish(&self.publisher, event(&self.tenant, n, key))
            .await
            .unwrap()
    }

    async fn attempts(&self, subscription_id: &str) -> Vec<v1::DeliveryAttempt> {
        self.admin
            .deliveries()
            .list_delivery_attempts(v1::ListDeliveryAttemptsRequest {
                subscription_id: subscription_id.to_owned(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .attempts
    }

    /// Waits until the subscription's attempt log satisfies `check`.
    async fn wait_attempts(
        &self,
        subscription_id: &str,
        what: &str,
        check: impl Fn(&[v1::DeliveryAttempt]) -> bool,
    ) -> Vec<v1::DeliveryAttempt> {
        eventually(WAIT, what, || async {
            let attempts = self.attempts(subscription_id).await;
            check(&attempts).then_some(attempts)
        })
        .await
        .unwrap()
    }
}

fn body(result: &Json) -> Json {
    serde_json::from_str(result["body"].as_str().unwrap()).unwrap()
}

// ---------------------------------------------------------------- signing

#[tokio::test]
async fn a_maac_delivery_verifies_with_a_plain_hmac_in_a_real_receiver() {
    let s = setup(&[]).await;
    let (_sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Maac).await;
    let published = s.publish(5.0, "").await;
    assert_eq!(published.matched_subscriptions, 1);
    let got = results(&receiver, 1).await;
    let r = &got[0];
    assert_eq!(r["maac"], serde_json::json!([true]));
    assert_eq!(r["standard"], Json::Null);
    assert_eq!(r["idempotency_key"], published.event_id.as_str());
    assert_eq!(r["content_type"], "application/json; charset=utf-8");
    let envelope = body(r);
    assert_eq!(envelope["topic"], POINTS);
    assert_eq!(
        envelope["data"],
        serde_json::json!({"line_uid": "U1", "points_count": 5})
    );
    assert!(envelope["timestamp"].as_str().unwrap().ends_with("+00:00"));
}

#[tokio::test]
async fn a_standard_webhooks_delivery_verifies_with_the_standardwebhooks_package() {
    let s = setup(&[]).await;
    let (_sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::StandardWebhooks).await;
    let published = s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    let r = &got[0];
    assert_eq!(r["standard"], serde_json::json!([true]));
    assert_eq!(r["maac"], Json::Null);
    assert_eq!(r["webhook_id"], published.event_id.as_str());
    let sent_at: i64 = r["webhook_timestamp"].as_str().unwrap().parse().unwrap();
    assert!((unix_now() - sent_at).abs() < 60);
}

#[tokio::test]
async fn both_delivers_both_header_sets_and_each_verifies() {
    let s = setup(&[]).await;
    let (_sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Both).await;
    let published = s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    let r = &got[0];
    assert_eq!(r["standard"], serde_json::json!([true]));
    assert_eq!(r["maac"], serde_json::json!([true]));
    assert_eq!(r["webhook_id"], published.event_id.as_str());
    assert_eq!(r["idempotency_key"], published.event_id.as_str());
}

/// A well-formed public key whose secret key signs nothing of ours.
fn unrelated_public_key() -> String {
    standard_ed25519::SigningKey::from_bytes(&[7u8; 32])
        .public_key()
        .to_whpk_string()
}

#[tokio::test]
async fn an_ed25519_delivery_verifies_v1a_under_the_revealed_public_key_with_cryptography_and_not_under_another()
 {
    let s = setup(&[]).await;
    let (_sub, public_key, receiver) = s.subscribe_ed25519().await;
    assert!(public_key.starts_with("whpk_"), "{public_key}");
    receiver
        .set_secrets(&[&public_key, &unrelated_public_key()])
        .await
        .unwrap();
    let published = s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    let r = &got[0];
    assert_eq!(r["signature_versions"], serde_json::json!(["v1a"]));
    assert_eq!(r["standard"], serde_json::json!([true, false]));
    assert_eq!(r["maac"], Json::Null);
    assert_eq!(r["webhook_id"], published.event_id.as_str());
    assert_eq!(body(r)["topic"], POINTS);
}

#[tokio::test]
async fn an_ed25519_delivery_is_refused_by_a_receiver_holding_only_another_public_key() {
    let s = setup(&[]).await;
    let (sub, _public_key, receiver) = s.subscribe_ed25519().await;
    receiver
        .set_secrets(&[&unrelated_public_key()])
        .await
        .unwrap();
    s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["standard"], serde_json::json!([false]));
    assert_eq!(got[0]["verified"], false);
    s.wait_attempts(&sub.id, "the 401 in the attempt log", |a| {
        a.iter().any(|a| a.http_status == 401)
    })
    .await;
}

#[tokio::test]
async fn during_a_grace_period_an_ed25519_delivery_carries_a_v1a_signature_per_key_each_valid() {
    let s = setup(&[]).await;
    let (sub, old, receiver) = s.subscribe_ed25519().await;
    let rotated = s.rotate_revealed(&sub.id, Duration::from_secs(3600)).await;
    assert!(rotated.secret.is_empty());
    assert!(rotated.previous_secret_valid_until.is_some());
    let new = rotated.public_key;
    assert_ne!(new, old);
    receiver.set_secrets(&[&new, &old]).await.unwrap();
    s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    assert_eq!(
        got[0]["signature_versions"],
        serde_json::json!(["v1a", "v1a"])
    );
    assert_eq!(got[0]["standard"], serde_json::json!([true, true]));
}

#[tokio::test]
async fn switching_to_ed25519_and_back_gives_a_fresh_key_of_each_kind_that_alone_verifies() {
    let s = setup(&[]).await;
    let (sub, whsec, receiver) = s.subscribe_py(v1::SignatureScheme::StandardWebhooks).await;
    s.set_scheme(&sub.id, v1::SignatureScheme::StandardWebhooksEd25519)
        .await;
    let public_key = s.revealed(&sub.id).await.public_key;
    receiver.set_secrets(&[&public_key, &whsec]).await.unwrap();
    s.publish(1.0, "").await;
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["signature_versions"], serde_json::json!(["v1a"]));
    assert_eq!(got[0]["standard"], serde_json::json!([true, false]));

    s.set_scheme(&sub.id, v1::SignatureScheme::StandardWebhooks)
        .await;
    let fresh = s.secret(&sub.id).await;
    assert!(fresh.starts_with("whsec_"));
    assert_ne!(fresh, whsec);
    receiver
        .set_secrets(&[&fresh, &whsec, &public_key])
        .await
        .unwrap();
    s.publish(2.0, "").await;
    let got = results(&receiver, 2).await;
    assert_eq!(got[1]["signature_versions"], serde_json::json!(["v1"]));
    assert_eq!(got[1]["standard"], serde_json::json!([true, false, false]));
}

// ---------------------------------------------------------------- publishing

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_event_id_and_delivers_nothing_new() {
    let s = setup(&[]).await;
    let (_sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Maac).await;
    let first = s.publish(5.0, "order-1001").await;
    let again = s.publish(5.0, "order-1001").await;
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(again.matched_subscriptions, 1);
    results(&receiver, 1).await;
    let other = s.publish(5.0, "order-1002").await;
    assert_ne!(other.event_id, first.event_id);
    let got = results(&receiver, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["idempotency_key"], first.event_id.as_str());
    assert_eq!(got[1]["idempotency_key"], other.event_id.as_str());
}

#[tokio::test]
async fn an_unknown_tenant_is_not_found() {
    let s = setup(&[]).await;
    let status = publish(&s.publisher, event("tnt_nobody", 1.0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "tenant \"tnt_nobody\" not found");
}

#[tokio::test]
async fn an_unknown_topic_is_invalid_and_names_the_known_ones() {
    let s = setup(&[]).await;
    let mut req = event(&s.tenant, 1.0, "");
    req.topic = "order.created".into();
    let status = publish(&s.publisher, req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("topic: "),
        "{}",
        status.message()
    );
    assert!(status.message().contains("message.first_open"));
}

#[tokio::test]
async fn data_that_is_not_a_json_object_is_invalid() {
    let s = setup(&[]).await;
    let mut req = event(&s.tenant, 1.0, "");
    req.data = Some(Value {
        kind: Some(Kind::NumberValue(3.0)),
    });
    let status = publish(&s.publisher, req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "data: must be a JSON object");
}

#[tokio::test]
async fn a_wrong_publisher_token_is_unauthenticated() {
    let s = setup(&[]).await;
    let wrong = Client::connect(&s.sa.data_grpc_url(), "hp_pub_not-the-token")
        .await
        .unwrap();
    let status = publish(&wrong, event(&s.tenant, 1.0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // The admin token is not a publisher token either.
    let admin_on_node = Client::connect(&s.sa.data_grpc_url(), &s.sa.admin_token)
        .await
        .unwrap();
    let status = publish(&admin_on_node, event(&s.tenant, 1.0, ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn after_a_rotation_without_grace_deliveries_verify_only_with_the_new_secret() {
    let s = setup(&[]).await;
    let (sub, old, receiver) = s.subscribe_py(v1::SignatureScheme::Both).await;
    let new = s.rotate(&sub.id, Duration::ZERO).await;
    assert_ne!(new, old);
    receiver.set_secrets(&[&new, &old]).await.unwrap();
    s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["maac"], serde_json::json!([true, false]));
    assert_eq!(got[0]["standard"], serde_json::json!([true, false]));
    assert_eq!(got[0]["signature_count"], 1);
}

#[tokio::test]
async fn during_a_grace_period_standard_webhooks_carry_two_signatures_both_valid() {
    let s = setup(&[]).await;
    let (sub, old, receiver) = s.subscribe_py(v1::SignatureScheme::StandardWebhooks).await;
    let new = s.rotate(&sub.id, Duration::from_secs(3600)).await;
    receiver.set_secrets(&[&new, &old]).await.unwrap();
    s.publish(5.0, "").await;
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["signature_count"], 2);
    assert_eq!(got[0]["standard"], serde_json::json!([true, true]));
}

#[tokio::test]
async fn a_rotation_reaches_a_second_node_through_the_config_stream() {
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let first = DataNode::start(&control, &[]).await.unwrap();
    let second = DataNode::start(&control, &[]).await.unwrap();
    let tenant = create_tenant(&admin, "Brand").await.unwrap().id;
    let receiver = PyReceiver::standard_webhooks().await.unwrap();
    let mut input = subscription("points", &receiver.url("/events"), &[POINTS]);
    input.signature_scheme = v1::SignatureScheme::Maac as i32;
    let sub = admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: tenant.clone(),
            subscription: Some(input),
        })
        .await
        .unwrap()
        .into_inner();
    let old = admin
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let new = admin
        .subscriptions()
        .rotate_secret(v1::RotateSecretRequest {
            id: sub.id.clone(),
            grace_period: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    receiver.set_secrets(&[&new, &old]).await.unwrap();
    for node in [&first, &second] {
        sync_node(&control.url(), &control.node_token, &node.ingress_url()).await;
    }
    let publisher = Client::connect(&second.grpc_url(), &control.publisher_token)
        .await
        .unwrap();
    let published = publish(&publisher, event(&tenant, 5.0, "")).await.unwrap();
    assert_eq!(published.matched_subscriptions, 1);
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["maac"], serde_json::json!([true, false]));
}

// ---------------------------------------------------------------- stop, resume, delete

#[tokio::test]
async fn a_stopped_subscription_gets_nothing_and_resuming_delivers_only_new_events() {
    let s = setup(&[]).await;
    let (sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Maac).await;
    let before = s.publish(1.0, "").await;
    results(&receiver, 1).await;
    s.stop(&sub.id).await;
    let while_stopped = s.publish(2.0, "").await;
    assert_eq!(while_stopped.matched_subscriptions, 0);
    s.resume(&sub.id).await;
    let after = s.publish(3.0, "").await;
    assert_eq!(after.matched_subscriptions, 1);
    let got = results(&receiver, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_all = receiver.results().await.unwrap();
    assert_eq!(got_all.len(), 2, "{got_all:?}");
    assert_eq!(got[0]["idempotency_key"], before.event_id.as_str());
    assert_eq!(got[1]["idempotency_key"], after.event_id.as_str());
}

#[tokio::test]
async fn a_subscription_stopped_after_publishing_gets_no_retries() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&["--retry-schedule", "300ms"]).await;
    let sub = s
        .subscribe(&receiver.url("/events"), v1::SignatureScheme::Maac)
        .await;
    s.publish(1.0, "").await;
    receiver.wait_for(1, WAIT).await.unwrap();
    s.stop(&sub.id).await;
    let attempts = s
        .wait_attempts(&sub.id, "the stopped delivery to be logged", |a| {
            a.iter().any(|a| a.reason == "subscription stopped")
        })
        .await;
    let dropped = attempts
        .iter()
        .find(|a| a.reason == "subscription stopped")
        .unwrap();
    assert_eq!(dropped.outcome, v1::AttemptOutcome::Failed as i32);
    let seen = receiver.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests().len(), seen);
}

#[tokio::test]
async fn deleting_a_subscription_drops_its_pending_deliveries() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&["--retry-schedule", "300ms"]).await;
    let sub = s
        .subscribe(&receiver.url("/events"), v1::SignatureScheme::Maac)
        .await;
    s.publish(1.0, "").await;
    receiver.wait_for(2, WAIT).await.unwrap();
    s.admin
        .subscriptions()
        .delete_subscription(v1::DeleteSubscriptionRequest { id: sub.id })
        .await
        .unwrap();
    s.sync().await;
    // An attempt already in flight may still land; nothing after it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = receiver.requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), seen);
}

// ---------------------------------------------------------------- send test

#[tokio::test]
async fn send_test_on_a_stopped_subscription_reports_the_answer_and_the_receiver_got_a_signed_sample()
 {
    let s = setup(&[]).await;
    let (sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Both).await;
    s.stop(&sub.id).await;
    let result = s
        .admin
        .subscriptions()
        .send_test_event(v1::SendTestEventRequest {
            id: sub.id.clone(),
            event_type: "receipt.receipt_validated".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(result.success, "{result:?}");
    assert_eq!(result.http_status, 200);
    assert!(result.failure_reason.is_empty());
    assert!(result.latency.is_some());
    assert_eq!(result.response_body, "received");
    assert!(result.event_id.starts_with("evt_"));
    let got = results(&receiver, 1).await;
    let r = &got[0];
    assert_eq!(r["verified"], true);
    assert_eq!(r["maac"], serde_json::json!([true]));
    assert_eq!(r["standard"], serde_json::json!([true]));
    assert_eq!(r["idempotency_key"], result.event_id.as_str());
    assert_eq!(r["body"], result.request_body.as_str());
    let sample = body(r);
    assert_eq!(sample["test"], true);
    assert_eq!(sample["topic"], "receipt.receipt_validated");
    for field in [
        "line_uid",
        "customer_id",
        "campaign_name",
        "number",
        "datetime",
        "upload_datetime",
        "random_number",
        "channel",
        "items",
    ] {
        assert!(sample["data"].get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn send_test_of_an_ed25519_subscription_signs_v1a_that_the_public_key_verifies() {
    let s = setup(&[]).await;
    let (sub, public_key, receiver) = s.subscribe_ed25519().await;
    receiver.set_secrets(&[&public_key]).await.unwrap();
    let result = s
        .admin
        .subscriptions()
        .send_test_event(v1::SendTestEventRequest {
            id: sub.id.clone(),
            event_type: POINTS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(result.success, "{result:?}");
    let got = results(&receiver, 1).await;
    assert_eq!(got[0]["signature_versions"], serde_json::json!(["v1a"]));
    assert_eq!(got[0]["standard"], serde_json::json!([true]));
    assert_eq!(got[0]["webhook_id"], result.event_id.as_str());
}

#[tokio::test]
async fn send_test_reports_a_failing_answer_with_its_reason() {
    let receiver = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let s = setup(&[]).await;
    let sub = s
        .subscribe(&receiver.url("/missing"), v1::SignatureScheme::Maac)
        .await;
    let result = s
        .admin
        .subscriptions()
        .send_test_event(v1::SendTestEventRequest {
            id: sub.id,
            event_type: POINTS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!result.success);
    assert_eq!(result.http_status, 404);
    assert_eq!(result.failure_reason, "404 Not Found");
}

// ---------------------------------------------------------------- retries and attempts

#[tokio::test]
async fn a_503_is_retried_until_it_succeeds_with_the_same_idempotency_key() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&["--retry-schedule", "300ms"]).await;
    let sub = s
        .subscribe(&receiver.url("/events"), v1::SignatureScheme::Maac)
        .await;
    let secret = s.secret(&sub.id).await;
    let published = s.publish(5.0, "").await;
    receiver.wait_for(2, WAIT).await.unwrap();
    receiver.respond(Respond::Status(200));
    s.wait_attempts(&sub.id, "a succeeded attempt", |a| {
        a.iter()
            .any(|a| a.outcome == v1::AttemptOutcome::Succeeded as i32)
    })
    .await;
    let got = receiver.requests();
    assert!(got.len() >= 3);
    for r in &got {
        assert_eq!(
            r.header("cresclab-idempotency-key"),
            Some(published.event_id.as_str())
        );
        assert_eq!(r.body, got[0].body);
        assert!(
            maac::verify(
                secret.as_bytes(),
                &r.body,
                r.header("cresclab-signature").unwrap()
            )
            .is_ok()
        );
    }
}

#[tokio::test]
async fn a_400_is_not_retried() {
    let receiver = Receiver::start_with(Respond::Status(400)).await.unwrap();
    let s = setup(&["--retry-schedule", "200ms"]).await;
    let sub = s
        .subscribe(&receiver.url("/events"), v1::SignatureScheme::Maac)
        .await;
    s.publish(5.0, "").await;
    let attempts = s
        .wait_attempts(&sub.id, "a failed attempt", |a| !a.is_empty())
        .await;
    assert_eq!(attempts[0].outcome, v1::AttemptOutcome::Failed as i32);
    assert_eq!(attempts[0].reason, "400 Bad Request");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn attempts_are_listed_by_subscription_with_its_tenant_and_url() {
    let receiver = Receiver::start_with(Respond::Status(500)).await.unwrap();
    let s = setup(&["--retry-schedule", "200ms", "--max-attempts", "2"]).await;
    let url = receiver.url("/events");
    let sub = s
        .subscribe(&url, v1::SignatureScheme::StandardWebhooks)
        .await;
    let published = s.publish(5.0, "").await;
    let attempts = s
        .wait_attempts(&sub.id, "two attempts", |a| a.len() >= 2)
        .await;
    // Newest first: the last attempt failed for good, the one before was retried.
    assert_eq!(attempts[0].outcome, v1::AttemptOutcome::Failed as i32);
    assert_eq!(attempts[1].outcome, v1::AttemptOutcome::Retrying as i32);
    for a in &attempts {
        assert_eq!(a.subscription_id, sub.id);
        assert_eq!(a.tenant_id, s.tenant);
        assert_eq!(a.url, url);
        assert_eq!(a.event_id, published.event_id);
        assert_eq!(a.http_status, 500);
        assert_eq!(a.reason, "500 Internal Server Error");
        assert!(a.forwarding_set_id.is_empty());
    }
    let secret = standard::Secret::parse(&s.secret(&sub.id).await).unwrap();
    for r in receiver.requests() {
        assert!(
            standard::verify(
                std::slice::from_ref(&secret),
                r.header("webhook-id").unwrap(),
                r.header("webhook-timestamp").unwrap(),
                r.header("webhook-signature").unwrap(),
                &r.body,
                unix_now(),
            )
            .is_ok()
        );
    }
}

#[tokio::test]
async fn a_subscription_failing_for_the_whole_window_is_stopped_by_the_system() {
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let s = setup(&[
        "--retry-schedule",
        "300ms",
        "--subscription-failure-stop-after",
        "2s",
    ])
    .await;
    let sub = s
        .subscribe(&receiver.url("/events"), v1::SignatureScheme::Maac)
        .await;
    s.publish(5.0, "").await;
    let stopped = eventually(WAIT, "the system to stop the subscription", || async {
        let got = s.get(&sub.id).await;
        (got.state == v1::SubscriptionState::Stopped as i32).then_some(got)
    })
    .await
    .unwrap();
    assert!(stopped.stopped_by_system);
    assert!(
        stopped
            .state_reason
            .starts_with("stopped by the system: every delivery attempt has failed since "),
        "{}",
        stopped.state_reason
    );
    assert!(
        stopped
            .state_reason
            .ends_with("(last: 503 Service Unavailable)"),
        "{}",
        stopped.state_reason
    );
    // The stop reached the node: what is published now matches nothing.
    s.sync().await;
    assert_eq!(s.publish(6.0, "").await.matched_subscriptions, 0);
}

// ---------------------------------------------------------------- entitlements

#[tokio::test]
async fn an_expired_zone_stops_delivery_and_the_subscription_says_why() {
    let s = setup(&[]).await;
    let (sub, _secret, receiver) = s.subscribe_py(v1::SignatureScheme::Maac).await;
    s.admin
        .tenants()
        .update_tenant(v1::UpdateTenantRequest {
            tenant: Some(v1::Tenant {
                id: s.tenant.clone(),
                entitlements: Some(v1::Entitlements {
                    zones: vec![zone(v1::Zone::Zone1, -60), zone(v1::Zone::Zone2, 365 * DAY)],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["entitlements.zones".into()],
            }),
        })
        .await
        .unwrap();
    s.sync().await;
    let published = s.publish(5.0, "").await;
    assert_eq!(published.matched_subscriptions, 0);
    let got = s.get(&sub.id).await;
    assert_eq!(got.state, v1::SubscriptionState::Active as i32);
    assert!(
        got.state_reason.starts_with(&format!(
            "event type \"{POINTS}\" needs ZONE_1, whose entitlement ended at "
        )),
        "{}",
        got.state_reason
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.results().await.unwrap().is_empty());
}

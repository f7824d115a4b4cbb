//! EventService on a node in-process: publishing, the signature of what is sent (checked with
//! `hookplane-verify`), and what happens to queued events when their subscription changes.

mod support;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hookplane_proto::v1::{
    AttemptOutcome, ConfigResource, NodeSecret, NodeSubscription, NodeTenant, PublishEventRequest,
    PublishEventResponse, SignatureScheme, SubscriptionState, Zone, ZoneEntitlement,
    config_resource::Resource, event_service_client::EventServiceClient,
};
use hookplane_verify::{maac, standard};
use prost_types::{Struct, Value, value::Kind};
use support::*;
use tonic::{Code, Status};

const WAIT: Duration = Duration::from_secs(10);
const SHARE_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const NEXT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOPIC: &str = "prize.points_added";

fn entitled_tenant() -> ConfigResource {
    let until = SystemTime::now() + Duration::from_secs(365 * 86_400);
    ConfigResource {
        resource: Some(Resource::Tenant(NodeTenant {
            id: TENANT.to_owned(),
            display_name: "Brand".to_owned(),
            zones: vec![ZoneEntitlement {
                zone: Zone::Zone1 as i32,
                valid_until: Some(until.into()),
            }],
            purge_before: None,
        })),
    }
}

fn subscription_with(
    url: &str,
    scheme: SignatureScheme,
    state: SubscriptionState,
    secret: &str,
) -> ConfigResource {
    ConfigResource {
        resource: Some(Resource::Subscription(NodeSubscription {
            id: "sub_test".to_owned(),
            tenant_id: TENANT.to_owned(),
            name: "points".to_owned(),
            url: url.to_owned(),
            event_types: vec![TOPIC.to_owned()],
            state: state as i32,
            signature_scheme: scheme as i32,
            secrets: vec![NodeSecret {
                secret: secret.to_owned(),
                valid_until: None,
            }],
        })),
    }
}

fn subscription(url: &str, scheme: SignatureScheme) -> ConfigResource {
    subscription_with(url, scheme, SubscriptionState::Active, SHARE_SECRET)
}

fn data() -> Value {
    let field = |kind| Value { kind: Some(kind) };
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: [
                ("line_uid".to_owned(), field(Kind::StringValue("U1".into()))),
                ("points_count".to_owned(), field(Kind::NumberValue(5.0))),
            ]
            .into_iter()
            .collect(),
        })),
    }
}

fn request(key: &str) -> PublishEventRequest {
    PublishEventRequest {
        tenant_id: TENANT.to_owned(),
        topic: TOPIC.to_owned(),
        data: Some(data()),
        idempotency_key: key.to_owned(),
    }
}

async fn publish_with(
    node: &Node,
    token: &str,
    req: PublishEventRequest,
) -> Result<PublishEventResponse, Status> {
    let mut client = EventServiceClient::connect(format!("http://{}", node.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(req);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    client
        .publish_event(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn publish(node: &Node, req: PublishEventRequest) -> PublishEventResponse {
    publish_with(node, PUBLISHER_TOKEN, req).await.unwrap()
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers[name].to_str().unwrap()
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn verifies_standard(r: &Received, secret: &str) -> bool {
    standard::verify(
        &[standard::Secret::parse(secret).unwrap()],
        header(r, "webhook-id"),
        header(r, "webhook-timestamp"),
        header(r, "webhook-signature"),
        &r.body,
        now_unix(),
    )
    .is_ok()
}

#[tokio::test]
async fn what_the_node_signs_verifies_with_hookplane_verify() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Both),
    ])
    .await;
    let node = Node::start(&control).await;
    let published = publish(&node, request("")).await;
    assert_eq!(published.matched_subscriptions, 1);
    let got = receiver.wait_for(1, WAIT).await;
    let r = &got[0];
    assert!(
        maac::verify(
            SHARE_SECRET.as_bytes(),
            &r.body,
            header(r, "cresclab-signature")
        )
        .is_ok()
    );
    assert_eq!(header(r, "cresclab-idempotency-key"), published.event_id);
    assert_eq!(header(r, "webhook-id"), published.event_id);
    assert!(verifies_standard(r, SHARE_SECRET));
    assert_eq!(header(r, "content-type"), "application/json; charset=utf-8");
}

#[tokio::test]
async fn the_body_is_the_envelope_with_the_data_as_given() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Maac),
    ])
    .await;
    let node = Node::start(&control).await;
    publish(&node, request("")).await;
    let got = receiver.wait_for(1, WAIT).await;
    let body = std::str::from_utf8(&got[0].body).unwrap();
    assert!(body.starts_with(r#"{"timestamp":""#), "{body}");
    assert!(
        body.ends_with(
            r#"","topic":"prize.points_added","data":{"line_uid":"U1","points_count":5}}"#
        ),
        "{body}"
    );
}

#[tokio::test]
async fn a_retry_sends_the_same_bytes_and_event_id_with_a_fresh_signature_time() {
    let receiver = Receiver::start(Answer::Sequence(vec![503, 200])).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::StandardWebhooks),
    ])
    .await;
    let node = Node::start(&control).await;
    publish(&node, request("")).await;
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(header(&got[0], "webhook-id"), header(&got[1], "webhook-id"));
    assert!(verifies_standard(&got[1], SHARE_SECRET));
}

#[tokio::test]
async fn a_rotation_applies_to_events_already_queued() {
    let receiver = Receiver::start(Answer::Sequence(vec![503, 200])).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Maac),
    ])
    .await;
    let node = Node::start(&control).await;
    publish(&node, request("")).await;
    receiver.wait_for(1, WAIT).await;
    control.change(vec![subscription_with(
        &receiver.url(),
        SignatureScheme::Maac,
        SubscriptionState::Active,
        NEXT_SECRET,
    )]);
    let got = receiver.wait_for(2, WAIT).await;
    let retried = &got[1];
    let signature = header(retried, "cresclab-signature");
    assert!(maac::verify(NEXT_SECRET.as_bytes(), &retried.body, signature).is_ok());
    assert!(maac::verify(SHARE_SECRET.as_bytes(), &retried.body, signature).is_err());
}

#[tokio::test]
async fn a_subscription_stopped_after_publishing_gets_no_more_attempts() {
    let receiver = Receiver::start(Answer::Status(503)).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Maac),
    ])
    .await;
    let node = Node::start(&control).await;
    publish(&node, request("")).await;
    receiver.wait_for(1, WAIT).await;
    control.change(vec![subscription_with(
        &receiver.url(),
        SignatureScheme::Maac,
        SubscriptionState::Stopped,
        SHARE_SECRET,
    )]);
    let stopped = control
        .wait_attempt(WAIT, |a| a.reason == "subscription stopped")
        .await;
    assert_eq!(stopped.outcome, AttemptOutcome::Failed as i32);
    assert_eq!(stopped.subscription_id, "sub_test");
    let seen = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.got().len(), seen);
}

#[tokio::test]
async fn a_deleted_subscriptions_queued_events_are_dropped() {
    let receiver = Receiver::start(Answer::Status(503)).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Maac),
    ])
    .await;
    let node = Node::start(&control).await;
    publish(&node, request("")).await;
    receiver.wait_for(1, WAIT).await;
    control.set(vec![entitled_tenant()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = receiver.got().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.got().len(), seen);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_event_and_sends_nothing_new() {
    let receiver = Receiver::start(Answer::Status(200)).await;
    let control = FakeControl::start(vec![
        entitled_tenant(),
        subscription(&receiver.url(), SignatureScheme::Maac),
    ])
    .await;
    let node = Node::start(&control).await;
    let first = publish(&node, request("order-1")).await;
    let again = publish(&node, request("order-1")).await;
    assert_eq!(first, again);
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 1);
}

#[tokio::test]
async fn a_wrong_publisher_token_is_unauthenticated() {
    let control = FakeControl::start(vec![entitled_tenant()]).await;
    let node = Node::start(&control).await;
    let status = publish_with(&node, "hp_pub_wrong", request(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "missing or invalid publisher token");
}

#[tokio::test]
async fn publishing_before_the_first_snapshot_is_unavailable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let node = Node::spawn(url, test_options(), Arc::new(tempfile::tempdir().unwrap())).await;
    let status = publish_with(&node, PUBLISHER_TOKEN, request(""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn an_unknown_tenant_is_not_found() {
    let control = FakeControl::start(vec![entitled_tenant()]).await;
    let node = Node::start(&control).await;
    let status = publish_with(
        &node,
        PUBLISHER_TOKEN,
        PublishEventRequest {
            tenant_id: "tnt_nobody".into(),
            ..request("")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "tenant \"tnt_nobody\" not found");
}

#[tokio::test]
async fn an_unknown_topic_is_invalid_and_the_catalog_is_listed() {
    let control = FakeControl::start(vec![entitled_tenant()]).await;
    let node = Node::start(&control).await;
    let status = publish_with(
        &node,
        PUBLISHER_TOKEN,
        PublishEventRequest {
            topic: "order.created".into(),
            ..request("")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with(
            "topic: unknown topic \"order.created\" (known: receipt.receipt_validated"
        ),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn data_that_is_not_an_object_is_invalid() {
    let control = FakeControl::start(vec![entitled_tenant()]).await;
    let node = Node::start(&control).await;
    for data in [
        None,
        Some(Value {
            kind: Some(Kind::StringValue("points".into())),
        }),
    ] {
        let status = publish_with(
            &node,
            PUBLISHER_TOKEN,
            PublishEventRequest {
                data,
                ..request("")
            },
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "data: must be a JSON object");
    }
}

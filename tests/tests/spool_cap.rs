//! The spool's cap and each tenant's share of it, on a real node: a tenant whose endpoints are
//! down is refused once it holds its share (503 with Retry-After to LINE, RESOURCE_EXHAUSTED to
//! PublishEvent, counted in /metrics, logged once a minute) while the other tenants are served,
//! and is served again once its backlog is delivered.

use std::{collections::HashSet, time::Duration};

use hookplane_client::{Client, v1};
use hookplane_tests::{ControlProcess, DataNode, Receiver, Respond, api::*, eventually, fixture};
use prost_types::{Struct, Value, value::Kind};
use tonic::Code;

/// Generous: a target that comes back is probed again after its breaker's rest (up to a minute).
const WAIT: Duration = Duration::from_secs(90);
const POINTS: &str = "prize.points_added";
/// The id `text.json` carries, replaced per event.
const FIXTURE_EVENT_ID: &str = "01JGKZ7Q3N8V5T2R6W9X4Y1B0C";
/// 1 % of 256 MiB is about 2.6 MB: some twenty-five of these requests.
const BIG_TEXT: usize = 100_000;
/// A node with the smallest cap and a 1 % share; failing attempts come back every 250 ms and
/// never run out, so a backlog waits for its target instead of being parked.
const NODE_ARGS: &[&str] = &[
    "--spool-max-bytes",
    "256MiB",
    "--spool-tenant-share",
    "1%",
    "--retry-schedule",
    "250ms",
    "--max-attempts",
    "100000",
];

/// A LINE webhook of one text message of `text_bytes` characters, event number `n`.
fn text_event(n: u32, text_bytes: usize) -> Vec<u8> {
    String::from_utf8(fixture("text.json"))
        .unwrap()
        .replace(FIXTURE_EVENT_ID, &webhook_event_id(n))
        .replace("Hi, where is my order #A1234?", &"x".repeat(text_bytes))
        .into_bytes()
}

fn webhook_event_id(n: u32) -> String {
    format!("01JGKZ7Q3N8V5T2R6W9X{n:06}")
}

/// The webhookEventId a forwarded body carries.
fn event_in(body: &[u8]) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(body["events"][0]["webhookEventId"].as_str()?.to_owned())
}

fn points_event(tenant_id: &str) -> v1::PublishEventRequest {
    let field = |kind| Value { kind: Some(kind) };
    v1::PublishEventRequest {
        tenant_id: tenant_id.to_owned(),
        topic: POINTS.to_owned(),
        data: Some(field(Kind::StructValue(Struct {
            fields: [
                ("line_uid".to_owned(), field(Kind::StringValue("U1".into()))),
                ("points_count".to_owned(), field(Kind::NumberValue(10.0))),
            ]
            .into_iter()
            .collect(),
        }))),
        idempotency_key: String::new(),
    }
}

/// A tenant with a channel (signed with the fixtures' secret) forwarding to `url`.
struct Brand {
    tenant: String,
    channel: String,
}

async fn brand(admin: &Client, name: &str, url: &str) -> Brand {
    let tenant = create_tenant(admin, name).await.unwrap().id;
    let channel = create_channel(admin, &tenant, hookplane_tests::FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap()
        .id;
    create_forwarding_set(admin, &channel, url).await.unwrap();
    Brand { tenant, channel }
}

async fn post(node: &DataNode, channel: &str, body: &[u8]) -> reqwest::Response {
    hookplane_tests::ingress::post_signed(&node.ingress_url(), channel, body)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_over_its_share_gets_503_while_others_are_served() {
    let a_target = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let b_target = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let a = brand(&admin, "Brand A", &a_target.url("/line")).await;
    let b = brand(&admin, "Brand B", &b_target.url("/line")).await;
    admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: a.tenant.clone(),
            subscription: Some(subscription("points", &a_target.url("/events"), &[POINTS])),
        })
        .await
        .unwrap();
    let node = DataNode::start(&control, NODE_ARGS).await.unwrap();
    for channel in [&a.channel, &b.channel] {
        hookplane_tests::ingress::wait_for_channel(&node.ingress_url(), channel)
            .await
            .unwrap();
    }
    let publisher = Client::connect(&node.grpc_url(), &control.publisher_token)
        .await
        .unwrap();
    // The node knows A's subscription once an event for A matches it.
    eventually(WAIT, "the node to know A's subscription", || async {
        let published = publisher
            .events()
            .publish_event(points_event(&a.tenant))
            .await
            .ok()?;
        (published.into_inner().matched_subscriptions == 1).then_some(())
    })
    .await
    .unwrap();

    // A's target is down: its requests are stored until A holds its share, then refused: big
    // ones first, then small ones and published events until not even those fit.
    let mut acked = Vec::new();
    let mut n = 0;
    let mut a_refused: u64 = 0;
    for text in [BIG_TEXT, 10] {
        let refused = loop {
            assert!(n < 1_000, "A was never refused");
            n += 1;
            let answer = post(&node, &a.channel, &text_event(n, text)).await;
            match answer.status().as_u16() {
                200 => acked.push(webhook_event_id(n)),
                503 => break answer,
                other => panic!("A's webhook got {other}"),
            }
        };
        a_refused += 1;
        assert_eq!(
            refused
                .headers()
                .get("retry-after")
                .unwrap()
                .to_str()
                .unwrap(),
            "60"
        );
    }
    assert!(acked.len() > 2, "A was refused before it held anything");
    let status = loop {
        match publisher
            .events()
            .publish_event(points_event(&a.tenant))
            .await
        {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(&a.tenant), "{}", status.message());
    a_refused += 1;
    for _ in 0..3 {
        n += 1;
        let answer = post(&node, &a.channel, &text_event(n, 10)).await;
        assert_eq!(answer.status(), 503, "A's request once it holds its share");
        a_refused += 1;
    }

    // B, whose target is down too, is served all the same.
    let b_event = post(&node, &b.channel, &text_event(1_000, 10)).await;
    assert_eq!(b_event.status(), 200, "B's webhook while A is refused");

    let refusals = node
        .metric(&format!(
            "hookplane_spool_refused_total{{tenant=\"{}\",limit=\"tenant_share\"}}",
            a.tenant
        ))
        .await
        .unwrap();
    assert_eq!(refusals, Some(a_refused));
    let b_refusals = node
        .metric(&format!(
            "hookplane_spool_refused_total{{tenant=\"{}\",limit=\"tenant_share\"}}",
            b.tenant
        ))
        .await
        .unwrap();
    assert_eq!(b_refusals, None);
    let log_lines = node
        .log()
        .lines()
        .filter(|l| l.contains("new deliveries refused") && l.contains(&a.tenant))
        .count();
    assert!(
        log_lines >= 1 && (log_lines as u64) < a_refused,
        "{log_lines} log lines for {a_refused} refusals"
    );

    // B's target comes up: its delivery arrives.
    let b_seen = b_target.requests().len();
    b_target.respond(Respond::Status(200));
    let b_got = b_target.wait_for(b_seen + 1, WAIT).await.unwrap();
    assert_eq!(
        event_in(&b_got[b_seen].body),
        Some(webhook_event_id(1_000)),
        "B's delivery once its target is up"
    );

    // A's target comes up: once its backlog is delivered, A is served again.
    let a_seen = a_target.requests().len();
    a_target.respond(Respond::Status(200));
    let mut next = 10_000;
    eventually(WAIT, "A to be served again", || {
        next += 1;
        let body = text_event(next, 10);
        let (node, channel) = (&node, &a.channel);
        async move {
            let answer = post(node, channel, &body).await;
            if answer.status() == 200 {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            None
        }
    })
    .await
    .unwrap();
    // Every request A got a 200 for reaches its target once it is up.
    eventually(WAIT, "A's backlog at its target", || async {
        let delivered: HashSet<String> = a_target.requests()[a_seen..]
            .iter()
            .filter_map(|r| event_in(&r.body))
            .collect();
        acked.iter().all(|id| delivered.contains(id)).then_some(())
    })
    .await
    .unwrap();
}

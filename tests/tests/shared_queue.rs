//! Data-plane nodes sharing one queue on NATS JetStream (`--queue nats://...`), as processes, with
//! real `nats-server`s of the tests' own (one, or a cluster of three with R3 streams): a node
//! killed for good loses nothing it acknowledged, a NATS server lost from three changes nothing,
//! NATS gone means 503 and NATS back means service, and duplicates, idempotency keys and
//! RetryDelivery hold across nodes.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, DataNode, Receiver, Respond, api::*, eventually, fixture, ingress,
    nats::NatsCluster,
};
use prost_types::{Struct, Value, value::Kind};

const WAIT: Duration = Duration::from_secs(45);
/// A job handed to a node that dies comes back to the others after this.
const ACK_WAIT: &str = "4s";

fn node_args<'a>(queue: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "--queue",
        queue,
        "--node-id",
        id,
        "--nats-ack-wait",
        ACK_WAIT,
        "--retry-schedule",
        "300ms",
    ]
}

async fn post(node: &DataNode, channel: &str, body: &[u8]) -> u16 {
    // A node being killed answers nothing: count that as 502.
    ingress::post_signed(&node.ingress_url(), channel, body)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(502)
}

/// The `webhookEventId` of each forward the receiver got, with how often it came.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for request in receiver.requests() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        if let Some(id) = body["events"][0]["webhookEventId"].as_str() {
            *seen.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    seen
}

fn event_id_of(body: &[u8]) -> String {
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    body["events"][0]["webhookEventId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Waits until every id in `acknowledged` reached the receiver; reports duplicates.
async fn every_acknowledged_event_arrives(receiver: &Receiver, acknowledged: &HashSet<String>) {
    eventually(WAIT, "every acknowledged event at the receiver", || async {
        let seen = arrivals(receiver);
        acknowledged
            .iter()
            .all(|id| seen.contains_key(id))
            .then_some(())
    })
    .await
    .unwrap();
    let duplicates: Vec<_> = arrivals(receiver)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    // At-least-once: a job a dead node had in flight may come twice. Reported, not failed.
    eprintln!(
        "{} acknowledged events delivered; {} delivered more than once: {duplicates:?}",
        acknowledged.len(),
        duplicates.len()
    );
}

struct Brand {
    control: ControlProcess,
    admin: Client,
    channel: String,
    set: String,
}

impl Brand {
    /// The attempt log of the brand's forwarding set, newest first; `None` while unreachable.
    async fn attempts(&self) -> Option<Vec<v1::DeliveryAttempt>> {
        let page = self
            .admin
            .deliveries()
            .list_delivery_attempts(v1::ListDeliveryAttemptsRequest {
                forwarding_set_id: self.set.clone(),
                page_size: 500,
                ..Default::default()
            })
            .await
            .ok()?;
        Some(page.into_inner().attempts)
    }
}

async fn brand(receiver: &Receiver) -> Brand {
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let (channel, sets) = channel_forwarding_to(&admin, &[receiver.url("/crm")])
        .await
        .unwrap();
    Brand {
        control,
        admin,
        channel,
        set: sets[0].clone(),
    }
}

async fn nodes(brand: &Brand, queue: &str, ids: &[&str]) -> Vec<DataNode> {
    let mut nodes = Vec::new();
    for id in ids {
        let node = DataNode::start(&brand.control, &node_args(queue, id))
            .await
            .unwrap();
        ingress::wait_for_channel(&node.ingress_url(), &brand.channel)
            .await
            .unwrap();
        nodes.push(node);
    }
    nodes
}

#[tokio::test]
async fn three_nodes_lose_no_acknowledged_event_when_one_is_killed_for_good_under_load() {
    let nats = NatsCluster::single().unwrap();
    // Slow answers keep forwards in flight on every node when one dies.
    let receiver = Receiver::start_with(Respond::Slowly(Duration::from_millis(300), 200))
        .await
        .unwrap();
    let brand = brand(&receiver).await;
    let mut nodes = nodes(&brand, &nats.queue_flag(), &["node_a", "node_b", "node_c"]).await;
    let mut acknowledged = HashSet::new();
    let mut killed = false;
    for n in 0..90u32 {
        if n == 45 {
            // kill -9, never restarted: its leased jobs must come back to the others.
            nodes[1].kill().await;
            killed = true;
        }
        let node = &nodes[n as usize % 3];
        let body = ingress::text_event(n);
        match post(node, &brand.channel, &body).await {
            200 => {
                acknowledged.insert(event_id_of(&body));
            }
            status => assert!(
                killed && n as usize % 3 == 1,
                "a live node answered {status} to event {n}"
            ),
        }
    }
    assert_eq!(acknowledged.len(), 75);
    every_acknowledged_event_arrives(&receiver, &acknowledged).await;
}

#[tokio::test]
async fn events_node_a_took_while_the_receiver_was_down_are_delivered_by_node_b_after_a_is_gone() {
    let nats = NatsCluster::single().unwrap();
    let receiver = Receiver::start_with(Respond::Status(503)).await.unwrap();
    let brand = brand(&receiver).await;
    let queue = nats.queue_flag();
    let mut a = nodes(&brand, &queue, &["node_a"]).await.remove(0);
    let mut acknowledged = HashSet::new();
    for n in 0..10 {
        let body = ingress::text_event(n);
        assert_eq!(post(&a, &brand.channel, &body).await, 200);
        acknowledged.insert(event_id_of(&body));
    }
    // Node A attempts them (until the target's breaker opens) and dies with them in its hands.
    // Its attempt counter moves only once an attempt's record is in the shared stream, so the
    // five are stored when it dies (the receiver seeing them would not say so).
    eventually(WAIT, "node A's five failed attempts stored", || async {
        let retrying = a
            .metric("hookplane_delivery_attempts_total{outcome=\"retrying\"}")
            .await
            .ok()??;
        (retrying >= 5).then_some(())
    })
    .await
    .unwrap();
    a.kill().await;
    // No node is alive: whatever arrives from here on was sent by node B.
    receiver.respond(Respond::Status(200));
    let failed_before = receiver.requests().len();
    let _b = nodes(&brand, &queue, &["node_b"]).await;
    eventually(
        WAIT,
        "every event delivered after node A is gone",
        || async {
            let delivered: HashSet<String> = receiver.requests()[failed_before..]
                .iter()
                .filter_map(|r| {
                    let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                    Some(body["events"][0]["webhookEventId"].as_str()?.to_owned())
                })
                .collect();
            acknowledged.is_subset(&delivered).then_some(())
        },
    )
    .await
    .unwrap();
    // The attempts node A made before it died reach the attempt log all the same.
    eventually(
        WAIT,
        "node A's failed attempts in the attempt log",
        || async {
            let attempts = brand.attempts().await?;
            let by_a = attempts
                .iter()
                .filter(|a| a.node_id == "node_a" && a.http_status == 503)
                .count();
            (by_a >= 5).then_some(())
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn with_every_nats_server_down_ingress_answers_503_and_serves_again_once_nats_is_back() {
    let mut nats = NatsCluster::single().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let brand = brand(&receiver).await;
    let node = nodes(&brand, &nats.queue_flag(), &["node_a"])
        .await
        .remove(0);
    let before = ingress::text_event(1);
    assert_eq!(post(&node, &brand.channel, &before).await, 200);

    nats.servers[0].kill();
    // Never a 200 for work that is not stored.
    assert_eq!(
        post(&node, &brand.channel, &ingress::text_event(2)).await,
        503
    );

    nats.servers[0].restart().unwrap();
    let after = ingress::text_event(3);
    eventually(WAIT, "the node to serve again with NATS back", || async {
        (post(&node, &brand.channel, &after).await == 200).then_some(())
    })
    .await
    .unwrap();
    let acknowledged: HashSet<String> = [event_id_of(&before), event_id_of(&after)].into();
    every_acknowledged_event_arrives(&receiver, &acknowledged).await;
}

#[tokio::test]
async fn one_nats_server_of_three_killed_under_load_ingress_keeps_answering_200_and_loses_nothing()
{
    let mut nats = NatsCluster::start(3).unwrap();
    let receiver = Receiver::start().await.unwrap();
    let brand = brand(&receiver).await;
    let queue = nats.queue_flag();
    let mut args = node_args(&queue, "node_a");
    args.extend(["--nats-stream-replicas", "3"]);
    let node = DataNode::start(&brand.control, &args).await.unwrap();
    ingress::wait_for_channel(&node.ingress_url(), &brand.channel)
        .await
        .unwrap();
    let mut acknowledged = HashSet::new();
    let mut refused = Vec::new();
    // The worst server to lose: one leading a jobs stream (each leads one: the node spreads
    // them). That stream elects a new leader, seconds longer than LINE waits for its answer;
    // enqueues meanwhile go to the other streams.
    // The node spreads the leaders in the background once it runs.
    let streams = ["hookplane_jobs_0", "hookplane_jobs_1", "hookplane_jobs_2"];
    let spread = eventually(WAIT, "the jobs streams' leaders spread", || async {
        let mut leaders = HashSet::new();
        for stream in streams {
            leaders.insert(nats.leader_of(stream).await.ok()?);
        }
        (leaders.len() == streams.len()).then_some(())
    })
    .await;
    assert!(spread.is_ok(), "{spread:?}\n{}", node.log());
    let leader = nats.leader_of("hookplane_jobs_0").await.unwrap();
    for n in 0..60u32 {
        if n == 20 {
            nats.servers[leader].kill();
        }
        let body = ingress::text_event(n);
        match post(&node, &brand.channel, &body).await {
            200 => {
                acknowledged.insert(event_id_of(&body));
            }
            503 => refused.push(n),
            status => panic!("event {n} answered {status}"),
        }
    }
    assert_eq!(
        refused,
        Vec::<u32>::new(),
        "events answered 503 after a server was lost\n{}",
        nats.logs()
    );
    every_acknowledged_event_arrives(&receiver, &acknowledged).await;
}

#[tokio::test]
async fn a_line_redelivery_reaching_another_node_is_forwarded_once() {
    let nats = NatsCluster::single().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let brand = brand(&receiver).await;
    let nodes = nodes(&brand, &nats.queue_flag(), &["node_a", "node_b"]).await;
    let body = fixture("text.json");
    assert_eq!(post(&nodes[0], &brand.channel, &body).await, 200);
    receiver.wait_for(1, WAIT).await.unwrap();
    // LINE sends the same webhook again; the load balancer picks the other node.
    assert_eq!(post(&nodes[1], &brand.channel, &body).await, 200);
    let marker = ingress::text_event(7);
    assert_eq!(post(&nodes[1], &brand.channel, &marker).await, 200);
    receiver.wait_for(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = arrivals(&receiver);
    assert_eq!(seen[&event_id_of(&body)], 1, "{seen:?}");
    assert_eq!(receiver.requests().len(), 2);
}

fn points_event(tenant_id: &str, key: &str) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        tenant_id: tenant_id.to_owned(),
        topic: "prize.points_added".to_owned(),
        data: Some(Value {
            kind: Some(Kind::StructValue(Struct {
                fields: [(
                    "points_count".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(5.0)),
                    },
                )]
                .into_iter()
                .collect(),
            })),
        }),
        idempotency_key: key.to_owned(),
    }
}

#[tokio::test]
async fn a_publish_repeated_with_its_idempotency_key_on_another_node_is_delivered_once() {
    let nats = NatsCluster::single().unwrap();
    let receiver = Receiver::start().await.unwrap();
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let tenant = create_tenant(&admin, "Brand").await.unwrap().id;
    admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: tenant.clone(),
            subscription: Some(subscription(
                "points",
                &receiver.url("/events"),
                &["prize.points_added"],
            )),
        })
        .await
        .unwrap();
    let queue = nats.queue_flag();
    let a = DataNode::start(&control, &node_args(&queue, "node_a"))
        .await
        .unwrap();
    let b = DataNode::start(&control, &node_args(&queue, "node_b"))
        .await
        .unwrap();
    let mut published = Vec::new();
    for node in [&a, &b] {
        let publisher = Client::connect(&node.grpc_url(), &control.publisher_token)
            .await
            .unwrap();
        let answer = eventually(WAIT, "the node to accept the publish", || async {
            publisher
                .events()
                .publish_event(points_event(&tenant, "order-7"))
                .await
                .ok()
                .map(tonic::Response::into_inner)
                .filter(|r| r.matched_subscriptions == 1)
        })
        .await
        .unwrap();
        published.push(answer.event_id);
        receiver.wait_for(1, WAIT).await.unwrap();
    }
    assert_eq!(published[0], published[1]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn retry_delivery_works_whichever_node_parked_the_failure() {
    let nats = NatsCluster::single().unwrap();
    // 400 fails for good at once.
    let receiver = Receiver::start_with(Respond::Status(400)).await.unwrap();
    let brand = brand(&receiver).await;
    let queue = nats.queue_flag();
    let mut a = nodes(&brand, &queue, &["node_a"]).await.remove(0);
    assert_eq!(post(&a, &brand.channel, &fixture("text.json")).await, 200);
    let failed = eventually(WAIT, "the delivery failed for good", || async {
        brand
            .attempts()
            .await?
            .into_iter()
            .find(|a| a.outcome == v1::AttemptOutcome::Failed as i32)
    })
    .await
    .unwrap();
    a.kill().await;
    let _b = nodes(&brand, &queue, &["node_b"]).await;
    receiver.respond(Respond::Status(200));
    brand
        .admin
        .deliveries()
        .retry_delivery(v1::RetryDeliveryRequest {
            id: failed.delivery_id.clone(),
        })
        .await
        .unwrap();
    let got = receiver.wait_for(2, WAIT).await.unwrap();
    assert_eq!(got[1].body, got[0].body);
}

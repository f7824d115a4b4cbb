//! `publish`: EventService.PublishEvent on the node's gRPC port (publisher token from the data
//! dir), each event matching 3 subscriptions whose signed deliveries land on local receivers. The
//! baseline forwarder gets the same event as an HTTP POST and fans it out to the same receivers.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, bail};
use bytes::Bytes;
use hookplane_client::{Client, v1};
use prost_types::{Struct, Value, value::Kind};

use crate::{
    baseline::Baseline,
    binary, http_client,
    load::{self, Fire},
    plan::Plan,
    queue_mode::QueueMode,
    receivers::Receivers,
    report,
    service::{self, Standalone},
};

use super::{Sink, create_tenant, run_steps, warm_up};

const SUBSCRIPTIONS: usize = 3;
const TOPIC: &str = "receipt.receipt_validated";

pub async fn run(plan: &Plan) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    let receivers = Receivers::counting(SUBSCRIPTIONS).await?;
    let sink = || {
        Some(Sink {
            receivers: &receivers,
            fanout: SUBSCRIPTIONS as u64,
        })
    };
    let mut ours = Vec::new();
    for mode in QueueMode::ALL {
        eprintln!("publish: {} ({mode:?} queue)", mode.label());
        let backend = mode.start()?;
        let mut standalone = Standalone::start_with(&binary, &backend.flags()).await?;
        let admin = standalone.admin().await?;
        let tenant = subscribe(&admin, standalone.ingress, &receivers.urls()).await?;
        let publisher = Client::connect(
            &format!("http://{}", standalone.grpc),
            &standalone.token("publisher.token")?,
        )
        .await?;
        let answer = publisher
            .events()
            .publish_event(request(&tenant, &format!("bench-probe-{}", mode.label())))
            .await
            .context("publishing a probe event")?;
        let matched = answer.into_inner().matched_subscriptions;
        if matched as usize != SUBSCRIPTIONS {
            bail!("a published event matched {matched} subscriptions, not {SUBSCRIPTIONS}");
        }
        let fire = publish_fire(publisher, tenant);
        warm_up(&fire, sink()).await?;
        let rows = run_steps(
            plan,
            &plan.publish_steps,
            &standalone.process,
            &format!("publish-{}", mode.label()),
            &fire,
            sink(),
        )
        .await;
        standalone.process.stop().await;
        ours.push(rows);
    }

    eprintln!("publish: baseline");
    let mut baseline = Baseline::start(&receivers.urls()).await?;
    let fire = envelope_fire(format!("http://{}/events", baseline.addr).parse()?);
    warm_up(&fire, sink()).await?;
    let base = run_steps(
        plan,
        &plan.publish_steps,
        &baseline.process,
        "publish-baseline",
        &fire,
        sink(),
    )
    .await;
    baseline.process.stop().await;

    report::title(&format!(
        "publish: PublishEvent to {SUBSCRIPTIONS} subscriptions (events acked/s, signed deliveries fwd/s) vs baseline forwarder"
    ));
    report::steps(&ours[0], &base);
    for (mode, rows) in QueueMode::ALL.iter().zip(&ours).skip(1) {
        report::title(&format!(
            "publish with {}: PublishEvent to {SUBSCRIPTIONS} subscriptions vs baseline forwarder",
            mode.description()
        ));
        report::steps_of(mode.label(), rows, &base);
        super::nats_target(*mode, rows, &ours[0]);
    }
    Ok(())
}

/// A tenant with [`SUBSCRIPTIONS`] subscriptions to [`TOPIC`], applied on the node.
async fn subscribe(
    admin: &Client,
    ingress: std::net::SocketAddr,
    urls: &[String],
) -> anyhow::Result<String> {
    let start = service::config_revision(ingress).await?;
    let tenant = create_tenant(admin, "Bench publisher").await?;
    for (n, url) in urls.iter().enumerate() {
        admin
            .subscriptions()
            .create_subscription(v1::CreateSubscriptionRequest {
                tenant_id: tenant.clone(),
                subscription: Some(v1::Subscription {
                    name: format!("receiver {n}"),
                    url: url.clone(),
                    event_types: vec![TOPIC.to_owned()],
                    ..Default::default()
                }),
            })
            .await
            .context("creating a subscription")?;
    }
    service::wait_revision(ingress, start + 1 + urls.len() as u64).await?;
    Ok(tenant)
}

fn data(key: &str) -> Value {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let fields = BTreeMap::from([
        (
            "line_uid".to_owned(),
            text("U4af4980629f1b2c3d4e5f60718293a4b"),
        ),
        ("customer_id".to_owned(), text("cus_bench")),
        ("campaign_name".to_owned(), text("Bench campaign")),
        ("number".to_owned(), text(key)),
        ("channel".to_owned(), text("store")),
    ]);
    Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    }
}

fn request(tenant: &str, key: &str) -> v1::PublishEventRequest {
    v1::PublishEventRequest {
        tenant_id: tenant.to_owned(),
        topic: TOPIC.to_owned(),
        data: Some(data(key)),
        idempotency_key: key.to_owned(),
    }
}

fn publish_fire(publisher: Client, tenant: String) -> Fire {
    let next = Arc::new(AtomicU64::new(0));
    let run = std::process::id();
    load::fire(move || {
        let publisher = publisher.clone();
        let key = format!("bench-{run}-{}", next.fetch_add(1, Ordering::Relaxed));
        let request = request(&tenant, &key);
        async move { publisher.events().publish_event(request).await.is_ok() }
    })
}

/// The same event as the MAAC envelope, POSTed to the baseline.
fn envelope_fire(uri: http::Uri) -> Fire {
    let client = http_client::client();
    let next = Arc::new(AtomicU64::new(0));
    load::fire(move || {
        let client = client.clone();
        let uri = uri.clone();
        let n = next.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            r#"{{"timestamp":"2025-01-01T00:00:00+00:00","topic":"{TOPIC}","data":{{"line_uid":"U4af4980629f1b2c3d4e5f60718293a4b","customer_id":"cus_bench","campaign_name":"Bench campaign","number":"bench-{n}","channel":"store"}}}}"#
        );
        async move {
            let headers = [("content-type", "application/json; charset=utf-8")];
            matches!(
                http_client::post(&client, uri, &headers, Bytes::from(body)).await,
                Ok(status) if status == http::StatusCode::OK
            )
        }
    })
}

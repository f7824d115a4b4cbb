//! `propagation`: a control plane and 2 `hookplane data` nodes with 10,000 channels configured;
//! then, again and again, one admin write (a new channel) and the time until each node answers a
//! signed request to that channel with 200 instead of 404. The floor it is held against: the
//! write's own RPC plus one ingress round trip, what no propagation at all would still cost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use hookplane_client::Client;
use tokio::task::JoinSet;

use crate::{
    binary,
    http_client::{self, HttpClient},
    line_requests::{Signed, verify_request},
    plan::Plan,
    report,
    service::{Control, DataNode},
};

use super::{create_channel, create_tenant, webhook_uri};

/// Admin writes in flight while the 10,000 channels are created. One: concurrent writes make
/// the control plane call sled's `flush_async` concurrently, which can deadlock sled 0.34 (see
/// docs/BENCHMARKS.md).
const CREATORS: usize = 1;
/// An admin write not answered within this means the control plane is stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(plan: &Plan) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    eprintln!("propagation: control plane, {} channels", plan.channels);
    let mut control = Control::start(&binary).await?;
    let admin = control.admin().await?;
    let tenant = create_tenant(&admin, "Bench propagation").await?;
    let filled = Instant::now();
    create_channels(&admin, &tenant, plan.channels).await?;
    let fill_time = filled.elapsed();

    eprintln!("propagation: 2 data nodes");
    let started = Instant::now();
    let mut a = DataNode::start(&binary, &control).await?;
    let a_ready = started.elapsed();
    let started = Instant::now();
    let mut b = DataNode::start(&binary, &control).await?;
    let b_ready = started.elapsed();

    let client = http_client::client();
    let verify = verify_request()?;
    let mut write = histogram();
    let mut on_a = histogram();
    let mut on_b = histogram();
    let mut on_both = histogram();
    let mut floor = histogram();
    eprintln!("propagation: {} timed writes", plan.writes);
    for n in 0..plan.writes {
        let began = Instant::now();
        let channel = tokio::time::timeout(
            WRITE_TIMEOUT,
            create_channel(&admin, &tenant, &format!("probe {n}")),
        )
        .await
        .context("the control plane stopped answering admin writes")??;
        let committed = began.elapsed();
        let (applied_a, applied_b) = tokio::join!(
            applied(&client, a.ingress, &channel, &verify, began),
            applied(&client, b.ingress, &channel, &verify, began),
        );
        let (applied_a, applied_b) = (applied_a?, applied_b?);
        // One more request to the same node, now that it knows the channel: the round trip alone.
        let round_trip = Instant::now();
        answer(&client, a.ingress, &channel, &verify).await?;
        let round_trip = round_trip.elapsed();
        record(&mut write, committed);
        record(&mut on_a, applied_a);
        record(&mut on_b, applied_b);
        record(&mut on_both, applied_a.max(applied_b));
        record(&mut floor, committed + round_trip);
    }
    a.process.stop().await;
    b.process.stop().await;
    control.process.stop().await;

    report::title(&format!(
        "propagation: control plane + 2 data nodes, {} channels, {} timed channel creations",
        plan.channels, plan.writes
    ));
    println!(
        "filling {} channels took {:.1} s ({CREATORS} write(s) in flight); node start to ready with them: {:.2} s and {:.2} s",
        plan.channels,
        fill_time.as_secs_f64(),
        a_ready.as_secs_f64(),
        b_ready.as_secs_f64()
    );
    println!(
        "{:<40} {:>8} {:>8} {:>8}",
        "from the write's start to", "p50 ms", "p99 ms", "max ms"
    );
    for (name, h) in [
        ("the write's answer (commit)", &write),
        ("applied on node A", &on_a),
        ("applied on node B", &on_b),
        ("applied on both", &on_both),
        ("floor: commit + one ingress round trip", &floor),
    ] {
        println!(
            "{name:<40} {:>8.2} {:>8.2} {:>8.2}",
            ms(h, 0.5),
            ms(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    println!(
        "{:<40} {:>7.2}x {:>7.2}x",
        "ours/floor (applied on both)",
        ms(&on_both, 0.5) / ms(&floor, 0.5).max(0.001),
        ms(&on_both, 0.99) / ms(&floor, 0.99).max(0.001),
    );
    Ok(())
}

async fn create_channels(admin: &Client, tenant: &str, count: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut creators = JoinSet::new();
    for _ in 0..CREATORS {
        let admin = admin.clone();
        let tenant = tenant.to_owned();
        let next = Arc::clone(&next);
        creators.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                tokio::time::timeout(
                    WRITE_TIMEOUT,
                    create_channel(&admin, &tenant, &format!("channel {n}")),
                )
                .await
                .context("the control plane stopped answering admin writes")??;
            }
        });
    }
    while let Some(done) = creators.join_next().await {
        done??;
    }
    Ok(())
}

/// Polls `node` with a signed request to `channel` until it answers 200; the time since `began`.
async fn applied(
    client: &HttpClient,
    node: std::net::SocketAddr,
    channel: &str,
    verify: &Signed,
    began: Instant,
) -> anyhow::Result<Duration> {
    let deadline = began + APPLY_TIMEOUT;
    loop {
        if answer(client, node, channel, verify).await.is_ok() {
            return Ok(began.elapsed());
        }
        if Instant::now() > deadline {
            bail!("{channel} was not applied on {node} within {APPLY_TIMEOUT:?}");
        }
    }
}

/// One signed Verify request; Ok when it was answered 200.
async fn answer(
    client: &HttpClient,
    node: std::net::SocketAddr,
    channel: &str,
    verify: &Signed,
) -> anyhow::Result<()> {
    let headers = [
        ("content-type", "application/json; charset=utf-8"),
        ("x-line-signature", verify.signature.as_str()),
    ];
    let status = http_client::post(
        client,
        webhook_uri(node, channel)?,
        &headers,
        verify.body.clone(),
    )
    .await
    .context("posting to a node")?;
    if status != http::StatusCode::OK {
        bail!("answered {status}");
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

fn ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

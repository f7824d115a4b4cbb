//! The scenarios, and what they share: running a list of steps against one process under test
//! while counting what its receivers get.

pub mod backlog;
pub mod dead_targets;
pub mod ingress;
pub mod one_hanging;
pub mod propagation;
pub mod publish;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use hookplane_client::{Client, v1};
use http::Uri;

use crate::{
    http_client::{self, HttpClient},
    line_requests::{CHANNEL_SECRET, LineRequests},
    load::{self, Fire, Outcome},
    plan::{Plan, Step},
    receivers::Receivers,
    server_latency,
    service::{self, CpuMeter, Process, Profile},
};

/// How long forwards may stop arriving before a step's drain is called off.
const DRAIN_STALL: Duration = Duration::from_secs(3);
/// The shortest drain whose rate is reported.
const MIN_DRAIN: Duration = Duration::from_millis(500);

/// What the receivers got for one step.
pub struct Forwarded {
    pub delivered: u64,
    pub expected: u64,
    /// Deliveries per second from the step's start until the last expected one arrived (or the
    /// drain was called off).
    pub per_sec: f64,
    /// How long after the load ended the last expected delivery arrived; `None` when it did not
    /// within the drain limit.
    pub lag: Option<Duration>,
    /// Deliveries per second after the load ended, until the last one arrived: the backlog's
    /// forwarding rate with no ingress to share the machine with; `None` for a drain too short
    /// to time.
    pub drain_per_sec: Option<f64>,
    /// CPU per delivery over the drain, in µs: the process under test's, and this process's
    /// (the receivers'); `None` with the drain rate. The drain rate moves with the machine from
    /// run to run; what a delivery costs the node in CPU moves less.
    pub drain_cpu_us: Option<DrainCpu>,
}

/// CPU per delivery over a drain, in µs, and preemptions per delivery (involuntary context
/// switches): the process under test's, and the receivers'.
#[derive(Clone, Copy)]
pub struct DrainCpu {
    pub process: f64,
    pub receivers: f64,
    pub process_preempted: f64,
    pub receivers_preempted: f64,
}

/// One step against one system.
pub struct Row {
    pub step: Step,
    pub outcome: Outcome,
    pub forwarded: Option<Forwarded>,
    pub peak_rss_mib: f64,
    /// Cores the process used over the step and its drain.
    pub cpu_cores: f64,
    /// The node's own acknowledgement p99 (see server_latency.rs), as its histogram's bucket
    /// bound in ms; `None` for the baseline.
    pub handler_p99_ms: Option<f64>,
}

/// Where forwards of a step are counted, and how many each acknowledged request makes.
pub struct Sink<'a> {
    pub receivers: &'a Receivers,
    pub fanout: u64,
}

/// Runs every step of `steps` against `process`, one after the other; `label` names the
/// profiles of its steps (see [`Profile`]).
pub async fn run_steps(
    plan: &Plan,
    steps: &[Step],
    process: &Process,
    label: &str,
    fire: &Fire,
    sink: Option<Sink<'_>>,
) -> Vec<Row> {
    let mut rows = Vec::with_capacity(steps.len());
    for step in steps {
        let profile = Profile::start(process, &format!("{label}-{}", step_label(*step)));
        process.reset_peak_rss();
        let cpu = CpuMeter::start(process);
        let before = sink.as_ref().map_or(0, |s| s.receivers.total());
        let started = Instant::now();
        let ingress = process.find_addr("ingress");
        let handled_before = match ingress {
            Some(addr) => server_latency::snapshot(addr).await,
            None => None,
        };
        let outcome = load::run(*step, plan.step_time, fire.clone()).await;
        let handler_p99_ms = match (ingress, handled_before) {
            (Some(addr), Some(before)) => server_latency::snapshot(addr)
                .await
                .and_then(|after| server_latency::bound_ms(&before, &after, 0.99)),
            _ => None,
        };
        let forwarded = match &sink {
            Some(sink) => {
                let load_end = Instant::now();
                let during_load = sink.receivers.total() - before;
                let cpu_at_load_end = (process.cpu_time(), service::own_cpu_time());
                let preempted_at_load_end =
                    (process.preemptions(), service::receivers_preemptions());
                let expected = outcome.acked * sink.fanout;
                let waited = sink
                    .receivers
                    .wait_total(before + expected, plan.drain_limit, DRAIN_STALL)
                    .await;
                let delivered = sink.receivers.total() - before;
                let span = waited.done.unwrap_or_else(Instant::now) - started;
                let drain = waited.last_arrival.saturating_duration_since(load_end);
                let drained = delivered - during_load;
                let per_delivery = |cpu: Duration| cpu.as_secs_f64() * 1e6 / drained as f64;
                let each = |count: u64| count as f64 / drained as f64;
                let drain_cpu_us = (drain >= MIN_DRAIN && drained > 0).then(|| DrainCpu {
                    process: per_delivery(process.cpu_time().saturating_sub(cpu_at_load_end.0)),
                    receivers: per_delivery(
                        service::own_cpu_time().saturating_sub(cpu_at_load_end.1),
                    ),
                    process_preempted: each(
                        process
                            .preemptions()
                            .saturating_sub(preempted_at_load_end.0),
                    ),
                    receivers_preempted: each(
                        service::receivers_preemptions().saturating_sub(preempted_at_load_end.1),
                    ),
                });
                Some(Forwarded {
                    delivered,
                    expected,
                    per_sec: load::per_sec(delivered, span),
                    lag: waited.done.map(|at| at.saturating_duration_since(load_end)),
                    drain_per_sec: (drain >= MIN_DRAIN).then(|| load::per_sec(drained, drain)),
                    drain_cpu_us,
                })
            }
            None => None,
        };
        let row = Row {
            step: *step,
            cpu_cores: cpu.cores(process),
            peak_rss_mib: process.peak_rss_mib(),
            outcome,
            forwarded,
            handler_p99_ms,
        };
        profile.stop();
        eprintln!("  {step}: {:.0} acked/s", row.outcome.acked_per_sec());
        rows.push(row);
    }
    rows
}

fn step_label(step: Step) -> String {
    match step {
        Step::Rate(rate) => format!("rate{rate}"),
        Step::Saturate(concurrency) => format!("max{concurrency}"),
    }
}

/// Sends signed LINE webhooks, each a new event, to `uri`.
pub fn line_fire(client: HttpClient, uri: Uri, line: LineRequests) -> Fire {
    load::fire(move || {
        let client = client.clone();
        let uri = uri.clone();
        let signed = line.next();
        async move {
            let headers = [
                ("content-type", "application/json; charset=utf-8"),
                ("x-line-signature", signed.signature.as_str()),
            ];
            matches!(
                http_client::post(&client, uri, &headers, signed.body).await,
                Ok(status) if status == http::StatusCode::OK
            )
        }
    })
}

/// The ingress URL of `channel` on a node.
pub fn webhook_uri(ingress: SocketAddr, channel: &str) -> anyhow::Result<Uri> {
    Ok(format!("http://{ingress}/api/webhook/line/{channel}/events").parse()?)
}

/// A tenant with both zones for a year, named `name`.
pub async fn create_tenant(admin: &Client, name: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let zone = |zone: v1::Zone| v1::ZoneEntitlement {
        zone: zone as i32,
        valid_until: Some(prost_types::Timestamp {
            seconds: now + 365 * 86_400,
            nanos: 0,
        }),
    };
    let tenant = admin
        .tenants()
        .create_tenant(v1::CreateTenantRequest {
            tenant: Some(v1::Tenant {
                display_name: name.to_owned(),
                notification_emails: vec!["ops@brand.example".to_owned()],
                entitlements: Some(v1::Entitlements {
                    zones: vec![zone(v1::Zone::Zone1), zone(v1::Zone::Zone2)],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .context("creating a tenant")?;
    Ok(tenant.into_inner().id)
}

/// A channel signed with [`CHANNEL_SECRET`].
pub async fn create_channel(admin: &Client, tenant: &str, name: &str) -> anyhow::Result<String> {
    let channel = admin
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: tenant.to_owned(),
            channel: Some(v1::Channel {
                display_name: name.to_owned(),
                line_channel_secret: CHANNEL_SECRET.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .context("creating a channel")?;
    Ok(channel.into_inner().id)
}

/// A tenant, a channel and one forwarding set per URL, applied on the node at `ingress` before
/// this returns (every admin write advances the revision by one).
pub async fn configure_channel(
    admin: &Client,
    ingress: SocketAddr,
    urls: &[String],
) -> anyhow::Result<String> {
    let start = service::config_revision(ingress).await?;
    let tenant = create_tenant(admin, "Bench brand").await?;
    let channel = create_channel(admin, &tenant, "Bench OA").await?;
    for (n, url) in urls.iter().enumerate() {
        admin
            .forwarding()
            .create_forwarding_set(v1::CreateForwardingSetRequest {
                channel_id: channel.clone(),
                forwarding_set: Some(v1::ForwardingSet {
                    name: format!("target {n}"),
                    url: url.clone(),
                    ..Default::default()
                }),
            })
            .await
            .context("creating a forwarding set")?;
    }
    service::wait_revision(ingress, start + 2 + urls.len() as u64).await?;
    Ok(channel)
}

/// A few hundred requests before measuring: connections pooled, caches warm, every target seen.
pub async fn warm_up(fire: &Fire, sink: Option<Sink<'_>>) -> anyhow::Result<()> {
    let before = sink.as_ref().map_or(0, |s| s.receivers.total());
    let outcome = load::run(Step::Rate(400), Duration::from_millis(500), fire.clone()).await;
    anyhow::ensure!(
        outcome.acked > 0,
        "no request was acknowledged during the warm-up ({} failed)",
        outcome.failed
    );
    if let Some(sink) = sink {
        let expected = before + outcome.acked * sink.fanout;
        sink.receivers
            .wait_total(expected, Duration::from_secs(30), DRAIN_STALL)
            .await;
        anyhow::ensure!(
            sink.receivers.each_received(),
            "a receiver got nothing during the warm-up"
        );
        sink.receivers
            .wait_quiet(Duration::from_millis(300), Duration::from_secs(10))
            .await;
    }
    Ok(())
}

/// NATS mode against the spool, at the saturated step: what reached the receivers.
pub fn nats_target(mode: crate::queue_mode::QueueMode, nats: &[Row], spool: &[Row]) {
    let forwarded = |rows: &[Row]| {
        rows.iter()
            .find(|r| matches!(r.step, Step::Saturate(_)))
            .and_then(|r| r.forwarded.as_ref())
            .map(|f| (f.per_sec, f.drain_per_sec))
    };
    let label = mode.label();
    if let (Some((nats_fwd, nats_drain)), Some((spool_fwd, spool_drain))) =
        (forwarded(nats), forwarded(spool))
        && spool_fwd > 0.0
    {
        if let (Some(n), Some(s)) = (nats_drain, spool_drain) {
            println!(
                "info: saturated step's drain with {label} {n:.0}/s = {:.2}x the spool's {s:.0}/s",
                n / s
            );
        }
        let ratio = nats_fwd / spool_fwd;
        let what = format!(
            "saturated forwarding with {label} {nats_fwd:.0}/s = {ratio:.2}x the spool's {spool_fwd:.0}/s (>= 0.5x)"
        );
        if mode == crate::queue_mode::QueueMode::Nats {
            crate::report::target(ratio >= 0.5, &what);
        } else {
            // Three servers and the node share two cores here: shown, not judged.
            println!("info: {what}");
        }
    }
}

/// A standalone on `backend` whose one channel forwards to each of `urls`, and what sends it
/// signed LINE webhooks.
pub async fn standalone_forwarding(
    binary: &std::path::Path,
    backend: &crate::queue_mode::QueueBackend,
    urls: &[String],
    line: &LineRequests,
) -> anyhow::Result<(service::Standalone, Fire)> {
    let standalone = service::Standalone::start_with(binary, &backend.flags()).await?;
    let admin = standalone.admin().await?;
    let channel = configure_channel(&admin, standalone.ingress, urls).await?;
    let fire = line_fire(
        http_client::client(),
        webhook_uri(standalone.ingress, &channel)?,
        line.clone(),
    );
    Ok((standalone, fire))
}

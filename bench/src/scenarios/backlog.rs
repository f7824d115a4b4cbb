//! `backlog`: a channel of 10 forwarding sets that all refuse connections takes LINE webhooks
//! until `--deliveries` deliveries are queued (default 1,000,000: 100,000 webhooks x 10 dead
//! sets), once with the spool and once with `--queue nats`; then, with the backlog held, the
//! node's resident memory and its queue depth. What a brand whose endpoints are down for hours
//! costs a node.

use std::time::{Duration, Instant};

use crate::{
    binary, line_requests::LineRequests, load, plan::Step, queue_mode::QueueMode, receivers,
    report, service,
};

use super::standalone_forwarding;

const SETS: usize = 10;
/// Requests in flight while the backlog is built.
const CONCURRENCY: usize = 64;
/// Longest the backlog may take to build.
const BUILD_LIMIT: Duration = Duration::from_secs(15 * 60);
/// How long the node holds the backlog before its memory is read: past the first retries.
const HOLD: Duration = Duration::from_secs(30);

pub async fn run(deliveries: u64) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    let line = LineRequests::new()?;
    let dead = receivers::refusing(SETS)?;
    let mut rows = Vec::new();
    for mode in QueueMode::BOTH {
        eprintln!(
            "backlog of {deliveries} deliveries: {} ({mode:?} queue)",
            mode.label()
        );
        let backend = mode.start()?;
        let (mut standalone, fire) = standalone_forwarding(&binary, &backend, &dead, &line).await?;
        let started = Instant::now();
        let mut acked = 0u64;
        while acked * (SETS as u64) < deliveries && started.elapsed() < BUILD_LIMIT {
            let outcome = load::run(
                Step::Saturate(CONCURRENCY),
                Duration::from_secs(5),
                fire.clone(),
            )
            .await;
            acked += outcome.acked;
            eprintln!("  {} deliveries queued", acked * SETS as u64);
        }
        let built = started.elapsed();
        tokio::time::sleep(HOLD).await;
        let depth = service::queue_depth(standalone.ingress).await.unwrap_or(0);
        rows.push((
            mode,
            acked * SETS as u64,
            built,
            depth,
            standalone.process.rss_mib(),
            standalone.process.peak_rss_mib(),
        ));
        standalone.process.stop().await;
    }
    report::title(&format!(
        "backlog: {SETS} forwarding sets refusing connections, {deliveries} deliveries queued"
    ));
    println!(
        "system     queued    built in  depth after {}s   RSS MiB  peak RSS MiB",
        HOLD.as_secs()
    );
    for (mode, queued, built, depth, rss, peak) in &rows {
        println!(
            "{:<10} {queued:>7} {:>9.1}s {depth:>16} {rss:>9.1} {peak:>13.1}",
            mode.label(),
            built.as_secs_f64()
        );
    }
    if let Some((_, queued, _, _, rss, _)) = rows.iter().find(|r| r.0 == QueueMode::Nats) {
        report::target(
            *rss < 150.0 && *queued >= deliveries,
            &format!(
                "--queue nats node RSS with {queued} deliveries queued: {rss:.1} MiB (< 150 MiB)"
            ),
        );
    }
    Ok(())
}

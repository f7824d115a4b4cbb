//! `one-hanging`: a channel of 10 forwarding sets, one of whose targets hangs (accepts and never
//! answers), beside the same channel with all 10 healthy, with the spool and with `--queue nats`:
//! the 9 healthy targets must get their deliveries at the same rate either way. A hanging target
//! holds its concurrency slots for a whole attempt timeout; the engine must not let it hold back
//! the jobs that share its LINE request (in NATS mode, the message that carries them).

use crate::{
    binary,
    line_requests::LineRequests,
    plan::{Plan, Step},
    queue_mode::QueueMode,
    receivers::{Hanging, Receivers},
    report,
};

use super::{Row, Sink, run_steps, standalone_forwarding, warm_up};

const SETS: usize = 10;
/// The healthy targets' rate with one hanging may fall this far below their rate with none
/// before the run says they are held back: the machine is noisy.
const SAME_RATE: f64 = 0.9;

pub async fn run(plan: &Plan) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    let line = LineRequests::new()?;
    let mut results = Vec::new();
    for mode in QueueMode::BOTH {
        let mut runs = Vec::new();
        for hanging in [0, 1] {
            let healthy = SETS - hanging;
            let receivers = Receivers::counting(healthy).await?;
            let stuck = Hanging::start(hanging).await?;
            let mut urls = receivers.urls();
            urls.extend(stuck.urls());
            eprintln!(
                "one-hanging, {} ({mode:?} queue): {healthy} healthy, {hanging} hanging",
                mode.label()
            );
            let backend = mode.start()?;
            let (mut standalone, fire) =
                standalone_forwarding(&binary, &backend, &urls, &line).await?;
            let sink = || {
                Some(Sink {
                    receivers: &receivers,
                    fanout: healthy as u64,
                })
            };
            warm_up(&fire, sink()).await?;
            let rows = run_steps(
                plan,
                &plan.steps,
                &standalone.process,
                &format!("one-hanging-{}-{hanging}", mode.label()),
                &fire,
                sink(),
            )
            .await;
            standalone.process.stop().await;
            runs.push((healthy, rows));
        }
        results.push((mode, runs));
    }
    report::title(&format!(
        "one-hanging: {SETS} forwarding sets, deliveries/s per healthy target with none hanging vs one hanging"
    ));
    println!(
        "{:<10} {:<12} {:>14} {:>14} {:>8}",
        "system", "step", "none hanging", "one hanging", "ratio"
    );
    for (mode, runs) in &results {
        let [(all, none), (some, one)] = runs.as_slice() else {
            continue;
        };
        for (a, b) in none.iter().zip(one) {
            let (a_rate, b_rate) = (per_target(a, *all), per_target(b, *some));
            let ratio = if a_rate > 0.0 { b_rate / a_rate } else { 0.0 };
            println!(
                "{:<10} {:<12} {a_rate:>14.0} {b_rate:>14.0} {ratio:>7.2}x",
                mode.label(),
                a.step.to_string()
            );
            if matches!(a.step, Step::Saturate(_)) {
                report::target(
                    ratio >= SAME_RATE,
                    &format!(
                        "{}: saturated, each of the {some} healthy targets got {b_rate:.0}/s with one hanging vs {a_rate:.0}/s with none ({ratio:.2}x, >= {SAME_RATE}x)",
                        mode.label()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Deliveries per second each healthy target got over the step.
fn per_target(row: &Row, healthy: usize) -> f64 {
    row.forwarded
        .as_ref()
        .map_or(0.0, |f| f.per_sec / healthy as f64)
}

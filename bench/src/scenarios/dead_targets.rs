//! `ingress-dead-targets`: the ingress steps with a channel of 10 forwarding sets that all
//! refuse connections, then all hang, beside the same steps with 10 healthy targets: the
//! acknowledgement must not care.

use crate::{
    baseline::Baseline,
    binary, http_client,
    line_requests::LineRequests,
    plan::{Plan, Step},
    receivers::{self, Hanging, Receivers},
    report,
    service::Standalone,
};

use super::{Row, Sink, configure_channel, line_fire, run_steps, warm_up, webhook_uri};

const TARGETS: usize = 10;
/// Acknowledgement p99 with dead targets may exceed the healthy run's by this factor (and by at
/// least a millisecond) before the run says they do not match: the machine is noisy.
const MATCH_FACTOR: f64 = 1.5;

struct Targets {
    name: &'static str,
    urls: Vec<String>,
    receivers: Option<Receivers>,
    _hanging: Option<Hanging>,
}

pub async fn run(plan: &Plan) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    let line = LineRequests::new()?;
    let healthy = Receivers::counting(TARGETS).await?;
    let hanging = Hanging::start(TARGETS).await?;
    let kinds = [
        Targets {
            name: "healthy",
            urls: healthy.urls(),
            receivers: Some(healthy),
            _hanging: None,
        },
        Targets {
            name: "refusing",
            urls: receivers::refusing(TARGETS)?,
            receivers: None,
            _hanging: None,
        },
        Targets {
            name: "hanging",
            urls: hanging.urls(),
            receivers: None,
            _hanging: Some(hanging),
        },
    ];
    let steps: Vec<Step> = plan
        .steps
        .iter()
        .copied()
        .filter(|s| matches!(s, Step::Rate(_)))
        .collect();
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for targets in &kinds {
        let sink = || {
            targets.receivers.as_ref().map(|receivers| Sink {
                receivers,
                fanout: TARGETS as u64,
            })
        };
        eprintln!("ingress-dead-targets, {}: hookplane", targets.name);
        let mut standalone = Standalone::start(&binary).await?;
        let admin = standalone.admin().await?;
        let channel = configure_channel(&admin, standalone.ingress, &targets.urls).await?;
        let fire = line_fire(
            http_client::client(),
            webhook_uri(standalone.ingress, &channel)?,
            line.clone(),
        );
        warm_up(&fire, sink()).await?;
        ours.push(
            run_steps(
                plan,
                &steps,
                &standalone.process,
                &format!("dead-{}-hookplane", targets.name),
                &fire,
                sink(),
            )
            .await,
        );
        standalone.process.stop().await;

        eprintln!("ingress-dead-targets, {}: baseline", targets.name);
        let mut baseline = Baseline::start(&targets.urls).await?;
        let fire = line_fire(
            http_client::client(),
            webhook_uri(baseline.addr, "baseline")?,
            line.clone(),
        );
        warm_up(&fire, sink()).await?;
        base.push(
            run_steps(
                plan,
                &steps,
                &baseline.process,
                &format!("dead-{}-baseline", targets.name),
                &fire,
                sink(),
            )
            .await,
        );
        baseline.process.stop().await;
    }
    report::title("ingress-dead-targets: 10 forwarding sets, healthy vs refusing vs hanging");
    report::latency_side_by_side("hookplane", &named(&kinds, &ours));
    report::latency_side_by_side("baseline", &named(&kinds, &base));
    println!("full rows (hookplane, baseline, ratio):");
    for ((targets, o), b) in kinds.iter().zip(&ours).zip(&base) {
        println!("-- {}", targets.name);
        report::steps(o, b);
    }
    for (targets, rows) in kinds.iter().zip(&ours).skip(1) {
        for (dead, healthy) in rows.iter().zip(&ours[0]) {
            let (d, h) = (dead.outcome.ms(0.99), healthy.outcome.ms(0.99));
            report::target(
                d <= (h * MATCH_FACTOR).max(h + 1.0) && dead.outcome.failed == 0,
                &format!(
                    "{} targets, {}: acknowledgement p99 {d:.2} ms vs {h:.2} ms healthy, {} failed",
                    targets.name, dead.step, dead.outcome.failed
                ),
            );
        }
    }
    Ok(())
}

fn named<'a>(kinds: &[Targets], rows: &'a [Vec<Row>]) -> Vec<(&'static str, &'a [Row])> {
    kinds
        .iter()
        .zip(rows)
        .map(|(k, r)| (k.name, r.as_slice()))
        .collect()
}

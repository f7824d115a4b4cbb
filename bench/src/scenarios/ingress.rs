//! `ingress`: signed LINE webhooks at stepped rates against a standalone whose channel forwards
//! to 1, then 10, local receivers, with each queue (spool, one NATS server, three); the baseline
//! forwarder goes through the same steps to the same receivers.

use crate::{
    baseline::Baseline,
    binary, http_client,
    line_requests::LineRequests,
    plan::{Plan, Step, TARGET_RATE},
    queue_mode::QueueMode,
    receivers::Receivers,
    report,
};

use super::{Row, Sink, line_fire, run_steps, standalone_forwarding, warm_up, webhook_uri};

/// Runs the node with each queue of `modes` (the spool first: the targets are judged on it).
pub async fn run(plan: &Plan, modes: &[QueueMode]) -> anyhow::Result<()> {
    let binary = binary::hookplane_release()?;
    let line = LineRequests::new()?;
    for &sets in &plan.sets {
        let receivers = Receivers::counting(sets).await?;
        let fanout = sets as u64;
        let sink = || {
            Some(Sink {
                receivers: &receivers,
                fanout,
            })
        };
        let mut ours = Vec::new();
        for &mode in modes {
            eprintln!(
                "ingress with {sets} forwarding set(s): {} ({mode:?} queue)",
                mode.label()
            );
            let backend = mode.start()?;
            let (mut standalone, fire) =
                standalone_forwarding(&binary, &backend, &receivers.urls(), &line).await?;
            warm_up(&fire, sink()).await?;
            let rows = run_steps(
                plan,
                &plan.steps,
                &standalone.process,
                &format!("ingress-{sets}sets-{}", mode.label()),
                &fire,
                sink(),
            )
            .await;
            standalone.process.stop().await;
            ours.push((mode, rows));
        }
        eprintln!("ingress with {sets} forwarding set(s): baseline");
        let base = {
            let mut baseline = Baseline::start(&receivers.urls()).await?;
            let fire = line_fire(
                http_client::client(),
                webhook_uri(baseline.addr, "baseline")?,
                line.clone(),
            );
            warm_up(&fire, sink()).await?;
            let rows = run_steps(
                plan,
                &plan.steps,
                &baseline.process,
                &format!("ingress-{sets}sets-baseline"),
                &fire,
                sink(),
            )
            .await;
            baseline.process.stop().await;
            rows
        };
        let spool = &ours[0].1;
        report::title(&format!(
            "ingress: {sets} forwarding set(s), standalone vs baseline forwarder"
        ));
        report::steps(spool, &base);
        targets(spool, &base);
        for (mode, rows) in &ours[1..] {
            report::title(&format!(
                "ingress: {sets} forwarding set(s), standalone with {} vs baseline forwarder",
                mode.description()
            ));
            report::steps_of(mode.label(), rows, &base);
            super::nats_target(*mode, rows, spool);
        }
    }
    Ok(())
}

fn targets(ours: &[Row], base: &[Row]) {
    let saturated = |rows: &[Row]| {
        rows.iter()
            .find(|r| matches!(r.step, Step::Saturate(_)))
            .map(|r| {
                let acked = r.outcome.acked_per_sec();
                let forwarded = r.forwarded.as_ref().map_or(0.0, |f| f.per_sec);
                let drained = r.forwarded.as_ref().and_then(|f| f.drain_per_sec);
                let cpu = r.forwarded.as_ref().and_then(|f| f.drain_cpu_us);
                (acked, forwarded, drained, cpu)
            })
    };
    if let (
        Some((ours_acked, ours_fwd, ours_drain, ours_cpu)),
        Some((base_acked, base_fwd, base_drain, base_cpu)),
    ) = (saturated(ours), saturated(base))
        && base_acked > 0.0
    {
        // Once the load stops, each system forwards its backlog with the machine to itself and
        // its receivers: the cost of a delivery without the ingress's priority over it.
        if let (Some(ours_drain), Some(base_drain)) = (ours_drain, base_drain) {
            println!(
                "info: saturated step's drain, after the load ended: {ours_drain:.0}/s = {:.2}x the baseline's {base_drain:.0}/s",
                ours_drain / base_drain
            );
        }
        // What the drain rate comes from: CPU per delivery, which moves less between runs
        // than the rates do (the machine's two cores are shared with the receivers).
        if let (Some(ours), Some(base)) = (ours_cpu, base_cpu) {
            println!(
                "info: CPU per delivery over the drain: node {:.1} µs = {:.2}x the baseline's {:.1} µs; the receivers {:.1} µs with the node, {:.1} µs with the baseline",
                ours.process,
                ours.process / base.process,
                base.process,
                ours.receivers,
                base.receivers
            );
            // Why the receivers' share differs: on the same two cores, a receiver woken by a
            // request preempts a sender of lower priority (the node's delivery threads, at
            // `--delivery-niceness` while requests arrive), which then sends the next request
            // alone and wakes it again.
            println!(
                "info: preemptions per delivery over the drain: node {:.2}, baseline {:.2}; the receivers {:.2} with the node, {:.2} with the baseline",
                ours.process_preempted,
                base.process_preempted,
                ours.receivers_preempted,
                base.receivers_preempted
            );
        }
        // The baseline answers without storing anything and drops forwards it cannot keep up
        // with, so its saturated acknowledgements are not a forwarding rate; the target is
        // judged on what reached the receivers, the acknowledgements are shown beside it.
        let ratio = ours_acked / base_acked;
        println!(
            "info: saturated acknowledged throughput {ours_acked:.0}/s = {ratio:.2}x the baseline's {base_acked:.0}/s (the baseline forwarded {base_fwd:.0}/s of them)"
        );
        if base_fwd > 0.0 {
            let ratio = ours_fwd / base_fwd;
            report::target(
                ratio >= 0.5,
                &format!(
                    "saturated forwarding throughput {ours_fwd:.0}/s = {ratio:.2}x the baseline's {base_fwd:.0}/s (>= 0.5x)"
                ),
            );
        }
    }
    if let Some(row) = ours.iter().find(|r| r.step == Step::Rate(TARGET_RATE)) {
        let p99 = row.outcome.ms(0.99);
        if let Some(handler) = row.handler_p99_ms {
            println!(
                "info: at {TARGET_RATE}/s the node's handler answered 99% within {handler} ms (its hookplane_ingress_ack_latency_seconds bucket); the client measured p99 {p99:.2} ms"
            );
        }
        report::target(
            p99 < 10.0 && row.outcome.failed == 0 && row.outcome.skipped == 0,
            &format!(
                "acknowledgement p99 at {TARGET_RATE}/s is {p99:.2} ms (< 10 ms), {} failed",
                row.outcome.failed + row.outcome.skipped
            ),
        );
    }
}

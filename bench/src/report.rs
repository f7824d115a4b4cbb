//! The tables: one line per step and system, then ours / baseline for the same step.

use crate::scenarios::{Forwarded, Row};

pub fn title(text: &str) {
    println!();
    println!("== {text} ==");
}

const HEADER: &str = "system     step         acked/s  failed skipped   p50 ms   p99 ms p99.9 ms     fwd/s  fwd lag          RSS MiB  cores";

fn lag(forwarded: &Forwarded) -> String {
    match forwarded.lag {
        Some(lag) => format!("{:.2}s", lag.as_secs_f64()),
        None => format!(
            "{} left",
            forwarded.expected.saturating_sub(forwarded.delivered)
        ),
    }
}

fn line(system: &str, row: &Row) {
    let o = &row.outcome;
    let (fwd, fwd_lag) = match &row.forwarded {
        Some(f) => (format!("{:.0}", f.per_sec), lag(f)),
        None => ("-".to_owned(), "-".to_owned()),
    };
    println!(
        "{system:<10} {step:<10} {acked:>9.0} {failed:>7} {skipped:>7} {p50:>8.2} {p99:>8.2} {p999:>8.2} {fwd:>9} {fwd_lag:<16} {rss:>7.1} {cores:>6.2}",
        step = row.step.to_string(),
        acked = o.acked_per_sec(),
        failed = o.failed,
        skipped = o.skipped,
        p50 = o.ms(0.5),
        p99 = o.ms(0.99),
        p999 = o.ms(0.999),
        rss = row.peak_rss_mib,
        cores = row.cpu_cores,
    );
}

fn ratio(ours: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}x", ours / base)
    } else {
        "-".to_owned()
    }
}

fn ratio_line(ours: &Row, base: &Row) {
    let fwd = match (&ours.forwarded, &base.forwarded) {
        (Some(o), Some(b)) => ratio(o.per_sec, b.per_sec),
        _ => "-".to_owned(),
    };
    println!(
        "{:<10} {:<10} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>9} {:<16} {:>7} {:>6}",
        "ours/base",
        ours.step.to_string(),
        ratio(ours.outcome.acked_per_sec(), base.outcome.acked_per_sec()),
        "",
        "",
        ratio(ours.outcome.ms(0.5), base.outcome.ms(0.5)),
        ratio(ours.outcome.ms(0.99), base.outcome.ms(0.99)),
        ratio(ours.outcome.ms(0.999), base.outcome.ms(0.999)),
        fwd,
        "",
        ratio(ours.peak_rss_mib, base.peak_rss_mib),
        ratio(ours.cpu_cores, base.cpu_cores),
    );
}

/// Each step: hookplane, the baseline, and the ratio.
pub fn steps(ours: &[Row], base: &[Row]) {
    steps_of("hookplane", ours, base);
}

/// Each step: `system` (hookplane in one of its modes), the baseline, and the ratio.
pub fn steps_of(system: &str, ours: &[Row], base: &[Row]) {
    println!("{HEADER}");
    for (o, b) in ours.iter().zip(base) {
        line(system, o);
        line("baseline", b);
        ratio_line(o, b);
    }
}

/// Acknowledgement latency of several runs at the same steps, side by side.
pub fn latency_side_by_side(system: &str, runs: &[(&str, &[Row])]) {
    let mut header = format!("{:<10} {:<10}", "system", "step");
    for (name, _) in runs {
        header.push_str(&format!(" | {name:>8} acked/s  p50 ms  p99 ms p99.9 ms"));
    }
    println!("{header}");
    let steps = runs.first().map_or(0, |(_, rows)| rows.len());
    for i in 0..steps {
        let mut text = format!("{:<10} {:<10}", system, runs[0].1[i].step.to_string());
        for (_, rows) in runs {
            let o = &rows[i].outcome;
            text.push_str(&format!(
                " | {:>16.0} {:>7.2} {:>7.2} {:>8.2}",
                o.acked_per_sec(),
                o.ms(0.5),
                o.ms(0.99),
                o.ms(0.999)
            ));
        }
        println!("{text}");
    }
}

/// One target line: `PASS` or `MISS`, what was measured and against what.
pub fn target(met: bool, what: &str) {
    println!("target {}: {what}", if met { "PASS" } else { "MISS" });
}

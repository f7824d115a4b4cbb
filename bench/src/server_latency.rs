//! The node's own view of a step's acknowledgement latency: its
//! `hookplane_ingress_ack_latency_seconds` histogram, read before and after the step. It times
//! the handler, from the request read to the answer; the gap to what the client measured is
//! spent outside it (accepting, reading, and waiting for a core the load generator and the
//! receivers share on this machine).

use std::net::SocketAddr;

use crate::http_client;

const METRIC: &str = "hookplane_ingress_ack_latency_seconds_bucket";

/// Cumulative counts by upper bound (seconds), in the order the node lists them.
pub struct Snapshot(Vec<(f64, f64)>);

/// The histogram now; `None` when the node does not answer or has none.
pub async fn snapshot(ingress: SocketAddr) -> Option<Snapshot> {
    let uri = format!("http://{ingress}/metrics").parse().ok()?;
    let (_, text) = http_client::get_text(uri).await.ok()?;
    let buckets: Vec<(f64, f64)> = text.lines().filter_map(bucket).collect();
    (!buckets.is_empty()).then_some(Snapshot(buckets))
}

/// `hookplane_ingress_ack_latency_seconds_bucket{le="0.004"} 3757` -> (0.004, 3757).
fn bucket(line: &str) -> Option<(f64, f64)> {
    let rest = line.strip_prefix(METRIC)?;
    let le = rest.split("le=\"").nth(1)?.split('"').next()?;
    let le = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    let count = rest.rsplit(' ').next()?.parse().ok()?;
    Some((le, count))
}

/// The bound in ms of the bucket holding quantile `q` of what was observed between the two
/// snapshots: the handler answered that share of the requests within it.
pub fn bound_ms(before: &Snapshot, after: &Snapshot, q: f64) -> Option<f64> {
    if before.0.len() != after.0.len() {
        return None;
    }
    let counts: Vec<(f64, f64)> = before
        .0
        .iter()
        .zip(&after.0)
        .map(|((le, a), (_, b))| (*le, b - a))
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| le * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(counts: &[(f64, f64)]) -> Snapshot {
        Snapshot(counts.to_vec())
    }

    #[test]
    fn a_bucket_line_parses_with_its_bound() {
        let line = r#"hookplane_ingress_ack_latency_seconds_bucket{le="0.004"} 3757"#;
        assert_eq!(bucket(line), Some((0.004, 3757.0)));
        let line = r#"hookplane_ingress_ack_latency_seconds_bucket{le="+Inf"} 4000"#;
        assert_eq!(bucket(line), Some((f64::INFINITY, 4000.0)));
        assert_eq!(
            bucket("hookplane_ingress_ack_latency_seconds_count 4000"),
            None
        );
    }

    #[test]
    fn the_bound_counts_only_what_the_step_observed() {
        let before = snap(&[(0.001, 100.0), (0.002, 100.0), (f64::INFINITY, 100.0)]);
        let after = snap(&[(0.001, 100.0), (0.002, 199.0), (f64::INFINITY, 200.0)]);
        assert_eq!(bound_ms(&before, &after, 0.5), Some(2.0));
        assert_eq!(bound_ms(&before, &after, 0.99), Some(2.0));
        assert_eq!(bound_ms(&before, &after, 1.0), Some(f64::INFINITY));
        assert_eq!(bound_ms(&after, &after, 0.99), None);
    }
}

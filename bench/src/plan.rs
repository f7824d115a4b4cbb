//! How long and how hard each scenario pushes: the full run, or `--quick` for a smoke run.

use std::{fmt, time::Duration};

/// One load step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open loop: requests start on a fixed schedule whatever the answers do, and latency is
    /// counted from the scheduled start, so a stall shows in the percentiles.
    Rate(u64),
    /// Closed loop: this many requests in flight at all times, as fast as answers come back.
    Saturate(usize),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Rate(r) => write!(f, "{r}/s"),
            Step::Saturate(c) => write!(f, "max c={c}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// The forwarding-set counts of the `ingress` scenario.
    pub sets: Vec<usize>,
    /// The ingress steps, in order.
    pub steps: Vec<Step>,
    /// The publish steps, in order.
    pub publish_steps: Vec<Step>,
    pub step_time: Duration,
    /// How long a step's forwards may trail behind its load before the next step starts.
    pub drain_limit: Duration,
    /// Channels configured before propagation is measured.
    pub channels: usize,
    /// Admin writes timed by the propagation scenario.
    pub writes: usize,
}

/// The rate the targets name: acknowledgement p99 is judged there.
pub const TARGET_RATE: u64 = 2_000;
/// Requests in flight in the closed-loop step.
const SATURATION: usize = 64;

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                sets: vec![1, 10],
                steps: vec![
                    Step::Rate(500),
                    Step::Rate(TARGET_RATE),
                    Step::Saturate(SATURATION),
                ],
                publish_steps: vec![Step::Rate(500), Step::Saturate(SATURATION)],
                step_time: Duration::from_secs(2),
                drain_limit: Duration::from_secs(10),
                channels: 10_000,
                writes: 10,
            }
        } else {
            Plan {
                quick,
                sets: vec![1, 10],
                steps: vec![
                    Step::Rate(500),
                    Step::Rate(1_000),
                    Step::Rate(TARGET_RATE),
                    Step::Rate(4_000),
                    Step::Saturate(SATURATION),
                ],
                publish_steps: vec![
                    Step::Rate(250),
                    Step::Rate(500),
                    Step::Rate(1_000),
                    Step::Rate(2_000),
                    Step::Saturate(SATURATION),
                ],
                step_time: Duration::from_secs(8),
                drain_limit: Duration::from_secs(30),
                channels: 10_000,
                writes: 50,
            }
        }
    }
}

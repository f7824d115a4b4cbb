//! `hookplane-bench`: drives the release `hookplane` binary with signed LINE webhooks and
//! published events over 127.0.0.1, runs a minimal forwarder (this binary again, see
//! [`baseline`]) through the same steps in the same run, and prints one table per scenario with
//! ours / baseline ratios. Figures and their meaning: `docs/BENCHMARKS.md`.

mod baseline;
mod binary;
mod http_client;
mod line_requests;
mod load;
mod machine_lock;
mod plan;
mod queue_mode;
mod receivers;
mod report;
mod scenarios;
mod server_latency;
mod service;

use clap::{Parser, Subcommand};

use crate::{plan::Plan, queue_mode::QueueMode};

#[derive(Parser, Debug)]
#[command(
    name = "hookplane-bench",
    about = "Benchmarks of hookplane against a baseline"
)]
struct Cli {
    /// Short steps and fewer rates: a smoke run in about a minute per scenario.
    #[arg(long, global = true)]
    quick: bool,
    /// The forwarding-set counts the `ingress` scenario runs (repeatable; default 1 and 10),
    /// e.g. `--sets 10` to profile the fan-out alone.
    #[arg(long = "sets", global = true)]
    sets: Vec<usize>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Signed LINE webhooks at stepped rates, 1 and 10 forwarding sets to local receivers.
    Ingress {
        /// The node with its spool only, without the NATS modes: a third of the time, to
        /// profile or re-measure the spool against the baseline.
        #[arg(long)]
        spool_only: bool,
    },
    /// The same with every target refusing connections or hanging, beside a healthy run.
    IngressDeadTargets,
    /// 10 forwarding sets, one hanging, beside all 10 healthy, spool and --queue nats: the 9
    /// healthy targets' deliveries/s either way.
    OneHanging,
    /// PublishEvent to 3 subscriptions: events/s and signed deliveries/s.
    Publish,
    /// A control plane, 2 data nodes, 10,000 channels: time from an admin write to applied.
    Propagation,
    /// 10 dead forwarding sets take webhooks until `--deliveries` are queued, with the spool
    /// and with --queue nats: the node's memory with the backlog held (not part of `all`).
    Backlog {
        #[arg(long, default_value_t = 1_000_000)]
        deliveries: u64,
    },
    /// Every scenario above but `backlog`, in that order.
    All,
    /// The baseline forwarder itself (started by the scenarios, not by hand).
    #[command(hide = true)]
    BaselineForwarder {
        /// Where every received request is forwarded (repeatable).
        #[arg(long = "target")]
        targets: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut plan = Plan::new(cli.quick);
    if !cli.sets.is_empty() {
        plan.sets = cli.sets.clone();
    }
    // The baseline forwarder is this binary again, started by the run that holds the lock.
    let a_run = !matches!(cli.scenario, Scenario::BaselineForwarder { .. });
    let _machine = if a_run {
        Some(machine_lock::take()?)
    } else {
        None
    };
    if a_run {
        eprintln!(
            "hookplane-bench {:?}{}: {} s per step, on {} cores",
            cli.scenario,
            if plan.quick { " --quick" } else { "" },
            plan.step_time.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let node_args = service::node_args_from_env();
        if !node_args.is_empty() {
            eprintln!(
                "the node runs with HOOKPLANE_BENCH_NODE_ARGS: {}",
                node_args.join(" ")
            );
        }
    }
    match cli.scenario {
        Scenario::BaselineForwarder { targets } => baseline::serve(targets).await,
        Scenario::Ingress { spool_only } => {
            let modes: &[QueueMode] = if spool_only {
                &[QueueMode::Spool]
            } else {
                &QueueMode::ALL
            };
            scenarios::ingress::run(&plan, modes).await
        }
        Scenario::IngressDeadTargets => scenarios::dead_targets::run(&plan).await,
        Scenario::OneHanging => scenarios::one_hanging::run(&plan).await,
        Scenario::Publish => scenarios::publish::run(&plan).await,
        Scenario::Backlog { deliveries } => scenarios::backlog::run(deliveries).await,
        Scenario::Propagation => scenarios::propagation::run(&plan).await,
        Scenario::All => {
            scenarios::ingress::run(&plan, &QueueMode::ALL).await?;
            scenarios::dead_targets::run(&plan).await?;
            scenarios::one_hanging::run(&plan).await?;
            scenarios::publish::run(&plan).await?;
            scenarios::propagation::run(&plan).await
        }
    }
}

//! CPU per attempt of the control plane's attempt log, through the real ReportDeliveries RPC:
//! `N` attempts in batches of 500 (the nodes' batch) over ten forwarding sets, as a node
//! forwarding to ten sets reports them, from a control plane that already holds the retention
//! count of attempts for each set (the steady state, where every attempt stored is one trimmed).
//!
//! `cargo run --release -p hookplane-control --example attempt_log_cost -- 200000`
//! `cargo run --release -p hookplane-control --example attempt_log_cost -- 200000 in-process`
//! hands the batches to the control plane's intake directly, as standalone's node does.
//!
//! The figure is the whole process's CPU (gRPC client and server included) over the attempts
//! reported, so compare it between builds of this example rather than against a profile.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hookplane_control::{ControlOptions, ControlPlane};
use hookplane_proto::v1::config_service_client::ConfigServiceClient;
use hookplane_proto::v1::{AttemptOutcome, DeliveryAttempt, DeliveryReport};
use tonic::metadata::MetadataValue;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const BATCH: usize = 500;
const SETS: usize = 10;

/// The process's user and system CPU, from `/proc/self/stat` (in ticks of 10 ms).
fn cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit(')').next().ok_or("no ) in /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// A batch as a node reports it: attempt `first..first + BATCH`, one in ten to each set, each a
/// first attempt that succeeded (the common case, which keeps no delivery record).
fn batch(first: usize) -> Result<DeliveryReport> {
    let now = SystemTime::now();
    let attempts = (first..first + BATCH)
        .map(|n| -> Result<DeliveryAttempt> {
            Ok(DeliveryAttempt {
                id: format!("att_{}", ulid::Ulid::new().to_string().to_lowercase()),
                delivery_id: format!("dlv_{n:016x}"),
                event_id: format!("evt_{}", n / SETS),
                forwarding_set_id: format!("fwd_{}", n % SETS),
                tenant_id: "ten_1".to_owned(),
                channel_id: "ch_1".to_owned(),
                attempt_number: 1,
                time: Some(now.into()),
                node_id: "node-1".to_owned(),
                url: "http://127.0.0.1:9/hook".to_owned(),
                outcome: AttemptOutcome::Succeeded as i32,
                http_status: 200,
                latency: Some(Duration::from_millis(3).try_into()?),
                ..DeliveryAttempt::default()
            })
        })
        .collect::<Result<_>>()?;
    Ok(DeliveryReport {
        node_id: "node-1".to_owned(),
        attempts,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let attempts: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let dir = tempfile::tempdir()?;
    let options = ControlOptions::with_data_dir(dir.path());
    let retention = options.attempt_retention_count;
    let in_process = std::env::args().nth(2).as_deref() == Some("in-process");
    let control = ControlPlane::open(&options)?;
    let local = control.local_reports();
    let token: MetadataValue<_> = format!("Bearer {}", control.node_token()).parse()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(control.serve(listener, async move {
        let _ = stopped.await;
    }));
    // The intake opens once the control plane serves, a moment after the spawn.
    while in_process && local.report("node-1", Arc::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut client =
        ConfigServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        })
        .max_encoding_message_size(64 << 20);
    let mut report = async |first: usize| -> Result<()> {
        let sent = batch(first)?;
        if in_process {
            // As standalone's node reports: it keeps a share of the batch until the report is
            // taken, to spill it should the report fail, and frees it then.
            let attempts = Arc::new(sent.attempts);
            local.report(&sent.node_id, Arc::clone(&attempts)).await?;
            drop(attempts);
        } else {
            client.report_deliveries(tokio_stream::once(sent)).await?;
        }
        Ok(())
    };

    // Fill every set to its retention count first: from then on each stored attempt is one
    // trimmed, as in a log that has run for a while.
    let fill = retention * SETS;
    for first in (0..fill).step_by(BATCH) {
        report(first).await?;
    }

    let (cpu_before, wall_before) = (cpu()?, Instant::now());
    for first in (fill..fill + attempts).step_by(BATCH) {
        report(first).await?;
    }
    let (spent, wall) = (cpu()? - cpu_before, wall_before.elapsed());
    println!(
        "{attempts} attempts in batches of {BATCH} over {SETS} sets (each holding {retention}): \
         {:.2} us CPU per attempt, {:.0} attempts/s ({})",
        spent.as_secs_f64() * 1e6 / attempts as f64,
        attempts as f64 / wall.as_secs_f64(),
        if in_process {
            "in process"
        } else {
            "over ReportDeliveries"
        }
    );
    let _ = stop.send(());
    served.await??;
    Ok(())
}

//! CPU per job of the spool alone, with no HTTP and no receivers: enqueue `N` jobs in fan-outs
//! of ten (one body, ten forwarding sets), then lease and ack every one of them.
//!
//! `cargo run --release -p hookplane-data --example spool_cost -- 600000`
//!
//! The ids are scattered like the SHA-256-derived ones the ingress makes: sequential ids would
//! sit side by side in memory and hide what a lookup costs. Beyond the spool's cache of decoded
//! jobs (100,000), each lease reads its job back from disk, so compare runs of the same `N`. The
//! enqueue figure includes one `fdatasync` per fan-out, which the ingress shares between
//! concurrent requests and this loop does not.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use hookplane_data::queue::{Job, Queue, spool::Spool, unlimited};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The process's user and system CPU, from `/proc/self/stat` (in ticks of 10 ms).
fn cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit(')').next().ok_or("no ) in /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

/// splitmix64.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fan_out(request: u64, body: &Bytes) -> Vec<Job> {
    (0..10u64)
        .map(|set| {
            let n = request * 10 + set;
            Job {
                delivery_id: format!("dlv_{:016x}{:016x}", mix(n), mix(!n)),
                event_id: format!("evt_{request}"),
                forwarding_set_id: format!("fwd_{set}"),
                channel_id: "ch_1".into(),
                tenant_id: "ten_1".into(),
                body: body.clone(),
                ..Job::default()
            }
        })
        .collect()
}

fn per_job(spent: Duration, jobs: usize) -> f64 {
    spent.as_secs_f64() * 1e6 / jobs as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let jobs: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 600_000,
    };
    let dir = tempfile::tempdir()?;
    let spool = Spool::open(dir.path())?;
    let body = Bytes::from(vec![b'x'; 600]);

    let (cpu_start, start) = (cpu()?, Instant::now());
    for request in 0..(jobs / 10) as u64 {
        spool.enqueue(fan_out(request, &body)).await?;
    }
    let (cpu_enqueued, enqueued) = (cpu()?, Instant::now());
    let mut settled = 0;
    loop {
        let leased = spool.lease(128, Duration::ZERO, &unlimited).await?;
        if leased.is_empty() {
            break;
        }
        for lease in leased {
            spool.ack(lease).await?;
            settled += 1;
        }
    }
    let (cpu_end, end) = (cpu()?, Instant::now());
    println!(
        "{jobs} jobs, {settled} settled: enqueue {:.2} us/job CPU ({:.2} wall), \
         lease + ack {:.2} us/job CPU ({:.2} wall)",
        per_job(cpu_enqueued - cpu_start, jobs),
        per_job(enqueued - start, jobs),
        per_job(cpu_end - cpu_enqueued, settled),
        per_job(end - enqueued, settled),
    );
    Ok(())
}

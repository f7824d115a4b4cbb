//! The processes under test: `hookplane standalone`, `control` and `data` from the release
//! binary, and the baseline forwarder. Each listens on ports the OS picks (read back from the
//! "... listening on ADDR" lines both print); its peak RSS and CPU time come from /proc.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::http_client;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One running process.
pub struct Process {
    child: Child,
    addrs: HashMap<String, SocketAddr>,
}

impl Process {
    /// Starts `program ARGS` and waits for a "listening on" line for each of `listeners`.
    pub async fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        listeners: &[&str],
    ) -> anyhow::Result<Process> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        // Every setting is on the command line; nothing leaks in from the caller's environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("HOOKPLANE_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().context("piped stdout")?).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((what, addr)) = line.split_once(" listening on ")
                    && let Ok(addr) = addr.trim().parse::<SocketAddr>()
                {
                    let _ = tx.send((what.to_owned(), addr));
                }
            }
        });
        let mut addrs = HashMap::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while listeners.iter().any(|l| !addrs.contains_key(*l)) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((what, addr))) => {
                    addrs.insert(what, addr);
                }
                _ => {
                    let _ = child.start_kill();
                    bail!(
                        "{} {args:?} did not start; its log:\n{}",
                        program.display(),
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
            }
        }
        Ok(Process { child, addrs })
    }

    pub fn addr(&self, what: &str) -> SocketAddr {
        self.addrs[what]
    }

    /// The listener's address, if the process has one by that name.
    pub fn find_addr(&self, what: &str) -> Option<SocketAddr> {
        self.addrs.get(what).copied()
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: nothing is left running when a scenario moves on.
    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Starts a new peak-RSS window (`clear_refs` 5 resets VmHWM to the current RSS).
    pub fn reset_peak_rss(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// VmHWM: the largest resident set since start or the last reset, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// VmRSS: the resident set now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A `kB` field of `/proc/PID/status`, in MiB (0 when the process is gone).
    fn status_mib(&self, field: &str) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    let kib = line.strip_prefix(field)?.trim().strip_suffix("kB")?;
                    kib.trim().parse::<f64>().ok()
                })
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// User + system CPU time of all its threads so far.
    pub fn cpu_time(&self) -> Duration {
        self.pid()
            .map_or(Duration::ZERO, |pid| cpu_time_of(&pid.to_string()))
    }

    /// Times its threads were preempted so far (involuntary context switches, summed over the
    /// threads alive now).
    pub fn preemptions(&self) -> u64 {
        self.pid()
            .map_or(0, |pid| preemptions_of(&pid.to_string(), |_| true))
    }
}

/// Times the receivers' threads of this process were preempted so far.
pub fn receivers_preemptions() -> u64 {
    preemptions_of("self", |name| {
        name.starts_with(crate::receivers::THREAD_NAME)
    })
}

/// `nonvoluntary_ctxt_switches` summed over the threads of `/proc/<pid>` whose name passes
/// `named`: how often a thread that could have gone on running was made to wait, the price of
/// sharing cores that a rate alone does not show.
fn preemptions_of(pid: &str, named: impl Fn(&str) -> bool) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| named(comm.trim_end()))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("nonvoluntary_ctxt_switches:")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}

/// User + system CPU time so far of the bench process itself: its receivers and load generator.
pub fn own_cpu_time() -> Duration {
    cpu_time_of("self")
}

/// User + system CPU time of all threads of `/proc/<pid>` (a number, or `self`).
fn cpu_time_of(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU used by a process over a span of wall time.
pub struct CpuMeter {
    cpu: Duration,
    wall: Instant,
}

impl CpuMeter {
    pub fn start(process: &Process) -> CpuMeter {
        CpuMeter {
            cpu: process.cpu_time(),
            wall: Instant::now(),
        }
    }

    /// Cores used on average since `start` (2.0 = both cores of this machine, all the time).
    pub fn cores(&self, process: &Process) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        process.cpu_time().saturating_sub(self.cpu).as_secs_f64() / wall
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a temporary path that is not UTF-8")
}

fn read_token(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// Waits until the node answers `/readyz` with 200 (it has applied a config snapshot).
pub async fn wait_ready(ingress: SocketAddr) -> anyhow::Result<()> {
    let uri: http::Uri = format!("http://{ingress}/readyz").parse()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok((status, _)) = http_client::get_text(uri.clone()).await
            && status.is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the node at {ingress} was not ready within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `hookplane_config_revision` a node reports on /metrics.
/// The node's `hookplane_queue_depth`, from its `/metrics`.
pub async fn queue_depth(ingress: SocketAddr) -> anyhow::Result<u64> {
    metric(ingress, "hookplane_queue_depth").await
}

pub async fn config_revision(ingress: SocketAddr) -> anyhow::Result<u64> {
    metric(ingress, "hookplane_config_revision").await
}

/// One gauge or counter of the node's `/metrics`.
async fn metric(ingress: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let (_, text) = http_client::get_text(format!("http://{ingress}/metrics").parse()?).await?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no {name} on /metrics"))
}

/// Waits until the node serves revision `at_least` or later.
pub async fn wait_revision(ingress: SocketAddr, at_least: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while config_revision(ingress).await? < at_least {
        if Instant::now() > deadline {
            bail!("the node at {ingress} did not reach revision {at_least}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// `hookplane standalone` with loopback targets allowed.
pub struct Standalone {
    pub process: Process,
    args: Vec<String>,
    pub dir: TempDir,
    pub control: SocketAddr,
    pub ingress: SocketAddr,
    pub grpc: SocketAddr,
}

/// Flags for the node under test from `HOOKPLANE_BENCH_NODE_ARGS` (split at whitespace), to
/// compare settings such as `--delivery-threads 1` without a rebuild.
pub fn node_args_from_env() -> Vec<String> {
    std::env::var("HOOKPLANE_BENCH_NODE_ARGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Standalone {
    pub async fn start(binary: &Path) -> anyhow::Result<Standalone> {
        Standalone::start_with(binary, &[]).await
    }

    /// With `extra` flags, e.g. `--queue nats://...`.
    pub async fn start_with(binary: &Path, extra: &[&str]) -> anyhow::Result<Standalone> {
        let dir = tempfile::tempdir()?;
        let mut args = strings(&[
            "standalone",
            "--data-dir",
            path_str(dir.path())?,
            "--allow-target-network",
            "127.0.0.0/8",
            "--control-listen",
            "127.0.0.1:0",
            "--ingress-listen",
            "127.0.0.1:0",
            "--data-grpc-listen",
            "127.0.0.1:0",
            // The benchmarks never open the console; its default port would clash between runs.
            "--console-listen",
            "off",
        ]);
        args.extend(strings(extra));
        args.extend(node_args_from_env());
        let process = Process::spawn(
            binary,
            &args,
            &dir.path().join("hookplane.log"),
            &["control plane", "ingress", "data-plane gRPC"],
        )
        .await?;
        let standalone = Standalone {
            args,
            control: process.addr("control plane"),
            ingress: process.addr("ingress"),
            grpc: process.addr("data-plane gRPC"),
            process,
            dir,
        };
        wait_ready(standalone.ingress).await?;
        Ok(standalone)
    }

    /// Kills it (SIGKILL) and starts it again on the same data dir and ports, without waiting
    /// until it is ready.
    pub async fn restart(&mut self, binary: &Path) -> anyhow::Result<()> {
        self.process.stop().await;
        let mut args = self.args.clone();
        for (flag, addr) in [
            ("--control-listen", self.control),
            ("--ingress-listen", self.ingress),
            ("--data-grpc-listen", self.grpc),
        ] {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args[i + 1] = addr.to_string();
            }
        }
        self.process = Process::spawn(
            binary,
            &args,
            &self.dir.path().join("hookplane.log"),
            &["control plane", "ingress", "data-plane gRPC"],
        )
        .await?;
        Ok(())
    }

    /// A token the process generated into its data dir (`admin.token`, `publisher.token`).
    pub fn token(&self, name: &str) -> anyhow::Result<String> {
        read_token(self.dir.path(), name)
    }

    pub async fn admin(&self) -> anyhow::Result<hookplane_client::Client> {
        Ok(hookplane_client::Client::connect(
            &format!("http://{}", self.control),
            &self.token("admin.token")?,
        )
        .await?)
    }
}

/// `hookplane control` alone.
pub struct Control {
    pub process: Process,
    pub dir: TempDir,
    pub addr: SocketAddr,
}

impl Control {
    pub async fn start(binary: &Path) -> anyhow::Result<Control> {
        let dir = tempfile::tempdir()?;
        let args = strings(&[
            "control",
            "--data-dir",
            path_str(dir.path())?,
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "off",
        ]);
        let process = Process::spawn(
            binary,
            &args,
            &dir.path().join("control.log"),
            &["control plane"],
        )
        .await?;
        Ok(Control {
            addr: process.addr("control plane"),
            process,
            dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn admin(&self) -> anyhow::Result<hookplane_client::Client> {
        Ok(hookplane_client::Client::connect(
            &self.url(),
            &read_token(self.dir.path(), "admin.token")?,
        )
        .await?)
    }
}

/// `hookplane data`: one node of a [`Control`].
pub struct DataNode {
    pub process: Process,
    /// Holds the spool and the log until the node is dropped.
    _dir: TempDir,
    pub ingress: SocketAddr,
}

impl DataNode {
    pub async fn start(binary: &Path, control: &Control) -> anyhow::Result<DataNode> {
        let dir = tempfile::tempdir()?;
        let spool = dir.path().join("spool");
        let node_token = read_token(control.dir.path(), "node.token")?;
        let args = strings(&[
            "data",
            "--control-url",
            &control.url(),
            "--node-token",
            &node_token,
            "--spool-dir",
            path_str(&spool)?,
            "--allow-target-network",
            "127.0.0.0/8",
            "--ingress-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ]);
        let process = Process::spawn(
            binary,
            &args,
            &dir.path().join("data.log"),
            &["ingress", "data-plane gRPC"],
        )
        .await?;
        let node = DataNode {
            ingress: process.addr("ingress"),
            process,
            _dir: dir,
        };
        wait_ready(node.ingress).await?;
        Ok(node)
    }
}

/// `perf record` of a process for one step, when `HOOKPLANE_BENCH_PERF=<dir>` asks for it: the
/// profile lands in `<dir>/<label>.data` (read with `perf report -i`).
pub struct Profile(Option<std::process::Child>);

impl Profile {
    pub fn start(process: &Process, label: &str) -> Profile {
        let (Some(dir), Some(pid)) = (std::env::var_os("HOOKPLANE_BENCH_PERF"), process.pid())
        else {
            return Profile(None);
        };
        let out = Path::new(&dir).join(format!("{label}.data"));
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
            ])
            .arg(pid.to_string())
            .arg("-o")
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Profile(child)
    }

    /// Stops the recording (SIGINT, so perf writes its file) and waits for it.
    pub fn stop(self) {
        if let Some(mut child) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

//! The real `hookplane` processes: standalone, control plane, data-plane nodes. Each gets its own
//! temporary directory, listens on ports the OS picks (read back from the "listening on" lines the
//! binary prints) and keeps them across a restart, so clients and nodes reconnect to the same place.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One running `hookplane` process, its printed lines and its log file.
struct Process {
    child: Child,
    /// Started under another program (`strace`): the hookplane process is its child.
    wrapped: bool,
    addrs: HashMap<String, SocketAddr>,
    stdout: Arc<Mutex<Vec<String>>>,
    log_path: PathBuf,
}

impl Process {
    /// Starts `hookplane ARGS` and waits until it printed a "listening on" line for each of `listeners`.
    async fn spawn(
        args: &[String],
        log_path: &Path,
        listeners: &[&str],
    ) -> anyhow::Result<Process> {
        Process::spawn_wrapped(&[], args, &[], log_path, listeners).await
    }

    /// [`Process::spawn`] as `WRAPPER... hookplane ARGS` (e.g. under `strace`), with `env` set.
    async fn spawn_wrapped(
        wrapper: &[String],
        args: &[String],
        env: &[(String, String)],
        log_path: &Path,
        listeners: &[&str],
    ) -> anyhow::Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let mut command = match wrapper.split_first() {
            None => Command::new(crate::binaries::hookplane()),
            Some((program, wrapper_args)) => {
                let mut command = Command::new(program);
                command.args(wrapper_args).arg(crate::binaries::hookplane());
                command
            }
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .env("RUST_LOG", "info")
            .kill_on_drop(true);
        // The tests decide every setting; nothing leaks in from the caller's environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("HOOKPLANE_") || key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = command.spawn().context("starting hookplane")?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let seen = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((what, addr)) = line.split_once(" listening on ")
                    && let Ok(addr) = addr.trim().parse::<SocketAddr>()
                {
                    let _ = addr_tx.send((what.to_owned(), addr));
                }
                seen.lock().unwrap().push(line);
            }
        });
        let mut addrs = HashMap::new();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut listeners = listeners.to_vec();
        if args.iter().any(|a| a == "--metrics-listen") {
            listeners.push("metrics");
        }
        while listeners.iter().any(|l| !addrs.contains_key(*l)) {
            match tokio::time::timeout_at(deadline, addr_rx.recv()).await {
                Ok(Some((what, addr))) => {
                    addrs.insert(what, addr);
                }
                _ => {
                    let _ = child.start_kill();
                    bail!(
                        "hookplane {args:?} did not start; its log:\n{}",
                        std::fs::read_to_string(log_path).unwrap_or_default()
                    );
                }
            }
        }
        Ok(Process {
            child,
            wrapped: !wrapper.is_empty(),
            addrs,
            stdout,
            log_path: log_path.to_path_buf(),
        })
    }

    fn addr(&self, what: &str) -> SocketAddr {
        self.addrs[what]
    }

    /// The niceness of each of its threads named `name` (`/proc`: a thread name is cut to 15
    /// bytes).
    fn niceness_of_threads(&self, name: &str) -> Vec<i32> {
        let Some(pid) = self.child.id() else {
            return Vec::new();
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
            .filter_map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
                // After the parenthesised name, niceness is the 17th field (19th in all).
                let (_, rest) = stat.rsplit_once(')')?;
                rest.split_whitespace().nth(16)?.parse().ok()
            })
            .collect()
    }

    /// The `--metrics-listen` address, when it was given.
    fn metrics_url(&self) -> Option<String> {
        self.addrs
            .get("metrics")
            .map(|a| format!("http://{a}/metrics"))
    }

    /// The web console's address, unless the process runs without it.
    fn console_addr(&self) -> Option<SocketAddr> {
        self.addrs.get("console").copied()
    }

    /// SIGKILL, as `kill -9`: no shutdown code runs.
    async fn kill(&mut self) {
        self.kill_wrapped();
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGKILL to what a wrapper started: killing only the wrapper (`strace`) would leave the
    /// traced process running.
    fn kill_wrapped(&self) {
        let Some(pid) = self.child.id().filter(|_| self.wrapped) else {
            return;
        };
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", child])
                .status();
        }
    }

    /// SIGTERM, and waits for the process to exit by itself.
    async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.send_sigterm()?;
        self.wait_exit().await
    }

    /// SIGTERM, without waiting.
    fn send_sigterm(&self) -> anyhow::Result<()> {
        let pid = self.child.id().context("process already exited")?;
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        Ok(())
    }

    /// Waits (up to 30 s) for the process to exit.
    async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_wrapped();
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `args` with the web console on a port the OS picks (the default, 127.0.0.1:8081, would clash
/// between tests) unless they set `--console-listen`; and the listeners to wait for.
fn with_console<'a>(args: &mut Vec<String>, listeners: &[&'a str]) -> Vec<&'a str> {
    let mut listeners = listeners.to_vec();
    match flag_value(args, "--console-listen").as_deref() {
        Some("off") => {}
        Some(_) => listeners.push("console"),
        None => {
            args.extend(["--console-listen".to_owned(), "127.0.0.1:0".to_owned()]);
            listeners.push("console");
        }
    }
    listeners
}

fn read_token(dir: &Path, file: &str) -> anyhow::Result<String> {
    let path = dir.join(file);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

/// `https` when `args` give the gRPC port(s) a certificate (`--tls-cert`), else `http`.
fn grpc_scheme(args: &[String]) -> &'static str {
    if args.iter().any(|a| a == "--tls-cert") {
        "https"
    } else {
        "http"
    }
}

/// The token `args` give with `flag` or in the file `flag`-file names, if any.
fn given_token(args: &[String], flag: &str) -> anyhow::Result<Option<String>> {
    if let Some(token) = flag_value(args, flag) {
        return Ok(Some(token));
    }
    match flag_value(args, &format!("{flag}-file")) {
        Some(path) => Ok(Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {path}"))?
                .trim()
                .to_owned(),
        )),
        None => Ok(None),
    }
}

/// The value following `flag` in `args`, if given.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Waits until the node at `ingress` answers `/readyz` with 200 (it has applied a config snapshot).
pub async fn wait_ready(ingress: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{ingress}/readyz");
    let client = reqwest::Client::new();
    crate::eventually(START_TIMEOUT, "the node to be ready", || async {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => Some(()),
            _ => None,
        }
    })
    .await
}

/// `hookplane standalone`: the control plane and one node in one process.
pub struct Standalone {
    process: Process,
    args: Vec<String>,
    /// Environment variables it runs with (`OTEL_*`...), beside `RUST_LOG`.
    env: Vec<(String, String)>,
    /// The data directory (sled store, tokens, spool).
    pub dir: TempDir,
    pub control_addr: SocketAddr,
    pub ingress_addr: SocketAddr,
    pub data_grpc_addr: SocketAddr,
    pub admin_token: String,
    /// The token of EventService on the node.
    pub publisher_token: String,
}

impl Standalone {
    /// Starts with loopback targets allowed (test receivers run on 127.0.0.1) and waits until ready.
    pub async fn start() -> anyhow::Result<Standalone> {
        Standalone::start_with(&[]).await
    }

    /// Starts with extra flags.
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Standalone> {
        Standalone::start_with_env(extra, &[]).await
    }

    /// Starts with extra flags and environment variables.
    pub async fn start_with_env(
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Standalone> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = tempfile::tempdir()?;
        let mut args = strings(&[
            "standalone",
            "--data-dir",
            dir.path().to_str().expect("utf-8 temp dir"),
            "--allow-target-network",
            "127.0.0.0/8",
        ]);
        args.extend(strings(extra));
        let process = Standalone::launch(&args, &env, dir.path(), None).await?;
        let admin_token = match flag_value(&args, "--admin-token") {
            Some(token) => token,
            None => read_token(dir.path(), "admin.token")?,
        };
        let publisher_token = match flag_value(&args, "--publisher-token") {
            Some(token) => token,
            None => read_token(dir.path(), "publisher.token")?,
        };
        let standalone = Standalone {
            control_addr: process.addr("control plane"),
            ingress_addr: process.addr("ingress"),
            data_grpc_addr: process.addr("data-plane gRPC"),
            process,
            args,
            env,
            dir,
            admin_token,
            publisher_token,
        };
        wait_ready(standalone.ingress_addr).await?;
        Ok(standalone)
    }

    async fn launch(
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
        addrs: Option<[SocketAddr; 3]>,
    ) -> anyhow::Result<Process> {
        let [control, ingress, grpc] = addrs.map_or_else(
            || {
                [
                    "127.0.0.1:0".to_owned(),
                    "127.0.0.1:0".to_owned(),
                    "127.0.0.1:0".to_owned(),
                ]
            },
            |a| a.map(|a| a.to_string()),
        );
        let mut all = args.to_vec();
        all.extend([
            "--control-listen".to_owned(),
            control,
            "--ingress-listen".to_owned(),
            ingress,
            "--data-grpc-listen".to_owned(),
            grpc,
        ]);
        let listeners = with_console(&mut all, &["control plane", "ingress", "data-plane gRPC"]);
        Process::spawn_wrapped(&[], &all, env, &dir.join("hookplane.log"), &listeners).await
    }

    pub fn control_url(&self) -> String {
        format!("{}://{}", grpc_scheme(&self.args), self.control_addr)
    }

    pub fn ingress_url(&self) -> String {
        format!("http://{}", self.ingress_addr)
    }

    pub fn data_grpc_url(&self) -> String {
        format!("{}://{}", grpc_scheme(&self.args), self.data_grpc_addr)
    }

    /// The web console's URL (a new port after a restart).
    pub fn console_url(&self) -> String {
        let addr = self.process.console_addr().expect("the console runs");
        format!("http://{addr}")
    }

    /// A client of the control plane with the admin token.
    pub async fn admin(&self) -> anyhow::Result<hookplane_client::Client> {
        Ok(hookplane_client::Client::connect(&self.control_url(), &self.admin_token).await?)
    }

    /// A client of the node's gRPC port with the publisher token (EventService).
    pub async fn publisher(&self) -> anyhow::Result<hookplane_client::Client> {
        Ok(hookplane_client::Client::connect(&self.data_grpc_url(), &self.publisher_token).await?)
    }

    /// Every line the process printed on stdout so far (this run only).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout.lock().unwrap().clone()
    }

    /// The URL of `/metrics` on `--metrics-listen`, when it was given.
    pub fn metrics_url(&self) -> Option<String> {
        self.process.metrics_url()
    }

    /// What the process logged (every run in this directory).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The niceness of each of its threads named `name`, as `/proc` cuts it to 15 bytes.
    pub fn niceness_of_threads(&self, name: &str) -> Vec<i32> {
        self.process.niceness_of_threads(name)
    }

    /// `kill -9`.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// SIGTERM, waiting for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.terminate().await
    }

    /// Kills the process if it runs, then starts it again on the same directory and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill().await;
        let addrs = [self.control_addr, self.ingress_addr, self.data_grpc_addr];
        self.process =
            Standalone::launch(&self.args, &self.env, self.dir.path(), Some(addrs)).await?;
        wait_ready(self.ingress_addr).await
    }
}

/// `hookplane control` alone.
pub struct ControlProcess {
    process: Process,
    args: Vec<String>,
    pub dir: TempDir,
    pub addr: SocketAddr,
    pub admin_token: String,
    pub node_token: String,
    pub publisher_token: String,
}

impl ControlProcess {
    pub async fn start() -> anyhow::Result<ControlProcess> {
        ControlProcess::start_with(&[]).await
    }

    /// Starts with loopback targets allowed (Send test reaches test receivers on 127.0.0.1).
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<ControlProcess> {
        let dir = tempfile::tempdir()?;
        let mut args = strings(&[
            "control",
            "--data-dir",
            dir.path().to_str().expect("utf-8 temp dir"),
            "--allow-target-network",
            "127.0.0.0/8",
        ]);
        args.extend(strings(extra));
        let process = ControlProcess::launch(&args, dir.path(), "127.0.0.1:0").await?;
        Ok(ControlProcess {
            addr: process.addr("control plane"),
            admin_token: match given_token(&args, "--admin-token")? {
                Some(token) => token,
                None => read_token(dir.path(), "admin.token")?,
            },
            node_token: read_token(dir.path(), "node.token")?,
            publisher_token: read_token(dir.path(), "publisher.token")?,
            process,
            args,
            dir,
        })
    }

    async fn launch(args: &[String], dir: &Path, listen: &str) -> anyhow::Result<Process> {
        let mut all = args.to_vec();
        all.extend(["--listen".to_owned(), listen.to_owned()]);
        let listeners = with_console(&mut all, &["control plane"]);
        Process::spawn(&all, &dir.join("control.log"), &listeners).await
    }

    /// `https://` when it was started with `--tls-cert`.
    pub fn url(&self) -> String {
        format!("{}://{}", grpc_scheme(&self.args), self.addr)
    }

    /// Runs `hookctl` against this control plane with the admin token; the environment's
    /// `HOOKPLANE_SERVER` and `HOOKPLANE_ADMIN_TOKEN` do not leak in.
    pub fn hookctl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::binaries::hookctl())
            .args(["--server", &self.url(), "--token", &self.admin_token])
            .args(args)
            .env_remove("HOOKPLANE_SERVER")
            .env_remove("HOOKPLANE_ADMIN_TOKEN")
            .output()
            .expect("hookctl runs")
    }

    /// The web console's URL (a new port after a restart).
    pub fn console_url(&self) -> String {
        let addr = self.process.console_addr().expect("the console runs");
        format!("http://{addr}")
    }

    pub async fn admin(&self) -> anyhow::Result<hookplane_client::Client> {
        Ok(hookplane_client::Client::connect(&self.url(), &self.admin_token).await?)
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.process.stdout.lock().unwrap().clone()
    }

    /// The URL of `/metrics` on `--metrics-listen`, when it was given.
    pub fn metrics_url(&self) -> Option<String> {
        self.process.metrics_url()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.terminate().await
    }

    /// Starts it again (killing it first if it runs) on the same directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill().await;
        self.process =
            ControlProcess::launch(&self.args, self.dir.path(), &self.addr.to_string()).await?;
        Ok(())
    }

    /// Starts it again (killing it first if it runs) on the same directory and port, with
    /// `extra` in place of the flags it was started with (e.g. another master key).
    pub async fn restart_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = self.args[..5].to_vec();
        args.extend(strings(extra));
        self.args = args;
        self.restart().await
    }

    /// Another control plane in `stopped`'s place: its port and tokens, so nodes reconnect to
    /// it, but a data directory of its own, empty at start (a store lost and set up anew).
    pub async fn start_in_place_of(stopped: &ControlProcess) -> anyhow::Result<ControlProcess> {
        let dir = tempfile::tempdir()?;
        let args = strings(&[
            "control",
            "--data-dir",
            dir.path().to_str().expect("utf-8 temp dir"),
            "--allow-target-network",
            "127.0.0.0/8",
            "--admin-token",
            &stopped.admin_token,
            "--node-token",
            &stopped.node_token,
            "--publisher-token",
            &stopped.publisher_token,
        ]);
        let process = ControlProcess::launch(&args, dir.path(), &stopped.addr.to_string()).await?;
        Ok(ControlProcess {
            addr: process.addr("control plane"),
            admin_token: stopped.admin_token.clone(),
            node_token: stopped.node_token.clone(),
            publisher_token: stopped.publisher_token.clone(),
            process,
            args,
            dir,
        })
    }

    /// A copy of its sled store, as a backup is; take it while the process is stopped.
    pub fn back_up_store(&self) -> anyhow::Result<TempDir> {
        let backup = tempfile::tempdir()?;
        copy_dir(&self.dir.path().join("store"), &backup.path().join("store"))?;
        Ok(backup)
    }

    /// Kills it, puts the store of `backup` in place of its own and starts it again.
    pub async fn restore_store(&mut self, backup: &TempDir) -> anyhow::Result<()> {
        self.process.kill().await;
        let store = self.dir.path().join("store");
        std::fs::remove_dir_all(&store)?;
        copy_dir(&backup.path().join("store"), &store)?;
        self.restart().await
    }
}

/// Copies the directory tree `from` to `to`.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// `hookplane data`: one node of a control plane.
/// How [`DataNode::spawn_with`] starts a node.
pub struct NodeSetup {
    /// Its `--spool-dir` (default: in its temporary directory).
    pub spool_dir: Option<PathBuf>,
    /// A program and its arguments to run the node under, given the spool dir (e.g. `strace`
    /// injecting faults on a file there); restarts run it without.
    pub wrapper: Wrapper,
    /// The `--control-url` to dial instead of the control plane's own URL (another scheme).
    pub control_url: Option<String>,
}

/// The command line a node runs under, given its spool dir.
pub type Wrapper = Box<dyn FnOnce(&Path) -> Vec<String> + Send>;

impl Default for NodeSetup {
    fn default() -> Self {
        NodeSetup {
            spool_dir: None,
            wrapper: Box::new(|_| Vec::new()),
            control_url: None,
        }
    }
}

pub struct DataNode {
    process: Process,
    args: Vec<String>,
    pub dir: TempDir,
    pub ingress_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
}

impl DataNode {
    /// Starts a node of `control` with loopback targets allowed, and waits until it is ready.
    pub async fn start(control: &ControlProcess, extra: &[&str]) -> anyhow::Result<DataNode> {
        let node = DataNode::spawn(control, extra).await?;
        wait_ready(node.ingress_addr).await?;
        Ok(node)
    }

    /// Starts a node without waiting for it to become ready.
    pub async fn spawn(control: &ControlProcess, extra: &[&str]) -> anyhow::Result<DataNode> {
        DataNode::spawn_with(control, extra, NodeSetup::default()).await
    }

    /// [`DataNode::start`] with its spool elsewhere or under a wrapper program.
    pub async fn start_with(
        control: &ControlProcess,
        extra: &[&str],
        setup: NodeSetup,
    ) -> anyhow::Result<DataNode> {
        let node = DataNode::spawn_with(control, extra, setup).await?;
        wait_ready(node.ingress_addr).await?;
        Ok(node)
    }

    /// [`DataNode::spawn`] with its spool elsewhere or under a wrapper program.
    pub async fn spawn_with(
        control: &ControlProcess,
        extra: &[&str],
        setup: NodeSetup,
    ) -> anyhow::Result<DataNode> {
        let dir = tempfile::tempdir()?;
        let spool = setup.spool_dir.unwrap_or_else(|| dir.path().join("spool"));
        let control_url = setup.control_url.unwrap_or_else(|| control.url());
        let mut args = strings(&[
            "data",
            "--control-url",
            &control_url,
            "--spool-dir",
            spool.to_str().expect("utf-8 spool dir"),
            "--allow-target-network",
            "127.0.0.0/8",
        ]);
        if !extra.contains(&"--node-token-file") {
            args.extend(strings(&["--node-token", &control.node_token]));
        }
        args.extend(strings(extra));
        let all = DataNode::with_listeners(&args, None);
        let process = Process::spawn_wrapped(
            &(setup.wrapper)(&spool),
            &all,
            &[],
            &dir.path().join("data.log"),
            &["ingress", "data-plane gRPC"],
        )
        .await?;
        Ok(DataNode {
            ingress_addr: process.addr("ingress"),
            grpc_addr: process.addr("data-plane gRPC"),
            process,
            args,
            dir,
        })
    }

    async fn launch(
        args: &[String],
        dir: &Path,
        addrs: Option<[SocketAddr; 2]>,
    ) -> anyhow::Result<Process> {
        let all = DataNode::with_listeners(args, addrs);
        Process::spawn(&all, &dir.join("data.log"), &["ingress", "data-plane gRPC"]).await
    }

    /// `args` and the listen flags: the given addresses, or ports the OS picks.
    fn with_listeners(args: &[String], addrs: Option<[SocketAddr; 2]>) -> Vec<String> {
        let [ingress, grpc] = addrs.map_or_else(
            || ["127.0.0.1:0".to_owned(), "127.0.0.1:0".to_owned()],
            |a| a.map(|a| a.to_string()),
        );
        let mut all = args.to_vec();
        all.extend([
            "--ingress-listen".to_owned(),
            ingress,
            "--grpc-listen".to_owned(),
            grpc,
        ]);
        all
    }

    pub fn ingress_url(&self) -> String {
        format!("http://{}", self.ingress_addr)
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://{}", grpc_scheme(&self.args), self.grpc_addr)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The niceness of each of its threads named `name`, as `/proc` cuts it to 15 bytes.
    pub fn niceness_of_threads(&self, name: &str) -> Vec<i32> {
        self.process.niceness_of_threads(name)
    }

    /// The URL of `/metrics` on `--metrics-listen`, when it was given.
    pub fn metrics_url(&self) -> Option<String> {
        self.process.metrics_url()
    }

    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.terminate().await
    }

    /// The value of one series of the node's `/metrics` (e.g. `hookplane_spool_corrupt_bytes`,
    /// or a labelled `name{outcome="accepted"}`); `None` when it is not exported (yet).
    pub async fn metric(&self, series: &str) -> anyhow::Result<Option<u64>> {
        let text = reqwest::get(format!("{}/metrics", self.ingress_url()))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok()))
    }

    /// SIGTERM, as an orchestrator sends it, without waiting for the exit.
    pub fn send_sigterm(&self) -> anyhow::Result<()> {
        self.process.send_sigterm()
    }

    /// Waits (up to 30 s) for the process to exit.
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.wait_exit().await
    }

    /// Starts it again (killing it first if it runs) with the same spool and ports; waits until ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.kill().await;
        let addrs = [self.ingress_addr, self.grpc_addr];
        self.process = DataNode::launch(&self.args, self.dir.path(), Some(addrs)).await?;
        wait_ready(self.ingress_addr).await
    }
}

//! Real `nats-server` processes with JetStream for the shared-queue tests: one server, or a
//! cluster of three (R3 streams), each on free loopback ports with a temporary store, never the
//! machine's own NATS on 4222. A server can be killed and started again on the same ports and
//! store, as an operator's restart would.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// One server of a [`NatsCluster`] (or a lone one).
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting nats-server ({e}); it comes from Debian's nats-server package, \
                     which .ci/run installs"
                )
            })?;
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < give_up,
                "nats-server {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `kill -9`: no goodbye to the cluster.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One or three servers; dropped, every one is stopped and its store removed.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    _dir: TempDir,
}

impl NatsCluster {
    /// A lone server with JetStream.
    pub fn single() -> anyhow::Result<NatsCluster> {
        NatsCluster::start(1)
    }

    /// `n` servers routed to each other, with JetStream (use `--nats-stream-replicas n`).
    pub fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = tempfile::tempdir()?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let routes = ports
            .iter()
            .map(|(_, cluster)| format!("nats://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::new();
        for (i, (port, cluster)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.path().join(&name);
            let mut args = vec![
                "-js".to_owned(),
                "-a".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                port.to_string(),
                "-sd".to_owned(),
                store.to_string_lossy().into_owned(),
                "-n".to_owned(),
                name.clone(),
            ];
            if n > 1 {
                args.extend([
                    "--cluster_name".to_owned(),
                    "hookplane-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{cluster}"),
                    "--routes".to_owned(),
                    routes.clone(),
                ]);
            }
            servers.push(NatsServer {
                log: dir.path().join(format!("{name}.log")),
                name,
                port: *port,
                args,
                child: None,
            });
        }
        for server in &mut servers {
            server.launch()?;
        }
        Ok(NatsCluster { servers, _dir: dir })
    }

    /// The `--queue` value naming every server.
    pub fn queue_flag(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server that leads `stream` now (its raft leader: the one whose loss
    /// makes the others elect a new one).
    pub async fn leader_of(&self, stream: &str) -> anyhow::Result<usize> {
        let client =
            async_nats::connect(self.queue_flag().split(',').next().unwrap_or_default()).await?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await?;
        let info = stream.info().await?;
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("stream {stream:?} has no leader", stream = info.config.name)
            })?;
        self.servers
            .iter()
            .position(|s| s.name == leader)
            .ok_or_else(|| anyhow::anyhow!("no server named {leader}"))
    }

    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- {}\n{}", s.name, s.log()))
            .collect()
    }
}

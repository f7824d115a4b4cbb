//! The one `hookplane` binary: `control` runs the control plane, `data` runs a data-plane node,
//! `standalone` runs both in one process for a single machine.
//!
//! Each listener is bound here, before anything is served, and its real address is printed on
//! stdout (`... listening on ADDR`), so `127.0.0.1:0` works and scripts can read the port.
//! TLS flags (`tls.rs`) are read and checked before that, so a bad certificate stops the start.

mod telemetry;
mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hookplane_client::ClientTls;
use hookplane_control::console::{self, ConsoleListen, ConsoleSettings};
use hookplane_control::{ControlOptions, ControlPlane, ControlTls, LocalReports};
use hookplane_data::outcomes::ReportSink;
use hookplane_data::{MetricsListener, NodeConfig, NodeOptions, NodeTls};
use hookplane_outbound::OutboundOptions;
use hookplane_proto::v1::DeliveryAttempt;
use hookplane_secret_file::{SecretFlag, SecretValue};
use tokio::net::TcpListener;

/// sled allocates and frees tree nodes on every write from many threads; glibc's malloc spent
/// more of the node's CPU on that (arena locks, consolidation) than the deliveries themselves.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "hookplane",
    version,
    about = "LINE webhook forwarding and signed event webhooks"
)]
struct Cli {
    /// Log lines as human text or as JSON objects.
    #[arg(long, env = "HOOKPLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (`http://collector:4317`): a span per LINE
    /// request, enqueue, delivery attempt and gRPC call, one trace from a request to its
    /// deliveries. The standard `OTEL_*` variables apply (headers, timeout, service name, resource
    /// attributes, sampler, batch delay). Unset: nothing is exported.
    #[arg(long, env = "HOOKPLANE_OTLP_ENDPOINT", global = true)]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The control plane: admin gRPC API, config stream, delivery log, on a sled store.
    Control(Box<ControlCommand>),
    /// A stateless data-plane node: LINE ingress, event publishing and deliveries.
    Data(Box<DataCommand>),
    /// The control plane and one data-plane node in one process.
    Standalone(Box<StandaloneCommand>),
}

/// The web console's flags, the same in `control` and `standalone`.
#[derive(Args, Debug)]
struct ConsoleArgs {
    /// Address of the web console (HTTP), or `off`.
    #[arg(
        long,
        env = "HOOKPLANE_CONSOLE_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    console_listen: ConsoleListen,
    /// The base URL LINE reaches the nodes' ingress at (`https://hooks.example.com`); the console
    /// shows channels' webhook URLs under it. In `standalone`, default: the ingress's own address.
    #[arg(long, env = "HOOKPLANE_PUBLIC_INGRESS_URL")]
    public_ingress_url: Option<String>,
}

#[derive(Args, Debug)]
struct ControlCommand {
    /// Address of the gRPC API.
    #[arg(long, env = "HOOKPLANE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Address serving the control plane's Prometheus `/metrics` (RPCs, config stream
    /// subscribers, revision, attempt-log writes, notices); unset: not served.
    #[arg(long, env = "HOOKPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    console: ConsoleArgs,
    #[command(flatten)]
    control: ControlOptions,
    #[command(flatten)]
    outbound: OutboundOptions,
    #[command(flatten)]
    tls: tls::GrpcTlsArgs,
    /// PEM CA certificate(s) of node client certificates: ConfigService then takes calls only
    /// from nodes presenting a certificate it signed (mTLS); admin calls need none.
    #[arg(long, env = "HOOKPLANE_NODE_CLIENT_CA", requires = "tls_cert")]
    node_client_ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DataCommand {
    /// The control plane's gRPC URL: http://HOST:PORT, or https://HOST:PORT to dial TLS.
    #[arg(
        long,
        env = "HOOKPLANE_CONTROL_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    control_url: String,
    #[command(flatten)]
    control_tls: tls::ControlDialArgs,
    /// Token the node presents to the control plane (the control plane's `node.token`).
    #[arg(long, env = "HOOKPLANE_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<SecretValue>,
    /// A file holding --node-token (keeps it off the command line).
    #[arg(long, env = "HOOKPLANE_NODE_TOKEN_FILE")]
    node_token_file: Option<PathBuf>,
    /// Address of the HTTP ingress (LINE webhooks, /healthz, /readyz, and /metrics unless
    /// --metrics-listen moves it).
    #[arg(
        long,
        env = "HOOKPLANE_INGRESS_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    ingress_listen: SocketAddr,
    /// Address of the node's gRPC API (event publishing, health, reflection).
    #[arg(long, env = "HOOKPLANE_GRPC_LISTEN", default_value = "127.0.0.1:50052")]
    grpc_listen: SocketAddr,
    /// Address serving the node's Prometheus `/metrics`; when set, the public ingress port no
    /// longer does (404). Unset: `/metrics` stays on the ingress.
    #[arg(long, env = "HOOKPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Where the node keeps deliveries in flight.
    #[arg(long, env = "HOOKPLANE_SPOOL_DIR", default_value = "./hookplane-spool")]
    spool_dir: PathBuf,
    #[command(flatten)]
    node: NodeOptions,
    #[command(flatten)]
    outbound: OutboundOptions,
    #[command(flatten)]
    tls: tls::GrpcTlsArgs,
    #[command(flatten)]
    ingress_tls: tls::IngressTlsArgs,
}

#[derive(Args, Debug)]
struct StandaloneCommand {
    /// Address of the control plane's gRPC API.
    #[arg(
        long,
        alias = "listen",
        env = "HOOKPLANE_CONTROL_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    control_listen: SocketAddr,
    /// Address of the HTTP ingress (LINE webhooks, /healthz, /readyz, and /metrics unless
    /// --metrics-listen moves it).
    #[arg(
        long,
        env = "HOOKPLANE_INGRESS_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    ingress_listen: SocketAddr,
    /// Address of the node's gRPC API (event publishing, health, reflection).
    #[arg(
        long,
        alias = "grpc-listen",
        env = "HOOKPLANE_DATA_GRPC_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    data_grpc_listen: SocketAddr,
    /// Address serving `/metrics` with both planes' series (the node's, then the control
    /// plane's `hookplane_control_*`): one process, one scrape target. When set, the public
    /// ingress port no longer serves `/metrics`; unset, it serves the node's as before.
    #[arg(long, env = "HOOKPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    console: ConsoleArgs,
    /// Where the node keeps deliveries in flight; defaults to `spool/` inside the data dir.
    #[arg(long, env = "HOOKPLANE_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    #[command(flatten)]
    control: ControlOptions,
    #[command(flatten)]
    node: NodeOptions,
    /// One flag for both halves: the node's deliveries and the control plane's test events.
    #[command(flatten)]
    outbound: OutboundOptions,
    /// One certificate for both gRPC ports; the node dials its control plane trusting exactly it.
    #[command(flatten)]
    tls: tls::GrpcTlsArgs,
    #[command(flatten)]
    ingress_tls: tls::IngressTlsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every TLS config of the process (tonic's, the ingress's, the OTLP exporter's) uses ring,
    // named once here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporting = telemetry::init(cli.log_format, cli.otlp_endpoint.as_deref())?;
    let ran = match cli.command {
        Command::Control(cmd) => run_control(*cmd).await,
        Command::Data(cmd) => run_data(*cmd).await,
        Command::Standalone(cmd) => run_standalone(*cmd).await,
    };
    if let Some(exporting) = exporting {
        exporting.flush().await;
    }
    ran
}

async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} to {addr}"))?;
    println!("{what} listening on {}", listener.local_addr()?);
    Ok(listener)
}

async fn run_control(cmd: ControlCommand) -> anyhow::Result<()> {
    let identity = cmd.tls.read()?;
    // The console calls this process's own gRPC port: over TLS trusting exactly the certificate
    // it serves, as standalone's node does.
    let console_tls = identity
        .as_ref()
        .map(|identity| ClientTls::pinned_to_pem(identity.cert_pem()))
        .transpose()?;
    let tls = match identity {
        Some(identity) => Some(ControlTls {
            identity: identity.tonic(),
            node_client_ca: cmd
                .node_client_ca
                .as_deref()
                .map(tls::node_client_ca)
                .transpose()?,
        }),
        None => None,
    };
    let mut control = ControlPlane::open(&cmd.control)?.with_outbound(cmd.outbound);
    if let Some(tls) = tls {
        control = control.with_tls(tls);
    }
    let listener = bind("control plane", cmd.listen).await?;
    let settings = ConsoleSettings {
        public_ingress_url: cmd.console.public_ingress_url,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let console = start_console(
        cmd.console.console_listen,
        listener.local_addr()?,
        console_tls,
        settings,
        stop_rx.clone(),
    )
    .await?;
    let metrics = match cmd.metrics_listen {
        Some(addr) => {
            let listener = bind("metrics", addr).await?;
            let series = control.metrics();
            Some(tokio::spawn(hookplane_control::serve_metrics(
                listener,
                move || series.render(),
                stopped(stop_rx),
            )))
        }
        None => None,
    };
    let served = control.serve(listener, shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(console) = console {
        console.await??;
    }
    if let Some(metrics) = metrics {
        metrics.await??;
    }
    served?;
    Ok(())
}

/// Resolves once `rx` says stop (or its sender is gone).
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

const NODE_TOKEN: SecretFlag = SecretFlag::new("--node-token", "--node-token-file");

/// Binds the console's listener (unless `off`) and serves it beside the control plane at
/// `control_addr` (over TLS trusting `control_tls` when the port takes TLS) until `stop` turns
/// true.
async fn start_console(
    listen: ConsoleListen,
    control_addr: SocketAddr,
    control_tls: Option<ClientTls>,
    settings: ConsoleSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let ConsoleListen::At(addr) = listen else {
        return Ok(None);
    };
    let listener = bind("console", addr).await?;
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    Ok(Some(tokio::spawn(async move {
        console::serve(listener, control_addr, control_tls, settings, stopped)
            .await
            .context("console stopped")
    })))
}

async fn run_data(cmd: DataCommand) -> anyhow::Result<()> {
    let tls = NodeTls {
        control: cmd.control_tls.client_tls()?,
        grpc: cmd.tls.read()?.map(|identity| identity.tonic()),
        ingress: cmd.ingress_tls.server_config()?,
    };
    // A URL that does not fit the TLS flags stops the start before anything listens.
    hookplane_client::endpoint(&cmd.control_url, &tls.control).context("--control-url")?;
    let node_token = NODE_TOKEN
        .resolve(
            cmd.node_token.as_ref().map(SecretValue::expose),
            cmd.node_token_file.as_deref(),
        )?
        .context(
            "the node needs --node-token or --node-token-file (the control plane's node.token)",
        )?;
    let ingress = bind("ingress", cmd.ingress_listen).await?;
    let grpc = bind("data-plane gRPC", cmd.grpc_listen).await?;
    let metrics = match cmd.metrics_listen {
        Some(addr) => Some(MetricsListener {
            listener: bind("metrics", addr).await?,
            more: None,
        }),
        None => None,
    };
    let config = NodeConfig {
        control_url: cmd.control_url,
        node_token,
        spool_dir: cmd.spool_dir,
        options: cmd.node,
        outbound: cmd.outbound,
        tls,
        reports: None,
    };
    hookplane_data::run_with_metrics(config, ingress, grpc, metrics, shutdown_signal()).await?;
    Ok(())
}

async fn run_standalone(cmd: StandaloneCommand) -> anyhow::Result<()> {
    let grpc_identity = cmd.tls.read()?;
    let ingress_tls = cmd.ingress_tls.server_config()?;
    let mut control = ControlPlane::open(&cmd.control)?.with_outbound(cmd.outbound.clone());
    // The node dials the control plane of its own process: over TLS when the port takes only
    // TLS, trusting exactly the certificate the port serves (whatever names or CA it has).
    let (scheme, control_tls) = match &grpc_identity {
        Some(identity) => {
            control = control.with_tls(ControlTls {
                identity: identity.tonic(),
                node_client_ca: None,
            });
            ("https", ClientTls::pinned_to_pem(identity.cert_pem())?)
        }
        None => ("http", ClientTls::new()),
    };
    let control_listener = bind("control plane", cmd.control_listen).await?;
    let control_addr = control_listener.local_addr()?;
    let ingress = bind("ingress", cmd.ingress_listen).await?;
    let grpc = bind("data-plane gRPC", cmd.data_grpc_listen).await?;
    let metrics = match cmd.metrics_listen {
        Some(addr) => {
            let series = control.metrics();
            Some(MetricsListener {
                listener: bind("metrics", addr).await?,
                more: Some(Arc::new(move || series.render())),
            })
        }
        None => None,
    };
    // The ingress's own scheme: https when it serves TLS.
    let ingress_scheme = if ingress_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let settings = ConsoleSettings {
        public_ingress_url: Some(
            cmd.console
                .public_ingress_url
                .unwrap_or(format!("{ingress_scheme}://{}", ingress.local_addr()?)),
        ),
    };
    // The console dials the gRPC port as the node does.
    let console_tls = (scheme == "https").then(|| control_tls.clone());
    let reports: Arc<dyn ReportSink> = Arc::new(InProcessReports(control.local_reports()));
    let config = NodeConfig {
        control_url: format!("{scheme}://{control_addr}"),
        node_token: control.node_token().to_owned(),
        spool_dir: cmd
            .spool_dir
            .unwrap_or_else(|| cmd.control.data_dir.join("spool")),
        options: cmd.node,
        outbound: cmd.outbound,
        tls: NodeTls {
            control: control_tls,
            grpc: grpc_identity.map(|identity| identity.tonic()),
            ingress: ingress_tls,
        },
        reports: Some(reports),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let console = start_console(
        cmd.console.console_listen,
        control_addr,
        console_tls,
        settings,
        stop_rx.clone(),
    )
    .await?;
    let mut control_task = tokio::spawn(control.serve(control_listener, stopped(stop_rx.clone())));
    let mut node_task = tokio::spawn(hookplane_data::run_with_metrics(
        config,
        ingress,
        grpc,
        metrics,
        stopped(stop_rx),
    ));
    // Either half ending on its own is a failure of the whole: stop the other and report it.
    let early_end = tokio::select! {
        () = shutdown_signal() => None,
        res = &mut control_task => Some(res?.context("control plane stopped")),
        res = &mut node_task => Some(res?.context("data-plane node stopped")),
    };
    let _ = stop_tx.send(true);
    match early_end {
        Some(res) => res,
        None => {
            control_task.await??;
            node_task.await??;
            if let Some(console) = console {
                console.await??;
            }
            Ok(())
        }
    }
}

/// Standalone's node reports its attempts to the control plane of its own process directly:
/// the same intake ReportDeliveries feeds, without encoding them for gRPC and decoding them
/// again (about 3 µs of the 7 an attempt cost the control plane, docs/BENCHMARKS.md).
struct InProcessReports(LocalReports);

#[async_trait::async_trait]
impl ReportSink for InProcessReports {
    async fn report(
        &self,
        node_id: &str,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<(), String> {
        self.0.report(node_id, attempts).await.map(|_| ())
    }
}

/// Resolves on Ctrl-C or SIGTERM (what an orchestrator sends to stop a node).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

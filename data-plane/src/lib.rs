//! A hookplane data-plane node: LINE webhook ingress (verify, durably enqueue, answer), event
//! publishing (EventService: match subscriptions, durably enqueue), connectors (Genesys Cloud
//! Open Messaging in, and its agents' messages out as LINE pushes), the queue behind one trait
//! with a node-local sled spool, the delivery engine (pooled SSRF-guarded HTTP from
//! `hookplane-outbound`, signing at attempt time, retries through the queue, per-target caps and
//! breakers), the config stream from the control plane, and the outcome reports back to it.

mod attempt;
mod backoff;
pub mod config;
pub mod connectors;
mod control;
pub mod delivery;
mod enqueue_span;
mod error;
mod grpc;
pub mod ingress;
pub mod line_event;
pub mod metrics;
pub mod nats;
mod options;
pub mod outcomes;
pub mod publish;
pub mod queue;
pub mod request_body;

use std::{sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

pub use error::Error;
pub use options::{NodeConfig, NodeOptions, NodeTls, QueueChoice};

use crate::{
    config::ConfigStore,
    connectors::genesys::outbound::OutboundEndpoint,
    control::ControlPlane,
    delivery::{DeliveryPriority, Engine, EngineSettings, retry::RetryPolicy},
    ingress::Ingress,
    metrics::Metrics,
    nats::Nats,
    outcomes::{OutcomeLog, Outcomes, jetstream::SharedOutcomes},
    publish::{
        IdempotencyBook, IdempotencyKeys, Publisher, SharedIdempotencyKeys, TokenUses,
        report_token_uses,
    },
    queue::{
        Queue,
        budget::{self, ByteSize},
        jetstream::JetStreamQueue,
        spool::Spool,
    },
};

/// What a node keeps its work in, as `--queue` chose: the one place a backend is picked.
struct Backend {
    queue: Arc<dyn Queue>,
    outcomes: Arc<dyn Outcomes>,
    idempotency: Arc<dyn IdempotencyKeys>,
    /// Flushed at shutdown (the spool backend only).
    spool: Option<Arc<Spool>>,
}

impl Backend {
    async fn open(cfg: &NodeConfig, node_id: &str, metrics: &Arc<Metrics>) -> Result<Self, Error> {
        match &cfg.options.queue {
            QueueChoice::Spool => {
                let spool = Spool::open(&cfg.spool_dir)?;
                let limits = spool_limits(&cfg.options, &cfg.spool_dir, spool.disk_bytes())?;
                let spool = Arc::new(
                    spool
                        .with_limits(limits, Arc::clone(metrics))
                        .with_payload_retention(*cfg.options.payload_retention),
                );
                Ok(Self {
                    outcomes: Arc::new(OutcomeLog::open(spool.db())?),
                    idempotency: Arc::new(IdempotencyBook::open(spool.db())?),
                    queue: Arc::clone(&spool) as _,
                    spool: Some(spool),
                })
            }
            QueueChoice::Nats(servers) => {
                let nats = Nats::connect(
                    servers,
                    &cfg.options.nats,
                    node_id,
                    *cfg.options.payload_retention,
                )
                .await?;
                Ok(Self {
                    queue: Arc::new(JetStreamQueue::new(nats.clone())),
                    outcomes: Arc::new(SharedOutcomes::new(nats.clone())),
                    idempotency: Arc::new(SharedIdempotencyKeys::new(nats.idempotency.clone())),
                    spool: None,
                })
            }
        }
    }
}

/// The spool's cap as given, or [`budget::DEFAULT_DISK_PERCENT`] of the room its filesystem
/// has now (free space plus what the spool holds), and each tenant's share of it.
fn spool_limits(
    options: &NodeOptions,
    dir: &std::path::Path,
    spool_bytes: u64,
) -> Result<budget::Limits, Error> {
    let max_bytes = match options.spool_max_bytes {
        Some(ByteSize(max)) if max < budget::MIN_MAX_BYTES => {
            return Err(Error::InvalidSetting(format!(
                "--spool-max-bytes {} is below the smallest cap, {}: the journal's 64 MiB \
                 segments could keep a smaller spool full with nothing left to deliver",
                ByteSize(max),
                ByteSize(budget::MIN_MAX_BYTES)
            )));
        }
        Some(ByteSize(max)) => max,
        None => {
            let fs = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            let max = budget::default_max_bytes(free, spool_bytes);
            if max >= free.saturating_add(spool_bytes) {
                warn!(
                    free = %ByteSize(free),
                    cap = %ByteSize(max),
                    "the spool directory's filesystem has less room than the smallest spool \
                     cap; the disk may fill before the cap refuses anything"
                );
            }
            max
        }
    };
    let limits = budget::Limits::new(max_bytes, options.spool_tenant_share);
    info!(
        max_bytes = %ByteSize(limits.max_bytes),
        tenant_share = %options.spool_tenant_share,
        tenant_bytes = %ByteSize(limits.tenant_bytes),
        holds = %ByteSize(spool_bytes),
        "spool cap"
    );
    Ok(limits)
}

const CONFIG_CACHE_KEY: hookplane_secret_file::SecretFlag =
    hookplane_secret_file::SecretFlag::new("--config-cache-key", "--config-cache-key-file");

/// Runs a node until `shutdown` resolves: HTTP ingress (+ /healthz /readyz /metrics) on
/// `ingress`, gRPC (EventService, health, reflection) on `grpc`.
pub async fn run(
    cfg: NodeConfig,
    ingress: TcpListener,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    run_with_metrics(cfg, ingress, grpc, None, shutdown).await
}

/// `/metrics` on a listener of its own (`--metrics-listen`), off the public ingress port.
pub struct MetricsListener {
    pub listener: TcpListener,
    /// More exposition text after the node's: in standalone, the control plane's series, so one
    /// process is one scrape target.
    pub more: Option<ingress::MoreMetrics>,
}

/// [`run`], with `/metrics` served on `metrics` instead of the ingress when it is given.
pub async fn run_with_metrics(
    cfg: NodeConfig,
    ingress: TcpListener,
    grpc: TcpListener,
    metrics_listener: Option<MetricsListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let options = cfg.options.clone();
    let node_id = options
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node_{}", ulid::Ulid::new().to_string().to_lowercase()));
    let metrics = Arc::new(Metrics::default());
    let Backend {
        queue,
        outcomes,
        idempotency,
        spool,
    } = {
        // The node's directory (spool and saved config) holds LINE users' messages and channel
        // secrets: the node's alone, whichever queue it uses.
        queue::private_dir(&cfg.spool_dir)?;
        Backend::open(&cfg, &node_id, &metrics).await?
    };
    if let Some(spool) = &spool {
        metrics.spool_corrupt_bytes(spool.corrupt_bytes_skipped());
    }
    let store = Arc::new(ConfigStore::default());
    // The config saved when the node last ran: served until the control plane is reached.
    let cache_key = CONFIG_CACHE_KEY
        .resolve(
            options
                .config_cache_key
                .as_ref()
                .map(hookplane_secret_file::SecretValue::expose),
            options.config_cache_key_file.as_deref(),
        )
        .map_err(|e| Error::InvalidSetting(e.to_string()))?;
    let cache = Arc::new(config::ConfigCache::new(
        &cfg.spool_dir,
        cache_key.as_deref(),
        &cfg.node_token,
    )?);
    match cache.load() {
        Ok(Some(saved)) => {
            info!(
                revision = saved.revision,
                "serving the config saved at the last run until the control plane is reached"
            );
            store.install_cached(config::Snapshot::default().apply(&saved));
        }
        Ok(None) => {}
        Err(e) => {
            warn!(error = %e, "the saved config cannot be used; waiting for the control plane")
        }
    }
    let control = ControlPlane::new(&cfg.control_url, &cfg.node_token, &cfg.tls.control)?;
    let engine = Arc::new(Engine::new(
        EngineSettings {
            node_id: node_id.clone(),
            policy: RetryPolicy::new(
                options.retry_schedule.iter().map(|d| **d).collect(),
                options.max_attempts,
                *options.max_delivery_age,
            )
            .with_payload_retention(*options.payload_retention),
            target_concurrency: options.target_concurrency,
            line_api_base_url: options.line_api_base_url.clone(),
        },
        Arc::clone(&queue),
        Arc::clone(&store),
        hookplane_outbound::sender::Sender::from_options(&cfg.outbound)?,
        Arc::clone(&outcomes),
        Arc::clone(&metrics),
    ));

    let token_uses = Arc::new(TokenUses::default());
    let priority = DeliveryPriority::new(options.delivery_niceness);
    let publisher = Publisher {
        config: Arc::clone(&store),
        queue: Arc::clone(&queue),
        book: idempotency,
        token_uses: Arc::clone(&token_uses),
        priority: Arc::clone(&priority),
    };
    let delivery = DeliveryRuntime::start(options.delivery_threads, Arc::clone(&priority))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_on = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    // Before the stream starts, so the saver sees its first snapshot.
    let applied = store.watch_applied();
    tasks.spawn(config::watch_config(
        control.clone(),
        config::Watching {
            store: Arc::clone(&store),
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&metrics),
            node_id: node_id.clone(),
            cache_path: cache.path().to_path_buf(),
        },
        stop_rx.clone(),
    ));
    tasks.spawn(report_token_uses(
        token_uses,
        control.clone(),
        node_id.clone(),
        stop_rx.clone(),
    ));
    tasks.spawn(config::save_config(
        Arc::clone(&store),
        cache,
        applied,
        stop_rx.clone(),
    ));
    tasks.spawn_on(
        Arc::clone(&outcomes).report(
            outcomes::ReportTo {
                sink: cfg
                    .reports
                    .clone()
                    .unwrap_or_else(|| Arc::new(outcomes::GrpcReports(control))),
                config: Arc::clone(&store),
            },
            Arc::clone(&metrics),
            node_id.clone(),
            stop_rx.clone(),
        ),
        delivery.handle(),
    );
    tasks.spawn_on(Arc::clone(&engine).run(stop_rx.clone()), delivery.handle());
    // On the ingress's runtime: it has to run while the delivery threads are busy.
    tasks.spawn(Arc::clone(&priority).relax_while_quiet(stop_rx.clone()));
    if let Some(spool) = &spool {
        tasks.spawn(prune_parked(Arc::clone(spool), stop_rx.clone()));
    }

    let body = request_body::BodyLimits {
        max_bytes: options.max_body_bytes,
        deadline: *options.ingress_body_timeout,
    };
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ingress_state = Arc::new(Ingress {
        config: Arc::clone(&store),
        queue: Arc::clone(&queue),
        metrics: Arc::clone(&metrics),
        body,
        draining: Arc::clone(&draining),
        priority,
    });
    let (router, metrics_server) = match metrics_listener {
        None => (ingress::router(ingress_state), None),
        Some(MetricsListener { listener, more }) => (
            ingress::router_without_metrics(Arc::clone(&ingress_state)),
            Some(
                axum::serve(listener, ingress::metrics_router(ingress_state, more))
                    .with_graceful_shutdown(stop_on(stop_rx.clone())),
            ),
        ),
    };
    let metrics_served = async move {
        match metrics_server {
            Some(server) => server.await.map_err(Error::Io),
            None => Ok(()),
        }
    };
    let router = router.merge(connectors::genesys::outbound::router(Arc::new(
        OutboundEndpoint {
            config: Arc::clone(&store),
            queue: Arc::clone(&queue),
            metrics: Arc::clone(&metrics),
            body,
        },
    )));
    info!(
        node_id,
        ingress = ?ingress.local_addr().ok(),
        grpc = ?grpc.local_addr().ok(),
        control_url = %hookplane_outbound::masked_url(&cfg.control_url),
        "data-plane node starting"
    );
    let http = ingress::server::serve(
        ingress,
        router,
        ingress::server::ConnectionLimits {
            header_timeout: *options.ingress_header_timeout,
            max_connections: options.ingress_max_connections,
        },
        cfg.tls.ingress.clone(),
        Arc::clone(&metrics),
        stop_on(stop_rx.clone()),
    );
    let grpc = grpc::serve(
        grpc,
        cfg.tls.grpc.clone(),
        Arc::clone(&store),
        publisher,
        stop_on(stop_rx.clone()),
    );

    // Asked to stop, the node first says it is not ready and keeps serving for the drain
    // grace, so a load balancer sends the next requests elsewhere; then it stops accepting.
    let stopper = stop_tx.clone();
    let grace = *options.drain_grace;
    tokio::spawn(async move {
        shutdown.await;
        draining.store(true, std::sync::atomic::Ordering::Release);
        info!(grace = ?grace, "draining: /readyz answers 503; serving until the grace ends");
        tokio::time::sleep(grace).await;
        stopper.send_replace(true);
    });
    let served = tokio::try_join!(
        async { http.await.map_err(Error::Io) },
        grpc,
        metrics_served
    );
    // Whichever way serving ended, everything else stops too.
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // Every delivery task is gone before the spool is flushed and released, so a node started
    // again in the same process finds the spool free.
    delivery.stop().await;
    outcomes.spill_unsent();
    if let Some(spool) = spool
        && let Err(e) = spool.flush().await
    {
        warn!(error = %e, "spool flush at shutdown failed");
    }
    info!("data-plane node stopped");
    served.map(|_| ())
}

/// The runtime the delivery engine and the outcome reports run on.
struct DeliveryRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DeliveryRuntime {
    /// `threads` worker threads (0: one a core), each joining `priority`.
    fn start(threads: usize, priority: Arc<DeliveryPriority>) -> Result<Self, Error> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("hookplane-delivery")
            .on_thread_start({
                let priority = Arc::clone(&priority);
                move || priority.join_current_thread()
            })
            .on_thread_stop(move || priority.leave_current_thread())
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Drops every task still on the runtime (an attempt in flight is cancelled: its job is
    /// leased, not settled, and comes back from the spool) and waits until they are dropped.
    async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let stopped = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(DELIVERY_SHUTDOWN_WAIT);
            });
            if let Err(e) = stopped.await {
                warn!(error = %e, "stopping the delivery runtime failed");
            }
        }
    }
}

/// How long stopping waits for the delivery runtime's blocking work (a DNS lookup).
const DELIVERY_SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

impl Drop for DeliveryRuntime {
    fn drop(&mut self) {
        // A runtime may not be dropped, blocking, inside another one: the node's own tasks
        // on it have ended (or had their time) by now, so nothing is waited for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// How often parked jobs past `--payload-retention` are looked for: nothing else touches a
/// parked job for days.
const PRUNE_PARKED_EVERY: Duration = Duration::from_secs(60);

/// Drops parked jobs past the payload retention now and then, until `stop`.
async fn prune_parked(spool: Arc<Spool>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PRUNE_PARKED_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = spool.prune_parked(std::time::SystemTime::now()) {
            warn!(error = %e, "could not drop parked deliveries past the payload retention");
        }
    }
}

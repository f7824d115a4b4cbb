//! What a node is told at start: command-line flags with `HOOKPLANE_*` environment twins.

use std::{path::PathBuf, time::Duration};

use crate::{
    nats::NatsOptions,
    queue::budget::{ByteSize, Share},
};

/// Where deliveries in flight live (`--queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueChoice {
    /// The node-local spool under `--spool-dir`: one node, durable across its restarts.
    Spool,
    /// NATS JetStream at these servers: any number of nodes sharing one queue.
    Nats(Vec<String>),
}

impl std::str::FromStr for QueueChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "spool" {
            return Ok(Self::Spool);
        }
        let servers: Vec<String> = s.split(',').map(|u| u.trim().to_owned()).collect();
        for server in &servers {
            let scheme_ok = ["nats://", "tls://"].iter().any(|p| server.starts_with(p));
            if !scheme_ok || server.len() <= "nats://".len() {
                return Err(format!(
                    "{server:?}: expected `spool` or nats://HOST:PORT[,nats://HOST:PORT...]"
                ));
            }
        }
        Ok(Self::Nats(servers))
    }
}

/// Tuning of a data-plane node, flattened into `hookplane data` and `hookplane standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeOptions {
    /// This node's name towards the control plane; default: `node_<ulid>` made at start.
    #[arg(long, env = "HOOKPLANE_NODE_ID")]
    pub node_id: Option<String>,
    /// Largest accepted webhook body in bytes; larger requests get 413.
    #[arg(long, env = "HOOKPLANE_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's headers (and stay idle between
    /// requests) before the ingress closes it. LINE sends a whole webhook at once and gives up
    /// after 2 s: a client slower than this is not LINE, or LINE no longer waits for it.
    #[arg(long, env = "HOOKPLANE_INGRESS_HEADER_TIMEOUT", default_value = "5s")]
    pub ingress_header_timeout: humantime::Duration,
    /// How long a request's body may take to arrive once its headers have; past it the answer
    /// is 408 and the connection is closed.
    #[arg(long, env = "HOOKPLANE_INGRESS_BODY_TIMEOUT", default_value = "5s")]
    pub ingress_body_timeout: humantime::Duration,
    /// Connections the ingress holds open at once; one more is closed as soon as it is
    /// accepted (and counted in hookplane_ingress_connections_refused_total).
    #[arg(
        long,
        env = "HOOKPLANE_INGRESS_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub ingress_max_connections: usize,
    /// The key (32 bytes, hex or base64) that seals the config the node keeps on disk to start
    /// with while the control plane is away; default: one derived from the node token.
    #[arg(long, env = "HOOKPLANE_CONFIG_CACHE_KEY", hide_env_values = true)]
    pub config_cache_key: Option<hookplane_secret_file::SecretValue>,
    /// A file holding --config-cache-key (keeps it off the command line).
    #[arg(long, env = "HOOKPLANE_CONFIG_CACHE_KEY_FILE")]
    pub config_cache_key_file: Option<PathBuf>,
    /// On SIGTERM, how long the node keeps answering with /readyz at 503 (so a load balancer
    /// moves away) before it stops accepting and settles its attempts in flight.
    #[arg(long, env = "HOOKPLANE_DRAIN_GRACE", default_value = "5s")]
    pub drain_grace: humantime::Duration,
    /// Attempts a delivery gets before it fails for good.
    #[arg(long, env = "HOOKPLANE_MAX_ATTEMPTS", default_value_t = 20)]
    pub max_attempts: u32,
    /// Age after which a delivery that still fails is given up.
    #[arg(long, env = "HOOKPLANE_MAX_DELIVERY_AGE", default_value = "24h")]
    pub max_delivery_age: humantime::Duration,
    /// How long a delivery's body (a LINE user's message, an event) is kept after its first
    /// enqueue, anywhere: a queued delivery older than this fails for good without an attempt,
    /// and a parked one (failed for good, kept for RetryDelivery) is dropped with its body. With
    /// NATS, also the jobs streams' and the parked bucket's max age.
    #[arg(long, env = "HOOKPLANE_PAYLOAD_RETENTION", default_value = "7d")]
    pub payload_retention: humantime::Duration,
    /// Waits between attempts (the last one repeats), each with ±20 % jitter.
    #[arg(
        long,
        env = "HOOKPLANE_RETRY_SCHEDULE",
        value_delimiter = ',',
        default_value = "1s,2s,4s,10s,30s,1m,5m,15m,30m,1h,2h,4h,8h"
    )]
    pub retry_schedule: Vec<humantime::Duration>,
    /// Attempts in flight at once towards one target.
    #[arg(long, env = "HOOKPLANE_TARGET_CONCURRENCY", default_value_t = 16)]
    pub target_concurrency: usize,
    /// Threads of the delivery runtime, apart from the ingress's; 0 = one per CPU core. Their
    /// own threads let the kernel schedule acknowledgements between deliveries instead of
    /// queueing them behind a delivery backlog.
    #[arg(long, env = "HOOKPLANE_DELIVERY_THREADS", default_value_t = 0)]
    pub delivery_threads: usize,
    /// Niceness of the delivery threads while requests arrive (0-19; Linux). Above the
    /// ingress's 0, an acknowledgement gets a core at once while deliveries want it too. After a
    /// second without a request they run at 0 until the next one: nothing of ours is left to
    /// yield to, and at 10 receivers on the same host preempted them at each request they
    /// answered (docs/BENCHMARKS.md). Raising them back needs CAP_SYS_NICE or RLIMIT_NICE;
    /// without either they stay at this niceness.
    #[arg(
        long,
        env = "HOOKPLANE_DELIVERY_NICENESS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u8).range(0..=19)
    )]
    pub delivery_niceness: u8,
    /// Where deliveries in flight live: `spool` (node-local, under the spool dir) or
    /// `nats://HOST:PORT[,nats://HOST:PORT...]` (NATS JetStream shared by every node, so nodes
    /// can be added and removed at will).
    #[arg(long, env = "HOOKPLANE_QUEUE", default_value = "spool")]
    pub queue: QueueChoice,
    /// The most the spool's journal may take on disk (`2GiB`, `500MB`, or bytes; at least
    /// 256MiB). New deliveries beyond it are refused (webhooks 503 with Retry-After,
    /// PublishEvent RESOURCE_EXHAUSTED) while those held go on. Default: 80% of the free space
    /// of the spool directory's filesystem plus what the spool holds already, computed at
    /// start. Spool only: with NATS the streams' limits bound the queue.
    #[arg(long, env = "HOOKPLANE_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: Option<ByteSize>,
    /// The part of --spool-max-bytes one tenant's deliveries may hold (`50%` or `0.5`): a
    /// brand whose endpoints are all down is refused once it holds this much, and the other
    /// tenants keep the rest.
    #[arg(long, env = "HOOKPLANE_SPOOL_TENANT_SHARE", default_value = "50%")]
    pub spool_tenant_share: Share,
    #[command(flatten)]
    pub nats: NatsOptions,
    /// The LINE Messaging API base URL (connectors push through it).
    #[arg(
        long,
        env = "HOOKPLANE_LINE_API_BASE_URL",
        default_value = "https://api.line.me"
    )]
    pub line_api_base_url: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            node_id: None,
            max_body_bytes: 1_048_576,
            ingress_header_timeout: Duration::from_secs(5).into(),
            ingress_body_timeout: Duration::from_secs(5).into(),
            ingress_max_connections: 4096,
            config_cache_key: None,
            config_cache_key_file: None,
            drain_grace: Duration::from_secs(5).into(),
            max_attempts: 20,
            max_delivery_age: Duration::from_secs(24 * 3600).into(),
            payload_retention: Duration::from_secs(7 * 24 * 3600).into(),
            retry_schedule: DEFAULT_RETRY_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s).into())
                .collect(),
            target_concurrency: 16,
            delivery_threads: 0,
            delivery_niceness: 10,
            queue: QueueChoice::Spool,
            spool_max_bytes: None,
            spool_tenant_share: Share::DEFAULT,
            nats: NatsOptions::default(),
            line_api_base_url: "https://api.line.me".to_owned(),
        }
    }
}

const DEFAULT_RETRY_SCHEDULE: [u64; 13] = [
    1, 2, 4, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 28800,
];

/// Everything [`crate::run`] needs. Its `Debug` leaves the node token out.
#[derive(Clone)]
pub struct NodeConfig {
    /// The control plane's gRPC URL, e.g. `http://control:50051`.
    pub control_url: String,
    /// Sent as `authorization: Bearer <node_token>` on WatchConfig and ReportDeliveries.
    pub node_token: String,
    /// Where the node-local spool (sled) lives.
    pub spool_dir: PathBuf,
    pub options: NodeOptions,
    /// Where deliveries may go (shared with the control plane's test events).
    pub outbound: hookplane_outbound::OutboundOptions,
    /// TLS of the node's ports and of its dial to the control plane.
    pub tls: NodeTls,
    /// Where attempt reports go; `None`: the control plane at `control_url`, over
    /// ReportDeliveries. Standalone hands them to the control plane of its own process.
    pub reports: Option<std::sync::Arc<dyn crate::outcomes::ReportSink>>,
}

/// TLS of a node: each part off (plaintext) unless given. Its `Debug` shows only what is on.
#[derive(Clone, Default)]
pub struct NodeTls {
    /// What the node trusts and presents when `control_url` is `https://`.
    pub control: hookplane_client::ClientTls,
    /// The certificate and key of the gRPC port (EventService, health, reflection).
    pub grpc: Option<tonic::transport::Identity>,
    /// The ingress port's TLS (LINE webhooks, probes, metrics), HTTP/1.1 over rustls.
    pub ingress: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field(
                "control_url",
                &hookplane_outbound::masked_url(&self.control_url),
            )
            .field("node_token", &"<redacted>")
            .field("spool_dir", &self.spool_dir)
            .field("options", &self.options)
            .field("outbound", &self.outbound)
            .field("tls", &self.tls)
            .field(
                "reports",
                &if self.reports.is_some() {
                    "in process"
                } else {
                    "ReportDeliveries"
                },
            )
            .finish()
    }
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("control", &self.control)
            .field("grpc", &self.grpc.is_some())
            .field("ingress", &self.ingress.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeOptions,
    }

    fn parse(args: &[&str]) -> NodeOptions {
        Cli::try_parse_from(std::iter::once("hookplane").chain(args.iter().copied()))
            .unwrap()
            .node
    }

    #[test]
    fn debug_never_prints_the_config_cache_key_or_the_node_token() {
        let options = parse(&["--config-cache-key", "cache-key-visible"]);
        let config = NodeConfig {
            control_url: "http://control:50051".into(),
            node_token: "hp_node_visible".into(),
            spool_dir: "spool".into(),
            options,
            outbound: hookplane_outbound::OutboundOptions::default(),
            tls: NodeTls::default(),
            reports: None,
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("cache-key-visible"), "{shown}");
        assert!(!shown.contains("hp_node_visible"), "{shown}");
        assert!(shown.contains("http://control:50051"), "{shown}");
    }

    #[test]
    fn the_flag_defaults_match_the_programmatic_defaults() {
        let parsed = parse(&[]);
        let default = NodeOptions::default();
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.max_attempts, default.max_attempts);
        assert_eq!(*parsed.max_delivery_age, *default.max_delivery_age);
        assert_eq!(*parsed.payload_retention, *default.payload_retention);
        assert_eq!(parsed.retry_schedule, default.retry_schedule);
        assert_eq!(parsed.target_concurrency, default.target_concurrency);
        assert_eq!(parsed.delivery_niceness, default.delivery_niceness);
        assert_eq!(parsed.line_api_base_url, default.line_api_base_url);
        assert_eq!(parsed.queue, default.queue);
        assert_eq!(parsed.spool_max_bytes, default.spool_max_bytes);
        assert_eq!(parsed.spool_tenant_share, default.spool_tenant_share);
        assert_eq!(
            parsed.nats.nats_stream_replicas,
            default.nats.nats_stream_replicas
        );
        assert_eq!(parsed.nats.nats_prefix, default.nats.nats_prefix);
        assert_eq!(
            *parsed.nats.nats_dedupe_window,
            *default.nats.nats_dedupe_window
        );
    }

    #[test]
    fn a_delivery_niceness_beyond_19_is_refused_naming_the_flag() {
        assert_eq!(parse(&["--delivery-niceness", "0"]).delivery_niceness, 0);
        let err = Cli::try_parse_from(["hookplane", "--delivery-niceness", "20"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--delivery-niceness"), "{err}");
    }

    #[test]
    fn the_queue_is_the_spool_or_a_list_of_nats_servers() {
        assert_eq!(parse(&["--queue", "spool"]).queue, QueueChoice::Spool);
        assert_eq!(
            parse(&["--queue", "nats://a:4222,nats://b:4222"]).queue,
            QueueChoice::Nats(vec!["nats://a:4222".into(), "nats://b:4222".into()])
        );
        let err = Cli::try_parse_from(["hookplane", "--queue", "redis://x"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("nats://HOST:PORT"), "{err}");
    }

    #[test]
    fn the_spool_cap_and_share_read_human_sizes_and_percentages() {
        let parsed = parse(&["--spool-max-bytes", "2GiB", "--spool-tenant-share", "25%"]);
        assert_eq!(parsed.spool_max_bytes, Some(ByteSize(2 << 30)));
        assert_eq!(parsed.spool_tenant_share.of(100), 25);
        let err = Cli::try_parse_from(["hookplane", "--spool-max-bytes", "2G"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("2GiB"), "{err}");
    }

    #[test]
    fn the_retry_schedule_reads_human_durations() {
        let parsed = parse(&["--retry-schedule", "250ms,2s,1m"]);
        let waits: Vec<Duration> = parsed.retry_schedule.iter().map(|d| **d).collect();
        assert_eq!(
            waits,
            [
                Duration::from_millis(250),
                Duration::from_secs(2),
                Duration::from_secs(60)
            ]
        );
    }
}

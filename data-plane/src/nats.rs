//! The NATS JetStream side of a node in `--queue nats://...` mode: how it connects (servers,
//! credentials, TLS), what its streams and buckets are called under `--nats-prefix`, and how
//! they are created at start or checked when they exist. The queue (`queue/jetstream.rs`), the
//! attempt records (`outcomes/jetstream.rs`) and the idempotency keys (`publish/idempotency.rs`)
//! each use what is set up here; nothing a node needs to keep lives on the node itself.

use std::{path::PathBuf, time::Duration};

use async_nats::jetstream::{
    self, Context,
    consumer::{AckPolicy, DeliverPolicy, pull},
    kv,
    stream::{self, RetentionPolicy, StorageType},
};
use hookplane_outbound::masked_url;
use tracing::info;

use crate::Error;

/// How a node reaches NATS, flattened into `hookplane data` and `hookplane standalone`. Only
/// read when `--queue` names NATS servers.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsOptions {
    /// Replicas of every stream and bucket the node creates: 1 for one NATS server, 3 for a
    /// cluster of three (what a production deployment runs).
    #[arg(long, env = "HOOKPLANE_NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
    /// How many streams the jobs are spread over. Each stream has its own leader, which the
    /// node spreads over the cluster's servers at start: when a server is lost, the streams it
    /// led elect new leaders (seconds, longer than LINE waits for its answer) while enqueues go
    /// to the others, so the ingress keeps answering 200. With one server, more streams only
    /// let it work on them in parallel.
    #[arg(long, env = "HOOKPLANE_NATS_JOB_STREAMS", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub nats_job_streams: u16,
    /// First part of every stream, bucket, consumer and subject name, so several deployments can
    /// share one NATS cluster.
    #[arg(long, env = "HOOKPLANE_NATS_PREFIX", default_value = "hookplane")]
    pub nats_prefix: String,
    /// How long a job's delivery id is remembered by the stream: the same delivery enqueued
    /// again within it (a LINE redelivery of the same webhookEventId, on any node) is stored
    /// once. The NATS servers keep every id of the window in memory (about 100 bytes each).
    #[arg(long, env = "HOOKPLANE_NATS_DEDUPE_WINDOW", default_value = "1h")]
    pub nats_dedupe_window: humantime::Duration,
    /// How long a job handed to a node stays invisible to the others: longer than the longest
    /// attempt (60 s), so a live node never sees its job handed out twice; a node that is gone
    /// returns its jobs to the others after this.
    #[arg(long, env = "HOOKPLANE_NATS_ACK_WAIT", default_value = "2m")]
    pub nats_ack_wait: humantime::Duration,
    /// A NATS credentials file (JWT and NKey seed), as `nsc` writes it.
    #[arg(long, env = "HOOKPLANE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A user name for NATS (with `--nats-password`).
    #[arg(long, env = "HOOKPLANE_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "HOOKPLANE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A token for NATS's token authentication.
    #[arg(long, env = "HOOKPLANE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// PEM file of the CAs that sign the NATS servers' certificates; implies TLS.
    #[arg(long, env = "HOOKPLANE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// The node's client certificate for NATS (PEM, with `--nats-tls-key`); implies TLS.
    #[arg(long, env = "HOOKPLANE_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, env = "HOOKPLANE_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Require TLS even without a CA or client certificate given (the system's roots).
    #[arg(long, env = "HOOKPLANE_NATS_TLS", default_value_t = false)]
    pub nats_tls: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            nats_stream_replicas: 1,
            nats_job_streams: 3,
            nats_prefix: "hookplane".to_owned(),
            nats_dedupe_window: Duration::from_secs(3600).into(),
            nats_ack_wait: Duration::from_secs(120).into(),
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls: false,
        }
    }
}

/// How long an enqueue waits, all tries together, for JetStream's acknowledgements. The ingress
/// answers LINE within its 2 s, so a NATS that does not store the jobs in time means 503 (and
/// LINE's redelivery), never a late or unfounded 200.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long attempt records taken by a node's reporter stay its own.
const REPORT_ACK_WAIT: Duration = Duration::from_secs(10);
/// How long a starting node waits for JetStream to be able to set up its streams.
const SETUP_PATIENCE: Duration = Duration::from_secs(45);
/// How long a request that sets up a stream, consumer or bucket may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one publish waits for its acknowledgement before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an unreported attempt record is kept while no control plane takes it.
pub const OUTCOME_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a PublishEvent idempotency key is remembered (the same as the spool's).
pub const IDEMPOTENCY_AGE: Duration = crate::publish::idempotency::TTL;

/// Names of everything the node keeps in NATS, all under one prefix.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Result<Self, Error> {
        let valid = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::invalid(
                "nats_prefix",
                format!("{prefix:?} must be letters, digits, '_' or '-'"),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The `shard`th of the streams the jobs are spread over.
    pub fn jobs_stream(&self, shard: usize) -> String {
        format!("{}_jobs_{shard}", self.prefix)
    }

    /// The subject a message carrying `jobs` jobs is published on in the `shard`th jobs
    /// stream: the stream's per-subject counts then tell how many jobs it holds
    /// (`Queue::depth`), and `nats` tooling shows them.
    pub fn job_subject(&self, shard: usize, jobs: usize) -> String {
        format!("{}.jobs.{shard}.{jobs}", self.prefix)
    }

    pub fn jobs_subjects(&self, shard: usize) -> String {
        format!("{}.jobs.{shard}.>", self.prefix)
    }

    pub fn deliver_consumer(&self) -> String {
        format!("{}_deliver", self.prefix)
    }

    pub fn outcomes_stream(&self) -> String {
        format!("{}_outcomes", self.prefix)
    }

    pub fn outcome_subject(&self) -> String {
        format!("{}.outcomes", self.prefix)
    }

    pub fn report_consumer(&self) -> String {
        format!("{}_report", self.prefix)
    }

    pub fn parked_bucket(&self) -> String {
        format!("{}_parked", self.prefix)
    }

    pub fn idempotency_bucket(&self) -> String {
        format!("{}_idempotency", self.prefix)
    }
}

/// One of the streams the jobs are spread over, with the consumer every node takes them from.
#[derive(Clone)]
pub struct JobStream {
    pub stream: stream::Stream,
    pub deliver: jetstream::consumer::Consumer<pull::Config>,
}

/// A connection to NATS with everything the node uses set up.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: Context,
    pub names: Names,
    /// At least one.
    pub jobs: Vec<JobStream>,
    pub report: jetstream::consumer::Consumer<pull::Config>,
    pub parked: kv::Store,
    pub idempotency: kv::Store,
    /// The deliver consumer's ack wait: how long a job handed to this node is its own.
    pub ack_wait: Duration,
}

impl Nats {
    /// Connects to `servers` and creates (or checks) the streams, consumers and buckets. Jobs
    /// and parked jobs are kept at most `payload_retention` (`--payload-retention`): the jobs
    /// streams' and the parked bucket's max age, changed on streams made with another.
    pub async fn connect(
        servers: &[String],
        options: &NatsOptions,
        node_id: &str,
        payload_retention: Duration,
    ) -> Result<Self, Error> {
        let names = Names::new(&options.nats_prefix)?;
        if payload_retention < *options.nats_dedupe_window {
            // JetStream refuses a stream whose duplicate window outlasts its max age.
            return Err(Error::invalid(
                "payload_retention",
                format!(
                    "--payload-retention ({}) must be at least --nats-dedupe-window ({})",
                    humantime::format_duration(payload_retention),
                    options.nats_dedupe_window
                ),
            ));
        }
        let addrs = servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| Error::invalid("queue", format!("{}: {e}", masked_url(s))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = connect_options(options, node_id)
            .await?
            .connect(addrs)
            .await
            .map_err(|e| Error::Queue(format!("cannot reach NATS at {}: {e}", shown(servers))))?;
        // Setting up may wait for a cluster to place R3 streams; the hot path may not wait long.
        let setup_js = jetstream::ContextBuilder::new()
            .timeout(SETUP_TIMEOUT)
            .build(client.clone());
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .build(client.clone());
        let kv_js = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(client.clone());
        let setup = Setup {
            js: &setup_js,
            kv_js: &kv_js,
            names: &names,
            replicas: options.nats_stream_replicas,
        };
        // A cluster that is still electing its JetStream leader answers "temporarily
        // unavailable": a node started with it waits, as it would for any dependency coming up.
        let give_up = tokio::time::Instant::now() + SETUP_PATIENCE;
        let mut backoff = crate::backoff::Backoff::default();
        let made = loop {
            match setup.everything(options, payload_retention).await {
                Ok(made) => break made,
                Err(Error::Queue(why)) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(%why, "NATS JetStream not ready yet; trying again");
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(e) => return Err(e),
            }
        };
        let Made {
            jobs,
            report,
            parked,
            idempotency,
        } = made;
        if options.nats_stream_replicas > 1 && jobs.len() > 1 {
            // In the background: a cluster still settling after a start may take a while to let
            // leaders move, and the node can serve meanwhile.
            tokio::spawn(spread_leaders(setup_js.clone(), jobs.clone()));
        }
        info!(
            servers = shown(servers),
            prefix = options.nats_prefix,
            replicas = options.nats_stream_replicas,
            "queue on NATS JetStream"
        );
        Ok(Self {
            client,
            js,
            names,
            jobs,
            report,
            parked,
            idempotency,
            ack_wait: *options.nats_ack_wait,
        })
    }
}

/// The servers as a log line or an error shows them: a NATS URL may carry a user and password.
fn shown(servers: &[String]) -> String {
    servers
        .iter()
        .map(|s| masked_url(s))
        .collect::<Vec<_>>()
        .join(",")
}

async fn connect_options(
    options: &NatsOptions,
    node_id: &str,
) -> Result<async_nats::ConnectOptions, Error> {
    let mut connect = async_nats::ConnectOptions::new()
        .name(format!("hookplane {node_id}"))
        .connection_timeout(Duration::from_secs(5))
        // A node keeps trying for as long as it runs; while NATS is away its ingress answers
        // 503 (the publishes time out) and it serves again once NATS is back.
        .max_reconnects(None);
    if let Some(path) = &options.nats_creds {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| Error::invalid("nats_creds", format!("{}: {e}", path.display())))?;
    }
    match (&options.nats_user, &options.nats_password) {
        (Some(user), Some(pass)) => {
            connect = connect.user_and_password(user.clone(), pass.clone());
        }
        (None, None) => {}
        _ => {
            return Err(Error::invalid(
                "nats_user",
                "--nats-user and --nats-password go together",
            ));
        }
    }
    if let Some(token) = &options.nats_token {
        connect = connect.token(token.clone());
    }
    if let Some(ca) = &options.nats_tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&options.nats_tls_cert, &options.nats_tls_key) {
        (Some(cert), Some(key)) => {
            connect = connect
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(Error::invalid(
                "nats_tls_cert",
                "--nats-tls-cert and --nats-tls-key go together",
            ));
        }
    }
    if options.nats_tls {
        connect = connect.require_tls(true);
    }
    Ok(connect)
}

/// Creates what is missing; checks what exists against what the node relies on.
struct Setup<'a> {
    js: &'a Context,
    /// Where the buckets' handles come from: their reads and writes sit on request paths.
    kv_js: &'a Context,
    names: &'a Names,
    replicas: usize,
}

/// What [`Setup::everything`] made or found.
struct Made {
    jobs: Vec<JobStream>,
    report: jetstream::consumer::Consumer<pull::Config>,
    parked: kv::Store,
    idempotency: kv::Store,
}

impl Setup<'_> {
    /// Every stream, consumer and bucket the node uses.
    async fn everything(
        &self,
        options: &NatsOptions,
        payload_retention: Duration,
    ) -> Result<Made, Error> {
        let (setup, names) = (self, self.names);
        let mut jobs = Vec::new();
        for shard in 0..usize::from(options.nats_job_streams.max(1)) {
            let stream = setup
                .stream(stream::Config {
                    name: names.jobs_stream(shard),
                    subjects: vec![names.jobs_subjects(shard)],
                    retention: RetentionPolicy::WorkQueue,
                    storage: StorageType::File,
                    num_replicas: options.nats_stream_replicas,
                    duplicate_window: *options.nats_dedupe_window,
                    // A job's own age is checked when it is handed out (a retry is a new
                    // message); this bounds what sits in a stream nobody takes from.
                    max_age: payload_retention,
                    description: Some("hookplane deliveries waiting or in flight".to_owned()),
                    ..stream::Config::default()
                })
                .await?;
            let deliver = setup
                .consumer(
                    &stream,
                    pull::Config {
                        durable_name: Some(names.deliver_consumer()),
                        description: Some("hookplane nodes take deliveries from here".to_owned()),
                        deliver_policy: DeliverPolicy::All,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: *options.nats_ack_wait,
                        // A job is handed out as often as the engine defers it; attempts are
                        // counted in the job itself.
                        max_deliver: -1,
                        // Jobs waiting for room (NAKed with a delay) stay pending; a bound here
                        // would let one dead target's backlog stop every other lane.
                        max_ack_pending: -1,
                        ..pull::Config::default()
                    },
                )
                .await?;
            jobs.push(JobStream { stream, deliver });
        }
        let outcomes = setup
            .stream(stream::Config {
                name: names.outcomes_stream(),
                subjects: vec![names.outcome_subject()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                num_replicas: options.nats_stream_replicas,
                max_age: OUTCOME_AGE,
                description: Some("hookplane delivery attempts not yet reported".to_owned()),
                ..stream::Config::default()
            })
            .await?;
        let report = setup
            .consumer(
                &outcomes,
                pull::Config {
                    durable_name: Some(names.report_consumer()),
                    description: Some("hookplane nodes report attempts from here".to_owned()),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    // A batch a node took and could not report (it died) goes to another node
                    // after this; one reported twice is harmless (attempt ids are kept once).
                    ack_wait: REPORT_ACK_WAIT,
                    max_deliver: -1,
                    max_ack_pending: -1,
                    ..pull::Config::default()
                },
            )
            .await?;
        let parked = setup
            .bucket(
                &names.parked_bucket(),
                payload_retention,
                "failed deliveries",
            )
            .await?;
        let idempotency = setup
            .bucket(
                &names.idempotency_bucket(),
                IDEMPOTENCY_AGE,
                "PublishEvent idempotency keys",
            )
            .await?;
        Ok(Made {
            jobs,
            report,
            parked,
            idempotency,
        })
    }

    async fn stream(&self, want: stream::Config) -> Result<stream::Stream, Error> {
        let name = want.name.clone();
        let mut existing = match self.js.get_stream(&name).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return self
                    .js
                    .create_stream(want)
                    .await
                    .map_err(|e| Error::Queue(format!("creating stream {name}: {e}")));
            }
            Err(e) => return Err(Error::Queue(format!("looking up stream {name}: {e}"))),
        };
        let have = existing
            .info()
            .await
            .map_err(|e| Error::Queue(format!("reading stream {name}: {e}")))?
            .config
            .clone();
        let mut wrong = Vec::new();
        if have.subjects != want.subjects {
            wrong.push(format!(
                "subjects {:?} (needs {:?})",
                have.subjects, want.subjects
            ));
        }
        if have.retention != want.retention {
            wrong.push(format!(
                "retention {:?} (needs {:?})",
                have.retention, want.retention
            ));
        }
        if have.num_replicas != want.num_replicas {
            wrong.push(format!(
                "{} replicas (--nats-stream-replicas is {})",
                have.num_replicas, self.replicas
            ));
        }
        if have.duplicate_window < want.duplicate_window && !want.duplicate_window.is_zero() {
            wrong.push(format!(
                "a duplicate window of {:?} (--nats-dedupe-window is {:?})",
                have.duplicate_window, want.duplicate_window
            ));
        }
        if wrong.is_empty() && have.max_age != want.max_age {
            // `--payload-retention` changed: the bodies' bound follows it.
            let config = stream::Config {
                max_age: want.max_age,
                ..have
            };
            self.js
                .update_stream(config)
                .await
                .map_err(|e| Error::Queue(format!("changing the max age of {name}: {e}")))?;
            return self
                .js
                .get_stream(&name)
                .await
                .map_err(|e| Error::Queue(format!("looking up stream {name}: {e}")));
        }
        if !wrong.is_empty() {
            return Err(Error::InvalidSetting(format!(
                "NATS stream {name} exists but does not fit this node: {}; update or delete it, \
                 or choose another --nats-prefix than {:?}",
                wrong.join(", "),
                self.names.prefix
            )));
        }
        Ok(existing)
    }

    async fn consumer(
        &self,
        stream: &stream::Stream,
        want: pull::Config,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, Error> {
        let name = want.durable_name.clone().unwrap_or_default();
        match stream.get_consumer::<pull::Config>(&name).await {
            Ok(mut consumer) => {
                let have = consumer
                    .info()
                    .await
                    .map_err(|e| Error::Queue(format!("reading consumer {name}: {e}")))?
                    .config
                    .clone();
                let mut wrong = Vec::new();
                if have.ack_policy != want.ack_policy {
                    wrong.push(format!("ack policy {:?} (needs Explicit)", have.ack_policy));
                }
                if have.max_deliver > 0 {
                    wrong.push(format!(
                        "max_deliver {} (needs unlimited)",
                        have.max_deliver
                    ));
                }
                if have.max_ack_pending > 0 {
                    wrong.push(format!(
                        "max_ack_pending {} (needs unlimited)",
                        have.max_ack_pending
                    ));
                }
                if !have.filter_subject.is_empty() {
                    wrong.push(format!("filter subject {:?}", have.filter_subject));
                }
                if !wrong.is_empty() {
                    return Err(Error::InvalidSetting(format!(
                        "NATS consumer {name} exists but does not fit this node: {}; delete it \
                         and start the node again",
                        wrong.join(", ")
                    )));
                }
                Ok(consumer)
            }
            Err(_) => stream
                .create_consumer(want)
                .await
                .map_err(|e| Error::Queue(format!("creating consumer {name}: {e}"))),
        }
    }

    /// A key-value bucket, created as the stream KV buckets are made of. async-nats's own
    /// `create_key_value` first asks for the account's info, whose reply from the NATS 2.9
    /// servers Debian ships it cannot parse; the stream it would create is this one.
    async fn bucket(&self, name: &str, age: Duration, what: &str) -> Result<kv::Store, Error> {
        self.stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(format!("hookplane {what}")),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age: age,
            storage: StorageType::File,
            num_replicas: self.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..stream::Config::default()
        })
        .await?;
        self.kv_js
            .get_key_value(name)
            .await
            .map_err(|e| Error::Queue(format!("opening bucket {name}: {e}")))
    }
}

/// Asks a jobs stream that shares its leader with another to step down, until every server
/// of the cluster leads at most one more than any other (for up to a minute; best effort, as
/// another node starting at the same time may be doing the same). JetStream places a
/// stream's leader where it likes, and one server leading them all would leave none to
/// enqueue to while its loss is being repaired.
async fn spread_leaders(js: Context, jobs: Vec<JobStream>) {
    const TRIES: usize = 60;
    for _ in 0..TRIES {
        let mut leaders = Vec::new();
        let mut servers = std::collections::BTreeSet::new();
        let mut unknown = false;
        for job in &jobs {
            let mut stream = job.stream.clone();
            // A stream without a cluster is on a lone server: nothing to spread.
            let info = match stream.info().await {
                Ok(info) if info.cluster.is_none() => return,
                Ok(info) => info,
                Err(_) => {
                    unknown = true;
                    break;
                }
            };
            let Some(cluster) = info.cluster.clone() else {
                return;
            };
            servers.extend(cluster.replicas.iter().map(|p| p.name.clone()));
            servers.extend(cluster.leader.clone());
            leaders.push((info.config.name.clone(), cluster.leader));
        }
        if unknown {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut led: std::collections::BTreeMap<&str, Vec<&str>> =
            servers.iter().map(|s| (s.as_str(), Vec::new())).collect();
        for (stream, leader) in &leaders {
            if let Some(leader) = leader {
                led.entry(leader.as_str()).or_default().push(stream);
            }
        }
        let most = led.values().map(Vec::len).max().unwrap_or(0);
        let least = led.values().map(Vec::len).min().unwrap_or(0);
        if most <= least + 1 {
            info!(leaders = ?leaders, "jobs streams' leaders spread over the cluster");
            return;
        }
        let Some(crowded) = led
            .values()
            .find(|s| s.len() == most)
            .and_then(|s| s.last())
        else {
            return;
        };
        let asked: Result<serde_json::Value, _> = js
            .request(
                format!("STREAM.LEADER.STEPDOWN.{crowded}"),
                // The server takes an empty object as "no options" (`null` it refuses).
                &serde_json::json!({}),
            )
            .await;
        if let Err(e) = asked {
            tracing::debug!(stream = crowded, error = %e, "a leader step-down was refused");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::warn!(
        "the jobs streams' leaders could not be spread over the cluster; losing the server \
         that leads them all stops enqueues until new leaders are elected"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_in_a_log_line_show_no_user_or_password() {
        let shown = shown(&[
            "nats://node:s3cret@nats-1.internal:4222".to_owned(),
            "nats://nats-2.internal:4222".to_owned(),
        ]);
        assert_eq!(
            shown,
            "nats://***@nats-1.internal:4222,nats://nats-2.internal:4222"
        );
    }
}

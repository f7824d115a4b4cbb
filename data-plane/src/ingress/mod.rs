//! The HTTP port: LINE webhooks in, plus /healthz, /readyz and /metrics.
//!
//! A webhook is answered 200 only after its forwards, and one message per Genesys connector for
//! each LINE message, are durably queued; everything slow happens later in the delivery engine,
//! so the answer stays far inside LINE's 2 seconds.

mod probes;
pub mod server;
mod signature;

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use tracing::{Instrument, debug, error, field::Empty};

use crate::{
    Error,
    config::{ChannelEntry, ConfigStore},
    connectors::genesys::inbound_jobs::inbound_jobs,
    delivery::DeliveryPriority,
    enqueue_span::enqueue_span,
    line_event::WebhookHead,
    metrics::Metrics,
    queue::{ForwardingSetRef, Header, Job, Queue, unix_ms},
    request_body::{BodyError, BodyLimits},
};

/// What the ingress needs from the rest of the node.
pub struct Ingress {
    pub config: Arc<ConfigStore>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub body: BodyLimits,
    /// Turned on at SIGTERM: /readyz answers 503 while the node still serves, so a load
    /// balancer moves away before it stops accepting.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Told of every webhook, so deliveries yield to the ingress while it is busy.
    pub priority: Arc<DeliveryPriority>,
}

/// The ingress's routes with `/metrics`, as a node without `--metrics-listen` serves them.
pub fn router(ingress: Arc<Ingress>) -> Router {
    router_without_metrics(Arc::clone(&ingress)).merge(metrics_router(ingress, None))
}

/// The ingress's routes when `/metrics` is served on a listener of its own (`--metrics-listen`):
/// the public port then answers 404 there.
pub fn router_without_metrics(ingress: Arc<Ingress>) -> Router {
    Router::new()
        .route("/api/webhook/line/{channel_id}/events", any(line_webhook))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .with_state(ingress)
}

/// More exposition text served after the node's own (in standalone, the control plane's).
pub type MoreMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// `/metrics` alone: the node's series, then `more`'s.
pub fn metrics_router(ingress: Arc<Ingress>, more: Option<MoreMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(probes::metrics))
        .with_state(Arc::new(probes::MetricsPage { ingress, more }))
}

/// How a webhook request ended, as counted in `hookplane_ingress_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accepted,
    Verify,
    MethodNotAllowed,
    UnknownChannel,
    NotReady,
    TooLarge,
    TooSlow,
    BadSignature,
    Malformed,
    Unreadable,
    QueueUnavailable,
    SpoolFull,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Verify => "verify",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownChannel => "unknown_channel",
            Self::NotReady => "not_ready",
            Self::TooLarge => "too_large",
            Self::TooSlow => "too_slow",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
            Self::Unreadable => "unreadable",
            Self::QueueUnavailable => "queue_unavailable",
            Self::SpoolFull => "spool_full",
        }
    }

    fn response(self) -> Response {
        let (status, text) = match self {
            Self::Accepted | Self::Verify => return StatusCode::OK.into_response(),
            Self::MethodNotAllowed => {
                return (
                    StatusCode::METHOD_NOT_ALLOWED,
                    [(header::ALLOW, "POST")],
                    "only POST is accepted\n",
                )
                    .into_response();
            }
            Self::UnknownChannel => (StatusCode::NOT_FOUND, "no such channel\n"),
            Self::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "this node has no configuration yet\n",
            ),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            Self::TooSlow => {
                // The rest of the body may still be coming: the connection is not reused.
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    [(header::CONNECTION, "close")],
                    "the body did not arrive in time\n",
                )
                    .into_response();
            }
            Self::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "missing or invalid x-line-signature\n",
            ),
            Self::Malformed => (StatusCode::BAD_REQUEST, "body is not a LINE webhook\n"),
            Self::Unreadable => (StatusCode::BAD_REQUEST, "body could not be read\n"),
            Self::QueueUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "could not queue the event; try again\n",
            ),
            Self::SpoolFull => return spool_full(),
        };
        (status, text).into_response()
    }
}

async fn line_webhook(
    State(ingress): State<Arc<Ingress>>,
    Path(channel_id): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    ingress.priority.ingress_arrived();
    // Made only while traces are exported (see hookplane_trace_context).
    let span = tracing::debug_span!(
        target: hookplane_trace_context::TARGET,
        "line webhook",
        otel.name = "POST /api/webhook/line/{channel_id}/events",
        otel.kind = "server",
        http.request.method = %method,
        http.route = "/api/webhook/line/{channel_id}/events",
        http.response.status_code = Empty,
        channel_id,
        verdict = Empty,
    );
    hookplane_trace_context::continue_remote(&span, &headers);
    let verdict = ingress
        .accept(&channel_id, &method, &headers, body)
        .instrument(span.clone())
        .await;
    let response = verdict.response();
    span.record("verdict", verdict.label());
    span.record("http.response.status_code", response.status().as_u16());
    ingress.metrics.ingress(verdict.label());
    if verdict == Verdict::Accepted || verdict == Verdict::Verify {
        ingress.metrics.ingress_acked(started.elapsed());
    }
    debug!(channel_id, verdict = verdict.label(), "webhook");
    response
}

impl Ingress {
    async fn accept(
        &self,
        channel_id: &str,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
    ) -> Verdict {
        if method != Method::POST {
            return Verdict::MethodNotAllowed;
        }
        if !self.config.is_ready() {
            return Verdict::NotReady;
        }
        // One snapshot for the whole request: a config change cannot split it.
        let snapshot = self.config.load();
        let Some(channel) = snapshot.channel(channel_id) else {
            return Verdict::UnknownChannel;
        };
        let body = match self.body.read(headers, body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Verdict::TooLarge,
            Err(BodyError::TooSlow) => return Verdict::TooSlow,
            Err(BodyError::Unreadable) => return Verdict::Unreadable,
        };
        let line_signature = headers
            .get("x-line-signature")
            .and_then(|v| v.to_str().ok());
        if !signature::verify(
            &channel.channel.secrets,
            &body,
            line_signature,
            SystemTime::now(),
        ) {
            return Verdict::BadSignature;
        }
        // Parsed only after the signature holds: unauthenticated bytes never reach the parser.
        let Ok(head) = WebhookHead::parse(&body) else {
            return Verdict::Malformed;
        };
        if head.events.is_empty() {
            return Verdict::Verify;
        }
        let (genesys_jobs, skipped) = inbound_jobs(channel, &body, SystemTime::now());
        let mut jobs = jobs_for(channel, &head, body, headers);
        jobs.extend(genesys_jobs);
        let enqueue = enqueue_span(&mut jobs);
        match self.queue.enqueue(jobs).instrument(enqueue).await {
            Ok(()) => {}
            // The spool logs it, once a minute per tenant.
            Err(Error::SpoolFull(_)) => return Verdict::SpoolFull,
            Err(e) => {
                error!(channel_id, error = %e, "webhook not queued");
                return Verdict::QueueUnavailable;
            }
        }
        self.metrics.genesys_skipped(skipped);
        Verdict::Accepted
    }
}

/// 503 for a request whose tenant has no room in the spool: LINE redelivers it later (when the
/// channel has redelivery on), other clients wait as `Retry-After` says.
pub(crate) fn spool_full() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            header::RETRY_AFTER,
            crate::queue::budget::RETRY_AFTER.as_secs().to_string(),
        )],
        "this node has no room for this tenant's deliveries now; try again later\n",
    )
        .into_response()
}

fn jobs_for(
    channel: &ChannelEntry,
    head: &WebhookHead,
    body: bytes::Bytes,
    headers: &HeaderMap,
) -> Vec<Job> {
    let event_id = head.event_id(&body);
    let replayed: Vec<Header> = ["x-line-signature", "content-type"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some(Header {
                name: bytes::Bytes::from_static(name.as_bytes()),
                value: bytes::Bytes::copy_from_slice(value.as_bytes()),
            })
        })
        .collect();
    let now = unix_ms(SystemTime::now());
    channel
        .targets
        .iter()
        .map(|target| {
            let set = ForwardingSetRef {
                id: &target.id,
                channel_id: &channel.channel.id,
                tenant_id: &channel.channel.tenant_id,
            };
            Job::forward(&event_id, set, body.clone(), replayed.clone(), now)
        })
        .collect()
}

//! The control plane's Prometheus series, served on `--metrics-listen` (never on the gRPC port):
//! RPCs by method and gRPC code (a tower layer around the tonic server), nodes on the config
//! stream, the configuration revision, attempts written to the delivery log, and notices by
//! state. Same crate and text format as the data plane's `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, Request, Response, header};
use hookplane_proto::v1::{Notification, NotificationState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    /// `/hookplane.v1.TenantService/ListTenants`; `other` for a method no service has.
    method: String,
    /// The gRPC code's name, `OK`, `UNAUTHENTICATED`...
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

/// The control plane's series; cheap to clone.
#[derive(Clone)]
pub struct ControlMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    rpcs: Family<Rpc, Counter>,
    config_subscribers: Gauge,
    config_revision: Gauge,
    attempt_log_writes: Counter,
    notices: Family<State, Gauge>,
    store: Store,
}

impl std::fmt::Debug for ControlMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlMetrics(..)")
    }
}

impl ControlMetrics {
    pub(crate) fn new(store: Store) -> ControlMetrics {
        let rpcs = Family::<Rpc, Counter>::default();
        let config_subscribers = Gauge::default();
        let config_revision = Gauge::default();
        let attempt_log_writes = Counter::default();
        let notices = Family::<State, Gauge>::default();
        let mut registry = Registry::default();
        registry.register(
            "hookplane_control_rpcs",
            "gRPC calls answered by the control plane, by method and status code",
            rpcs.clone(),
        );
        registry.register(
            "hookplane_control_config_subscribers",
            "Nodes holding a config stream (WatchConfig) open",
            config_subscribers.clone(),
        );
        registry.register(
            "hookplane_control_config_revision",
            "The store's configuration revision",
            config_revision.clone(),
        );
        registry.register(
            "hookplane_control_attempt_log_writes",
            "Delivery attempts reported by nodes and written to the delivery log",
            attempt_log_writes.clone(),
        );
        registry.register(
            "hookplane_control_notices",
            "Notices kept for tenants (NotificationService), by state",
            notices.clone(),
        );
        ControlMetrics {
            inner: Arc::new(Inner {
                registry,
                rpcs,
                config_subscribers,
                config_revision,
                attempt_log_writes,
                notices,
                store,
            }),
        }
    }

    fn rpc(&self, method: &str, code: tonic::Code) {
        // A method no service has answers UNIMPLEMENTED: one series for all of them, so callers
        // cannot grow the label set at will.
        let method = if code == tonic::Code::Unimplemented {
            "other".to_owned()
        } else {
            method.to_owned()
        };
        self.inner
            .rpcs
            .get_or_create(&Rpc {
                method,
                code: hookplane_proto::code_name(code),
            })
            .inc();
    }

    /// A node opened a config stream; the gauge goes down when the guard is dropped.
    pub(crate) fn config_subscriber(&self) -> SubscriberGuard {
        self.inner.config_subscribers.inc();
        SubscriberGuard(self.clone())
    }

    pub(crate) fn attempts_written(&self, count: u64) {
        self.inner.attempt_log_writes.inc_by(count);
    }

    /// The exposition text (OpenMetrics), with the revision and the notices read now.
    pub fn render(&self) -> String {
        let inner = &self.inner;
        inner
            .config_revision
            .set(i64::try_from(inner.store.revision()).unwrap_or(i64::MAX));
        match notices_by_state(&inner.store) {
            Ok(counts) => {
                for (state, count) in counts {
                    inner
                        .notices
                        .get_or_create(&State { state })
                        .set(i64::try_from(count).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting notices for /metrics failed"),
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &inner.registry);
        text
    }

    /// A tower layer counting every RPC of the server it wraps.
    pub(crate) fn rpc_layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// Holds one config stream in `hookplane_control_config_subscribers`.
pub(crate) struct SubscriberGuard(ControlMetrics);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.inner.config_subscribers.dec();
    }
}

/// Every state, each counted (0 too, so the series exist before the first notice).
fn notices_by_state(store: &Store) -> Result<Vec<(&'static str, u64)>, Error> {
    const STATES: [(NotificationState, &str); 4] = [
        (NotificationState::Logged, "logged"),
        (NotificationState::Queued, "queued"),
        (NotificationState::Sent, "sent"),
        (NotificationState::Undeliverable, "undeliverable"),
    ];
    let mut counts = [0u64; STATES.len()];
    for value in store.notifications_tree().iter().values() {
        let Ok(notice) = Notification::decode(value?.as_ref()) else {
            continue;
        };
        if let Some(i) = STATES.iter().position(|(s, _)| *s as i32 == notice.state) {
            counts[i] += 1;
        }
    }
    Ok(STATES
        .iter()
        .zip(counts)
        .map(|((_, name), count)| (*name, count))
        .collect())
}

/// The `grpc-status` of a header or trailer map, if it holds one.
fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(tonic::Code::from_i32(value.parse().ok()?))
}

/// Wraps the tonic server's routes in [`RpcMetricsService`].
#[derive(Clone)]
pub(crate) struct RpcMetricsLayer {
    metrics: ControlMetrics,
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts each call once its code is known: from the response's headers (an error answered at
/// once) or from the trailers at the end of its body (a success, or a stream's end).
#[derive(Clone)]
pub(crate) struct RpcMetricsService<S> {
    inner: S,
    metrics: ControlMetrics,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RpcMetricsService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body + Unpin,
{
    type Response = Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let (parts, body) = answer.await?.into_parts();
            let pending = match grpc_status(&parts.headers) {
                Some(code) => {
                    metrics.rpc(&method, code);
                    None
                }
                None => Some((method, metrics)),
            };
            Ok(Response::from_parts(
                parts,
                CountedBody {
                    inner: body,
                    pending,
                },
            ))
        })
    }
}

/// A response body that counts its call when its trailers pass, or as CANCELLED when it is
/// dropped before (the client went away).
pub(crate) struct CountedBody<B> {
    inner: B,
    pending: Option<(String, ControlMetrics)>,
}

impl<B> CountedBody<B> {
    fn count(&mut self, code: tonic::Code) {
        if let Some((method, metrics)) = self.pending.take() {
            metrics.rpc(&method, code);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.count(code);
                }
            }
            // Ended without a status: gRPC says that is a success only with trailers, but tonic
            // always sends them; counted as it is, not guessed.
            Poll::Ready(None) => this.count(tonic::Code::Unknown),
            Poll::Ready(Some(Err(_))) => this.count(tonic::Code::Internal),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        self.count(tonic::Code::Cancelled);
    }
}

/// Serves `GET /metrics` with `render`'s text on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let render = Arc::new(render);
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = Arc::clone(&render);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("the metrics listener failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_promised_series() {
        let (_dir, store) = crate::test_fixtures::store();
        let metrics = ControlMetrics::new(store);
        metrics.rpc("/hookplane.v1.TenantService/ListTenants", tonic::Code::Ok);
        metrics.rpc("/no.Such/Method", tonic::Code::Unimplemented);
        let guard = metrics.config_subscriber();
        metrics.attempts_written(3);
        let text = metrics.render();
        for needle in [
            "hookplane_control_rpcs_total{method=\"/hookplane.v1.TenantService/ListTenants\",code=\"OK\"} 1",
            "hookplane_control_rpcs_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1",
            "hookplane_control_config_subscribers 1",
            "hookplane_control_config_revision 0",
            "hookplane_control_attempt_log_writes_total 3",
            "hookplane_control_notices{state=\"queued\"} 0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        drop(guard);
        assert!(
            metrics
                .render()
                .contains("hookplane_control_config_subscribers 0")
        );
    }
}

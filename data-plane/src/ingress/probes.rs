//! Liveness, readiness and metrics on the ingress port.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::Ingress;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once a configuration snapshot is applied (before that every webhook would be
/// refused), and until the node is asked to stop.
pub async fn readyz(State(ingress): State<Arc<Ingress>>) -> Response {
    if ingress.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this node is stopping\n",
        )
            .into_response();
    }
    if ingress.config.is_cached() {
        let revision = ingress.config.load().revision;
        (
            StatusCode::OK,
            format!(
                "ready: serving the cached config revision {revision}; the control plane has \
                 not been reached since start\n"
            ),
        )
            .into_response()
    } else if ingress.config.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first configuration snapshot\n",
        )
            .into_response()
    }
}

pub async fn metrics(State(ingress): State<Arc<Ingress>>) -> Response {
    let depth = ingress.queue.depth().await.unwrap_or(0);
    if let Some(usage) = ingress.queue.usage() {
        ingress.metrics.spool_usage(&usage);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ingress.metrics.render(depth),
    )
        .into_response()
}

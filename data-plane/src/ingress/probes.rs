//! Liveness and readiness on the ingress port, and metrics there or on `--metrics-listen`.

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
/// refused), and until the node is asked to stop. Not ready while its spool cannot store new
/// work (a full or failing disk), so a load balancer sends webhooks to nodes that can; nor while
/// it refuses the control plane's config (another store, or a revision gone back): it still
/// serves its own, but it no longer follows the control plane, which someone has to look at.
pub async fn readyz(State(ingress): State<Arc<Ingress>>) -> Response {
    if ingress.draining.load(std::sync::atomic::Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: this node is stopping\n",
        )
            .into_response();
    }
    if let Some(why) = ingress.queue.storage().failure {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the spool cannot store new work ({why})\n"),
        )
            .into_response();
    }
    if let Some(why) = ingress.config.refusal() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}; serving this node's own config meanwhile\n"),
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

/// What `/metrics` shows: the node's series, then any more (the control plane's in standalone).
pub struct MetricsPage {
    pub ingress: Arc<Ingress>,
    pub more: Option<super::MoreMetrics>,
}

/// The text format's end marker: one text holds it once, at its end.
const EOF_LINE: &str = "# EOF\n";

pub async fn metrics(State(page): State<Arc<MetricsPage>>) -> Response {
    let ingress = &page.ingress;
    let depth = ingress.queue.depth().await.unwrap_or(0);
    ingress.metrics.spool_storage(&ingress.queue.storage());
    if let Some(usage) = ingress.queue.usage() {
        ingress.metrics.spool_usage(&usage);
    }
    let mut text = ingress.metrics.render(depth);
    if let Some(more) = &page.more {
        if let Some(body) = text.strip_suffix(EOF_LINE) {
            text.truncate(body.len());
        }
        text.push_str(&more());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

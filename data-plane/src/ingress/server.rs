//! The ingress port's HTTP server: the router on hyper's HTTP/1 connections, with what
//! `axum::serve` does not offer. A request's headers must arrive within a deadline (and a
//! connection idle between requests is closed after it), so half-sent requests do not hold
//! connections and tasks for ever; at most `max_connections` are held at once, one more is closed
//! as soon as it is accepted; and a stop lets requests in progress finish. The body's deadline is
//! the handlers' (`request_body.rs`), since only they read it. With a TLS config the port takes
//! HTTPS only; a TLS handshake must end within the header deadline too.

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use tracing::{debug, warn};

use crate::metrics::Metrics;

/// How long requests in progress may take to finish once the server stops.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `stop` resolves, then
/// waits up to [`STOP_WAIT`] for the requests in progress.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<ServerConfig>>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let tls = tls.map(TlsAcceptor::from);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(stop);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine, and a pause lets descriptors come back.
                    warn!(error = %e, "accepting an ingress connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics.ingress_connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let Some(acceptor) = &tls else {
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    // A header deadline passed, or the client went away.
                    debug!(error = %e, "ingress connection ended");
                }
                drop(permit);
            });
            continue;
        };
        // The handshake runs in the connection's own task, under the header deadline, so a
        // client that stalls in it holds no more than one that stalls in its headers.
        let (acceptor, watcher, http) = (acceptor.clone(), graceful.watcher(), http.clone());
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let connection = http.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(connection).await {
                        debug!(error = %e, "ingress connection ended");
                    }
                }
                Ok(Err(e)) => debug!(error = %e, "ingress TLS handshake failed"),
                Err(_) => debug!("ingress TLS handshake did not end within the header deadline"),
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_WAIT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("ingress requests still in progress at shutdown were cut off");
    }
    Ok(())
}

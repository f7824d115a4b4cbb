//! A real HTTP receiver on 127.0.0.1 that records every request's exact bytes and answers as the
//! test tells it to: a status, slowly, never, or with Retry-After.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use tokio::sync::Notify;

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Respond {
    /// This status at once.
    Status(u16),
    /// This status after a delay.
    Slowly(Duration, u16),
    /// Never: the request hangs until the client gives up.
    Hang,
    /// 429 or 503 with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    requests: Mutex<Vec<Received>>,
    respond: Mutex<Respond>,
    arrived: Notify,
}

/// The receiver; dropping it stops the server.
pub struct Receiver {
    shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver answering 200.
    pub async fn start() -> anyhow::Result<Receiver> {
        Receiver::start_with(Respond::Status(200)).await
    }

    pub async fn start_with(respond: Respond) -> anyhow::Result<Receiver> {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            respond: Mutex::new(respond),
            arrived: Notify::new(),
        });
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            shared,
            addr,
            server,
        })
    }

    /// The URL of `path` on this receiver, e.g. `url("/hook")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn respond(&self, respond: Respond) {
        *self.shared.respond.lock().unwrap() = respond;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "receiver got {} of {n} requests within {timeout:?}",
                    self.requests().len()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    shared.arrived.notify_waiters();
    let respond = shared.respond.lock().unwrap().clone();
    let status = |code: u16| StatusCode::from_u16(code).expect("valid status");
    match respond {
        Respond::Status(code) => status(code).into_response(),
        Respond::Slowly(delay, code) => {
            tokio::time::sleep(delay).await;
            status(code).into_response()
        }
        Respond::Hang => std::future::pending().await,
        Respond::RetryAfter(code, secs) => {
            (status(code), [("retry-after", secs.to_string())]).into_response()
        }
    }
}

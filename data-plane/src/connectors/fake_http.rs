//! In-process HTTP servers for the connectors' unit tests, and a plain reqwest [`Transport`].

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};

use super::transport::{Post, Transport};
use crate::attempt::{Reply, Unanswered};

/// One request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

type Responder = dyn Fn(&Recorded, usize) -> (u16, String) + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    respond: Box<Responder>,
    delay: Option<Duration>,
}

/// A server on 127.0.0.1 that records every request and answers with `respond(request, n)`,
/// `n` counting the requests before this one.
pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(
        respond: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeServer {
        FakeServer::start_slow(None, respond).await
    }

    pub async fn start_slow(
        delay: Option<Duration>,
        respond: impl Fn(&Recorded, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> FakeServer {
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            respond: Box::new(respond),
            delay,
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Recorded {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let seen = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(request.clone());
        requests.len() - 1
    };
    if let Some(delay) = shared.delay {
        tokio::time::sleep(delay).await;
    }
    let (status, body) = (shared.respond)(&request, seen);
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

/// A plain client, no SSRF guard: the fakes listen on loopback.
pub struct PlainTransport(pub reqwest::Client);

impl Default for PlainTransport {
    fn default() -> Self {
        PlainTransport(reqwest::Client::new())
    }
}

#[async_trait]
impl Transport for PlainTransport {
    async fn post(&self, post: Post) -> Result<Reply, Unanswered> {
        let response = self
            .0
            .post(&post.url)
            .headers(post.headers)
            .body(post.body)
            .timeout(post.timeout)
            .send()
            .await
            .map_err(|e| Unanswered {
                reason: if e.is_timeout() {
                    "remote network error: timeout".to_owned()
                } else {
                    "remote network error".to_owned()
                },
                retryable: true,
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Ok(Reply {
            status,
            body,
            retry_after: None,
        })
    }
}

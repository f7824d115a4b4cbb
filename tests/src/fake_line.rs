//! A fake LINE Messaging API on 127.0.0.1 serving the push endpoint as documented (PROTOCOLS.md
//! §1): bearer channel access token, `X-Line-Retry-Key` (a UUID; a key already accepted gets
//! 409), `{to, messages (1 to 5)}`. It records every request and can be told to fail the next
//! ones (500, 429) without accepting them, like a LINE having a bad minute.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::receiver::Received;

/// The channel access token tests give their channel.
pub const ACCESS_TOKEN: &str = "line-channel-access-token-for-tests";

#[derive(Default)]
struct Api {
    requests: Vec<(Received, u16)>,
    accepted_keys: HashSet<String>,
    scripted: Vec<u16>,
}

struct Shared {
    api: Mutex<Api>,
    arrived: Notify,
}

/// One push request and what the fake answered.
#[derive(Debug, Clone)]
pub struct Push {
    pub request: Received,
    pub status: u16,
}

impl Push {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.request.body).expect("JSON push body")
    }

    pub fn retry_key(&self) -> Option<&str> {
        self.request.header("x-line-retry-key")
    }
}

/// The fake API; dropping it stops the server.
pub struct FakeLine {
    shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl FakeLine {
    pub async fn start() -> anyhow::Result<FakeLine> {
        let shared = Arc::new(Shared {
            api: Mutex::new(Api::default()),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/v2/bot/message/push", post(push))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeLine {
            shared,
            addr,
            server,
        })
    }

    /// What `--line-api-base-url` points at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every push request and its answer, in arrival order.
    pub fn pushes(&self) -> Vec<Push> {
        self.shared
            .api
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(request, status)| Push {
                request: request.clone(),
                status: *status,
            })
            .collect()
    }

    /// The pushes LINE sent on to the user (answered 200): each message at most once.
    pub fn sent(&self) -> Vec<Push> {
        self.pushes()
            .into_iter()
            .filter(|p| p.status == 200)
            .collect()
    }

    /// The next valid pushes get these statuses, in order, and are not sent.
    pub fn script(&self, statuses: &[u16]) {
        self.shared.api.lock().unwrap().scripted = statuses.to_vec();
    }

    /// Waits until `n` push requests (any answer) arrived and returns them all.
    pub async fn wait_for_pushes(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Push>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.pushes();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "fake LINE got {} of {n} push requests within {timeout:?}",
                    got.len()
                );
            }
        }
    }
}

impl Drop for FakeLine {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn is_uuid(key: &str) -> bool {
    let groups: Vec<&str> = key.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn valid_body(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let to_ok = value["to"].as_str().is_some_and(|t| !t.is_empty());
    let messages_ok = value["messages"].as_array().is_some_and(|m| {
        (1..=5).contains(&m.len()) && m.iter().all(|m| m["type"].as_str().is_some())
    });
    to_ok && messages_ok
}

async fn push(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Received {
        method: http::Method::POST,
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.clone(),
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (status, answer) = {
        let mut api = shared.api.lock().unwrap();
        let key = header("x-line-retry-key").map(str::to_owned);
        let (status, answer) = if header("authorization")
            != Some(format!("Bearer {ACCESS_TOKEN}").as_str())
        {
            (
                401,
                json!({"message": "Authentication failed. Confirm that the access token in the authorization header is valid."}),
            )
        } else if key.as_deref().is_some_and(|k| !is_uuid(k)) || !valid_body(&body) {
            (400, json!({"message": "The request body has 1 error(s)"}))
        } else if key.as_ref().is_some_and(|k| api.accepted_keys.contains(k)) {
            (
                409,
                json!({"message": "The retry key is already accepted", "sentMessages": []}),
            )
        } else if !api.scripted.is_empty() {
            let status = api.scripted.remove(0);
            (status, json!({"message": "fake failure"}))
        } else {
            if let Some(key) = key {
                api.accepted_keys.insert(key);
            }
            (
                200,
                json!({"sentMessages": [{"id": "461230966842064897", "quoteToken": "IStG5h1Tz7b..."}]}),
            )
        };
        api.requests.push((request, status));
        (status, answer)
    };
    shared.arrived.notify_waiters();
    json_answer(status, &answer)
}

fn json_answer(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

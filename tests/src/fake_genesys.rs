//! A fake Genesys Cloud on 127.0.0.1 speaking Open Messaging as documented (PROTOCOLS.md §4):
//! the OAuth client-credentials token endpoint and the inbound message endpoint, both checking
//! what a real org checks (Basic credentials, bearer tokens, the body's required fields) and
//! recording every request. It also plays Genesys's outbound side: agent messages signed with
//! `X-Hub-Signature-256`, posted to a URL.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::receiver::Received;

pub const CLIENT_ID: &str = "genesys-client-id";
pub const CLIENT_SECRET: &str = "genesys-client-secret";
pub const INTEGRATION_ID: &str = "6f1c2b0e-4d3a-4f5e-9a8b-7c6d5e4f3a2b";
pub const SIGNATURE_SECRET: &str = "genesys-outbound-signature-secret";

#[derive(Default)]
struct Org {
    token_requests: Vec<Received>,
    inbound: Vec<(Received, u16)>,
    issued: Vec<String>,
    revoked: HashSet<String>,
    /// Answers for the next inbound requests that carry a valid token, in order.
    scripted: Vec<u16>,
    expires_in: u64,
}

struct Shared {
    org: Mutex<Org>,
    arrived: Notify,
}

/// The fake org; dropping it stops the server.
pub struct FakeGenesys {
    shared: Arc<Shared>,
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGenesys {
    /// Starts an org whose tokens last a day, like Genesys's.
    pub async fn start() -> anyhow::Result<FakeGenesys> {
        let shared = Arc::new(Shared {
            org: Mutex::new(Org {
                expires_in: 86_399,
                ..Org::default()
            }),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/oauth/token", post(token))
            .route(
                "/api/v2/conversations/messages/{integration_id}/inbound/open/message",
                post(inbound),
            )
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGenesys {
            shared,
            addr,
            server,
        })
    }

    /// Both the login and the API base URL: one server plays both hosts.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every token request, in arrival order.
    pub fn token_requests(&self) -> Vec<Received> {
        self.shared.org.lock().unwrap().token_requests.clone()
    }

    /// Every inbound message request, accepted or not, in arrival order.
    pub fn inbound_requests(&self) -> Vec<Received> {
        let org = self.shared.org.lock().unwrap();
        org.inbound.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The bodies of inbound messages Genesys accepted (200), as JSON.
    pub fn accepted_messages(&self) -> Vec<Value> {
        let org = self.shared.org.lock().unwrap();
        org.inbound
            .iter()
            .filter(|(_, status)| *status == 200)
            .map(|(r, _)| serde_json::from_slice(&r.body).expect("JSON inbound body"))
            .collect()
    }

    /// Waits until `n` inbound messages were accepted and returns them.
    pub async fn wait_for_accepted(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.accepted_messages();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "fake Genesys accepted {} of {n} inbound messages within {timeout:?} \
                     ({} requests, {} token requests)",
                    got.len(),
                    self.inbound_requests().len(),
                    self.token_requests().len()
                );
            }
        }
    }

    /// Revokes every token issued so far: the next inbound request with one gets 401.
    pub fn revoke_tokens(&self) {
        let mut org = self.shared.org.lock().unwrap();
        let issued = org.issued.clone();
        org.revoked.extend(issued);
    }

    /// The next inbound requests with a valid token get these statuses, in order.
    pub fn script_inbound(&self, statuses: &[u16]) {
        self.shared.org.lock().unwrap().scripted = statuses.to_vec();
    }
}

impl Drop for FakeGenesys {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn received(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Received {
    Received {
        method: http::Method::POST,
        path: uri.path().to_owned(),
        headers: headers.clone(),
        body: body.clone(),
    }
}

async fn token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        BASE64.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let mut org = shared.org.lock().unwrap();
    org.token_requests.push(received(&uri, &headers, &body));
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if authorization != Some(expected.as_str()) {
        return json_answer(401, &json!({"error": "invalid_client"}));
    }
    let form = headers.get("content-type").and_then(|v| v.to_str().ok());
    if form != Some("application/x-www-form-urlencoded")
        || &body[..] != b"grant_type=client_credentials"
    {
        return json_answer(400, &json!({"error": "unsupported_grant_type"}));
    }
    let issued = format!("genesys-token-{}", org.issued.len() + 1);
    org.issued.push(issued.clone());
    json_answer(
        200,
        &json!({
            "access_token": issued,
            "token_type": "bearer",
            "expires_in": org.expires_in,
        }),
    )
}

/// What a real org refuses with 400: no sender, an id type other than the documented ones, no
/// time, neither text nor content.
fn malformed(message: &Value) -> Option<&'static str> {
    let channel = &message["channel"];
    if channel["from"]["id"].as_str().is_none_or(str::is_empty) {
        return Some("channel.from.id is required");
    }
    if !matches!(
        channel["from"]["idType"].as_str(),
        Some("Opaque" | "Email" | "Phone")
    ) {
        return Some("channel.from.idType is invalid");
    }
    if channel["time"].as_str().is_none() {
        return Some("channel.time is required");
    }
    let has_text = message["text"].as_str().is_some_and(|t| !t.is_empty());
    let has_content = message["content"].as_array().is_some_and(|c| !c.is_empty());
    (!has_text && !has_content).then_some("text or content is required")
}

async fn inbound(
    State(shared): State<Arc<Shared>>,
    Path(integration_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let status = {
        let mut org = shared.org.lock().unwrap();
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let authorised = bearer
            .as_ref()
            .is_some_and(|t| org.issued.contains(t) && !org.revoked.contains(t));
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let status = if !authorised {
            401
        } else if integration_id != INTEGRATION_ID {
            404
        } else if parsed.as_ref().is_none_or(|m| malformed(m).is_some()) {
            400
        } else if org.scripted.is_empty() {
            200
        } else {
            org.scripted.remove(0)
        };
        org.inbound.push((received(&uri, &headers, &body), status));
        status
    };
    shared.arrived.notify_waiters();
    if status == 200 {
        let message: Value = serde_json::from_slice(&body).unwrap_or_default();
        let id = message["channel"]["messageId"].as_str().unwrap_or("");
        return json_answer(
            200,
            &json!({
                "id": format!("genesys-msg-{id}"),
                "channel": message["channel"],
                "type": "Text",
                "text": message["text"],
                "direction": "Inbound",
            }),
        );
    }
    json_answer(status, &json!({"status": status, "code": "fake.refused"}))
}

/// `X-Hub-Signature-256` as Genesys computes it: `sha256=` + base64 HMAC-SHA256 of the body.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    // LINE's signature is the same HMAC, base64-encoded.
    format!(
        "sha256={}",
        hookplane_verify::line::sign(secret.as_bytes(), body)
    )
}

/// An agent's text message to the LINE user `to`, as Genesys posts it to the outbound webhook.
pub fn agent_text(message_id: &str, to: &str, text: &str) -> Vec<u8> {
    json!({
        "id": message_id,
        "channel": {
            "id": INTEGRATION_ID,
            "platform": "Open",
            "type": "Private",
            "messageId": message_id,
            "to": {"id": to, "idType": "Opaque"},
            "from": {"id": INTEGRATION_ID, "idType": "Opaque", "nickname": "Agent Mei"},
            "time": "2025-01-01T00:05:00.000Z"
        },
        "conversationId": "c0f7d1e2-0000-4000-8000-000000000001",
        "direction": "Outbound",
        "originatingEntity": "Human",
        "type": "Text",
        "text": text
    })
    .to_string()
    .into_bytes()
}

/// A delivery receipt for an earlier message, as Genesys posts it.
pub fn receipt(message_id: &str, to: &str) -> Vec<u8> {
    json!({
        "id": message_id,
        "channel": {"id": INTEGRATION_ID, "platform": "Open", "type": "Private",
                    "to": {"id": to, "idType": "Opaque"}, "time": "2025-01-01T00:05:01.000Z"},
        "direction": "Outbound",
        "type": "Receipt",
        "status": "Delivered"
    })
    .to_string()
    .into_bytes()
}

/// A typing indicator, as Genesys posts it.
pub fn typing(to: &str) -> Vec<u8> {
    json!({
        "id": "typing-1",
        "channel": {"id": INTEGRATION_ID, "platform": "Open", "type": "Private",
                    "to": {"id": to, "idType": "Opaque"}, "time": "2025-01-01T00:05:02.000Z"},
        "direction": "Outbound",
        "type": "Event",
        "events": [{"eventType": "Typing", "typing": {"type": "On"}}]
    })
    .to_string()
    .into_bytes()
}

/// POSTs an outbound body to `url` with `signature` as `X-Hub-Signature-256` (none if `None`).
pub async fn post_outbound(
    url: &str,
    body: &[u8],
    signature: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Hub-Signature-256", signature);
    }
    request.send().await
}

/// POSTs an outbound body signed with [`SIGNATURE_SECRET`], as Genesys does.
pub async fn post_outbound_signed(url: &str, body: &[u8]) -> reqwest::Result<reqwest::Response> {
    post_outbound(url, body, Some(&hub_signature(SIGNATURE_SECRET, body))).await
}

fn json_answer(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

//! `POST /api/connector/genesys/{forwarding_set_id}/outbound`: where Genesys sends agents'
//! messages. The signature is checked over the raw bytes before anything is parsed; a message
//! to deliver is durably queued as a LINE push and only then answered 200, so the answer stays
//! far inside Genesys's 10 seconds whatever LINE is doing.

use std::{sync::Arc, time::SystemTime};

use axum::{
    Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::Bytes;
use hookplane_proto::v1::{ForwardingKind, NodeForwardingSet};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::{debug, error};

use super::{
    agent_message::{self, AgentMessage, Unusable},
    signature,
};
use crate::{
    Error,
    config::ConfigStore,
    connectors::line_push,
    metrics::Metrics,
    queue::{ForwardingSetRef, Header, Job, Queue, unix_ms},
    request_body::{BodyError, BodyLimits},
};

pub const OUTBOUND_ROUTE: &str = "/api/connector/genesys/{forwarding_set_id}/outbound";

/// What the endpoint needs from the node.
pub struct OutboundEndpoint {
    pub config: Arc<ConfigStore>,
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub body: BodyLimits,
}

pub fn router(endpoint: Arc<OutboundEndpoint>) -> Router {
    Router::new()
        .route(OUTBOUND_ROUTE, post(genesys_outbound))
        .with_state(endpoint)
}

/// How an outbound request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Queued,
    Acknowledged,
    NotReady,
    UnknownSet,
    Disabled,
    TooLarge,
    TooSlow,
    Unreadable,
    BadSignature,
    Unusable(Unusable),
    QueueUnavailable,
    SpoolFull,
}

impl Verdict {
    fn label(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Acknowledged => "acknowledged",
            Self::NotReady => "not_ready",
            Self::UnknownSet => "unknown_set",
            Self::Disabled => "disabled",
            Self::TooLarge => "too_large",
            Self::TooSlow => "too_slow",
            Self::Unreadable => "unreadable",
            Self::BadSignature => "bad_signature",
            Self::Unusable(_) => "unusable",
            Self::QueueUnavailable => "queue_unavailable",
            Self::SpoolFull => "spool_full",
        }
    }

    fn response(self) -> Response {
        let (status, text) = match self {
            Self::Queued | Self::Acknowledged => return StatusCode::OK.into_response(),
            Self::NotReady => (
                StatusCode::SERVICE_UNAVAILABLE,
                "this node has no configuration yet\n".to_owned(),
            ),
            Self::UnknownSet => (
                StatusCode::NOT_FOUND,
                "no such Genesys forwarding set\n".to_owned(),
            ),
            Self::Disabled => (
                StatusCode::FORBIDDEN,
                "this forwarding set is disabled\n".to_owned(),
            ),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large\n".to_owned()),
            Self::TooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n".to_owned(),
            ),
            Self::Unreadable => (
                StatusCode::BAD_REQUEST,
                "body could not be read\n".to_owned(),
            ),
            Self::BadSignature => (
                StatusCode::UNAUTHORIZED,
                "missing or invalid X-Hub-Signature-256\n".to_owned(),
            ),
            Self::Unusable(why) => (StatusCode::BAD_REQUEST, format!("{why}\n")),
            // Genesys retries a 5xx, so nothing is lost.
            Self::QueueUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "could not queue the message; try again\n".to_owned(),
            ),
            Self::SpoolFull => return crate::ingress::spool_full(),
        };
        (status, text).into_response()
    }
}

async fn genesys_outbound(
    State(endpoint): State<Arc<OutboundEndpoint>>,
    Path(set_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let verdict = endpoint.accept(&set_id, &headers, body).await;
    endpoint.metrics.genesys_outbound(verdict.label());
    debug!(
        forwarding_set_id = set_id,
        verdict = verdict.label(),
        "genesys outbound"
    );
    verdict.response()
}

impl OutboundEndpoint {
    async fn accept(&self, set_id: &str, headers: &HeaderMap, body: Body) -> Verdict {
        if !self.config.is_ready() {
            return Verdict::NotReady;
        }
        let snapshot = self.config.load();
        let Some(set) = snapshot.forwarding_set(set_id).filter(|s| is_genesys(s)) else {
            return Verdict::UnknownSet;
        };
        let Some(settings) = set.genesys.as_ref() else {
            return Verdict::UnknownSet;
        };
        let body = match self.body.read(headers, body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return Verdict::TooLarge,
            Err(BodyError::TooSlow) => return Verdict::TooSlow,
            Err(BodyError::Unreadable) => return Verdict::Unreadable,
        };
        let claimed = headers
            .get(signature::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        if !signature::verify(&settings.outbound_signature_secret, &body, claimed) {
            return Verdict::BadSignature;
        }
        if !set.enabled {
            return Verdict::Disabled;
        }
        let (message_id, to, messages) = match agent_message::read(&body) {
            Ok(AgentMessage::Push {
                message_id,
                to,
                messages,
            }) => (message_id, to, messages),
            Ok(AgentMessage::Acknowledge { .. }) => return Verdict::Acknowledged,
            Err(why) => return Verdict::Unusable(why),
        };
        let job = push_job(set, &message_id, &to, &messages, SystemTime::now());
        match self.queue.enqueue(vec![job]).await {
            Ok(()) => {}
            // The spool logs it, once a minute per tenant.
            Err(Error::SpoolFull(_)) => return Verdict::SpoolFull,
            Err(e) => {
                error!(forwarding_set_id = set_id, error = %e, "agent message not queued");
                return Verdict::QueueUnavailable;
            }
        }
        Verdict::Queued
    }
}

fn is_genesys(set: &NodeForwardingSet) -> bool {
    ForwardingKind::try_from(set.kind) == Ok(ForwardingKind::GenesysOpenMessaging)
}

/// `evt_` + a hash of the set and Genesys's message id: the same for every retry Genesys
/// makes of that message, so its delivery id is too and the queue holds it once.
pub fn outbound_event_id(set_id: &str, message_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"genesys-outbound\n");
    hash.update(set_id.as_bytes());
    hash.update(b"\n");
    hash.update(message_id.as_bytes());
    format!("evt_{}", hex::encode(&hash.finalize()[..16]))
}

/// The queued LINE push for one agent message. The channel access token is looked up when it
/// is sent, so it never rests in the spool.
pub fn push_job(
    set: &NodeForwardingSet,
    message_id: &str,
    to: &str,
    messages: &[Value],
    now: SystemTime,
) -> Job {
    let event_id = outbound_event_id(&set.id, message_id);
    let target = ForwardingSetRef {
        id: &set.id,
        channel_id: &set.channel_id,
        tenant_id: &set.tenant_id,
    };
    let headers = vec![
        Header {
            name: Bytes::from_static(b"content-type"),
            value: Bytes::from_static(b"application/json"),
        },
        Header {
            name: Bytes::from_static(line_push::RETRY_KEY_HEADER.as_bytes()),
            value: Bytes::from(line_push::retry_key(&set.id, message_id)),
        },
    ];
    Job::line_push(
        &event_id,
        target,
        line_push::push_body(to, messages),
        headers,
        unix_ms(now),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookplane_proto::v1::{
        ConfigResource, ConfigUpdate, GenesysSettings, NodeChannel, config_resource::Resource,
    };
    use serde_json::json;

    use super::*;
    use crate::{config::Snapshot, queue::spool::Spool};

    const SECRET: &str = "genesys-signing-secret";

    struct Node {
        _dir: tempfile::TempDir,
        queue: Arc<Spool>,
        url: String,
        _server: tokio::task::JoinHandle<()>,
    }

    fn genesys_set(id: &str, enabled: bool) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::ForwardingSet(NodeForwardingSet {
                id: id.to_owned(),
                channel_id: "ch_1".to_owned(),
                tenant_id: "tnt_1".to_owned(),
                enabled,
                kind: ForwardingKind::GenesysOpenMessaging.into(),
                genesys: Some(GenesysSettings {
                    outbound_signature_secret: SECRET.to_owned(),
                    ..GenesysSettings::default()
                }),
                ..NodeForwardingSet::default()
            })),
        }
    }

    fn raw_set(id: &str) -> ConfigResource {
        ConfigResource {
            resource: Some(Resource::ForwardingSet(NodeForwardingSet {
                id: id.to_owned(),
                channel_id: "ch_1".to_owned(),
                enabled: true,
                kind: ForwardingKind::Raw.into(),
                url: "https://crm.example/hook".to_owned(),
                ..NodeForwardingSet::default()
            })),
        }
    }

    async fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(Spool::open(dir.path()).unwrap());
        let config = Arc::new(ConfigStore::default());
        let channel = ConfigResource {
            resource: Some(Resource::Channel(NodeChannel {
                id: "ch_1".to_owned(),
                tenant_id: "tnt_1".to_owned(),
                ..NodeChannel::default()
            })),
        };
        config.install(
            Snapshot::default().apply(&ConfigUpdate {
                revision: 1,
                snapshot: true,
                upserts: vec![
                    channel,
                    genesys_set("fwd_g", true),
                    genesys_set("fwd_off", false),
                    raw_set("fwd_raw"),
                ],
                ..ConfigUpdate::default()
            }),
            true,
        );
        let app = router(Arc::new(OutboundEndpoint {
            config,
            queue: Arc::clone(&queue) as Arc<dyn Queue>,
            metrics: Arc::new(Metrics::default()),
            body: crate::request_body::BodyLimits {
                max_bytes: 64 * 1024,
                deadline: std::time::Duration::from_secs(5),
            },
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Node {
            _dir: dir,
            queue,
            url,
            _server: server,
        }
    }

    fn agent_text(id: &str) -> Vec<u8> {
        json!({
            "id": id,
            "channel": {"platform": "Open", "type": "Private", "messageId": id,
                        "to": {"id": "U4af", "idType": "Opaque"}, "time": "2025-01-01T00:00:00Z"},
            "direction": "Outbound", "type": "Text", "text": "Your order ships today."
        })
        .to_string()
        .into_bytes()
    }

    impl Node {
        async fn post(&self, set: &str, body: &[u8], signature: Option<String>) -> u16 {
            let mut request = reqwest::Client::new()
                .post(format!("{}/api/connector/genesys/{set}/outbound", self.url))
                .header("content-type", "application/json")
                .body(body.to_vec());
            if let Some(signature) = signature {
                request = request.header("X-Hub-Signature-256", signature);
            }
            request.send().await.unwrap().status().as_u16()
        }

        async fn post_signed(&self, set: &str, body: &[u8]) -> u16 {
            self.post(set, body, Some(signature::sign(SECRET, body)))
                .await
        }

        async fn queued(&self) -> Vec<Job> {
            self.queue
                .lease(100, Duration::from_millis(10), &crate::queue::unlimited)
                .await
                .unwrap()
                .into_iter()
                .map(|l| l.job)
                .collect()
        }
    }

    #[tokio::test]
    async fn a_signed_agent_message_is_queued_as_a_line_push_and_answered_200() {
        let node = node().await;
        assert_eq!(node.post_signed("fwd_g", &agent_text("m1")).await, 200);
        let jobs = node.queued().await;
        assert_eq!(jobs.len(), 1);
        let push: Value = serde_json::from_slice(&jobs[0].body).unwrap();
        assert_eq!(
            push,
            json!({"to": "U4af", "messages": [{"type": "text", "text": "Your order ships today."}]})
        );
        assert_eq!(jobs[0].forwarding_set_id, "fwd_g");
        assert_eq!(jobs[0].leg(), crate::queue::Leg::LinePush);
        assert_eq!(jobs[0].channel_id, "ch_1");
        let key = jobs[0]
            .headers
            .iter()
            .find(|h| h.name == "x-line-retry-key");
        assert_eq!(key.unwrap().value, line_push::retry_key("fwd_g", "m1"));
    }

    #[tokio::test]
    async fn a_wrong_signature_is_refused_and_nothing_is_queued() {
        let node = node().await;
        let body = agent_text("m1");
        let status = node
            .post(
                "fwd_g",
                &body,
                Some(signature::sign("not-the-secret", &body)),
            )
            .await;
        assert_eq!(status, 401);
        assert!(node.queued().await.is_empty());
    }

    #[tokio::test]
    async fn a_missing_signature_is_refused() {
        let node = node().await;
        assert_eq!(node.post("fwd_g", &agent_text("m1"), None).await, 401);
    }

    #[tokio::test]
    async fn an_unknown_set_is_404() {
        let node = node().await;
        assert_eq!(node.post_signed("fwd_nope", &agent_text("m1")).await, 404);
    }

    #[tokio::test]
    async fn a_raw_forwarding_set_has_no_outbound_endpoint() {
        let node = node().await;
        assert_eq!(node.post_signed("fwd_raw", &agent_text("m1")).await, 404);
    }

    #[tokio::test]
    async fn a_disabled_set_refuses_agent_messages() {
        let node = node().await;
        assert_eq!(node.post_signed("fwd_off", &agent_text("m1")).await, 403);
        assert!(node.queued().await.is_empty());
    }

    #[tokio::test]
    async fn receipts_are_acknowledged_and_not_queued() {
        let node = node().await;
        let receipt = json!({"id": "r1", "channel": {"to": {"id": "U4af"}},
            "type": "Receipt", "status": "Delivered", "direction": "Outbound"})
        .to_string();
        assert_eq!(node.post_signed("fwd_g", receipt.as_bytes()).await, 200);
        assert!(node.queued().await.is_empty());
    }

    #[tokio::test]
    async fn a_genesys_retry_of_a_queued_message_is_held_once() {
        let node = node().await;
        let body = agent_text("m1");
        assert_eq!(node.post_signed("fwd_g", &body).await, 200);
        assert_eq!(node.post_signed("fwd_g", &body).await, 200);
        assert_eq!(node.queued().await.len(), 1);
    }

    #[tokio::test]
    async fn a_signed_body_that_is_not_a_message_is_400() {
        let node = node().await;
        assert_eq!(node.post_signed("fwd_g", b"[]").await, 400);
    }

    #[tokio::test]
    async fn other_methods_are_refused() {
        let node = node().await;
        let status = reqwest::Client::new()
            .get(format!("{}/api/connector/genesys/fwd_g/outbound", node.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 405);
    }

    #[test]
    fn the_event_id_is_stable_per_set_and_message() {
        assert_eq!(
            outbound_event_id("fwd_g", "m1"),
            outbound_event_id("fwd_g", "m1")
        );
        assert_ne!(
            outbound_event_id("fwd_g", "m1"),
            outbound_event_id("fwd_g", "m2")
        );
        assert_ne!(
            outbound_event_id("fwd_g", "m1"),
            outbound_event_id("fwd_h", "m1")
        );
    }
}

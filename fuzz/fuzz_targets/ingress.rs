//! The data plane's real ingress router, in process, on a fixed in-memory config: any method,
//! path, `x-line-signature`, `content-length` and body. It must never panic, answer only the
//! statuses it documents, accept nothing whose signature does not hold, refuse every body over
//! the limit, and queue exactly the received bytes.
//!
//! Input: a body starting with `{` (the LINE fixtures are the seeds) is POSTed, correctly signed,
//! to the known channel. Anything else is `<flags byte><path>\n<signature>\n<body>`.

#![no_main]

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{Router, body::Body};
use hookplane_data::{
    Error,
    config::{ConfigStore, Snapshot},
    ingress::{self, Ingress},
    metrics::Metrics,
    queue::{Job, Leased, Queue},
};
use hookplane_proto::v1::{
    ConfigResource, ConfigUpdate, NodeChannel, NodeForwardingSet, NodeSecret,
    config_resource::Resource,
};
use http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CHANNEL: &str = "ch_fuzz";
/// A channel the config knows but that has no secret: nothing may pass.
const CHANNEL_WITHOUT_SECRET: &str = "ch_nosecret";
/// The fixtures' secret (`tests/fixtures/line/SIGNATURES.txt`).
const SECRET: &str = "0123456789abcdef0123456789abcdef";
/// A previous secret still in its rotation grace period.
const OLD_SECRET: &str = "fedcba9876543210fedcba9876543210";
/// Small, so inputs cross it.
const MAX_BODY_BYTES: usize = 4096;
const TARGETS: usize = 2;

/// The queue, in memory: what the ingress enqueued for the current input.
#[derive(Default)]
struct Recorded {
    jobs: Mutex<Vec<Job>>,
}

#[async_trait]
impl Queue for Recorded {
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error> {
        self.jobs.lock().unwrap().extend(jobs);
        Ok(())
    }
    async fn lease(
        &self,
        _max: usize,
        _wait: Duration,
        _room: &hookplane_data::queue::Room<'_>,
    ) -> Result<Vec<Leased>, Error> {
        Ok(Vec::new())
    }
    async fn ack(&self, _leased: Leased) -> Result<(), Error> {
        Ok(())
    }
    async fn retry(
        &self,
        _leased: Leased,
        _n: u32,
        _at: std::time::SystemTime,
    ) -> Result<(), Error> {
        Ok(())
    }
    async fn defer(&self, _leased: Leased, _at: std::time::SystemTime) -> Result<(), Error> {
        Ok(())
    }
    async fn fail(&self, _leased: Leased, _n: u32, _reason: &str) -> Result<(), Error> {
        Ok(())
    }
    async fn requeue_failed(&self, _id: &str) -> Result<bool, Error> {
        Ok(false)
    }
    async fn purge_tenant(
        &self,
        _tenant_id: &str,
        _before: std::time::SystemTime,
    ) -> Result<hookplane_data::queue::Purged, Error> {
        Ok(hookplane_data::queue::Purged::default())
    }
    async fn depth(&self) -> Result<u64, Error> {
        Ok(self.jobs.lock().unwrap().len() as u64)
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    queue: Arc<Recorded>,
}

fn resource(resource: Resource) -> ConfigResource {
    ConfigResource {
        resource: Some(resource),
    }
}

fn secret(secret: &str, grace: bool) -> NodeSecret {
    NodeSecret {
        secret: secret.to_owned(),
        // Far in the future: the grace period lasts the whole run.
        valid_until: grace.then_some(prost_types::Timestamp {
            seconds: 4_102_444_800,
            nanos: 0,
        }),
    }
}

static HARNESS: LazyLock<Harness> = LazyLock::new(|| {
    let channel = |id: &str, secrets: Vec<NodeSecret>| {
        resource(Resource::Channel(NodeChannel {
            id: id.to_owned(),
            tenant_id: "tnt_fuzz".to_owned(),
            secrets,
            ..NodeChannel::default()
        }))
    };
    let mut upserts = vec![
        channel(
            CHANNEL,
            vec![secret(SECRET, false), secret(OLD_SECRET, true)],
        ),
        channel(CHANNEL_WITHOUT_SECRET, Vec::new()),
    ];
    for n in 0..TARGETS {
        upserts.push(resource(Resource::ForwardingSet(NodeForwardingSet {
            id: format!("fwd_{n}"),
            channel_id: CHANNEL.to_owned(),
            tenant_id: "tnt_fuzz".to_owned(),
            url: format!("https://crm.example/{n}"),
            enabled: true,
            ..NodeForwardingSet::default()
        })));
    }
    let config = Arc::new(ConfigStore::default());
    config.install(
        Snapshot::default().apply(&ConfigUpdate {
            revision: 1,
            snapshot: true,
            upserts,
            ..ConfigUpdate::default()
        }),
        true,
    );
    let queue = Arc::new(Recorded::default());
    let router = ingress::router(Arc::new(Ingress {
        config,
        queue: Arc::clone(&queue) as Arc<dyn Queue>,
        metrics: Arc::new(Metrics::default()),
        body: hookplane_data::request_body::BodyLimits {
            max_bytes: MAX_BODY_BYTES,
            deadline: std::time::Duration::from_secs(5),
        },
        draining: Arc::default(),
        priority: hookplane_data::delivery::DeliveryPriority::new(10),
    }));
    Harness {
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime"),
        router,
        queue,
    }
});

struct Case {
    method: Method,
    uri: String,
    signature: Option<Vec<u8>>,
    content_length: Option<String>,
    body: Vec<u8>,
    /// The path is the known channel's webhook path.
    known_channel: bool,
}

fn webhook_path(channel: &str) -> String {
    format!("/api/webhook/line/{channel}/events")
}

fn sign(body: &[u8]) -> Vec<u8> {
    hookplane_verify::line::sign(SECRET.as_bytes(), body).into_bytes()
}

fn case(data: &[u8]) -> Option<Case> {
    if data.first() == Some(&b'{') {
        return Some(Case {
            method: Method::POST,
            uri: webhook_path(CHANNEL),
            signature: Some(sign(data)),
            content_length: None,
            body: data.to_vec(),
            known_channel: true,
        });
    }
    let (&flags, rest) = data.split_first()?;
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let path = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().to_vec();
    let method = match (flags & 1 == 1, (flags >> 5) & 3) {
        (true, _) => Method::POST,
        (false, 0) => Method::GET,
        (false, 1) => Method::PUT,
        (false, 2) => Method::DELETE,
        (false, _) => Method::from_bytes(path.get(..3).unwrap_or(b"X")).ok()?,
    };
    let path = String::from_utf8_lossy(path).into_owned();
    let (uri, known_channel) = match (flags >> 2) & 3 {
        0 => (webhook_path(CHANNEL), true),
        1 => (webhook_path(CHANNEL_WITHOUT_SECRET), false),
        2 => (webhook_path(&path), path == CHANNEL),
        _ => (path, false),
    };
    let signature = if flags & 2 == 2 {
        Some(sign(&body))
    } else if flags & 0x80 == 0x80 {
        None
    } else {
        Some(signature.to_vec())
    };
    let content_length = match (flags >> 4) & 1 {
        1 => Some(match signature.as_ref().and_then(|s| s.first()) {
            // A declared length that lies, in both directions.
            Some(b) if b % 2 == 0 => (body.len() + usize::from(*b)).to_string(),
            Some(b) => body.len().saturating_sub(usize::from(*b)).to_string(),
            None => "not a number".to_owned(),
        }),
        _ => None,
    };
    Some(Case {
        method,
        uri,
        signature,
        content_length,
        body,
        known_channel,
    })
}

fn run(case: Case) {
    let harness = &*HARNESS;
    let mut request = Request::builder()
        .method(case.method.clone())
        .uri(&case.uri);
    if let Some(signature) = &case.signature {
        request = request.header("x-line-signature", signature.as_slice());
    }
    if let Some(length) = &case.content_length {
        request = request.header("content-length", length.as_str());
    }
    let Ok(request) = request
        .header("content-type", "application/json")
        .body(Body::from(case.body.clone()))
    else {
        // Not a request any HTTP server would have parsed.
        return;
    };
    harness.queue.jobs.lock().unwrap().clear();
    let status = harness.runtime.block_on(async {
        harness
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible")
            .status()
    });
    let jobs = std::mem::take(&mut *harness.queue.jobs.lock().unwrap());

    assert!(
        [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::PAYLOAD_TOO_LARGE,
        ]
        .contains(&status),
        "undocumented status {status}"
    );
    if status != StatusCode::OK {
        assert!(jobs.is_empty(), "{status} but {} jobs queued", jobs.len());
        return;
    }
    assert_eq!(case.method, Method::POST, "200 for {}", case.method);
    assert!(
        case.body.len() <= MAX_BODY_BYTES,
        "200 for a body over the limit"
    );
    let header = case.signature.as_deref().unwrap_or_default();
    let header = std::str::from_utf8(header).expect("an accepted signature is text");
    let signed_by = |secret: &str| {
        hookplane_verify::line::verify(secret.as_bytes(), &case.body, header).is_ok()
    };
    assert!(
        case.known_channel && (signed_by(SECRET) || signed_by(OLD_SECRET)),
        "200 without a valid signature"
    );
    // Either the Verify button (nothing queued) or one job per target, with the exact bytes.
    assert!(
        jobs.is_empty() || jobs.len() == TARGETS,
        "{} jobs",
        jobs.len()
    );
    for job in &jobs {
        assert_eq!(
            job.body.as_ref(),
            case.body.as_slice(),
            "the queued bytes differ"
        );
        assert!(
            job.headers
                .iter()
                .any(|h| h.name == "x-line-signature" && h.value == header),
            "the original signature is not kept"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(case) = case(data) {
        run(case);
    }
});

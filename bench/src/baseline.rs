//! The baseline: the least a forwarder can do. Receive a request, answer 200 at once, and
//! forward the same bytes asynchronously to every target, with no verification, no config, no
//! durability (an in-memory backlog per target that drops when full, no retries). It runs as its
//! own process (`hookplane-bench baseline-forwarder`), like hookplane, so both get measured the
//! same way. Per target it keeps as many requests in flight as hookplane's default
//! `--target-concurrency` and gives up on one after hookplane's default timeout.

use std::{convert::Infallible, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tempfile::TempDir;
use tokio::{
    net::TcpListener,
    sync::{Mutex, mpsc},
};

use crate::{
    binary,
    http_client::{self, HttpClient},
    service::Process,
};

const WORKERS_PER_TARGET: usize = 16;
const BACKLOG_PER_TARGET: usize = 20_000;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY_BYTES: usize = 1_048_576;
const LISTENER: &str = "baseline";

#[derive(Clone)]
struct Forward {
    body: Bytes,
    content_type: Option<HeaderValue>,
    signature: Option<HeaderValue>,
}

/// The baseline as a child process, forwarding to `targets`.
pub struct Baseline {
    pub process: Process,
    pub addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Baseline {
    pub async fn start(targets: &[String]) -> anyhow::Result<Baseline> {
        let dir = tempfile::tempdir()?;
        let mut args = vec!["baseline-forwarder".to_owned()];
        for target in targets {
            args.extend(["--target".to_owned(), target.clone()]);
        }
        let process = Process::spawn(
            &binary::myself()?,
            &args,
            &dir.path().join("baseline.log"),
            &[LISTENER],
        )
        .await?;
        Ok(Baseline {
            addr: process.addr(LISTENER),
            process,
            _dir: dir,
        })
    }
}

/// Serves until killed.
pub async fn serve(targets: Vec<String>) -> anyhow::Result<()> {
    let client = http_client::client();
    let mut queues = Vec::with_capacity(targets.len());
    for target in &targets {
        let uri: Uri = target.parse().with_context(|| format!("target {target}"))?;
        let (tx, rx) = mpsc::channel::<Forward>(BACKLOG_PER_TARGET);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS_PER_TARGET {
            tokio::spawn(forward_from(client.clone(), uri.clone(), Arc::clone(&rx)));
        }
        queues.push(tx);
    }
    let queues = Arc::new(queues);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{LISTENER} listening on {}", listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let queues = Arc::clone(&queues);
        tokio::spawn(async move {
            let service = service_fn(move |request| receive(request, Arc::clone(&queues)));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(
    request: Request<Incoming>,
    queues: Arc<Vec<mpsc::Sender<Forward>>>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let status = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => {
            let forward = Forward {
                body: collected.to_bytes(),
                content_type: parts.headers.get(CONTENT_TYPE).cloned(),
                signature: parts.headers.get("x-line-signature").cloned(),
            };
            for queue in queues.iter() {
                // A full backlog drops the forward: the baseline promises nothing.
                let _ = queue.try_send(forward.clone());
            }
            StatusCode::OK
        }
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

async fn forward_from(client: HttpClient, uri: Uri, queue: Arc<Mutex<mpsc::Receiver<Forward>>>) {
    loop {
        let next = queue.lock().await.recv().await;
        let Some(forward) = next else { return };
        let mut request = Request::post(uri.clone());
        if let Some(value) = forward.content_type {
            request = request.header(CONTENT_TYPE, value);
        }
        if let Some(value) = forward.signature {
            request = request.header("x-line-signature", value);
        }
        let Ok(request) = request.body(Full::new(forward.body)) else {
            continue;
        };
        let attempt = async {
            let response = client.request(request).await.ok()?;
            response.into_body().collect().await.ok()
        };
        let _ = tokio::time::timeout(FORWARD_TIMEOUT, attempt).await;
    }
}

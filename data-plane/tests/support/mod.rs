//! A node under test: `hookplane_data::run` in-process against a fake control plane (a real
//! tonic ConfigService on 127.0.0.1) and real HTTP receivers.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use futures::Stream;
use hookplane_data::{NodeConfig, NodeOptions};
use hookplane_outbound::OutboundOptions;
use hookplane_proto::v1::{
    ConfigResource, ConfigUpdate, DeliveryAttempt, DeliveryReport, NodeChannel, NodeForwardingSet,
    NodeSecret, NodeTenant, ReportDeliveriesResponse, ReportTokenUseRequest,
    ReportTokenUseResponse, WatchConfigRequest,
    config_resource::Resource,
    config_service_server::{ConfigService, ConfigServiceServer},
};
use tokio::sync::{Notify, broadcast, watch};
use tonic::{Request, Status, Streaming};

pub const NODE_TOKEN: &str = "node-token-for-tests";
pub const PUBLISHER_TOKEN: &str = "hp_pub_for-tests";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";
pub const CHANNEL: &str = "ch_test";
pub const TENANT: &str = "tnt_test";

/// What the control plane streams in place of the publisher token.
pub fn publisher_token_sha256() -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(PUBLISHER_TOKEN.as_bytes()))
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    hookplane_verify::line::sign(secret.as_bytes(), body)
}

/// A LINE webhook body with one text message event.
pub fn webhook(event_id: &str) -> Vec<u8> {
    format!(
        r#"{{"destination":"U0123456789abcdef0123456789abcdef","events":[{{"type":"message","mode":"active","timestamp":1700000000000,"webhookEventId":"{event_id}","deliveryContext":{{"isRedelivery":false}},"source":{{"type":"user","userId":"U1"}},"replyToken":"r1","message":{{"type":"text","id":"1","quoteToken":"q","text":"héllo  \u00e9"}}}}]}}"#
    )
    .into_bytes()
}

pub fn tenant() -> ConfigResource {
    ConfigResource {
        resource: Some(Resource::Tenant(NodeTenant {
            id: TENANT.to_owned(),
            display_name: "Brand".to_owned(),
            zones: vec![],
            purge_before: None,
        })),
    }
}

pub fn channel_with(secrets: Vec<NodeSecret>) -> ConfigResource {
    ConfigResource {
        resource: Some(Resource::Channel(NodeChannel {
            id: CHANNEL.to_owned(),
            tenant_id: TENANT.to_owned(),
            display_name: "Brand OA".to_owned(),
            secrets,
            ..NodeChannel::default()
        })),
    }
}

pub fn channel() -> ConfigResource {
    channel_with(vec![NodeSecret {
        secret: SECRET.to_owned(),
        valid_until: None,
    }])
}

/// A receiver answering `answer`, and a control plane with one channel forwarding to it as
/// `fwd_a`: the setting most node tests start from.
pub async fn one_forward(answer: Answer) -> (Receiver, FakeControl) {
    let receiver = Receiver::start(answer).await;
    let control = FakeControl::start(vec![
        tenant(),
        channel(),
        forwarding_set("fwd_a", &receiver.url()),
    ])
    .await;
    (receiver, control)
}

pub fn forwarding_set(id: &str, url: &str) -> ConfigResource {
    forwarding_set_with(id, url, Duration::from_secs(10))
}

pub fn forwarding_set_with(id: &str, url: &str, timeout: Duration) -> ConfigResource {
    ConfigResource {
        resource: Some(Resource::ForwardingSet(NodeForwardingSet {
            id: id.to_owned(),
            channel_id: CHANNEL.to_owned(),
            tenant_id: TENANT.to_owned(),
            name: id.to_owned(),
            url: url.to_owned(),
            enabled: true,
            timeout: Some(prost_types::Duration::try_from(timeout).unwrap()),
            ..NodeForwardingSet::default()
        })),
    }
}

// ---------------------------------------------------------------- fake control plane

struct ControlState {
    revision: u64,
    resources: Vec<ConfigResource>,
}

#[derive(Clone)]
pub struct FakeControl {
    state: Arc<Mutex<ControlState>>,
    updates: broadcast::Sender<ConfigUpdate>,
    down: watch::Sender<bool>,
    attempts: Arc<Mutex<Vec<DeliveryAttempt>>>,
    reported: Arc<Notify>,
    watchers: Arc<Mutex<Vec<WatchConfigRequest>>>,
    pub addr: SocketAddr,
}

impl FakeControl {
    pub async fn start(resources: Vec<ConfigResource>) -> FakeControl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = FakeControl {
            state: Arc::new(Mutex::new(ControlState {
                revision: 1,
                resources,
            })),
            updates: broadcast::channel(64).0,
            down: watch::channel(false).0,
            attempts: Arc::new(Mutex::new(Vec::new())),
            reported: Arc::new(Notify::new()),
            watchers: Arc::new(Mutex::new(Vec::new())),
            addr,
        };
        let service = ConfigServiceServer::new(control.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        control
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the config: a new revision, sent to every watcher as a full snapshot.
    pub fn set(&self, resources: Vec<ConfigResource>) {
        let update = {
            let mut state = self.state.lock().unwrap();
            state.revision += 1;
            state.resources = resources.clone();
            ConfigUpdate {
                revision: state.revision,
                snapshot: true,
                upserts: resources,
                publisher_token_sha256: publisher_token_sha256(),
                ..ConfigUpdate::default()
            }
        };
        let _ = self.updates.send(update);
    }

    /// A change on top of what nodes hold.
    pub fn change(&self, upserts: Vec<ConfigResource>) {
        let update = {
            let mut state = self.state.lock().unwrap();
            state.revision += 1;
            state.resources.extend(upserts.clone());
            ConfigUpdate {
                revision: state.revision,
                upserts,
                ..ConfigUpdate::default()
            }
        };
        let _ = self.updates.send(update);
    }

    pub fn retry_deliveries(&self, ids: Vec<String>) {
        let revision = self.state.lock().unwrap().revision;
        let _ = self.updates.send(ConfigUpdate {
            revision,
            retry_delivery_ids: ids,
            ..ConfigUpdate::default()
        });
    }

    /// While down, streams break and calls fail as if the process were gone.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    pub fn attempts(&self) -> Vec<DeliveryAttempt> {
        self.attempts.lock().unwrap().clone()
    }

    pub fn watch_requests(&self) -> Vec<WatchConfigRequest> {
        self.watchers.lock().unwrap().clone()
    }

    /// Waits until a reported attempt satisfies `check`.
    pub async fn wait_attempt(
        &self,
        timeout: Duration,
        check: impl Fn(&DeliveryAttempt) -> bool,
    ) -> DeliveryAttempt {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.reported.notified();
            if let Some(found) = self.attempts().into_iter().find(|a| check(a)) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no matching attempt reported within {timeout:?}; got {:#?}",
                    self.attempts()
                );
            }
        }
    }

    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if *self.down.borrow() {
            return Err(Status::unavailable("control plane is down"));
        }
        let expected = format!("Bearer {NODE_TOKEN}");
        match request.metadata().get("authorization") {
            Some(v) if v.to_str().ok() == Some(expected.as_str()) => Ok(()),
            _ => Err(Status::unauthenticated("bad node token")),
        }
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for FakeControl {
    type WatchConfigStream = UpdateStream;

    async fn watch_config(
        &self,
        request: Request<WatchConfigRequest>,
    ) -> Result<tonic::Response<UpdateStream>, Status> {
        self.check_token(&request)?;
        self.watchers.lock().unwrap().push(request.into_inner());
        let mut updates = self.updates.subscribe();
        let first = {
            let state = self.state.lock().unwrap();
            ConfigUpdate {
                revision: state.revision,
                snapshot: true,
                upserts: state.resources.clone(),
                publisher_token_sha256: publisher_token_sha256(),
                ..ConfigUpdate::default()
            }
        };
        let mut down = self.down.subscribe();
        let stream = async_stream(first, move |tx| async move {
            loop {
                tokio::select! {
                    u = updates.recv() => match u {
                        Ok(u) => if tx.send(Ok(u)).await.is_err() { return },
                        Err(_) => return,
                    },
                    () = async { let _ = down.wait_for(|d| *d).await; } => {
                        let _ = tx.send(Err(Status::unavailable("control plane went away"))).await;
                        return;
                    }
                }
            }
        });
        Ok(tonic::Response::new(stream))
    }

    async fn report_deliveries(
        &self,
        request: Request<Streaming<DeliveryReport>>,
    ) -> Result<tonic::Response<ReportDeliveriesResponse>, Status> {
        self.check_token(&request)?;
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        while let Some(report) = stream.message().await? {
            accepted += report.attempts.len() as u64;
            self.attempts.lock().unwrap().extend(report.attempts);
        }
        self.reported.notify_waiters();
        Ok(tonic::Response::new(ReportDeliveriesResponse { accepted }))
    }

    async fn report_token_use(
        &self,
        request: Request<ReportTokenUseRequest>,
    ) -> Result<tonic::Response<ReportTokenUseResponse>, Status> {
        self.check_token(&request)?;
        Ok(tonic::Response::new(ReportTokenUseResponse {}))
    }
}

/// A stream that yields `first`, then whatever `feed` sends.
fn async_stream<F, Fut>(first: ConfigUpdate, feed: F) -> UpdateStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ConfigUpdate, Status>>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let first_tx = tx.clone();
    tokio::spawn(async move {
        if first_tx.send(Ok(first)).await.is_ok() {
            feed(tx).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

// ---------------------------------------------------------------- the node

pub struct Node {
    pub ingress: SocketAddr,
    pub grpc: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), hookplane_data::Error>>,
    pub spool: Arc<tempfile::TempDir>,
}

pub fn test_options() -> NodeOptions {
    NodeOptions {
        node_id: Some("node_test".to_owned()),
        retry_schedule: vec![Duration::from_millis(200).into()],
        ..NodeOptions::default()
    }
}

impl Node {
    pub async fn start(control: &FakeControl) -> Node {
        Node::start_fresh(control, test_options()).await
    }

    /// A node with `options` and an empty spool of its own.
    pub async fn start_fresh(control: &FakeControl, options: NodeOptions) -> Node {
        Node::start_with(control, options, Arc::new(tempfile::tempdir().unwrap())).await
    }

    pub async fn start_with(
        control: &FakeControl,
        options: NodeOptions,
        spool: Arc<tempfile::TempDir>,
    ) -> Node {
        let node = Node::spawn(control.url(), options, spool).await;
        node.wait_ready().await;
        node
    }

    /// A node with no network allowed: loopback receivers are refused like any private target.
    pub async fn start_guarded(control: &FakeControl) -> Node {
        let node = Node::spawn_with(
            control.url(),
            test_options(),
            OutboundOptions::default(),
            Arc::new(tempfile::tempdir().unwrap()),
        )
        .await;
        node.wait_ready().await;
        node
    }

    /// A node that may reach loopback receivers.
    pub async fn spawn(
        control_url: String,
        options: NodeOptions,
        spool: Arc<tempfile::TempDir>,
    ) -> Node {
        let outbound = OutboundOptions {
            allow_target_network: vec!["127.0.0.0/8".parse().unwrap()],
        };
        Node::spawn_with(control_url, options, outbound, spool).await
    }

    pub async fn spawn_with(
        control_url: String,
        options: NodeOptions,
        outbound: OutboundOptions,
        spool: Arc<tempfile::TempDir>,
    ) -> Node {
        let ingress_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ingress = ingress_listener.local_addr().unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let (stop, mut stop_rx) = watch::channel(false);
        let config = NodeConfig {
            control_url,
            node_token: NODE_TOKEN.to_owned(),
            spool_dir: spool.path().join("spool"),
            options,
            outbound,
            tls: hookplane_data::NodeTls::default(),
            reports: None,
        };
        let task = tokio::spawn(hookplane_data::run(
            config,
            ingress_listener,
            grpc_listener,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        Node {
            ingress,
            grpc,
            stop,
            task,
            spool,
        }
    }

    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ingress);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn webhook_url(&self, channel: &str) -> String {
        format!("http://{}/api/webhook/line/{channel}/events", self.ingress)
    }

    /// POSTs a signed webhook to the test channel.
    pub async fn post(&self, body: &[u8]) -> reqwest::Response {
        self.post_signed(body, &sign(SECRET, body)).await
    }

    pub async fn post_signed(&self, body: &[u8], signature: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.webhook_url(CHANNEL))
            .header("content-type", "application/json; charset=utf-8")
            .header("x-line-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(self) -> Arc<tempfile::TempDir> {
        self.stop.send_replace(true);
        self.task.await.unwrap().unwrap();
        self.spool
    }
}

// ---------------------------------------------------------------- receiver

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub enum Answer {
    Status(u16),
    Hang,
    RetryAfter(u16, u64),
    /// The statuses in turn, then the last one forever.
    Sequence(Vec<u16>),
    /// The status, after a wait.
    Late(u16, Duration),
}

struct ReceiverState {
    got: Mutex<Vec<Received>>,
    answer: Mutex<Answer>,
    arrived: Notify,
}

pub struct Receiver {
    state: Arc<ReceiverState>,
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(answer: Answer) -> Receiver {
        let state = Arc::new(ReceiverState {
            got: Mutex::new(Vec::new()),
            answer: Mutex::new(answer),
            arrived: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&state));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            state,
            addr,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    pub fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("receiver got {} of {n} requests in {timeout:?}", got.len());
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let count = {
        let mut got = state.got.lock().unwrap();
        got.push(Received { headers, body });
        got.len()
    };
    state.arrived.notify_waiters();
    let answer = state.answer.lock().unwrap().clone();
    let status = |code: u16| StatusCode::from_u16(code).unwrap();
    match answer {
        Answer::Status(code) => status(code).into_response(),
        Answer::Hang => std::future::pending().await,
        Answer::RetryAfter(code, secs) => {
            (status(code), [("retry-after", secs.to_string())]).into_response()
        }
        Answer::Sequence(codes) => {
            let code = codes[(count - 1).min(codes.len() - 1)];
            status(code).into_response()
        }
        Answer::Late(code, wait) => {
            tokio::time::sleep(wait).await;
            status(code).into_response()
        }
    }
}

//! `ControlPlane`: opens the data directory and serves every control-plane gRPC service.

use std::future::Future;
use std::time::Duration;

use hookplane_outbound::OutboundOptions;
use hookplane_proto::v1::audit_service_server::{self, AuditServiceServer};
use hookplane_proto::v1::channel_service_server::{self, ChannelServiceServer};
use hookplane_proto::v1::config_service_server::{self, ConfigServiceServer};
use hookplane_proto::v1::delivery_service_server::{self, DeliveryServiceServer};
use hookplane_proto::v1::forwarding_service_server::{self, ForwardingServiceServer};
use hookplane_proto::v1::notification_service_server::{self, NotificationServiceServer};
use hookplane_proto::v1::subscription_service_server::{self, SubscriptionServiceServer};
use hookplane_proto::v1::tenant_service_server::{self, TenantServiceServer};
use hookplane_proto::v1::token_service_server::{self, TokenServiceServer};
use tokio::sync::broadcast;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

use crate::audit::AuditLog;
use crate::auth::{AdminCheck, TokenCheck};
use crate::channels::ChannelApi;
use crate::config_stream::ConfigApi;
use crate::credentials::Credentials;
use crate::delivery_log::{self, DeliveryLog, Retention};
use crate::error::Error;
use crate::forwarding::ForwardingApi;
use crate::metrics::ControlMetrics;
use crate::notifications::NotificationApi;
use crate::notify::Notifier;
use crate::options::ControlOptions;
use crate::report_intake::{LocalReports, ReportIntake};
use crate::resealing;
use crate::sealing::Sealer;
use crate::shutdown::Stopping;
use crate::store::Store;
use crate::subscriptions::SubscriptionApi;
use crate::system_stop::SystemStop;
use crate::tenants::TenantApi;
use crate::test_events::TestEvents;
use crate::tls::{ControlTls, NodeCertificateCheck};
use crate::tokens::{LastUsed, TokenApi};

/// Snapshots of 10,000 channels exceed tonic's 4 MiB default.
const CONFIG_MESSAGE_LIMIT: usize = 64 * 1024 * 1024;
const SWEEP_EVERY: Duration = Duration::from_secs(600);
const AUDIT_TRIM_EVERY: Duration = Duration::from_secs(3600);
const RETRY_BROADCAST_CAPACITY: usize = 1024;

const SERVICE_NAMES: [&str; 9] = [
    tenant_service_server::SERVICE_NAME,
    token_service_server::SERVICE_NAME,
    audit_service_server::SERVICE_NAME,
    channel_service_server::SERVICE_NAME,
    forwarding_service_server::SERVICE_NAME,
    subscription_service_server::SERVICE_NAME,
    delivery_service_server::SERVICE_NAME,
    notification_service_server::SERVICE_NAME,
    config_service_server::SERVICE_NAME,
];

/// The control plane of one process: its store and credentials, ready to serve.
pub struct ControlPlane {
    store: Store,
    credentials: Credentials,
    retention: Retention,
    /// `--attempt-log-hold`.
    attempt_log_hold: Duration,
    /// Reports from a node in the same process, taken while this serves.
    local_reports: LocalReports,
    notifier: Notifier,
    /// Where test events may go; public addresses only unless `with_outbound` allows more.
    outbound: OutboundOptions,
    subscription_failure_stop_after: Duration,
    /// TLS of the port (and mTLS of ConfigService); plaintext when `None`.
    tls: Option<ControlTls>,
    metrics: ControlMetrics,
    audit_retention: Duration,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("revision", &self.store.revision())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Creates `data_dir` if missing, opens sled at `data_dir/store`, and loads or generates the
    /// master key and tokens. A generated token is written to `data_dir/<role>.token` (mode
    /// 0600); the log says where, never the token.
    pub fn open(opts: &ControlOptions) -> Result<ControlPlane, Error> {
        let credentials = Credentials::resolve(opts)?;
        let mut sealer = Sealer::new(&credentials.master_key);
        if let Some(previous) = &credentials.previous_master_key {
            sealer = sealer.with_previous(previous);
        }
        let store = Store::open(&opts.data_dir.join("store"), sealer)?;
        tracing::info!(
            data_dir = %opts.data_dir.display(),
            revision = store.revision(),
            store_id = store.id(),
            master_key_id = store.sealer().key_id(),
            previous_master_key_id = store.sealer().previous_key_id(),
            "control plane store opened"
        );
        let moved = delivery_log::move_attempts_into_pages(&store)?;
        if moved > 0 {
            tracing::info!(moved, "delivery attempts moved into pages");
        }
        let notifier = Notifier::open(&store, opts)?;
        Ok(ControlPlane {
            metrics: ControlMetrics::new(store.clone()),
            store,
            credentials,
            notifier,
            retention: Retention {
                count: opts.attempt_retention_count,
                age: *opts.attempt_retention_age,
            },
            attempt_log_hold: *opts.attempt_log_hold,
            local_reports: LocalReports::default(),
            outbound: OutboundOptions::default(),
            subscription_failure_stop_after: *opts.subscription_failure_stop_after,
            tls: None,
            audit_retention: *opts.audit_retention,
        })
    }

    /// The intake for a node in the same process (standalone): its attempt reports stored as
    /// ReportDeliveries stores them, without the trip through gRPC, while this serves.
    pub fn local_reports(&self) -> LocalReports {
        self.local_reports.clone()
    }

    /// Serves TLS only, with `tls`'s certificate; with its node CA, ConfigService takes calls
    /// only from connections that presented a certificate that CA signed.
    pub fn with_tls(mut self, tls: ControlTls) -> ControlPlane {
        self.tls = Some(tls);
        self
    }

    /// Lets test events reach the networks `outbound` allows, as the nodes' deliveries do. Kept
    /// out of `ControlOptions` so `standalone` has one `--allow-target-network` for both halves.
    pub fn with_outbound(mut self, outbound: OutboundOptions) -> ControlPlane {
        self.outbound = outbound;
        self
    }

    pub fn admin_token(&self) -> &str {
        &self.credentials.admin_token
    }

    pub fn node_token(&self) -> &str {
        &self.credentials.node_token
    }

    pub fn publisher_token(&self) -> &str {
        &self.credentials.publisher_token
    }

    /// The control plane's series, to serve with [`crate::serve_metrics`] on `--metrics-listen`.
    pub fn metrics(&self) -> ControlMetrics {
        self.metrics.clone()
    }

    /// The global configuration revision (0 for an empty store).
    pub fn revision(&self) -> u64 {
        self.store.revision()
    }

    /// Serves every control-plane gRPC service on `listener` until `shutdown` resolves: the admin
    /// services (the bootstrap admin token or an API token, see `caller`), ConfigService (node
    /// token, and under mTLS a node client certificate), and reflection (v1 and v1alpha) and
    /// `grpc.health.v1` without a token. Open config streams are ended so shutdown completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let store = self.store;
        let (stop, stopping) = Stopping::new();
        let (retries, _) = broadcast::channel(RETRY_BROADCAST_CAPACITY);
        let log = DeliveryLog::new(store.clone(), self.retention, retries)?
            .with_hold(self.attempt_log_hold)
            .with_notifier(std::sync::Arc::new(self.notifier.clone()));
        let last_used = LastUsed::new(&store);
        let admin = AdminCheck::new(
            &self.credentials.admin_token,
            store.clone(),
            last_used.clone(),
        );
        let node = TokenCheck::new(&self.credentials.node_token, "node");
        let test_events = TestEvents::new(&self.outbound)?;
        let system_stop = SystemStop::new(
            store.clone(),
            self.subscription_failure_stop_after,
            self.notifier.clone(),
        )?;

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hookplane_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Reflection(e.to_string()))?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hookplane_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| Error::Reflection(e.to_string()))?;

        let reports = ReportIntake::start(
            store.clone(),
            log.clone(),
            system_stop,
            self.metrics.clone(),
        )?;
        self.local_reports.open(reports.clone());
        let config = ConfigServiceServer::new(ConfigApi::new(
            store.clone(),
            &log,
            reports,
            &self.credentials.publisher_token,
            stopping.clone(),
            self.metrics.clone(),
            last_used.clone(),
        ))
        .max_decoding_message_size(CONFIG_MESSAGE_LIMIT)
        .max_encoding_message_size(CONFIG_MESSAGE_LIMIT);

        let node_certificate = NodeCertificateCheck {
            required: self
                .tls
                .as_ref()
                .is_some_and(|tls| tls.node_client_ca.is_some()),
        };
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            server = server.tls_config(tls.server_config())?;
        }

        let notifier_tasks = self.notifier.start(&stopping);
        let resealer = tokio::spawn(resealing::reseal_in_background(
            store.clone(),
            stopping.clone(),
        ));
        let audit = AuditLog::new(&store);
        let audit_trim = tokio::spawn(audit.clone().trim_periodically(
            self.audit_retention,
            AUDIT_TRIM_EVERY,
            stopping.clone(),
        ));
        let sweeper = tokio::spawn(sweep_periodically(log.clone(), stopping));
        let signal = async move {
            shutdown.await;
            tracing::info!("control plane shutting down");
            let _ = stop.send(true);
        };
        let served = server
            // Detects nodes that vanished without closing their config stream.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(self.metrics.rpc_layer())
            // A span per call, continuing the caller's `traceparent`, when traces are exported.
            .layer(hookplane_trace_context::GrpcSpans)
            .add_service(TenantServiceServer::with_interceptor(
                TenantApi::new(store.clone()).with_delivery_log(log.clone()),
                admin.clone(),
            ))
            .add_service(ChannelServiceServer::with_interceptor(
                ChannelApi::new(store.clone()),
                admin.clone(),
            ))
            .add_service(ForwardingServiceServer::with_interceptor(
                ForwardingApi::new(store.clone()),
                admin.clone(),
            ))
            .add_service(SubscriptionServiceServer::with_interceptor(
                SubscriptionApi::new(store.clone(), test_events),
                admin.clone(),
            ))
            .add_service(DeliveryServiceServer::with_interceptor(log, admin.clone()))
            .add_service(NotificationServiceServer::with_interceptor(
                NotificationApi::new(store.clone()),
                admin.clone(),
            ))
            .add_service(TokenServiceServer::with_interceptor(
                TokenApi::new(store.clone(), last_used),
                admin.clone(),
            ))
            .add_service(AuditServiceServer::with_interceptor(audit, admin))
            .add_service(InterceptedService::new(
                InterceptedService::new(config, node),
                node_certificate,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
            .await;
        self.local_reports.close();
        sweeper.abort();
        resealer.abort();
        audit_trim.abort();
        for task in notifier_tasks {
            task.abort();
        }
        store.flush().await?;
        served?;
        Ok(())
    }
}

/// Applies attempt retention every few minutes (each batch trims the targets it touched).
async fn sweep_periodically(log: DeliveryLog, mut stopping: Stopping) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stopping.wait() => return,
        }
        let log = log.clone();
        match tokio::task::spawn_blocking(move || log.sweep()).await {
            Ok(Ok(removed)) if removed > 0 => {
                tracing::info!(removed, "delivery attempts past retention removed");
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "delivery log sweep failed"),
            Err(e) => tracing::warn!(error = %e, "delivery log sweep panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use hookplane_proto::v1::channel_service_client::ChannelServiceClient;
    use hookplane_proto::v1::config_service_client::ConfigServiceClient;
    use hookplane_proto::v1::forwarding_service_client::ForwardingServiceClient;
    use hookplane_proto::v1::subscription_service_client::SubscriptionServiceClient;
    use hookplane_proto::v1::tenant_service_client::TenantServiceClient;
    use hookplane_proto::v1::{
        Channel, CreateChannelRequest, CreateForwardingSetRequest, CreateSubscriptionRequest,
        CreateTenantRequest, ForwardingKind, ForwardingSet, GenesysSettings, ListTenantsRequest,
        RevealSecretRequest, WatchConfigRequest,
    };
    use tokio::sync::oneshot;
    use tonic::Code;
    use tonic::transport::Endpoint;

    use super::*;
    use crate::test_fixtures::{subscription_input, tenant_input};

    struct Running {
        channel: tonic::transport::Channel,
        admin: String,
        node: String,
        stop: oneshot::Sender<()>,
        served: tokio::task::JoinHandle<Result<(), Error>>,
    }

    async fn start(data_dir: &Path) -> Running {
        let plane = ControlPlane::open(&ControlOptions::with_data_dir(data_dir)).unwrap();
        let admin = plane.admin_token().to_owned();
        let node = plane.node_token().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(plane.serve(listener, async move {
            let _ = stopped.await;
        }));
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Running {
            channel,
            admin,
            node,
            stop,
            served,
        }
    }

    fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    #[tokio::test]
    async fn admin_calls_need_the_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        let mut tenants = TenantServiceClient::new(running.channel.clone());
        let missing = tenants
            .list_tenants(ListTenantsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert_eq!(missing.message(), "missing or invalid admin token");
        let wrong = tenants
            .list_tenants(authorized(ListTenantsRequest::default(), &running.node))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        tenants
            .list_tenants(authorized(ListTenantsRequest::default(), &running.admin))
            .await
            .unwrap();
        running.stop.send(()).unwrap();
        running.served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_config_stream_needs_the_node_token() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        let mut config = ConfigServiceClient::new(running.channel.clone());
        let refused = config
            .watch_config(authorized(WatchConfigRequest::default(), &running.admin))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(refused.message(), "missing or invalid node token");
        let mut stream = config
            .watch_config(authorized(WatchConfigRequest::default(), &running.node))
            .await
            .unwrap()
            .into_inner();
        assert!(stream.message().await.unwrap().unwrap().snapshot);
        running.stop.send(()).unwrap();
        // An open config stream must not hold the shutdown up.
        tokio::time::timeout(Duration::from_secs(5), running.served)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn health_reports_serving_without_a_token() {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, health_check_response};
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        let mut health = HealthClient::new(running.channel.clone());
        for service in [
            "",
            "hookplane.v1.TenantService",
            "hookplane.v1.ConfigService",
            "hookplane.v1.TokenService",
            "hookplane.v1.AuditService",
        ] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                health_check_response::ServingStatus::Serving as i32,
                "{service:?}"
            );
        }
        running.stop.send(()).unwrap();
    }

    #[tokio::test]
    async fn reflection_v1_and_v1alpha_list_the_services_without_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        {
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
            let mut client = ServerReflectionClient::new(running.channel.clone());
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let answer = answers.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                panic!("expected a service list");
            };
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&"hookplane.v1.TenantService"), "{names:?}");
            assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
        }
        {
            use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
            let mut client = ServerReflectionClient::new(running.channel.clone());
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut answers = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let answer = answers.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                panic!("expected a service list");
            };
            assert!(
                list.service
                    .iter()
                    .any(|s| s.name == "hookplane.v1.ChannelService")
            );
        }
        running.stop.send(()).unwrap();
    }

    fn files_contain(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_contain(&path, needle)
            } else {
                let bytes = std::fs::read(&path).unwrap();
                bytes.windows(needle.len()).any(|w| w == needle)
            }
        })
    }

    #[tokio::test]
    async fn the_store_files_hold_no_secret_in_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        let admin = running.admin.clone();
        let tenant = TenantServiceClient::new(running.channel.clone())
            .create_tenant(authorized(
                CreateTenantRequest {
                    tenant: Some(tenant_input()),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let channel = ChannelServiceClient::new(running.channel.clone())
            .create_channel(authorized(
                CreateChannelRequest {
                    tenant_id: tenant.id.clone(),
                    channel: Some(Channel {
                        display_name: "OA".into(),
                        line_channel_secret: "PLAINTEXT-CHANNEL-SECRET-1".into(),
                        line_channel_access_token: "PLAINTEXT-ACCESS-TOKEN-2".into(),
                        ..Default::default()
                    }),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        ForwardingServiceClient::new(running.channel.clone())
            .create_forwarding_set(authorized(
                CreateForwardingSetRequest {
                    channel_id: channel.id,
                    forwarding_set: Some(ForwardingSet {
                        name: "Genesys".into(),
                        kind: ForwardingKind::GenesysOpenMessaging as i32,
                        genesys: Some(GenesysSettings {
                            region_domain: "mypurecloud.com".into(),
                            client_id: "client".into(),
                            client_secret: "PLAINTEXT-GENESYS-SECRET-3".into(),
                            integration_id: "integration".into(),
                            outbound_signature_secret: "PLAINTEXT-GENESYS-SIGNING-4".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
                &admin,
            ))
            .await
            .unwrap();
        let mut subscriptions = SubscriptionServiceClient::new(running.channel.clone());
        let sub = subscriptions
            .create_subscription(authorized(
                CreateSubscriptionRequest {
                    tenant_id: tenant.id,
                    subscription: Some(subscription_input()),
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner();
        let share_secret = subscriptions
            .reveal_secret(authorized(RevealSecretRequest { id: sub.id }, &admin))
            .await
            .unwrap()
            .into_inner()
            .secret;
        running.stop.send(()).unwrap();
        running.served.await.unwrap().unwrap();

        let store_dir = dir.path().join("store");
        for secret in [
            "PLAINTEXT-CHANNEL-SECRET-1",
            "PLAINTEXT-ACCESS-TOKEN-2",
            "PLAINTEXT-GENESYS-SECRET-3",
            "PLAINTEXT-GENESYS-SIGNING-4",
            share_secret.as_str(),
        ] {
            assert!(
                !files_contain(&store_dir, secret.as_bytes()),
                "{secret} found"
            );
        }
        // The check is meaningful only if records are stored readably at all.
        assert!(files_contain(&store_dir, b"mypurecloud.com"));
    }

    #[tokio::test]
    async fn a_restart_keeps_the_revision_and_the_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let running = start(dir.path()).await;
        TenantServiceClient::new(running.channel.clone())
            .create_tenant(authorized(
                CreateTenantRequest {
                    tenant: Some(tenant_input()),
                },
                &running.admin,
            ))
            .await
            .unwrap();
        running.stop.send(()).unwrap();
        running.served.await.unwrap().unwrap();
        let reopened = ControlPlane::open(&ControlOptions::with_data_dir(dir.path())).unwrap();
        assert_eq!(reopened.revision(), 1);
        assert_eq!(reopened.admin_token(), running.admin);
        assert_eq!(reopened.node_token(), running.node);
    }
}

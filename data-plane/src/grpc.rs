//! The node's gRPC port: EventService (publisher token), health (serving once a config snapshot
//! is applied) and reflection; over TLS when the node has a certificate for it.

use std::{sync::Arc, time::Duration};

use hookplane_proto::v1::event_service_server::{self, EventServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::{Error, config::ConfigStore, publish::Publisher};

pub async fn serve(
    listener: TcpListener,
    tls: Option<Identity>,
    config: Arc<ConfigStore>,
    publisher: Publisher,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for service in ["", event_service_server::SERVICE_NAME] {
        reporter
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    tokio::spawn(async move {
        config.wait_ready().await;
        for service in ["", event_service_server::SERVICE_NAME] {
            reporter
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hookplane_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::InvalidSetting(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hookplane_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::InvalidSetting(format!("reflection: {e}")))?;
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        // A client stalling in the handshake is dropped rather than held.
        let tls = ServerTlsConfig::new()
            .identity(identity)
            .timeout(Duration::from_secs(10));
        server = server.tls_config(tls)?;
    }
    server
        .layer(hookplane_trace_context::GrpcSpans)
        .add_service(EventServiceServer::new(publisher))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await?;
    Ok(())
}

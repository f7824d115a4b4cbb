//! grpcurl works out of the box: every gRPC port serves reflection (v1 and v1alpha) and health.

use hookplane_tests::Standalone;
use tokio_stream::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn services_v1(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn services_v1alpha(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    match stream
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn serving(url: &str) -> bool {
    let mut client = HealthClient::new(channel(url).await);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    answer.status == ServingStatus::Serving as i32
}

#[tokio::test]
async fn the_control_port_lists_every_admin_service_through_both_reflection_versions() {
    let standalone = Standalone::start().await.unwrap();
    for services in [
        services_v1(&standalone.control_url()).await,
        services_v1alpha(&standalone.control_url()).await,
    ] {
        for expected in [
            "hookplane.v1.TenantService",
            "hookplane.v1.ChannelService",
            "hookplane.v1.ForwardingService",
            "hookplane.v1.SubscriptionService",
            "hookplane.v1.DeliveryService",
            "hookplane.v1.ConfigService",
            "hookplane.v1.TokenService",
            "hookplane.v1.AuditService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_data_plane_port_serves_reflection_in_both_versions() {
    let standalone = Standalone::start().await.unwrap();
    assert!(!services_v1(&standalone.data_grpc_url()).await.is_empty());
    assert!(
        !services_v1alpha(&standalone.data_grpc_url())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn both_grpc_ports_answer_health_checks_without_a_token() {
    let standalone = Standalone::start().await.unwrap();
    assert!(serving(&standalone.control_url()).await);
    assert!(serving(&standalone.data_grpc_url()).await);
}

//! A real in-process gRPC server sees the client's token on every call.

use hookplane_client::{
    Client,
    v1::{
        CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest,
        ListTenantsResponse, PurgeTenantDataRequest, PurgeTenantDataResponse, Tenant,
        UpdateTenantRequest,
        tenant_service_server::{TenantService, TenantServiceServer},
    },
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Server};

/// Answers GetTenant with a tenant named after the authorization header it received.
struct EchoAuthorization;

fn authorization<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_owned()
}

#[tonic::async_trait]
impl TenantService for EchoAuthorization {
    async fn create_tenant(
        &self,
        _: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        Ok(Response::new(Tenant {
            id: request.get_ref().id.clone(),
            display_name: authorization(&request),
            ..Tenant::default()
        }))
    }

    async fn list_tenants(
        &self,
        _: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn update_tenant(
        &self,
        _: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn delete_tenant(&self, _: Request<DeleteTenantRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn purge_tenant_data(
        &self,
        _: Request<PurgeTenantDataRequest>,
    ) -> Result<Response<PurgeTenantDataResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(TenantServiceServer::new(EchoAuthorization))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn every_call_carries_the_bearer_token() {
    let server = serve().await;
    let client = Client::connect(&server, "admin-token").await.unwrap();
    for id in ["tnt_1", "tnt_2"] {
        let tenant = client
            .tenants()
            .get_tenant(GetTenantRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tenant.id, id);
        assert_eq!(tenant.display_name, "Bearer admin-token");
    }
}

#[tokio::test]
async fn a_lazy_client_connects_on_its_first_call() {
    let server = serve().await;
    let client = Client::connect_lazy(&server, "node-token").unwrap();
    let tenant = client
        .clone()
        .tenants()
        .get_tenant(GetTenantRequest { id: "tnt_1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tenant.display_name, "Bearer node-token");
}

#[tokio::test]
async fn server_errors_come_back_as_status() {
    let server = serve().await;
    let client = Client::connect(&server, "t").await.unwrap();
    let status = client
        .tenants()
        .delete_tenant(DeleteTenantRequest { id: "tnt_1".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

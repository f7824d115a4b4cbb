//! The real `hookctl` binary against an in-process TenantService that keeps tenants in memory:
//! what reaches the server, what is printed, and how errors read.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
};

use hookplane_client::v1::{
    CreateTenantRequest, DeleteTenantRequest, GetTenantRequest, ListTenantsRequest,
    ListTenantsResponse, PurgeTenantDataRequest, PurgeTenantDataResponse, Tenant,
    UpdateTenantRequest,
    tenant_service_server::{TenantService, TenantServiceServer},
};
use serde_json::Value;
use tokio::{net::TcpListener, process::Command};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, transport::Server};

const TOKEN: &str = "admin-secret";

#[derive(Default, Clone)]
struct Tenants(Arc<Mutex<BTreeMap<String, Tenant>>>);

impl Tenants {
    fn found(&self, id: &str) -> Result<Tenant, Status> {
        let map = self.0.lock().unwrap();
        map.get(id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("tenant {id} not found")))
    }
}

#[tonic::async_trait]
impl TenantService for Tenants {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let mut tenant = request.into_inner().tenant.unwrap_or_default();
        let mut map = self.0.lock().unwrap();
        tenant.id = format!("tnt_{}", map.len() + 1);
        map.insert(tenant.id.clone(), tenant.clone());
        Ok(Response::new(tenant))
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        self.found(&request.get_ref().id).map(Response::new)
    }

    async fn list_tenants(
        &self,
        _: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        let map = self.0.lock().unwrap();
        Ok(Response::new(ListTenantsResponse {
            tenants: map.values().cloned().collect(),
            next_page_token: String::new(),
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let request = request.into_inner();
        let change = request.tenant.unwrap_or_default();
        let mut tenant = self.found(&change.id)?;
        for path in request.update_mask.unwrap_or_default().paths {
            match path.as_str() {
                "display_name" => tenant.display_name = change.display_name.clone(),
                "notification_emails" => {
                    tenant.notification_emails = change.notification_emails.clone()
                }
                "entitlements" => tenant.entitlements = change.entitlements.clone(),
                other => return Err(Status::invalid_argument(format!("unknown path {other}"))),
            }
        }
        self.0
            .lock()
            .unwrap()
            .insert(tenant.id.clone(), tenant.clone());
        Ok(Response::new(tenant))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<()>, Status> {
        let id = &request.get_ref().id;
        self.found(id)?;
        self.0.lock().unwrap().remove(id);
        Ok(Response::new(()))
    }

    /// Answers as if 3 attempts and 2 deliveries went; `last_purge_time` tells a test it came.
    async fn purge_tenant_data(
        &self,
        request: Request<PurgeTenantDataRequest>,
    ) -> Result<Response<PurgeTenantDataResponse>, Status> {
        let id = &request.get_ref().tenant_id;
        let mut tenant = self.found(id)?;
        let at = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        };
        tenant.last_purge_time = Some(at);
        self.0.lock().unwrap().insert(id.clone(), tenant);
        Ok(Response::new(PurgeTenantDataResponse {
            attempts_deleted: 3,
            deliveries_deleted: 2,
            notification_bodies_deleted: 0,
            purge_time: Some(at),
        }))
    }
}

fn check_token(request: Request<()>) -> Result<Request<()>, Status> {
    let expected = format!("Bearer {TOKEN}");
    match request.metadata().get("authorization") {
        Some(value) if value == expected.as_str() => Ok(request),
        _ => Err(Status::unauthenticated("missing or wrong admin token")),
    }
}

async fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TenantServiceServer::with_interceptor(Tenants::default(), check_token);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn hookctl_in(dir: &Path, server: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookctl"));
    command
        .current_dir(dir)
        .env_remove("HOOKPLANE_ADMIN_TOKEN")
        .env("HOOKPLANE_SERVER", server)
        .args(args);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let out = command.output().await.unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn hookctl(server: &str, args: &[&str]) -> Run {
    hookctl_in(Path::new("."), server, Some(TOKEN), args).await
}

fn json(run: &Run) -> Value {
    assert!(run.ok, "stderr: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

#[tokio::test]
async fn create_then_get_round_trips_through_the_server() {
    let server = serve().await;
    let created = json(
        &hookctl(
            &server,
            &[
                "tenant",
                "create",
                "--name",
                "Acme",
                "--email",
                "ops@acme.test",
                "--zone",
                "ZONE_1=2027-12-31T00:00:00Z",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(created["id"], "tnt_1");
    assert_eq!(created["displayName"], "Acme");
    assert_eq!(created["notificationEmails"][0], "ops@acme.test");
    assert_eq!(
        created["entitlements"]["zones"][0]["validUntil"],
        "2027-12-31T00:00:00Z"
    );

    let shown = hookctl(&server, &["tenant", "get", "tnt_1"]).await;
    assert!(shown.ok, "{}", shown.stderr);
    assert!(shown.stdout.starts_with("id: tnt_1\n"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("displayName: Acme\n"),
        "{}",
        shown.stdout
    );
}

#[tokio::test]
async fn list_prints_an_aligned_table() {
    let server = serve().await;
    for name in ["Acme", "Bobby Tea"] {
        assert!(
            hookctl(&server, &["tenant", "create", "--name", name])
                .await
                .ok
        );
    }
    let listed = hookctl(&server, &["tenant", "list"]).await;
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", listed.stdout);
    assert!(lines[0].starts_with("ID     NAME"), "{}", listed.stdout);
    assert!(lines[1].starts_with("tnt_1  Acme"), "{}", listed.stdout);
}

#[tokio::test]
async fn update_of_a_limit_keeps_the_zones() {
    let server = serve().await;
    let create = [
        "tenant",
        "create",
        "--name",
        "A",
        "--zone",
        "ZONE_2=2028-01-01",
    ];
    assert!(hookctl(&server, &create).await.ok);
    let updated = json(
        &hookctl(
            &server,
            &[
                "tenant",
                "update",
                "tnt_1",
                "--max-active-subscriptions",
                "7",
                "--json",
            ],
        )
        .await,
    );
    assert_eq!(updated["entitlements"]["maxActiveSubscriptions"], 7);
    assert_eq!(updated["entitlements"]["zones"][0]["zone"], "ZONE_2");
}

#[tokio::test]
async fn a_purge_without_yes_is_refused_before_it_reaches_the_server() {
    let server = serve().await;
    assert!(
        hookctl(&server, &["tenant", "create", "--name", "A"])
            .await
            .ok
    );
    let run = hookctl(&server, &["tenant", "purge", "tnt_1"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
    let tenant = json(&hookctl(&server, &["tenant", "get", "tnt_1", "--json"]).await);
    assert_eq!(tenant["lastPurgeTime"], Value::Null);
}

#[tokio::test]
async fn a_purge_with_yes_prints_what_the_server_removed() {
    let server = serve().await;
    assert!(
        hookctl(&server, &["tenant", "create", "--name", "A"])
            .await
            .ok
    );
    let purged = json(&hookctl(&server, &["tenant", "purge", "tnt_1", "--yes", "--json"]).await);
    assert_eq!(purged["attemptsDeleted"], "3");
    assert_eq!(purged["deliveriesDeleted"], "2");
    assert_eq!(purged["purgeTime"], "2027-01-15T08:00:00Z");
    let tenant = json(&hookctl(&server, &["tenant", "get", "tnt_1", "--json"]).await);
    assert_eq!(tenant["lastPurgeTime"], "2027-01-15T08:00:00Z");
}

#[tokio::test]
async fn a_missing_tenant_prints_the_status_code_and_fails() {
    let server = serve().await;
    let run = hookctl(&server, &["tenant", "get", "tnt_nope"]).await;
    assert!(!run.ok);
    assert_eq!(run.stderr, "error: NOT_FOUND: tenant tnt_nope not found\n");
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn a_wrong_token_is_unauthenticated() {
    let server = serve().await;
    let run = hookctl_in(Path::new("."), &server, Some("guess"), &["tenant", "list"]).await;
    assert!(!run.ok);
    assert_eq!(
        run.stderr,
        "error: UNAUTHENTICATED: missing or wrong admin token\n"
    );
}

#[tokio::test]
async fn the_token_file_of_the_data_directory_is_used_without_a_flag() {
    let server = serve().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("hookplane-data")).unwrap();
    std::fs::write(
        dir.path().join("hookplane-data/admin.token"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    let run = hookctl_in(dir.path(), &server, None, &["tenant", "list"]).await;
    assert!(run.ok, "{}", run.stderr);
}

#[tokio::test]
async fn delete_prints_what_it_deleted() {
    let server = serve().await;
    assert!(
        hookctl(&server, &["tenant", "create", "--name", "A"])
            .await
            .ok
    );
    let run = hookctl(&server, &["tenant", "delete", "tnt_1"]).await;
    assert_eq!(run.stdout, "deleted tnt_1\n");
    let again = hookctl(&server, &["tenant", "delete", "tnt_1", "--json"]).await;
    assert!(
        again.stderr.starts_with("error: NOT_FOUND"),
        "{}",
        again.stderr
    );
}

//! TLS on every port, against the real binaries: admin calls and a node's config stream over
//! TLS, a LINE request forwarded by a node that dialled its control plane over `https://`,
//! plaintext refused by a TLS port and `https://` never falling back to plaintext, mTLS for the
//! config stream, `standalone` with TLS, hookctl's `--ca-cert`, the ingress over HTTPS, and
//! a gRPC client trusting only the CA listing services by reflection (grpcio; grpcurl itself
//! when installed). Certificates are made at run time.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use hookplane_client::{Client, ClientTls, v1};
use hookplane_tests::{
    ControlProcess, DataNode, FIXTURE_CHANNEL_SECRET, NodeSetup, Receiver, Standalone, api::*,
    binaries, eventually, fixture, ingress,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(20);

/// A certificate authority made for one test, its certificate written as `<name>.pem`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    path: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &pem).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
            path,
            dir: dir.to_path_buf(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    fn server(&self, file: &str, names: &[&str]) -> Issued {
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, file)
    }

    /// A client certificate naming `file` (a node's).
    fn client(&self, file: &str) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, file)
    }

    fn issue(&self, params: CertificateParams, file: &str) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// What a client trusting this CA dials with.
    fn trusted(&self) -> ClientTls {
        ClientTls::new().with_ca_pem(&self.pem).unwrap()
    }

    fn arg(&self) -> &str {
        path_arg(&self.path)
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// Where a test's certificates live, a CA made for the control plane and nodes' ports, and the
/// control plane's certificate (for `localhost` and `127.0.0.1`).
struct Pki {
    dir: TempDir,
    ca: Ca,
    control: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(dir.path(), "ca");
        let control = ca.server("control", &["localhost", "127.0.0.1"]);
        Pki { dir, ca, control }
    }

    fn other_ca(&self, name: &str) -> Ca {
        Ca::new(self.dir.path(), name)
    }

    /// `--tls-cert` and `--tls-key` of the control plane's certificate.
    fn control_args(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            path_arg(&self.control.cert),
            "--tls-key",
            path_arg(&self.control.key),
        ]
    }
}

async fn readyz(node: &DataNode) -> reqwest::StatusCode {
    reqwest::get(format!("{}/readyz", node.ingress_url()))
        .await
        .map(|r| r.status())
        .unwrap_or(reqwest::StatusCode::BAD_GATEWAY)
}

/// Waits until the node's log holds `text` (a refusal it met dialling the control plane).
async fn wait_for_log(node: &DataNode, text: &str) {
    eventually(WAIT, &format!("the node to log {text:?}"), || async {
        node.log().contains(text).then_some(())
    })
    .await
    .unwrap();
}

/// A LINE webhook posted to `node` reaches `receiver` byte for byte.
async fn forwards(node: &DataNode, channel: &str, receiver: &Receiver) {
    let body = fixture("text.json");
    let answer = ingress::post_signed(&node.ingress_url(), channel, &body)
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let got = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(got[0].body.as_ref(), body.as_slice());
}

/// `{}` as a protobuf `Value`: an event's `data`.
fn json_object() -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StructValue(
            prost_types::Struct::default(),
        )),
    }
}

fn hookctl(args: &[&str]) -> Output {
    std::process::Command::new(binaries::hookctl())
        .args(args)
        .env_remove("HOOKPLANE_SERVER")
        .env_remove("HOOKPLANE_ADMIN_TOKEN")
        .env_remove("HOOKPLANE_CA_CERT")
        .output()
        .expect("hookctl runs")
}

#[tokio::test]
async fn an_admin_call_and_a_nodes_config_stream_go_over_tls() {
    let pki = Pki::new();
    let control = ControlProcess::start_with(&pki.control_args())
        .await
        .unwrap();
    assert!(control.url().starts_with("https://"), "{}", control.url());
    let admin = Client::connect_with(&control.url(), &control.admin_token, &pki.ca.trusted())
        .await
        .unwrap();
    let receiver = Receiver::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&admin, &[receiver.url("/crm")])
        .await
        .unwrap();

    // The node dials https:// trusting the CA, and serves its own gRPC port over TLS.
    let node_cert = pki.ca.server("node", &["localhost", "127.0.0.1"]);
    let node = DataNode::start(
        &control,
        &[
            "--ca-cert",
            pki.ca.arg(),
            "--tls-cert",
            path_arg(&node_cert.cert),
            "--tls-key",
            path_arg(&node_cert.key),
        ],
    )
    .await
    .unwrap();
    ingress::wait_for_channel(&node.ingress_url(), &channel)
        .await
        .unwrap();
    forwards(&node, &channel, &receiver).await;

    // EventService answers over TLS (NOT_FOUND: the call got through to it).
    assert!(node.grpc_url().starts_with("https://"));
    let publisher = Client::connect_with(
        &node.grpc_url(),
        &control.publisher_token,
        &pki.ca.trusted(),
    )
    .await
    .unwrap();
    let missing = publisher
        .events()
        .publish_event(v1::PublishEventRequest {
            tenant_id: "tnt_missing".into(),
            topic: "receipt.receipt_validated".into(),
            data: Some(json_object()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
}

#[tokio::test]
async fn plaintext_to_a_tls_port_fails() {
    let pki = Pki::new();
    let control = ControlProcess::start_with(&pki.control_args())
        .await
        .unwrap();
    let node_cert = pki.ca.server("node", &["127.0.0.1"]);
    let node = DataNode::start(
        &control,
        &[
            "--ca-cert",
            pki.ca.arg(),
            "--tls-cert",
            path_arg(&node_cert.cert),
            "--tls-key",
            path_arg(&node_cert.key),
        ],
    )
    .await
    .unwrap();
    for (port, token) in [
        (control.addr, &control.admin_token),
        (node.grpc_addr, &control.publisher_token),
    ] {
        let plaintext = format!("http://{port}");
        let answered = match Client::connect(&plaintext, token).await {
            Err(_) => false,
            Ok(client) => client
                .tenants()
                .list_tenants(v1::ListTenantsRequest::default())
                .await
                .is_ok(),
        };
        assert!(!answered, "{plaintext} answered in clear");
    }
}

#[tokio::test]
async fn an_https_url_to_a_plaintext_port_fails_rather_than_falling_back() {
    let control = ControlProcess::start().await.unwrap();
    let https = format!("https://{}", control.addr);

    assert!(
        Client::connect(&https, &control.admin_token).await.is_err(),
        "the client dialled https:// in clear"
    );
    let listed = hookctl(&[
        "--server",
        &https,
        "--token",
        &control.admin_token,
        "tenant",
        "list",
    ]);
    assert!(
        !listed.status.success(),
        "hookctl dialled https:// in clear"
    );

    // A node told https:// never gets the config a plaintext dial would have fetched.
    let node = DataNode::spawn_with(
        &control,
        &[],
        NodeSetup {
            control_url: Some(https),
            ..NodeSetup::default()
        },
    )
    .await
    .unwrap();
    wait_for_log(&node, "config stream broke").await;
    assert_eq!(readyz(&node).await, 503);
}

#[tokio::test]
async fn under_mtls_only_nodes_presenting_a_certificate_of_the_node_ca_get_config() {
    let pki = Pki::new();
    let node_ca = pki.other_ca("node-ca");
    let mut args = pki.control_args();
    args.extend(["--node-client-ca", node_ca.arg()]);
    let control = ControlProcess::start_with(&args).await.unwrap();

    // Admin services need no client certificate.
    let admin = Client::connect_with(&control.url(), &control.admin_token, &pki.ca.trusted())
        .await
        .unwrap();
    let receiver = Receiver::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&admin, &[receiver.url("/crm")])
        .await
        .unwrap();

    // A node presenting a certificate of the node CA gets its config and forwards.
    let signed = node_ca.client("node-1");
    let node = DataNode::start(
        &control,
        &[
            "--ca-cert",
            pki.ca.arg(),
            "--tls-client-cert",
            path_arg(&signed.cert),
            "--tls-client-key",
            path_arg(&signed.key),
        ],
    )
    .await
    .unwrap();
    ingress::wait_for_channel(&node.ingress_url(), &channel)
        .await
        .unwrap();
    forwards(&node, &channel, &receiver).await;

    // Without a client certificate: refused, the node token notwithstanding.
    let config = Client::connect_with(&control.url(), &control.node_token, &pki.ca.trusted())
        .await
        .unwrap()
        .config();
    let refused = config
        .clone()
        .watch_config(v1::WatchConfigRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("client certificate"),
        "{refused:?}"
    );
    let unsigned = DataNode::spawn(&control, &["--ca-cert", pki.ca.arg()])
        .await
        .unwrap();
    wait_for_log(&unsigned, "client certificate").await;
    assert_eq!(readyz(&unsigned).await, 503);

    // With a certificate of another CA: the handshake fails.
    let stranger = pki.other_ca("stranger-ca").client("node-2");
    let foreign = ClientTls::new()
        .with_ca_pem(&pki.ca.pem)
        .unwrap()
        .with_identity_pem(
            std::fs::read(&stranger.cert).unwrap(),
            std::fs::read(&stranger.key).unwrap(),
        )
        .unwrap();
    let answered = match Client::connect_with(&control.url(), &control.node_token, &foreign).await {
        Err(_) => false,
        Ok(client) => client
            .config()
            .watch_config(v1::WatchConfigRequest::default())
            .await
            .is_ok(),
    };
    assert!(!answered, "a certificate of another CA was taken");
    let foreign_node = DataNode::spawn(
        &control,
        &[
            "--ca-cert",
            pki.ca.arg(),
            "--tls-client-cert",
            path_arg(&stranger.cert),
            "--tls-client-key",
            path_arg(&stranger.key),
        ],
    )
    .await
    .unwrap();
    wait_for_log(&foreign_node, "config stream broke").await;
    assert_eq!(readyz(&foreign_node).await, 503);
}

#[tokio::test]
async fn standalone_serves_both_grpc_ports_over_tls_and_its_node_dials_its_own_certificate() {
    let pki = Pki::new();
    // Named for `localhost` only: the node inside dials 127.0.0.1, trusting the very
    // certificate its control plane serves rather than its names or its CA.
    let cert = pki.ca.server("standalone", &["localhost"]);
    let standalone = Standalone::start_with(&[
        "--tls-cert",
        path_arg(&cert.cert),
        "--tls-key",
        path_arg(&cert.key),
    ])
    .await
    .unwrap();
    let control = format!("https://localhost:{}", standalone.control_addr.port());
    let admin = Client::connect_with(&control, &standalone.admin_token, &pki.ca.trusted())
        .await
        .unwrap();
    let tenant = create_tenant(&admin, "Brand").await.unwrap();
    create_channel(&admin, &tenant.id, FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap();

    let events = format!("https://localhost:{}", standalone.data_grpc_addr.port());
    let publisher = Client::connect_with(&events, &standalone.publisher_token, &pki.ca.trusted())
        .await
        .unwrap();
    let published = eventually(WAIT, "the node to know the tenant", || async {
        publisher
            .events()
            .publish_event(v1::PublishEventRequest {
                tenant_id: tenant.id.clone(),
                topic: "receipt.receipt_validated".into(),
                data: Some(json_object()),
                ..Default::default()
            })
            .await
            .ok()
    })
    .await
    .unwrap();
    assert_eq!(published.into_inner().matched_subscriptions, 0);
}

#[tokio::test]
async fn hookctl_trusts_the_ca_given_with_ca_cert() {
    let pki = Pki::new();
    let control = ControlProcess::start_with(&pki.control_args())
        .await
        .unwrap();
    let base = ["--server", &control.url(), "--token", &control.admin_token];
    let untrusted = hookctl(&[&base[..], &["tenant", "list"]].concat());
    assert!(
        !untrusted.status.success(),
        "hookctl took a certificate of a CA it was not given"
    );
    let listed = hookctl(&[&base[..], &["--ca-cert", pki.ca.arg(), "tenant", "list"]].concat());
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let from_env = std::process::Command::new(binaries::hookctl())
        .args([&base[..], &["tenant", "list"]].concat())
        .env("HOOKPLANE_CA_CERT", pki.ca.arg())
        .output()
        .unwrap();
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );
}

#[tokio::test]
async fn the_ingress_takes_https_with_its_own_certificate() {
    let pki = Pki::new();
    // The ingress faces LINE: its certificate comes from another CA than the gRPC ports'.
    let public_ca = pki.other_ca("public-ca");
    let ingress_cert = public_ca.server("ingress", &["127.0.0.1"]);
    let control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let receiver = Receiver::start().await.unwrap();
    let (channel, _) = channel_forwarding_to(&admin, &[receiver.url("/crm")])
        .await
        .unwrap();
    let node = DataNode::spawn(
        &control,
        &[
            "--ingress-tls-cert",
            path_arg(&ingress_cert.cert),
            "--ingress-tls-key",
            path_arg(&ingress_cert.key),
        ],
    )
    .await
    .unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(public_ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "https://{}/api/webhook/line/{channel}/events",
        node.ingress_addr
    );
    let body = fixture("text.json");
    let signature = hookplane_verify::line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), &body);
    let answer = eventually(WAIT, "the node to serve the channel over https", || async {
        let answer = https
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .header("x-line-signature", &signature)
            .body(body.clone())
            .send()
            .await
            .ok()?;
        (answer.status() != 404 && answer.status() != 503).then_some(answer)
    })
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let got = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(got[0].body.as_ref(), body.as_slice());

    let plain = reqwest::get(format!("http://{}/readyz", node.ingress_addr)).await;
    assert!(plain.is_err(), "the ingress answered in clear: {plain:?}");
}

/// grpcurl, as the README shows it, with `-cacert`. Skipped (passing) where grpcurl is not
/// installed; CI machines without it do not run this check.
#[tokio::test]
async fn grpcurl_lists_the_services_with_cacert() {
    if std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("grpcurl is not installed: skipping");
        return;
    }
    let pki = Pki::new();
    let control = ControlProcess::start_with(&pki.control_args())
        .await
        .unwrap();
    let output = std::process::Command::new("grpcurl")
        .args([
            "-cacert",
            pki.ca.arg(),
            &format!("localhost:{}", control.addr.port()),
            "list",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("hookplane.v1.TenantService"));
}

/// What grpcurl's `-cacert` check does, by an independent gRPC implementation (grpcio, from the
/// tests' virtual environment): reflection lists the services to a client that trusts only the
/// CA, and the same client trusting another CA is refused.
#[tokio::test]
async fn a_grpc_client_trusting_only_the_ca_lists_the_services_through_reflection() {
    let pki = Pki::new();
    let control = ControlProcess::start_with(&pki.control_args())
        .await
        .unwrap();
    let target = format!("127.0.0.1:{}", control.addr.port());
    let services = tokio::task::spawn_blocking({
        let (target, ca) = (target.clone(), pki.ca.path.clone());
        move || hookplane_tests::python::grpc_reflection_list(&target, &ca, "localhost")
    })
    .await
    .unwrap()
    .unwrap();
    for service in [
        "hookplane.v1.TenantService",
        "hookplane.v1.TokenService",
        "hookplane.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} not in {services:?}"
        );
    }
    let stranger = pki.other_ca("stranger");
    let refused = tokio::task::spawn_blocking(move || {
        hookplane_tests::python::grpc_reflection_list(&target, &stranger.path, "localhost")
    })
    .await
    .unwrap();
    assert!(refused.is_err(), "{refused:?}");
}

/// `hookplane ARGS` run to its end: whether it succeeded, and what it printed (stdout, then
/// stderr).
fn run_hookplane(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(binaries::hookplane())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("hookplane runs");
    let printed = [output.stdout, output.stderr].concat();
    (
        output.status.success(),
        String::from_utf8_lossy(&printed).into_owned(),
    )
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_stops_the_start_naming_the_flags() {
    let pki = Pki::new();
    let other = pki.ca.server("other", &["127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_hookplane(&[
        "control",
        "--data-dir",
        path_arg(data.path()),
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        path_arg(&pki.control.cert),
        "--tls-key",
        path_arg(&other.key),
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--tls-key is not the private key of --tls-cert"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[tokio::test]
async fn a_ca_for_an_http_control_url_stops_the_node_rather_than_going_unused() {
    let pki = Pki::new();
    let spool = tempfile::tempdir().unwrap();
    let (ok, stderr) = run_hookplane(&[
        "data",
        "--control-url",
        "http://127.0.0.1:9",
        "--node-token",
        "hp_node_test",
        "--ca-cert",
        pki.ca.arg(),
        "--spool-dir",
        path_arg(spool.path()),
        "--ingress-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--control-url") && stderr.contains("write https://"),
        "{stderr}"
    );
}

//! The TLS flags of `control`, `data` and `standalone`, and the certificates they name, read and
//! checked before anything listens: a missing file, a file without a certificate or key, or a
//! key that is not the certificate's stops the start with a message naming the flag.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::Args;
use hookplane_client::ClientTls;
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// TLS of the gRPC port(s): the control plane's (`control`), the node's (`data`), both
/// (`standalone`).
#[derive(Args, Debug)]
pub struct GrpcTlsArgs {
    /// PEM certificate chain (leaf first) of the gRPC port; with --tls-key the port takes TLS
    /// only. In standalone it serves both gRPC ports.
    #[arg(long, env = "HOOKPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HOOKPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl GrpcTlsArgs {
    pub fn read(&self) -> anyhow::Result<Option<PemIdentity>> {
        PemIdentity::read_pair(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            "--tls-cert",
            "--tls-key",
        )
    }
}

/// TLS of a node's HTTP ingress, apart from its gRPC port: the ingress faces LINE and takes a
/// certificate of a public CA (often on a load balancer instead), the gRPC port faces internal
/// producers and may take one of a private CA.
#[derive(Args, Debug)]
pub struct IngressTlsArgs {
    /// PEM certificate chain of the HTTP ingress; with --ingress-tls-key the ingress takes
    /// HTTPS only. Unset: plain HTTP (TLS ending at a load balancer in front).
    #[arg(long, env = "HOOKPLANE_INGRESS_TLS_CERT", requires = "ingress_tls_key")]
    pub ingress_tls_cert: Option<PathBuf>,
    /// PEM private key of --ingress-tls-cert.
    #[arg(long, env = "HOOKPLANE_INGRESS_TLS_KEY", requires = "ingress_tls_cert")]
    pub ingress_tls_key: Option<PathBuf>,
}

impl IngressTlsArgs {
    pub fn server_config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        let identity = PemIdentity::read_pair(
            self.ingress_tls_cert.as_deref(),
            self.ingress_tls_key.as_deref(),
            "--ingress-tls-cert",
            "--ingress-tls-key",
        )?;
        identity
            .map(|identity| {
                let mut config = identity.server_config()?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(Arc::new(config))
            })
            .transpose()
    }
}

/// How a node dials an `https://` control plane.
#[derive(Args, Debug)]
pub struct ControlDialArgs {
    /// PEM CA certificates trusted, besides the system's roots, for an https:// --control-url.
    #[arg(long, env = "HOOKPLANE_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate the node presents to the control plane (one its --node-client-ca
    /// signed, when it requires mTLS).
    #[arg(long, env = "HOOKPLANE_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of --tls-client-cert.
    #[arg(long, env = "HOOKPLANE_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ControlDialArgs {
    pub fn client_tls(&self) -> anyhow::Result<ClientTls> {
        let mut tls = ClientTls::new();
        if let Some(path) = &self.ca_cert {
            tls = tls
                .with_ca_pem(read(path, "--ca-cert")?)
                .context("--ca-cert")?;
        }
        let identity = PemIdentity::read_pair(
            self.tls_client_cert.as_deref(),
            self.tls_client_key.as_deref(),
            "--tls-client-cert",
            "--tls-client-key",
        )?;
        if let Some(identity) = identity {
            tls = tls
                .with_identity_pem(identity.cert_pem, identity.key_pem)
                .context("--tls-client-cert")?;
        }
        Ok(tls)
    }
}

/// A certificate chain and its private key, read from PEM files and known to belong together.
pub struct PemIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl PemIdentity {
    /// Both files or neither (clap's `requires` sees to that).
    fn read_pair(
        cert: Option<&Path>,
        key: Option<&Path>,
        cert_flag: &str,
        key_flag: &str,
    ) -> anyhow::Result<Option<PemIdentity>> {
        let (Some(cert), Some(key)) = (cert, key) else {
            return Ok(None);
        };
        let cert_pem = read(cert, cert_flag)?;
        let key_pem = read(key, key_flag)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{cert_flag} {}: not valid PEM", cert.display()))?;
        if chain.is_empty() {
            bail!("{cert_flag} {}: no PEM certificate in it", cert.display());
        }
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .with_context(|| format!("{key_flag} {}: no PEM private key in it", key.display()))?;
        let identity = PemIdentity {
            cert_pem,
            key_pem,
            chain,
            key: key_der,
        };
        // rustls refuses a key that is not the certificate's.
        identity
            .server_config()
            .with_context(|| format!("{key_flag} is not the private key of {cert_flag}"))?;
        Ok(Some(identity))
    }

    /// The identity of a tonic server port.
    pub fn tonic(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The certificate chain, PEM, as read.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?)
    }
}

/// The CA certificate(s) of `--node-client-ca`, at least one.
pub fn node_client_ca(path: &Path) -> anyhow::Result<tonic::transport::Certificate> {
    let pem = read(path, "--node-client-ca")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--node-client-ca {}: not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "--node-client-ca {}: no PEM certificate in it",
            path.display()
        );
    }
    Ok(tonic::transport::Certificate::from_pem(pem))
}

fn read(path: &Path, flag: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))
}

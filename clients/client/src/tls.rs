//! How a client dials a hookplane gRPC port: `http://` in clear, `https://` over TLS (rustls),
//! trusting the system's roots plus the CAs it is given, and presenting a client certificate
//! when it has one (a node of a control plane that requires mTLS).
//!
//! An `https://` URL is never dialled in clear: the endpoint always carries a TLS connector for
//! it, and tonic (built with its TLS feature) refuses an `https://` connection that has none.
//! TLS settings given with an `http://` URL are an error rather than silently unused.

use std::sync::{Arc, OnceLock};

use rustls::{
    CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime, pem::PemObject},
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// What a client trusts and presents when it dials `https://`. The default trusts the system's
/// roots and presents nothing. Its `Debug` output never shows the private key.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// CA certificates (PEM) trusted besides the system's roots (`--ca-cert`).
    ca: Option<Certificate>,
    /// The client certificate chain and key (PEM) presented to the server.
    identity: Option<Identity>,
    /// Trust exactly this certificate and nothing else: `standalone`'s node dialling the control
    /// plane of its own process, whose certificate it holds, whatever names or CA it carries.
    pinned: Option<CertificateDer<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("pinned", &self.pinned.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the system's roots only, presents no certificate.
    pub fn new() -> ClientTls {
        ClientTls::default()
    }

    /// Also trusts the CA certificates of `pem` (one or more PEM `CERTIFICATE` blocks).
    pub fn with_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Result<ClientTls, Error> {
        certificates("the CA file", pem.as_ref())?;
        self.ca = Some(Certificate::from_pem(pem));
        Ok(self)
    }

    /// Presents the certificate chain `cert_pem` (leaf first) with its private key `key_pem`.
    pub fn with_identity_pem(
        mut self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<ClientTls, Error> {
        certificates("the client certificate file", cert_pem.as_ref())?;
        PrivateKeyDer::from_pem_slice(key_pem.as_ref()).map_err(|_| {
            Error::InvalidTls("the client key file holds no PEM private key".to_owned())
        })?;
        self.identity = Some(Identity::from_pem(cert_pem, key_pem));
        Ok(self)
    }

    /// Trusts only the leaf certificate of `cert_pem`, byte for byte, whatever its names and
    /// issuer: for dialling a server whose certificate the caller holds itself.
    pub fn pinned_to_pem(cert_pem: impl AsRef<[u8]>) -> Result<ClientTls, Error> {
        let leaf = certificates("the pinned certificate", cert_pem.as_ref())?.remove(0);
        Ok(ClientTls {
            pinned: Some(leaf),
            ..ClientTls::default()
        })
    }

    /// Whether anything was given beyond the defaults (and so `https://` is expected).
    fn is_customised(&self) -> bool {
        self.ca.is_some() || self.identity.is_some() || self.pinned.is_some()
    }

    /// `endpoint` set up to dial over TLS (its URI is `https://`).
    fn configure(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        if let Some(pinned) = &self.pinned {
            let verifier = Arc::new(PinnedCertificate::new(pinned.clone()));
            return endpoint.tls_config_with_verifier(ClientTlsConfig::new(), verifier);
        }
        let mut config = ClientTlsConfig::new().trust_anchors(system_roots().iter().cloned());
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(ca.clone());
        }
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        endpoint.tls_config(config)
    }
}

/// The endpoint of `server` (`http://host:port`, `https://host:port`, or a bare `host:port`,
/// which means `http://`): TLS for `https://` as `tls` says, in clear for `http://`.
pub fn endpoint(server: &str, tls: &ClientTls) -> Result<Endpoint, Error> {
    let uri = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let invalid = |source| Error::InvalidServer {
        server: server.to_owned(),
        source,
    };
    let endpoint = Endpoint::from_shared(uri).map_err(invalid)?;
    match endpoint.uri().scheme_str() {
        Some("https") => tls.configure(endpoint).map_err(invalid),
        Some("http") if tls.is_customised() => Err(Error::TlsWithoutHttps {
            server: server.to_owned(),
        }),
        Some("http") => Ok(endpoint),
        _ => Err(Error::UnsupportedScheme {
            server: server.to_owned(),
        }),
    }
}

/// The certificates of a PEM text, at least one.
fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidTls(format!("{what} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::InvalidTls(format!(
            "{what} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

/// The system's trusted roots, read once per process. None found (a minimal container) is not
/// an error: the CAs given with `--ca-cert` may be all a deployment needs.
fn system_roots() -> &'static [TrustAnchor<'static>] {
    static ROOTS: OnceLock<Vec<TrustAnchor<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        store.roots
    })
}

/// Accepts the one certificate it holds and refuses every other; signatures are still checked,
/// so the server must hold that certificate's private key.
#[derive(Debug)]
struct PinnedCertificate {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertificate {
    fn new(cert: CertificateDer<'static>) -> PinnedCertificate {
        let provider = CryptoProvider::get_default()
            .map(|p| p.signature_verification_algorithms)
            .unwrap_or_else(|| {
                rustls::crypto::ring::default_provider().signature_verification_algorithms
            });
        PinnedCertificate {
            cert,
            algorithms: provider,
        }
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    const NOT_PEM: &str = "hello";

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_at_once() {
        let err = ClientTls::new().with_ca_pem(NOT_PEM).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn tls_settings_with_an_http_url_are_an_error_not_silently_unused() {
        let tls = ClientTls {
            ca: Some(Certificate::from_pem("unused")),
            ..ClientTls::default()
        };
        assert!(matches!(
            endpoint("http://127.0.0.1:9", &tls),
            Err(Error::TlsWithoutHttps { .. })
        ));
        assert!(endpoint("http://127.0.0.1:9", &ClientTls::new()).is_ok());
    }

    #[test]
    fn a_scheme_other_than_http_or_https_is_refused() {
        assert!(matches!(
            endpoint("ftp://127.0.0.1:9", &ClientTls::new()),
            Err(Error::UnsupportedScheme { .. })
        ));
    }

    /// What a server listening in clear receives first from a client told `https://`: a TLS
    /// ClientHello (a handshake record, 0x16), never the HTTP/2 preface `PRI * HTTP/2.0`.
    #[tokio::test]
    async fn an_https_url_is_never_dialled_in_clear() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let first_bytes = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 3];
            stream.read_exact(&mut buf).await.unwrap();
            buf
        });
        let dial = endpoint(&format!("https://{addr}"), &ClientTls::new())
            .unwrap()
            .connect_timeout(Duration::from_secs(5));
        // The handshake cannot complete (nobody answers it), so the connection fails.
        let connect = tokio::spawn(async move { dial.connect().await });
        let first = first_bytes.await.unwrap();
        assert_eq!(first[0], 0x16, "a TLS handshake record, got {first:?}");
        assert_ne!(&first, b"PRI");
        connect.abort();
    }
}

//! TLS of the control plane's port, and the client certificate `ConfigService` requires of
//! nodes under mTLS.
//!
//! The port asks every client for a certificate but does not insist at the TLS layer: admins,
//! grpcurl and health checks connect without one. A certificate that is presented must chain to
//! the node CA, or the handshake fails; `ConfigService` then takes a call only if the connection
//! did present one (and the node token, checked as without mTLS).

use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::error::Error;

/// A connection that has not finished its handshake by then is closed, so clients that stall in
/// it hold nothing for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The control plane's certificate, and the CA of node client certificates when mTLS is on.
#[derive(Clone)]
pub struct ControlTls {
    /// The certificate chain and private key served (`--tls-cert`, `--tls-key`).
    pub identity: Identity,
    /// The CA whose certificates nodes must present (`--node-client-ca`); `None`: no mTLS.
    pub node_client_ca: Option<Certificate>,
}

impl std::fmt::Debug for ControlTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlTls")
            .field("node_client_ca", &self.node_client_ca.is_some())
            .finish_non_exhaustive()
    }
}

impl ControlTls {
    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_TIMEOUT);
        match &self.node_client_ca {
            // Optional at the TLS layer: admins have no client certificate; ConfigService
            // checks for one per call (`NodeCertificateCheck`).
            Some(ca) => config.client_ca_root(ca.clone()).client_auth_optional(true),
            None => config,
        }
    }
}

/// Refuses a `ConfigService` call whose connection presented no client certificate, when mTLS is
/// on. rustls has already checked that any certificate presented chains to the node CA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeCertificateCheck {
    pub required: bool,
}

impl tonic::service::Interceptor for NodeCertificateCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.peer_certs().is_some_and(|certs| !certs.is_empty());
        if self.required && !presented {
            return Err(Error::NodeCertificateRequired.into());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    #[test]
    fn under_mtls_a_call_without_a_client_certificate_is_unauthenticated() {
        let mut check = NodeCertificateCheck { required: true };
        let status = check.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(
            status.message().contains("client certificate"),
            "{status:?}"
        );
    }

    #[test]
    fn without_mtls_no_client_certificate_is_needed() {
        let mut check = NodeCertificateCheck { required: false };
        assert!(check.call(Request::new(())).is_ok());
    }
}

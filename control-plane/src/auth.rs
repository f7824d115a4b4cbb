//! Bearer-token checks for the gRPC services, as tonic interceptors.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use crate::error::Error;

/// Accepts a request whose `authorization` header is `Bearer <token>` for the expected token.
#[derive(Clone)]
pub(crate) struct TokenCheck {
    /// Comparing digests keeps the comparison constant-time regardless of the presented length.
    expected: Arc<[u8; 32]>,
    role: &'static str,
}

impl TokenCheck {
    pub fn new(token: &str, role: &'static str) -> TokenCheck {
        TokenCheck {
            expected: Arc::new(Sha256::digest(token.as_bytes()).into()),
            role,
        }
    }

    fn accepts(&self, header: Option<&str>) -> bool {
        let Some((scheme, presented)) = header.and_then(|h| h.split_once(' ')) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        digest.ct_eq(self.expected.as_ref()).into()
    }
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.accepts(header) {
            Ok(request)
        } else {
            Err(Error::Unauthenticated { role: self.role }.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    fn request_with(header: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request
                .metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        request
    }

    #[test]
    fn the_right_bearer_token_passes() {
        let mut check = TokenCheck::new("hp_admin_abc", "admin");
        assert!(
            check
                .call(request_with(Some("Bearer hp_admin_abc")))
                .is_ok()
        );
    }

    #[test]
    fn a_missing_header_is_unauthenticated() {
        let mut check = TokenCheck::new("hp_admin_abc", "admin");
        let status = check.call(request_with(None)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "missing or invalid admin token");
    }

    #[test]
    fn a_wrong_token_is_unauthenticated_and_not_echoed() {
        let mut check = TokenCheck::new("hp_node_abc", "node");
        let status = check.call(request_with(Some("Bearer guess"))).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(!status.message().contains("guess"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut check = TokenCheck::new("tok", "admin");
        assert!(check.call(request_with(Some("bearer tok"))).is_ok());
    }

    #[test]
    fn a_token_without_the_bearer_scheme_is_refused() {
        let mut check = TokenCheck::new("tok", "admin");
        assert!(check.call(request_with(Some("tok"))).is_err());
    }
}

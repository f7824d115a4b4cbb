//! Bearer-token checks for the gRPC services, as tonic interceptors: the node token for the
//! config stream, and for the admin services the resolution of a token into a `Caller` (the
//! bootstrap admin token, or an API token with its role and tenant).

use std::sync::Arc;

use hookplane_proto::v1::Role;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use crate::caller::{Caller, Scope};
use crate::clock::Time;
use crate::error::Error;
use crate::store::Store;
use crate::tokens::{LastUsed, secret_sha256};

/// The presented bearer token of `request`, if it has the `Bearer <token>` form.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    let header = request.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, presented) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| presented.trim())
}

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

/// The admin services' check: resolves the bearer token into the `Caller` each call then asks
/// about the tenants it touches. Unknown, expired and revoked tokens are UNAUTHENTICATED; a
/// publisher token is known but may not use the admin API (PERMISSION_DENIED).
#[derive(Clone)]
pub(crate) struct AdminCheck {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    bootstrap_sha256: [u8; 32],
    store: Store,
    last_used: Arc<LastUsed>,
}

const REFUSED: Error = Error::Unauthenticated { role: "admin" };

impl AdminCheck {
    pub fn new(bootstrap_token: &str, store: Store, last_used: Arc<LastUsed>) -> AdminCheck {
        AdminCheck {
            inner: Arc::new(AdminInner {
                bootstrap_sha256: Sha256::digest(bootstrap_token.as_bytes()).into(),
                store,
                last_used,
            }),
        }
    }

    /// Who presents `presented`, if anybody.
    fn resolve(&self, presented: &str) -> Result<Option<(String, String, Scope)>, Error> {
        let digest = secret_sha256(presented);
        if let Some(id) = hookplane_proto::token_secret::token_id(presented)
            && let Some(record) = self.inner.store.find_token(id)?
        {
            let mut expected = [0u8; 32];
            let matches = hex::decode_to_slice(&record.secret_sha256, &mut expected).is_ok()
                && bool::from(digest.ct_eq(&expected));
            if !matches || record.expired(Time::now()) {
                return Ok(None);
            }
            let scope = match Role::try_from(record.role) {
                Ok(Role::Operator) => Scope::Operator,
                Ok(Role::TenantAdmin) => Scope::Tenant(record.tenant_id.clone()),
                Ok(Role::Publisher) => {
                    return Err(Error::PermissionDenied(
                        "a publisher token may only publish events (EventService on nodes), \
                         not use the admin API"
                            .into(),
                    ));
                }
                Ok(Role::Unspecified) | Err(_) => return Ok(None),
            };
            self.inner.last_used.touch(&record.id)?;
            return Ok(Some((record.id, record.display_name, scope)));
        }
        if bool::from(digest.ct_eq(&self.inner.bootstrap_sha256)) {
            return Ok(Some((String::new(), String::new(), Scope::Operator)));
        }
        Ok(None)
    }
}

impl tonic::service::Interceptor for AdminCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let presented = bearer(&request).ok_or(REFUSED)?;
        let (token_id, name, scope) = self.resolve(presented)?.ok_or(REFUSED)?;
        let peer = request.remote_addr();
        let caller = if token_id.is_empty() {
            Caller::bootstrap(peer)
        } else {
            Caller {
                token_id,
                name,
                scope,
                peer,
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::token_service_server::TokenService as _;
    use hookplane_proto::v1::{CreateTokenRequest, RevokeTokenRequest, Token};
    use tonic::service::Interceptor as _;

    use super::*;
    use crate::test_fixtures::{create_tenant, in_days, operator, store, tenant_input};
    use crate::tokens::TokenApi;

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

    struct Tokens {
        _dir: tempfile::TempDir,
        store: Store,
        check: AdminCheck,
        api: TokenApi,
    }

    fn tokens() -> Tokens {
        let (dir, store) = store();
        let last_used = LastUsed::new(&store);
        Tokens {
            check: AdminCheck::new("hp_admin_boot", store.clone(), last_used.clone()),
            api: TokenApi::new(store.clone(), last_used),
            store,
            _dir: dir,
        }
    }

    impl Tokens {
        async fn make(&self, role: Role, tenant_id: &str) -> (String, String) {
            self.make_expiring(role, tenant_id, None).await
        }

        async fn make_expiring(
            &self,
            role: Role,
            tenant_id: &str,
            expire_time: Option<prost_types::Timestamp>,
        ) -> (String, String) {
            let made = self
                .api
                .create_token(operator(CreateTokenRequest {
                    token: Some(Token {
                        display_name: "console".into(),
                        role: role as i32,
                        tenant_id: tenant_id.into(),
                        expire_time,
                        ..Default::default()
                    }),
                }))
                .await
                .unwrap()
                .into_inner();
            (made.token.unwrap().id, made.secret)
        }

        fn caller(&mut self, secret: &str) -> Result<Caller, Status> {
            let request = self
                .check
                .call(request_with(Some(&format!("Bearer {secret}"))))?;
            Ok(request.extensions().get::<Caller>().unwrap().clone())
        }

        fn last_used(&self, id: &str) -> Option<Time> {
            LastUsed::new(&self.store).get(id).unwrap()
        }
    }

    #[tokio::test]
    async fn the_bootstrap_admin_token_is_an_operator() {
        let mut t = tokens();
        let caller = t.caller("hp_admin_boot").unwrap();
        assert_eq!(caller.scope, Scope::Operator);
        assert_eq!(caller.name, "bootstrap admin");
        assert!(caller.token_id.is_empty());
    }

    #[tokio::test]
    async fn a_tenant_admin_token_acts_for_its_tenant_and_notes_its_use() {
        let mut t = tokens();
        let tenant = create_tenant(&t.store, tenant_input()).await;
        let (id, secret) = t.make(Role::TenantAdmin, &tenant.id).await;
        let caller = t.caller(&secret).unwrap();
        assert_eq!(caller.scope, Scope::Tenant(tenant.id));
        assert_eq!(caller.token_id, id);
        assert_eq!(caller.name, "console");
        assert!(t.last_used(&id).is_some());
    }

    #[tokio::test]
    async fn an_operator_token_is_an_operator() {
        let mut t = tokens();
        let (_, secret) = t.make(Role::Operator, "").await;
        assert_eq!(t.caller(&secret).unwrap().scope, Scope::Operator);
    }

    #[tokio::test]
    async fn a_publisher_token_may_not_use_the_admin_api() {
        let mut t = tokens();
        let tenant = create_tenant(&t.store, tenant_input()).await;
        let (_, secret) = t.make(Role::Publisher, &tenant.id).await;
        let refused = t.caller(&secret).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_revoked_token_is_unauthenticated() {
        let mut t = tokens();
        let (id, secret) = t.make(Role::Operator, "").await;
        t.caller(&secret).unwrap();
        t.api
            .revoke_token(operator(RevokeTokenRequest { id }))
            .await
            .unwrap();
        let refused = t.caller(&secret).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn an_expired_token_is_unauthenticated() {
        let mut t = tokens();
        let (id, secret) = t.make_expiring(Role::Operator, "", Some(in_days(1))).await;
        // Written directly: the API refuses an expiry in the past.
        let mut record = t.store.token(&id).unwrap();
        record.expire_time = Some(Time::now().minus(std::time::Duration::from_secs(1)));
        let guard = t.store.lock_writes();
        let mut change = crate::store::Change::default();
        change.put_token(&record);
        t.store.commit(&guard, change).unwrap();
        drop(guard);
        let refused = t.caller(&secret).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_wrong_secret_naming_a_real_token_is_unauthenticated() {
        let mut t = tokens();
        let (id, secret) = t.make(Role::Operator, "").await;
        let forged = format!("hp_{id}_{}", "A".repeat(43));
        assert_ne!(forged, secret);
        let refused = t.caller(&forged).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(!refused.message().contains(&id));
    }
}

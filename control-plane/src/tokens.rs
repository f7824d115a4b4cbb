//! TokenService: API tokens as resources (a role, a tenant, an expiry), their secrets made here
//! and kept only as hashes, and when each was last used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookplane_proto::v1::token_service_server::{self, TokenService};
use hookplane_proto::v1::{
    CreateTokenRequest, CreateTokenResponse, ListTokensRequest, ListTokensResponse,
    RevokeTokenRequest, Role, Token,
};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use sled::Tree;
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::store::{Change, Index, Store, TokenRecord, child_id_of, decode, index_prefix};
use crate::validate;

/// A token's `last_used_time` is written at most this often, so a busy token does not write the
/// store on every call.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// The secret of a new token: it names the token (see `hookplane_proto::token_secret`) and
/// carries 256 random bits.
fn new_secret(id: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{}{id}_{}",
        hookplane_proto::token_secret::PREFIX,
        URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub(crate) fn secret_sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a role may call PublishEvent on nodes (and so goes down the config stream).
pub(crate) fn publishes(role: i32) -> bool {
    role == Role::Operator as i32 || role == Role::Publisher as i32
}

/// When each token was last used, written coarsely.
pub(crate) struct LastUsed {
    tree: Tree,
    /// When this process last wrote each token's time.
    written: Mutex<HashMap<String, Instant>>,
}

impl LastUsed {
    pub fn new(store: &Store) -> Arc<LastUsed> {
        Arc::new(LastUsed {
            tree: store.token_last_used_tree().clone(),
            written: Mutex::default(),
        })
    }

    /// Notes a use of `id` now, unless one was written less than a minute ago.
    pub fn touch(&self, id: &str) -> Result<(), Error> {
        let now = Instant::now();
        {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if written
                .get(id)
                .is_some_and(|last| now.duration_since(*last) < LAST_USED_EVERY)
            {
                return Ok(());
            }
            written.insert(id.to_owned(), now);
        }
        let time = serde_json::to_vec(&Time::now()).unwrap_or_default();
        self.tree.insert(id.as_bytes(), time)?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Time>, Error> {
        match self.tree.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode("token_last_used", &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn forget(&self, id: &str) -> Result<(), Error> {
        self.tree.remove(id.as_bytes())?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }
}

pub(crate) struct TokenApi {
    store: Store,
    last_used: Arc<LastUsed>,
    audit: AuditLog,
}

impl TokenApi {
    pub fn new(store: Store, last_used: Arc<LastUsed>) -> TokenApi {
        TokenApi {
            audit: AuditLog::new(&store),
            store,
            last_used,
        }
    }

    fn create(&self, caller: &Caller, req: &CreateTokenRequest) -> Result<(Token, String), Error> {
        let input = validate::present("token", req.token.as_ref())?;
        let display_name = validate::name("token.display_name", &input.display_name)?;
        let role = match Role::try_from(input.role) {
            Ok(role @ (Role::Operator | Role::TenantAdmin | Role::Publisher)) => role,
            _ => {
                return Err(Error::invalid(
                    "token.role",
                    "must be ROLE_OPERATOR, ROLE_TENANT_ADMIN or ROLE_PUBLISHER",
                ));
            }
        };
        let tenant_id = if role == Role::Operator {
            if !input.tenant_id.is_empty() {
                return Err(Error::invalid(
                    "token.tenant_id",
                    "must be empty for ROLE_OPERATOR (an operator acts on every tenant)",
                ));
            }
            caller.require_operator("create operator tokens")?;
            ""
        } else {
            let tenant_id = validate::id("token.tenant_id", &input.tenant_id)?;
            caller.check_tenant(tenant_id)?;
            tenant_id
        };
        let now = Time::now();
        let expire_time = match &input.expire_time {
            None => None,
            Some(ts) => {
                let end = Time::from_proto(ts)
                    .ok_or_else(|| Error::invalid("token.expire_time", "not a valid timestamp"))?;
                if end <= now {
                    return Err(Error::invalid("token.expire_time", "must be in the future"));
                }
                Some(end)
            }
        };
        let id = ids::new_id(ids::TOKEN);
        let secret = new_secret(&id);
        let record = TokenRecord {
            id,
            display_name,
            role: role as i32,
            tenant_id: tenant_id.to_owned(),
            secret_sha256: hex::encode(secret_sha256(&secret)),
            create_time: now,
            expire_time,
        };
        let guard = self.store.lock_writes();
        if !record.tenant_id.is_empty() {
            self.store.tenant(&record.tenant_id)?;
        }
        let mut change = Change::default();
        change.put_token(&record);
        self.store.commit(&guard, change)?;
        Ok((self.to_proto(&record)?, secret))
    }

    fn list(&self, caller: &Caller, req: &ListTokensRequest) -> Result<ListTokensResponse, Error> {
        let tenant_id = caller.listing_tenant(&req.tenant_id)?;
        let mut tokens = Vec::new();
        let next_page_token = if tenant_id.is_empty() {
            let page = Page::new(req.page_size, &req.page_token, b"")?;
            let entries = page.read(self.store.tokens_tree())?;
            for (_, value) in &entries.items {
                tokens.push(self.to_proto(&decode("tokens", value)?)?);
            }
            entries.next_page_token
        } else {
            let tenant_id = validate::id("tenant_id", tenant_id)?;
            let prefix = index_prefix(tenant_id);
            let page = Page::new(req.page_size, &req.page_token, &prefix)?;
            self.store.tenant(tenant_id)?;
            let entries = page.read(self.store.index_tree(Index::TenantTokens))?;
            for (key, _) in &entries.items {
                // A token revoked between the index read and this one is simply left out.
                if let Some(record) = self.store.find_token(&child_id_of(key, prefix.len()))? {
                    tokens.push(self.to_proto(&record)?);
                }
            }
            entries.next_page_token
        };
        Ok(ListTokensResponse {
            tokens,
            next_page_token,
        })
    }

    /// Removes the token; returns it as it was, for the audit trail.
    fn revoke(&self, caller: &Caller, id: &str) -> Result<TokenRecord, Error> {
        let guard = self.store.lock_writes();
        let record = self.store.token(id)?;
        if record.tenant_id.is_empty() {
            caller.require_operator("revoke operator tokens")?;
        } else {
            caller.check_tenant(&record.tenant_id)?;
        }
        let mut change = Change::default();
        change.remove_token(&record.tenant_id, id);
        self.store.commit(&guard, change)?;
        drop(guard);
        self.last_used.forget(id)?;
        Ok(record)
    }

    fn to_proto(&self, r: &TokenRecord) -> Result<Token, Error> {
        Ok(Token {
            id: r.id.clone(),
            display_name: r.display_name.clone(),
            role: r.role,
            tenant_id: r.tenant_id.clone(),
            create_time: Some(r.create_time.to_proto()),
            last_used_time: self.last_used.get(&r.id)?.map(Time::to_proto),
            expire_time: r.expire_time.map(Time::to_proto),
        })
    }
}

fn method(name: &str) -> String {
    format!("{}/{name}", token_service_server::SERVICE_NAME)
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (token, secret) = self.create(&caller, request.get_ref())?;
        let mut fields = vec!["display_name", "role"];
        if !token.tenant_id.is_empty() {
            fields.push("tenant_id");
        }
        if token.expire_time.is_some() {
            fields.push("expire_time");
        }
        self.audit.record(
            &caller,
            &method("CreateToken"),
            &token.tenant_id,
            &token.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(CreateTokenResponse {
            token: Some(token),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let record = self.revoke(&caller, id)?;
        self.audit
            .record(&caller, &method("RevokeToken"), &record.tenant_id, id, &[])?;
        self.store.flush().await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::token_secret;
    use tonic::Code;

    use super::*;
    use crate::test_fixtures::*;

    fn api(store: &Store) -> TokenApi {
        TokenApi::new(store.clone(), LastUsed::new(store))
    }

    fn token(role: Role, tenant_id: &str) -> CreateTokenRequest {
        CreateTokenRequest {
            token: Some(Token {
                display_name: "CRM".into(),
                role: role as i32,
                tenant_id: tenant_id.into(),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn a_new_token_names_itself_in_its_secret_and_keeps_only_its_hash() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let (made, secret) = api(&store)
            .create(&operator_caller(), &token(Role::Publisher, &tenant.id))
            .unwrap();
        assert!(made.id.starts_with("tok_"));
        assert_eq!(token_secret::token_id(&secret), Some(made.id.as_str()));
        let record = store.token(&made.id).unwrap();
        assert_eq!(record.secret_sha256, hex::encode(secret_sha256(&secret)));
        let stored = serde_json::to_string(&record).unwrap();
        assert!(!stored.contains(&secret));
    }

    #[tokio::test]
    async fn an_operator_token_has_no_tenant_and_only_an_operator_makes_one() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let api = api(&store);
        let err = api
            .create(&operator_caller(), &token(Role::Operator, &tenant.id))
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::InvalidArgument);
        let err = api
            .create(&tenant_admin_caller(&tenant.id), &token(Role::Operator, ""))
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::PermissionDenied);
        assert!(
            api.create(&operator_caller(), &token(Role::Operator, ""))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_tenant_admin_makes_tokens_of_its_own_tenant_only() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let api = api(&store);
        let admin = tenant_admin_caller(&own.id);
        assert!(api.create(&admin, &token(Role::Publisher, &own.id)).is_ok());
        let err = api
            .create(&admin, &token(Role::TenantAdmin, &other.id))
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn a_token_of_an_unknown_tenant_or_without_a_role_is_refused() {
        let (_dir, store) = store();
        let api = api(&store);
        let err = api
            .create(&operator_caller(), &token(Role::Publisher, "tnt_missing"))
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::NotFound);
        let err = api
            .create(&operator_caller(), &token(Role::Unspecified, ""))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "token.role: must be ROLE_OPERATOR, ROLE_TENANT_ADMIN or ROLE_PUBLISHER"
        );
    }

    #[tokio::test]
    async fn an_expiry_in_the_past_is_refused() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut request = token(Role::Publisher, &tenant.id);
        request.token.as_mut().unwrap().expire_time = Some(in_days(-1));
        let err = api(&store)
            .create(&operator_caller(), &request)
            .unwrap_err();
        assert_eq!(err.to_string(), "token.expire_time: must be in the future");
    }

    #[tokio::test]
    async fn a_tenant_admin_lists_its_own_tenants_tokens_only() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let api = api(&store);
        let mine = api
            .create(&operator_caller(), &token(Role::Publisher, &own.id))
            .unwrap()
            .0;
        api.create(&operator_caller(), &token(Role::Publisher, &other.id))
            .unwrap();
        api.create(&operator_caller(), &token(Role::Operator, ""))
            .unwrap();
        let admin = tenant_admin_caller(&own.id);
        let listed = api.list(&admin, &ListTokensRequest::default()).unwrap();
        let ids: Vec<_> = listed.tokens.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, [mine.id]);
        let err = api
            .list(
                &admin,
                &ListTokensRequest {
                    tenant_id: other.id,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(tonic::Status::from(err).code(), Code::PermissionDenied);
        let all = api
            .list(&operator_caller(), &ListTokensRequest::default())
            .unwrap();
        assert_eq!(all.tokens.len(), 3);
    }

    #[tokio::test]
    async fn a_tenant_admin_cannot_revoke_another_tenants_or_an_operator_token() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let api = api(&store);
        let theirs = api
            .create(&operator_caller(), &token(Role::Publisher, &other.id))
            .unwrap()
            .0;
        let operator = api
            .create(&operator_caller(), &token(Role::Operator, ""))
            .unwrap()
            .0;
        let admin = tenant_admin_caller(&own.id);
        for id in [&theirs.id, &operator.id] {
            let err = api.revoke(&admin, id).unwrap_err();
            assert_eq!(tonic::Status::from(err).code(), Code::PermissionDenied);
        }
        api.revoke(&operator_caller(), &theirs.id).unwrap();
        assert!(store.find_token(&theirs.id).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_busy_token_writes_its_last_use_once_a_minute() {
        let (_dir, store) = store();
        let last_used = LastUsed::new(&store);
        last_used.touch("tok_1").unwrap();
        let first = last_used.get("tok_1").unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        last_used.touch("tok_1").unwrap();
        assert_eq!(last_used.get("tok_1").unwrap().unwrap(), first);
        last_used.forget("tok_1").unwrap();
        assert!(last_used.get("tok_1").unwrap().is_none());
    }
}

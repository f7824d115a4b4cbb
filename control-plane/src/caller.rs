//! Who is calling the admin API, and what that caller may touch: the one place where the admin
//! API's authorization rules are decided. `auth::AdminCheck` resolves the bearer token into a
//! `Caller` and puts it into the request's extensions; each admin call takes it out and asks it
//! about the tenant of the resource it is about to read or change.
//!
//! PurgeTenantData asks `check_tenant` too: an operator, or an admin of that tenant, may purge
//! it. An erasure request is the brand's to make for its users, and it touches only that
//! tenant's data; deleting the tenant itself stays an operator's act.

use std::net::SocketAddr;

use tonic::Request;

use crate::error::Error;

/// The name audit events give the bootstrap admin token (`--admin-token`), which has no id.
pub(crate) const BOOTSTRAP_ADMIN: &str = "bootstrap admin";

/// What a caller may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Every tenant, and what belongs to none (tenants themselves, operator tokens).
    Operator,
    /// One tenant's resources only.
    Tenant(String),
}

/// The resolved caller of one admin request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// `tok_...`; empty for the bootstrap admin token.
    pub token_id: String,
    /// The token's display name, or [`BOOTSTRAP_ADMIN`].
    pub name: String,
    pub scope: Scope,
    /// The peer address the control plane saw, when the transport knows it.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// The bootstrap admin token: an operator.
    pub fn bootstrap(peer: Option<SocketAddr>) -> Caller {
        Caller {
            token_id: String::new(),
            name: BOOTSTRAP_ADMIN.to_owned(),
            scope: Scope::Operator,
            peer,
        }
    }

    /// The caller `AdminCheck` resolved for `request`. A request that reached a service without
    /// one did not pass the check: it is refused, never treated as anybody.
    pub fn of<T>(request: &Request<T>) -> Result<Caller, Error> {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(Error::Unauthenticated { role: "admin" })
    }

    /// Ok when the caller may read or change a resource of `tenant_id`.
    pub fn check_tenant(&self, tenant_id: &str) -> Result<(), Error> {
        match &self.scope {
            Scope::Operator => Ok(()),
            Scope::Tenant(own) if own == tenant_id => Ok(()),
            Scope::Tenant(own) => Err(Error::PermissionDenied(format!(
                "this token may act on tenant \"{own}\" only"
            ))),
        }
    }

    /// Ok for an operator; `what` completes "only an operator token may ...".
    pub fn require_operator(&self, what: &str) -> Result<(), Error> {
        match self.scope {
            Scope::Operator => Ok(()),
            Scope::Tenant(_) => Err(Error::PermissionDenied(format!(
                "only an operator token may {what}"
            ))),
        }
    }

    /// The tenant a listing is limited to: what was asked for (empty: every tenant) for an
    /// operator; for a tenant admin its own tenant, whether asked for or left empty.
    pub fn listing_tenant<'a>(&'a self, requested: &'a str) -> Result<&'a str, Error> {
        match &self.scope {
            Scope::Operator => Ok(requested),
            Scope::Tenant(own) if requested.is_empty() => Ok(own),
            Scope::Tenant(_) => self.check_tenant(requested).map(|()| requested),
        }
    }

    /// The caller's own tenant, for a tenant admin.
    pub fn own_tenant(&self) -> Option<&str> {
        match &self.scope {
            Scope::Operator => None,
            Scope::Tenant(own) => Some(own),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn tenant_admin(tenant: &str) -> Caller {
        Caller {
            token_id: "tok_1".into(),
            name: "brand console".into(),
            scope: Scope::Tenant(tenant.into()),
            peer: None,
        }
    }

    fn code(result: Result<impl std::fmt::Debug, Error>) -> Code {
        tonic::Status::from(result.unwrap_err()).code()
    }

    #[test]
    fn an_operator_may_act_on_every_tenant_and_create_tenants() {
        let operator = Caller::bootstrap(None);
        assert!(operator.check_tenant("tnt_a").is_ok());
        assert!(operator.check_tenant("tnt_b").is_ok());
        assert!(operator.require_operator("create tenants").is_ok());
        assert_eq!(operator.name, "bootstrap admin");
    }

    #[test]
    fn a_tenant_admin_may_act_on_its_own_tenant_only() {
        let admin = tenant_admin("tnt_a");
        assert!(admin.check_tenant("tnt_a").is_ok());
        assert_eq!(code(admin.check_tenant("tnt_b")), Code::PermissionDenied);
        let message = admin.check_tenant("tnt_b").unwrap_err().to_string();
        assert_eq!(message, "this token may act on tenant \"tnt_a\" only");
    }

    #[test]
    fn a_tenant_admin_may_not_do_what_only_operators_do() {
        let refused = tenant_admin("tnt_a").require_operator("create tenants");
        assert_eq!(
            refused.as_ref().unwrap_err().to_string(),
            "only an operator token may create tenants"
        );
        assert_eq!(code(refused), Code::PermissionDenied);
    }

    #[test]
    fn a_tenant_admin_listing_without_a_tenant_lists_its_own() {
        let admin = tenant_admin("tnt_a");
        assert_eq!(admin.listing_tenant("").unwrap(), "tnt_a");
        assert_eq!(admin.listing_tenant("tnt_a").unwrap(), "tnt_a");
        assert_eq!(code(admin.listing_tenant("tnt_b")), Code::PermissionDenied);
    }

    #[test]
    fn an_operator_lists_what_it_asks_for() {
        let operator = Caller::bootstrap(None);
        assert_eq!(operator.listing_tenant("").unwrap(), "");
        assert_eq!(operator.listing_tenant("tnt_b").unwrap(), "tnt_b");
    }

    #[test]
    fn a_request_without_a_resolved_caller_is_unauthenticated() {
        let request = Request::new(());
        assert_eq!(code(Caller::of(&request)), Code::Unauthenticated);
    }
}

//! ForwardingService: where a channel's LINE webhooks go (raw forwards or Genesys connectors),
//! within the tenant's per-channel limit.

use hookplane_proto::v1::forwarding_service_server::{self, ForwardingService};
use hookplane_proto::v1::{
    CreateForwardingSetRequest, DeleteForwardingSetRequest, ForwardingKind, ForwardingSet,
    GenesysSettings, GetForwardingSetRequest, ListForwardingSetsRequest,
    ListForwardingSetsResponse, UpdateForwardingSetRequest,
};
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::channels::metadata;
use crate::clock::{Time, duration_to_proto};
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::sealing::{Place, Sealed, Sealer};
use crate::store::{
    Change, ForwardingSetRecord, GenesysRecord, Index, Store, child_id_of, index_prefix,
    sealed_field,
};
use crate::validate;

const UPDATE_PATHS: &[&str] = &["name", "url", "enabled", "timeout", "genesys"];
const MAX_CREDENTIAL_CHARS: usize = 1024;

pub(crate) struct ForwardingApi {
    store: Store,
    audit: AuditLog,
}

/// The fields of `input` that are set, by name.
fn given_fields(input: &ForwardingSet) -> Vec<&'static str> {
    let mut set = Vec::new();
    if !input.name.is_empty() {
        set.push("name");
    }
    if !input.url.is_empty() {
        set.push("url");
    }
    if input.enabled.is_some() {
        set.push("enabled");
    }
    if input.timeout.is_some() {
        set.push("timeout");
    }
    if input.genesys.is_some() {
        set.push("genesys");
    }
    set
}

fn method(name: &str) -> String {
    format!("{}/{name}", forwarding_service_server::SERVICE_NAME)
}

impl ForwardingApi {
    pub fn new(store: Store) -> ForwardingApi {
        ForwardingApi {
            audit: AuditLog::new(&store),
            store,
        }
    }

    /// Returns the set and its tenant.
    fn create(
        &self,
        caller: &Caller,
        req: CreateForwardingSetRequest,
    ) -> Result<(ForwardingSet, String), Error> {
        let channel_id = validate::id("channel_id", &req.channel_id)?;
        let input = validate::present("forwarding_set", req.forwarding_set.as_ref())?;
        let kind = match ForwardingKind::try_from(input.kind) {
            Ok(ForwardingKind::Unspecified | ForwardingKind::Raw) => ForwardingKind::Raw,
            Ok(ForwardingKind::GenesysOpenMessaging) => ForwardingKind::GenesysOpenMessaging,
            Err(_) => {
                return Err(Error::invalid(
                    "forwarding_set.kind",
                    "must be RAW or GENESYS_OPEN_MESSAGING",
                ));
            }
        };
        let now = Time::now();
        let mut record = ForwardingSetRecord {
            id: ids::new_id(ids::FORWARDING_SET),
            channel_id: channel_id.to_owned(),
            tenant_id: String::new(),
            name: String::new(),
            url: String::new(),
            enabled: true,
            kind: kind as i32,
            timeout: validate::forward_timeout("forwarding_set.timeout", None)?,
            genesys: None,
            create_time: now,
            update_time: now,
        };
        let mut paths = vec!["name", "url", "enabled", "timeout"];
        if input.genesys.is_some() {
            paths.push("genesys");
        }
        let paths: Vec<String> = paths.into_iter().map(str::to_owned).collect();
        apply(&mut record, input, &paths, self.store.sealer())?;
        check_whole(&record)?;

        let guard = self.store.lock_writes();
        let channel = self.store.channel(channel_id)?;
        caller.check_tenant(&channel.tenant_id)?;
        let tenant = self.store.tenant(&channel.tenant_id)?;
        let limit = tenant.max_forwarding_sets_per_channel();
        let count = self
            .store
            .child_ids(Index::ChannelForwardingSets, channel_id)?
            .len();
        if count >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(Error::FailedPrecondition(format!(
                "channel \"{channel_id}\" already has {count} forwarding sets, the tenant's limit \
                 (max_forwarding_sets_per_channel)"
            )));
        }
        record.tenant_id = channel.tenant_id;
        let mut change = Change::default();
        change.put_forwarding_set(&record);
        self.store.commit(&guard, change)?;
        Ok((to_proto(&record), record.tenant_id))
    }

    /// Returns the set, its tenant and the paths it changed.
    fn update(
        &self,
        caller: &Caller,
        req: UpdateForwardingSetRequest,
    ) -> Result<(ForwardingSet, String, Vec<String>), Error> {
        let input = validate::present("forwarding_set", req.forwarding_set.as_ref())?;
        let id = validate::id("forwarding_set.id", &input.id)?;
        let paths = validate::update_paths(req.update_mask.as_ref(), UPDATE_PATHS, || {
            given_fields(input)
        })?;
        let guard = self.store.lock_writes();
        let mut record = self.store.forwarding_set(id)?;
        caller.check_tenant(&record.tenant_id)?;
        apply(&mut record, input, &paths, self.store.sealer())?;
        check_whole(&record)?;
        record.update_time = Time::now();
        let mut change = Change::default();
        change.put_forwarding_set(&record);
        self.store.commit(&guard, change)?;
        Ok((to_proto(&record), record.tenant_id, paths))
    }

    /// Returns the tenant the set belonged to.
    fn delete(&self, caller: &Caller, id: &str) -> Result<String, Error> {
        let guard = self.store.lock_writes();
        let record = self.store.forwarding_set(id)?;
        caller.check_tenant(&record.tenant_id)?;
        let mut change = Change::default();
        change.remove_forwarding_set(&record.channel_id, id);
        self.store.commit(&guard, change)?;
        Ok(record.tenant_id)
    }

    fn get(&self, caller: &Caller, id: &str) -> Result<ForwardingSet, Error> {
        let record = self.store.forwarding_set(id)?;
        caller.check_tenant(&record.tenant_id)?;
        Ok(to_proto(&record))
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListForwardingSetsRequest,
    ) -> Result<ListForwardingSetsResponse, Error> {
        let channel_id = validate::id("channel_id", &req.channel_id)?;
        let prefix = index_prefix(channel_id);
        let page = Page::new(req.page_size, &req.page_token, &prefix)?;
        let channel = self.store.channel(channel_id)?;
        caller.check_tenant(&channel.tenant_id)?;
        let entries = page.read(self.store.index_tree(Index::ChannelForwardingSets))?;
        let mut forwarding_sets = Vec::with_capacity(entries.items.len());
        for (key, _) in &entries.items {
            if let Some(record) = self
                .store
                .find_forwarding_set(&child_id_of(key, prefix.len()))?
            {
                forwarding_sets.push(to_proto(&record));
            }
        }
        Ok(ListForwardingSetsResponse {
            forwarding_sets,
            next_page_token: entries.next_page_token,
        })
    }
}

fn is_genesys(record: &ForwardingSetRecord) -> bool {
    record.kind == ForwardingKind::GenesysOpenMessaging as i32
}

/// Copies the fields named by `paths` from `input` into `record`, validating each.
fn apply(
    record: &mut ForwardingSetRecord,
    input: &ForwardingSet,
    paths: &[String],
    sealer: &Sealer,
) -> Result<(), Error> {
    for path in paths {
        match path.as_str() {
            "name" => record.name = validate::name("forwarding_set.name", &input.name)?,
            "url" => {
                record.url = if input.url.is_empty() && is_genesys(record) {
                    String::new()
                } else {
                    validate::http_url("forwarding_set.url", &input.url)?
                };
            }
            "enabled" => record.enabled = input.enabled.unwrap_or(true),
            "timeout" => {
                record.timeout =
                    validate::forward_timeout("forwarding_set.timeout", input.timeout.as_ref())?;
            }
            "genesys" => {
                if !is_genesys(record) {
                    return Err(Error::invalid(
                        "forwarding_set.genesys",
                        "only for kind GENESYS_OPEN_MESSAGING",
                    ));
                }
                let settings = validate::present("forwarding_set.genesys", input.genesys.as_ref())?;
                let sealing = Sealing {
                    sealer,
                    record: &record.id,
                };
                record.genesys = Some(genesys(settings, record.genesys.as_ref(), sealing)?);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Rules that span fields, checked on the result of a create or update.
fn check_whole(record: &ForwardingSetRecord) -> Result<(), Error> {
    if is_genesys(record) {
        if record.genesys.is_none() {
            return Err(Error::invalid(
                "forwarding_set.genesys",
                "required for kind GENESYS_OPEN_MESSAGING",
            ));
        }
    } else if record.url.is_empty() {
        return Err(Error::invalid("forwarding_set.url", "must not be empty"));
    }
    Ok(())
}

/// Seals the secrets of one forwarding set, each bound to the set and its field.
#[derive(Clone, Copy)]
struct Sealing<'a> {
    sealer: &'a Sealer,
    record: &'a str,
}

impl Sealing<'_> {
    fn seal(&self, secret: &str, field: &'static str) -> Sealed {
        self.sealer.seal(secret, Place::new(self.record, field))
    }
}

/// Validates Genesys settings. Secrets left empty on an update keep their stored values, since
/// they are never returned and a caller cannot send them back.
fn genesys(
    input: &GenesysSettings,
    existing: Option<&GenesysRecord>,
    sealing: Sealing<'_>,
) -> Result<GenesysRecord, Error> {
    const F: &str = "forwarding_set.genesys";
    let client_id = validate::required_text(
        &format!("{F}.client_id"),
        &input.client_id,
        MAX_CREDENTIAL_CHARS,
    )?;
    let integration_id = validate::required_text(
        &format!("{F}.integration_id"),
        &input.integration_id,
        MAX_CREDENTIAL_CHARS,
    )?;
    let client_secret = match (input.client_secret.as_str(), existing) {
        ("", Some(existing)) => existing.client_secret.clone(),
        (secret, _) => {
            validate::secret(&format!("{F}.client_secret"), secret, MAX_CREDENTIAL_CHARS)?;
            sealing.seal(secret, sealed_field::GENESYS_CLIENT_SECRET)
        }
    };
    let outbound_signature_secret = match (input.outbound_signature_secret.as_str(), existing) {
        ("", Some(existing)) => existing.outbound_signature_secret.clone(),
        (secret, _) => {
            validate::secret(
                &format!("{F}.outbound_signature_secret"),
                secret,
                MAX_CREDENTIAL_CHARS,
            )?;
            sealing.seal(secret, sealed_field::GENESYS_OUTBOUND_SIGNATURE_SECRET)
        }
    };
    let region_domain = input.region_domain.trim().to_owned();
    if !region_domain.is_empty() && !is_domain(&region_domain) {
        return Err(Error::invalid(
            format!("{F}.region_domain"),
            "must be a domain such as mypurecloud.com",
        ));
    }
    let base_url = |field: &str, given: &str, host_prefix: &str| -> Result<String, Error> {
        if !given.is_empty() {
            validate::http_url(&format!("{F}.{field}"), given)
        } else if !region_domain.is_empty() {
            Ok(format!("https://{host_prefix}.{region_domain}"))
        } else {
            Err(Error::invalid(
                F,
                "needs region_domain, or both login_base_url and api_base_url",
            ))
        }
    };
    Ok(GenesysRecord {
        login_base_url: base_url("login_base_url", &input.login_base_url, "login")?,
        api_base_url: base_url("api_base_url", &input.api_base_url, "api")?,
        region_domain,
        client_id,
        client_secret,
        integration_id,
        outbound_signature_secret,
        custom_attributes: metadata(&format!("{F}.custom_attributes"), &input.custom_attributes)?,
    })
}

fn is_domain(text: &str) -> bool {
    text.contains('.')
        && matches!(url::Host::parse(text), Ok(url::Host::Domain(d)) if d == text.to_ascii_lowercase())
}

pub(crate) fn outbound_path(id: &str) -> String {
    format!("/api/connector/genesys/{id}/outbound")
}

/// Genesys settings without their secrets.
fn genesys_to_proto(g: &GenesysRecord) -> GenesysSettings {
    GenesysSettings {
        region_domain: g.region_domain.clone(),
        login_base_url: g.login_base_url.clone(),
        api_base_url: g.api_base_url.clone(),
        client_id: g.client_id.clone(),
        client_secret: String::new(),
        integration_id: g.integration_id.clone(),
        outbound_signature_secret: String::new(),
        custom_attributes: g
            .custom_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub(crate) fn to_proto(r: &ForwardingSetRecord) -> ForwardingSet {
    ForwardingSet {
        id: r.id.clone(),
        channel_id: r.channel_id.clone(),
        name: r.name.clone(),
        url: r.url.clone(),
        enabled: Some(r.enabled),
        kind: r.kind,
        timeout: Some(duration_to_proto(r.timeout)),
        genesys: r.genesys.as_ref().map(genesys_to_proto),
        create_time: Some(r.create_time.to_proto()),
        update_time: Some(r.update_time.to_proto()),
        outbound_path: if is_genesys(r) {
            outbound_path(&r.id)
        } else {
            String::new()
        },
    }
}

#[tonic::async_trait]
impl ForwardingService for ForwardingApi {
    async fn create_forwarding_set(
        &self,
        request: Request<CreateForwardingSetRequest>,
    ) -> Result<Response<ForwardingSet>, Status> {
        let caller = Caller::of(&request)?;
        let fields = request
            .get_ref()
            .forwarding_set
            .as_ref()
            .map(given_fields)
            .unwrap_or_default();
        let (set, tenant_id) = self.create(&caller, request.into_inner())?;
        self.audit.record(
            &caller,
            &method("CreateForwardingSet"),
            &tenant_id,
            &set.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(set))
    }

    async fn get_forwarding_set(
        &self,
        request: Request<GetForwardingSetRequest>,
    ) -> Result<Response<ForwardingSet>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        Ok(Response::new(self.get(&caller, id)?))
    }

    async fn list_forwarding_sets(
        &self,
        request: Request<ListForwardingSetsRequest>,
    ) -> Result<Response<ListForwardingSetsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn update_forwarding_set(
        &self,
        request: Request<UpdateForwardingSetRequest>,
    ) -> Result<Response<ForwardingSet>, Status> {
        let caller = Caller::of(&request)?;
        let (set, tenant_id, paths) = self.update(&caller, request.into_inner())?;
        let fields: Vec<&str> = paths.iter().map(String::as_str).collect();
        self.audit.record(
            &caller,
            &method("UpdateForwardingSet"),
            &tenant_id,
            &set.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(set))
    }

    async fn delete_forwarding_set(
        &self,
        request: Request<DeleteForwardingSetRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let tenant_id = self.delete(&caller, id)?;
        self.audit
            .record(&caller, &method("DeleteForwardingSet"), &tenant_id, id, &[])?;
        self.store.flush().await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hookplane_proto::v1::tenant_service_server::TenantService as _;
    use hookplane_proto::v1::{Entitlements, Tenant, UpdateTenantRequest};
    use tonic::Code;

    use super::*;
    use crate::tenants::TenantApi;
    use crate::test_fixtures::*;

    fn api(store: &Store) -> ForwardingApi {
        ForwardingApi::new(store.clone())
    }

    async fn channel(store: &Store) -> String {
        let tenant = create_tenant(store, tenant_input()).await;
        create_channel(store, &tenant.id).await.id
    }

    fn genesys_input() -> ForwardingSet {
        ForwardingSet {
            name: "Genesys".into(),
            kind: ForwardingKind::GenesysOpenMessaging as i32,
            genesys: Some(GenesysSettings {
                region_domain: "mypurecloud.jp".into(),
                client_id: "client".into(),
                client_secret: "genesys-client-secret".into(),
                integration_id: "integration".into(),
                outbound_signature_secret: "genesys-signature-secret".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn update(
        store: &Store,
        set: ForwardingSet,
        paths: &[&str],
    ) -> Result<ForwardingSet, Status> {
        api(store)
            .update_forwarding_set(operator(UpdateForwardingSetRequest {
                forwarding_set: Some(set),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
            }))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn a_new_set_is_enabled_raw_with_a_ten_second_timeout() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let set = create_forwarding_set(&store, &channel_id, raw_set_input())
            .await
            .unwrap();
        assert!(set.id.starts_with("fwd_"));
        assert_eq!(set.channel_id, channel_id);
        assert_eq!(set.enabled, Some(true));
        assert_eq!(set.kind, ForwardingKind::Raw as i32);
        assert_eq!(
            set.timeout,
            Some(duration_to_proto(Duration::from_secs(10)))
        );
        assert!(set.outbound_path.is_empty());
    }

    #[tokio::test]
    async fn the_eleventh_set_on_a_channel_is_refused() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        for _ in 0..10 {
            create_forwarding_set(&store, &channel_id, raw_set_input())
                .await
                .unwrap();
        }
        assert_status(
            create_forwarding_set(&store, &channel_id, raw_set_input()).await,
            Code::FailedPrecondition,
            &format!(
                "channel \"{channel_id}\" already has 10 forwarding sets, the tenant's limit \
                 (max_forwarding_sets_per_channel)"
            ),
        );
    }

    #[tokio::test]
    async fn the_limit_follows_the_tenants_entitlement() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        TenantApi::new(store.clone())
            .update_tenant(operator(UpdateTenantRequest {
                tenant: Some(Tenant {
                    id: tenant.id.clone(),
                    entitlements: Some(Entitlements {
                        max_forwarding_sets_per_channel: Some(1),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["entitlements.max_forwarding_sets_per_channel".into()],
                }),
            }))
            .await
            .unwrap();
        let channel_id = create_channel(&store, &tenant.id).await.id;
        create_forwarding_set(&store, &channel_id, raw_set_input())
            .await
            .unwrap();
        let refused = create_forwarding_set(&store, &channel_id, raw_set_input()).await;
        assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_raw_set_needs_a_url() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = raw_set_input();
        input.url = String::new();
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.url: must not be empty",
        );
    }

    #[tokio::test]
    async fn a_non_http_url_is_invalid() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = raw_set_input();
        input.url = "mailto:ops@brand.example".into();
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.url: must be an http or https URL",
        );
    }

    #[tokio::test]
    async fn a_timeout_over_sixty_seconds_is_invalid() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = raw_set_input();
        input.timeout = Some(prost_types::Duration {
            seconds: 61,
            nanos: 0,
        });
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.timeout: must be between 1s and 60s",
        );
    }

    #[tokio::test]
    async fn a_set_on_an_unknown_channel_is_not_found() {
        let (_dir, store) = store();
        assert_status(
            create_forwarding_set(&store, "ch_missing", raw_set_input()).await,
            Code::NotFound,
            "channel \"ch_missing\" not found",
        );
    }

    #[tokio::test]
    async fn genesys_base_urls_derive_from_the_region_and_secrets_stay_hidden() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let set = create_forwarding_set(&store, &channel_id, genesys_input())
            .await
            .unwrap();
        let genesys = set.genesys.unwrap();
        assert_eq!(genesys.login_base_url, "https://login.mypurecloud.jp");
        assert_eq!(genesys.api_base_url, "https://api.mypurecloud.jp");
        assert!(genesys.client_secret.is_empty());
        assert!(genesys.outbound_signature_secret.is_empty());
        assert_eq!(
            set.outbound_path,
            format!("/api/connector/genesys/{}/outbound", set.id)
        );
    }

    #[tokio::test]
    async fn genesys_needs_a_region_or_both_base_urls() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = genesys_input();
        if let Some(g) = input.genesys.as_mut() {
            g.region_domain = String::new();
            g.login_base_url = "https://login.example.com".into();
        }
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.genesys: needs region_domain, or both login_base_url and api_base_url",
        );
    }

    #[tokio::test]
    async fn genesys_needs_its_client_secret() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = genesys_input();
        if let Some(g) = input.genesys.as_mut() {
            g.client_secret = String::new();
        }
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.genesys.client_secret: must not be empty",
        );
    }

    #[tokio::test]
    async fn a_genesys_kind_without_settings_is_invalid() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let mut input = genesys_input();
        input.genesys = None;
        assert_status(
            create_forwarding_set(&store, &channel_id, input).await,
            Code::InvalidArgument,
            "forwarding_set.genesys: required for kind GENESYS_OPEN_MESSAGING",
        );
    }

    #[tokio::test]
    async fn updating_genesys_without_secrets_keeps_the_stored_ones() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let set = create_forwarding_set(&store, &channel_id, genesys_input())
            .await
            .unwrap();
        let mut change = genesys_input();
        change.id = set.id.clone();
        if let Some(g) = change.genesys.as_mut() {
            g.client_secret = String::new();
            g.outbound_signature_secret = String::new();
            g.client_id = "new-client".into();
        }
        let updated = update(&store, change, &["genesys"]).await.unwrap();
        assert_eq!(updated.genesys.unwrap().client_id, "new-client");
        let record = store.forwarding_set(&set.id).unwrap().genesys.unwrap();
        let at = Place::new(&set.id, sealed_field::GENESYS_CLIENT_SECRET);
        assert_eq!(
            store.sealer().open(&record.client_secret, at).unwrap(),
            "genesys-client-secret"
        );
    }

    #[tokio::test]
    async fn a_set_can_be_disabled_by_update() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let set = create_forwarding_set(&store, &channel_id, raw_set_input())
            .await
            .unwrap();
        let updated = update(
            &store,
            ForwardingSet {
                id: set.id,
                enabled: Some(false),
                ..Default::default()
            },
            &["enabled"],
        )
        .await
        .unwrap();
        assert_eq!(updated.enabled, Some(false));
        assert_eq!(updated.url, "https://crm.brand.example/line");
    }

    #[tokio::test]
    async fn kind_cannot_be_updated() {
        let (_dir, store) = store();
        let channel_id = channel(&store).await;
        let set = create_forwarding_set(&store, &channel_id, raw_set_input())
            .await
            .unwrap();
        let result = update(
            &store,
            ForwardingSet {
                id: set.id,
                ..Default::default()
            },
            &["kind"],
        )
        .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn a_tenant_admin_cannot_touch_another_tenants_forwarding_sets() {
        let (_dir, store) = store();
        let own = create_tenant(&store, tenant_input()).await;
        let other = create_tenant(&store, tenant_input()).await;
        let their_channel = create_channel(&store, &other.id).await;
        let theirs = create_forwarding_set(&store, &their_channel.id, raw_set_input())
            .await
            .unwrap();
        let admin = tenant_admin_caller(&own.id);
        let api = api(&store);
        let denied = |code: Code| assert_eq!(code, Code::PermissionDenied);
        denied(
            api.create_forwarding_set(as_caller(
                &admin,
                CreateForwardingSetRequest {
                    channel_id: their_channel.id.clone(),
                    forwarding_set: Some(raw_set_input()),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        );
        denied(
            api.get_forwarding_set(as_caller(
                &admin,
                GetForwardingSetRequest {
                    id: theirs.id.clone(),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        );
        denied(
            api.list_forwarding_sets(as_caller(
                &admin,
                ListForwardingSetsRequest {
                    channel_id: their_channel.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err()
            .code(),
        );
        denied(
            api.delete_forwarding_set(as_caller(
                &admin,
                DeleteForwardingSetRequest {
                    id: theirs.id.clone(),
                },
            ))
            .await
            .unwrap_err()
            .code(),
        );
        assert!(store.find_forwarding_set(&theirs.id).unwrap().is_some());
    }
}

//! TenantService: brands, their notification emails and entitlements.

use std::collections::HashSet;

use hookplane_proto::v1::tenant_service_server::{self, TenantService};
use hookplane_proto::v1::{
    CreateTenantRequest, DeleteTenantRequest, Entitlements, GetTenantRequest, ListTenantsRequest,
    ListTenantsResponse, Notification, NotificationState, PurgeTenantDataRequest,
    PurgeTenantDataResponse, Tenant, UpdateTenantRequest, Zone, ZoneEntitlement,
};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Time;
use crate::delivery_log::DeliveryLog;
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::store::{Change, Index, Store, TenantRecord, ZoneRecord, decode, index_prefix};
use crate::validate;

const UPDATE_PATHS: &[&str] = &[
    "display_name",
    "notification_emails",
    "entitlements",
    "entitlements.zones",
    "entitlements.max_active_subscriptions",
    "entitlements.max_forwarding_sets_per_channel",
];

pub(crate) struct TenantApi {
    store: Store,
    audit: AuditLog,
    /// The attempt log PurgeTenantData empties of the tenant; without one (tests of the other
    /// calls) a purge is refused.
    log: Option<DeliveryLog>,
}

/// The fields of `input` a create sets, for the audit trail.
fn given_fields(input: &Tenant) -> Vec<&'static str> {
    let mut set = Vec::new();
    if !input.display_name.is_empty() {
        set.push("display_name");
    }
    if !input.notification_emails.is_empty() {
        set.push("notification_emails");
    }
    if input.entitlements.is_some() {
        set.push("entitlements");
    }
    set
}

fn method(name: &str) -> String {
    format!("{}/{name}", tenant_service_server::SERVICE_NAME)
}

impl TenantApi {
    pub fn new(store: Store) -> TenantApi {
        TenantApi {
            audit: AuditLog::new(&store),
            store,
            log: None,
        }
    }

    /// Purges reach into `log`, the store's one delivery log.
    pub fn with_delivery_log(mut self, log: DeliveryLog) -> TenantApi {
        self.log = Some(log);
        self
    }

    /// Records the purge on the tenant (nodes drop its jobs enqueued until now when they receive
    /// it), then removes its attempts, its undelivered deliveries' records and its sent notices'
    /// bodies. Operators and the tenant's own admins may: an erasure request is the brand's to
    /// make for its users, and it changes no other tenant's data.
    fn purge(&self, caller: &Caller, id: &str) -> Result<PurgeTenantDataResponse, Error> {
        caller.check_tenant(id)?;
        let log = self.log.as_ref().ok_or_else(|| {
            Error::Unavailable("this control plane keeps no delivery log to purge".to_owned())
        })?;
        let now = Time::now();
        let mut targets = HashSet::new();
        {
            let guard = self.store.lock_writes();
            let mut record = self.store.tenant(id)?;
            for channel_id in self.store.child_ids(Index::TenantChannels, id)? {
                targets.extend(
                    self.store
                        .child_ids(Index::ChannelForwardingSets, &channel_id)?,
                );
            }
            targets.extend(self.store.child_ids(Index::TenantSubscriptions, id)?);
            record.purged_before = Some(now);
            record.update_time = now;
            let mut change = Change::default();
            change.put_tenant(&record);
            self.store.commit(&guard, change)?;
        }
        let (attempts, deliveries) = log.purge_tenant(id, &targets)?;
        let notices = self.clear_notice_bodies(id)?;
        Ok(PurgeTenantDataResponse {
            attempts_deleted: attempts,
            deliveries_deleted: deliveries,
            notification_bodies_deleted: notices,
            purge_time: Some(now.to_proto()),
        })
    }

    /// Empties the body of each of the tenant's notices that is no longer waiting to be sent
    /// (one waiting still needs it); returns how many. A compare-and-swap each, so a notice the
    /// notifier changes meanwhile is left to it.
    fn clear_notice_bodies(&self, tenant_id: &str) -> Result<u64, Error> {
        let tree = self.store.notifications_tree();
        let mut cleared = 0;
        for entry in tree.scan_prefix(index_prefix(tenant_id)) {
            let (key, value) = entry?;
            let mut notice = Notification::decode(value.as_ref()).map_err(|e| Error::Corrupt {
                tree: "notifications",
                detail: e.to_string(),
            })?;
            if notice.state == NotificationState::Queued as i32 || notice.body_text.is_empty() {
                continue;
            }
            notice.body_text.clear();
            let swapped = tree.compare_and_swap(&key, Some(value), Some(notice.encode_to_vec()))?;
            if swapped.is_ok() {
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    fn create(&self, caller: &Caller, req: CreateTenantRequest) -> Result<Tenant, Error> {
        caller.require_operator("create tenants")?;
        let input = validate::present("tenant", req.tenant.as_ref())?;
        let now = Time::now();
        let mut record = TenantRecord {
            id: ids::new_id(ids::TENANT),
            display_name: String::new(),
            notification_emails: Vec::new(),
            zones: Vec::new(),
            max_active_subscriptions: None,
            max_forwarding_sets_per_channel: None,
            create_time: now,
            update_time: now,
            purged_before: None,
        };
        apply(
            &mut record,
            input,
            &["display_name", "notification_emails", "entitlements"].map(String::from),
        )?;
        let guard = self.store.lock_writes();
        let mut change = Change::default();
        change.put_tenant(&record);
        self.store.commit(&guard, change)?;
        Ok(to_proto(&record))
    }

    /// Returns the tenant and the paths it changed.
    fn update(
        &self,
        caller: &Caller,
        req: UpdateTenantRequest,
    ) -> Result<(Tenant, Vec<String>), Error> {
        let input = validate::present("tenant", req.tenant.as_ref())?;
        let id = validate::id("tenant.id", &input.id)?;
        caller.check_tenant(id)?;
        let paths = validate::update_paths(req.update_mask.as_ref(), UPDATE_PATHS, || {
            given_fields(input)
        })?;
        if paths.iter().any(|p| p.starts_with("entitlements")) {
            // What a tenant has bought is the operator's to say.
            caller.require_operator("change a tenant's entitlements")?;
        }
        let guard = self.store.lock_writes();
        let mut record = self.store.tenant(id)?;
        apply(&mut record, input, &paths)?;
        record.update_time = Time::now();
        let mut change = Change::default();
        change.put_tenant(&record);
        self.store.commit(&guard, change)?;
        Ok((to_proto(&record), paths))
    }

    /// Removes the tenant with its channels, their forwarding sets, its subscriptions and its
    /// tokens, in one revision.
    fn delete(&self, caller: &Caller, id: &str) -> Result<(), Error> {
        caller.require_operator("delete tenants")?;
        let guard = self.store.lock_writes();
        self.store.tenant(id)?;
        let mut change = Change::default();
        for channel_id in self.store.child_ids(Index::TenantChannels, id)? {
            for fwd_id in self
                .store
                .child_ids(Index::ChannelForwardingSets, &channel_id)?
            {
                change.remove_forwarding_set(&channel_id, &fwd_id);
            }
            change.remove_channel(id, &channel_id);
        }
        for sub_id in self.store.child_ids(Index::TenantSubscriptions, id)? {
            change.remove_subscription(id, &sub_id);
        }
        let token_ids = self.store.child_ids(Index::TenantTokens, id)?;
        for token_id in &token_ids {
            change.remove_token(id, token_id);
        }
        change.remove_tenant(id);
        self.store.commit(&guard, change)?;
        for token_id in &token_ids {
            self.store
                .token_last_used_tree()
                .remove(token_id.as_bytes())?;
        }
        Ok(())
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListTenantsRequest,
    ) -> Result<ListTenantsResponse, Error> {
        let page = Page::new(req.page_size, &req.page_token, b"")?;
        if let Some(own) = caller.own_tenant() {
            // A tenant admin's listing holds its own tenant, on the first page.
            let tenants = match page.after() {
                None => vec![to_proto(&self.store.tenant(own)?)],
                Some(_) => Vec::new(),
            };
            return Ok(ListTenantsResponse {
                tenants,
                next_page_token: String::new(),
            });
        }
        let page = page.read(self.store.tenants_tree())?;
        let tenants = page
            .items
            .iter()
            .map(|(_, v)| decode::<TenantRecord>("tenants", v).map(|r| to_proto(&r)))
            .collect::<Result<_, _>>()?;
        Ok(ListTenantsResponse {
            tenants,
            next_page_token: page.next_page_token,
        })
    }
}

/// Copies the fields named by `paths` from `input` into `record`, validating each.
fn apply(record: &mut TenantRecord, input: &Tenant, paths: &[String]) -> Result<(), Error> {
    let entitlements = input.entitlements.clone().unwrap_or_default();
    for path in paths {
        match path.as_str() {
            "display_name" => {
                record.display_name = validate::name("tenant.display_name", &input.display_name)?;
            }
            "notification_emails" => {
                record.notification_emails = input
                    .notification_emails
                    .iter()
                    .enumerate()
                    .map(|(i, e)| validate::email(&format!("tenant.notification_emails[{i}]"), e))
                    .collect::<Result<_, _>>()?;
            }
            "entitlements" => {
                record.zones = zones(&entitlements.zones)?;
                record.max_active_subscriptions = entitlements.max_active_subscriptions;
                record.max_forwarding_sets_per_channel =
                    entitlements.max_forwarding_sets_per_channel;
            }
            "entitlements.zones" => record.zones = zones(&entitlements.zones)?,
            "entitlements.max_active_subscriptions" => {
                record.max_active_subscriptions = entitlements.max_active_subscriptions;
            }
            "entitlements.max_forwarding_sets_per_channel" => {
                record.max_forwarding_sets_per_channel =
                    entitlements.max_forwarding_sets_per_channel;
            }
            _ => {}
        }
    }
    Ok(())
}

fn zones(input: &[ZoneEntitlement]) -> Result<Vec<ZoneRecord>, Error> {
    let mut seen = HashSet::new();
    input
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let field = format!("tenant.entitlements.zones[{i}]");
            let zone = match Zone::try_from(z.zone) {
                Ok(zone @ (Zone::Zone1 | Zone::Zone2)) => zone,
                _ => {
                    return Err(Error::invalid(
                        format!("{field}.zone"),
                        "must be ZONE_1 or ZONE_2",
                    ));
                }
            };
            if !seen.insert(zone) {
                return Err(Error::invalid(
                    format!("{field}.zone"),
                    format!("{} is listed twice", zone.as_str_name()),
                ));
            }
            let valid_until =
                validate::present(&format!("{field}.valid_until"), z.valid_until.as_ref())?;
            let valid_until = Time::from_proto(valid_until).ok_or_else(|| {
                Error::invalid(format!("{field}.valid_until"), "not a valid timestamp")
            })?;
            Ok(ZoneRecord {
                zone: zone as i32,
                valid_until,
            })
        })
        .collect()
}

pub(crate) fn to_proto(r: &TenantRecord) -> Tenant {
    Tenant {
        id: r.id.clone(),
        display_name: r.display_name.clone(),
        notification_emails: r.notification_emails.clone(),
        entitlements: Some(Entitlements {
            zones: zone_entitlements(r),
            max_active_subscriptions: Some(r.max_active_subscriptions()),
            max_forwarding_sets_per_channel: Some(r.max_forwarding_sets_per_channel()),
        }),
        create_time: Some(r.create_time.to_proto()),
        update_time: Some(r.update_time.to_proto()),
        last_purge_time: r.purged_before.map(Time::to_proto),
    }
}

pub(crate) fn zone_entitlements(r: &TenantRecord) -> Vec<ZoneEntitlement> {
    r.zones
        .iter()
        .map(|z| ZoneEntitlement {
            zone: z.zone,
            valid_until: Some(z.valid_until.to_proto()),
        })
        .collect()
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let caller = Caller::of(&request)?;
        let fields = request
            .get_ref()
            .tenant
            .as_ref()
            .map(given_fields)
            .unwrap_or_default();
        let tenant = self.create(&caller, request.into_inner())?;
        self.audit.record(
            &caller,
            &method("CreateTenant"),
            &tenant.id,
            &tenant.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(tenant))
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        caller.check_tenant(id)?;
        Ok(Response::new(to_proto(&self.store.tenant(id)?)))
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn update_tenant(
        &self,
        request: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        let caller = Caller::of(&request)?;
        let (tenant, paths) = self.update(&caller, request.into_inner())?;
        let fields: Vec<&str> = paths.iter().map(String::as_str).collect();
        self.audit.record(
            &caller,
            &method("UpdateTenant"),
            &tenant.id,
            &tenant.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(tenant))
    }

    async fn delete_tenant(
        &self,
        request: Request<DeleteTenantRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        self.delete(&caller, id)?;
        self.audit
            .record(&caller, &method("DeleteTenant"), id, id, &[])?;
        self.store.flush().await?;
        Ok(Response::new(()))
    }

    async fn purge_tenant_data(
        &self,
        request: Request<PurgeTenantDataRequest>,
    ) -> Result<Response<PurgeTenantDataResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("tenant_id", &request.get_ref().tenant_id)?;
        let purged = self.purge(&caller, id)?;
        self.audit
            .record(&caller, &method("PurgeTenantData"), id, id, &[])?;
        self.store.flush().await?;
        tracing::info!(
            tenant_id = id,
            attempts = purged.attempts_deleted,
            deliveries = purged.deliveries_deleted,
            notification_bodies = purged.notification_bodies_deleted,
            "tenant data purged; nodes drop its queued and parked jobs as the purge reaches them"
        );
        Ok(Response::new(purged))
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::channel_service_server::ChannelService as _;
    use hookplane_proto::v1::forwarding_service_server::ForwardingService as _;
    use hookplane_proto::v1::subscription_service_server::SubscriptionService as _;
    use hookplane_proto::v1::{GetChannelRequest, GetForwardingSetRequest, GetSubscriptionRequest};
    use tonic::Code;

    use super::*;
    use crate::channels::ChannelApi;
    use crate::forwarding::ForwardingApi;
    use crate::test_fixtures::*;

    fn api(store: &Store) -> TenantApi {
        TenantApi::new(store.clone())
    }

    async fn create(store: &Store, tenant: Tenant) -> Result<Tenant, Status> {
        api(store)
            .create_tenant(operator(CreateTenantRequest {
                tenant: Some(tenant),
            }))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn a_new_tenant_gets_a_prefixed_id_and_server_timestamps() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.id = "tnt_chosen_by_client".into();
        let tenant = create(&store, input).await.unwrap();
        assert!(tenant.id.starts_with("tnt_"));
        assert_ne!(tenant.id, "tnt_chosen_by_client");
        assert!(tenant.create_time.is_some());
        assert_eq!(tenant.create_time, tenant.update_time);
    }

    #[tokio::test]
    async fn unset_limits_come_back_as_their_defaults() {
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let entitlements = tenant.entitlements.unwrap();
        assert_eq!(entitlements.max_active_subscriptions, Some(3));
        assert_eq!(entitlements.max_forwarding_sets_per_channel, Some(10));
    }

    #[tokio::test]
    async fn an_empty_display_name_is_invalid() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.display_name = String::new();
        assert_status(
            create(&store, input).await,
            Code::InvalidArgument,
            "tenant.display_name: must not be empty",
        );
    }

    #[tokio::test]
    async fn a_bad_email_is_named_by_its_index() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.notification_emails = vec!["ok@brand.example".into(), "x".into()];
        assert_status(
            create(&store, input).await,
            Code::InvalidArgument,
            "tenant.notification_emails[1]: \"x\" is not an email address",
        );
    }

    #[tokio::test]
    async fn an_unspecified_zone_is_invalid() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.entitlements = Some(Entitlements {
            zones: vec![zone(Zone::Unspecified, in_days(1))],
            ..Default::default()
        });
        assert_status(
            create(&store, input).await,
            Code::InvalidArgument,
            "tenant.entitlements.zones[0].zone: must be ZONE_1 or ZONE_2",
        );
    }

    #[tokio::test]
    async fn a_zone_listed_twice_is_invalid() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.entitlements = Some(Entitlements {
            zones: vec![zone(Zone::Zone1, in_days(1)), zone(Zone::Zone1, in_days(2))],
            ..Default::default()
        });
        assert_status(
            create(&store, input).await,
            Code::InvalidArgument,
            "tenant.entitlements.zones[1].zone: ZONE_1 is listed twice",
        );
    }

    #[tokio::test]
    async fn a_zone_without_valid_until_is_invalid() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.entitlements = Some(Entitlements {
            zones: vec![ZoneEntitlement {
                zone: Zone::Zone2 as i32,
                valid_until: None,
            }],
            ..Default::default()
        });
        assert_status(
            create(&store, input).await,
            Code::InvalidArgument,
            "tenant.entitlements.zones[0].valid_until: required",
        );
    }

    #[tokio::test]
    async fn getting_an_unknown_tenant_names_it() {
        let (_dir, store) = store();
        let result = api(&store)
            .get_tenant(operator(GetTenantRequest { id: "tnt_x".into() }))
            .await;
        assert_status(result, Code::NotFound, "tenant \"tnt_x\" not found");
    }

    #[tokio::test]
    async fn getting_without_an_id_is_invalid() {
        let (_dir, store) = store();
        let result = api(&store)
            .get_tenant(operator(GetTenantRequest::default()))
            .await;
        assert_status(result, Code::InvalidArgument, "id: required");
    }

    #[tokio::test]
    async fn an_update_changes_only_the_masked_fields() {
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let updated = api(&store)
            .update_tenant(operator(UpdateTenantRequest {
                tenant: Some(Tenant {
                    id: tenant.id.clone(),
                    display_name: "Renamed".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.display_name, "Renamed");
        assert_eq!(updated.notification_emails, tenant.notification_emails);
        assert_eq!(updated.entitlements, tenant.entitlements);
    }

    #[tokio::test]
    async fn an_update_with_an_empty_mask_applies_the_fields_that_are_set() {
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let updated = api(&store)
            .update_tenant(operator(UpdateTenantRequest {
                tenant: Some(Tenant {
                    id: tenant.id.clone(),
                    notification_emails: vec!["new@brand.example".into()],
                    ..Default::default()
                }),
                update_mask: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.display_name, "Brand");
        assert_eq!(updated.notification_emails, ["new@brand.example"]);
    }

    #[tokio::test]
    async fn an_unknown_update_path_is_invalid() {
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let result = api(&store)
            .update_tenant(operator(UpdateTenantRequest {
                tenant: Some(Tenant {
                    id: tenant.id,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["id".into()],
                }),
            }))
            .await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("update_mask.paths[0]: unknown path \"id\"")
        );
    }

    #[tokio::test]
    async fn a_rejected_write_does_not_advance_the_revision() {
        let (_dir, store) = store();
        let mut input = tenant_input();
        input.display_name = String::new();
        let _ = create(&store, input).await;
        assert_eq!(store.revision(), 0);
    }

    #[tokio::test]
    async fn deleting_a_tenant_removes_its_children_in_one_revision() {
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let channel = create_channel(&store, &tenant.id).await;
        let set = create_forwarding_set(&store, &channel.id, raw_set_input())
            .await
            .unwrap();
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let before = store.revision();

        api(&store)
            .delete_tenant(operator(DeleteTenantRequest {
                id: tenant.id.clone(),
            }))
            .await
            .unwrap();

        assert_eq!(store.revision(), before + 1);
        let logged = &store.changes_between(before, store.revision()).unwrap()[0].1;
        let ids: HashSet<_> = logged.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            ids,
            HashSet::from([
                tenant.id.as_str(),
                channel.id.as_str(),
                set.id.as_str(),
                sub.id.as_str()
            ])
        );
        let channels = ChannelApi::new(store.clone());
        let gone = channels
            .get_channel(operator(GetChannelRequest { id: channel.id }))
            .await;
        assert_eq!(gone.unwrap_err().code(), Code::NotFound);
        let gone = ForwardingApi::new(store.clone())
            .get_forwarding_set(operator(GetForwardingSetRequest { id: set.id }))
            .await;
        assert_eq!(gone.unwrap_err().code(), Code::NotFound);
        let gone = subscription_api(&store)
            .get_subscription(operator(GetSubscriptionRequest { id: sub.id }))
            .await;
        assert_eq!(gone.unwrap_err().code(), Code::NotFound);
        for index in [
            Index::TenantChannels,
            Index::ChannelForwardingSets,
            Index::TenantSubscriptions,
        ] {
            assert!(store.index_tree(index).is_empty());
        }
    }

    #[tokio::test]
    async fn paging_sees_every_tenant_once_even_when_some_are_created_meanwhile() {
        let (_dir, store) = store();
        let mut created = Vec::new();
        for _ in 0..5 {
            created.push(create(&store, tenant_input()).await.unwrap().id);
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = api(&store)
                .list_tenants(operator(ListTenantsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                }))
                .await
                .unwrap()
                .into_inner();
            seen.extend(page.tenants.into_iter().map(|t| t.id));
            if seen.len() == 2 {
                created.push(create(&store, tenant_input()).await.unwrap().id);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, created);
    }

    #[tokio::test]
    async fn a_tenant_admin_listing_tenants_sees_only_its_own() {
        let (_dir, store) = store();
        let own = create(&store, tenant_input()).await.unwrap();
        create(&store, tenant_input()).await.unwrap();
        let admin = tenant_admin_caller(&own.id);
        let listed = api(&store)
            .list_tenants(as_caller(&admin, ListTenantsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<_> = listed.tenants.iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, [own.id]);
        assert!(listed.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn a_tenant_admin_reads_and_renames_its_own_tenant_but_no_other() {
        let (_dir, store) = store();
        let own = create(&store, tenant_input()).await.unwrap();
        let other = create(&store, tenant_input()).await.unwrap();
        let admin = tenant_admin_caller(&own.id);
        let api = api(&store);
        api.get_tenant(as_caller(&admin, GetTenantRequest { id: own.id.clone() }))
            .await
            .unwrap();
        let refused = api
            .get_tenant(as_caller(
                &admin,
                GetTenantRequest {
                    id: other.id.clone(),
                },
            ))
            .await;
        assert_status(
            refused,
            Code::PermissionDenied,
            &format!("this token may act on tenant \"{}\" only", own.id),
        );
        let rename = |id: &str| UpdateTenantRequest {
            tenant: Some(Tenant {
                id: id.into(),
                display_name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        };
        api.update_tenant(as_caller(&admin, rename(&own.id)))
            .await
            .unwrap();
        let refused = api
            .update_tenant(as_caller(&admin, rename(&other.id)))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn only_an_operator_creates_or_deletes_tenants_or_changes_entitlements() {
        let (_dir, store) = store();
        let own = create(&store, tenant_input()).await.unwrap();
        let admin = tenant_admin_caller(&own.id);
        let api = api(&store);
        let created = api
            .create_tenant(as_caller(
                &admin,
                CreateTenantRequest {
                    tenant: Some(tenant_input()),
                },
            ))
            .await;
        assert_status(
            created,
            Code::PermissionDenied,
            "only an operator token may create tenants",
        );
        let deleted = api
            .delete_tenant(as_caller(
                &admin,
                DeleteTenantRequest { id: own.id.clone() },
            ))
            .await;
        assert_eq!(deleted.unwrap_err().code(), Code::PermissionDenied);
        let entitled = api
            .update_tenant(as_caller(
                &admin,
                UpdateTenantRequest {
                    tenant: Some(Tenant {
                        id: own.id.clone(),
                        ..tenant_input()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["entitlements.zones".into()],
                    }),
                },
            ))
            .await;
        assert_status(
            entitled,
            Code::PermissionDenied,
            "only an operator token may change a tenant's entitlements",
        );
    }

    #[tokio::test]
    async fn a_request_that_did_not_pass_the_admin_check_is_refused() {
        let (_dir, store) = store();
        let refused = api(&store)
            .list_tenants(Request::new(ListTenantsRequest::default()))
            .await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn deleting_a_tenant_revokes_its_tokens() {
        use hookplane_proto::v1::token_service_server::TokenService as _;
        use hookplane_proto::v1::{CreateTokenRequest, Role, Token};
        let (_dir, store) = store();
        let tenant = create(&store, tenant_input()).await.unwrap();
        let tokens =
            crate::tokens::TokenApi::new(store.clone(), crate::tokens::LastUsed::new(&store));
        let made = tokens
            .create_token(operator(CreateTokenRequest {
                token: Some(Token {
                    display_name: "crm".into(),
                    role: Role::Publisher as i32,
                    tenant_id: tenant.id.clone(),
                    ..Default::default()
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        let id = made.token.unwrap().id;
        api(&store)
            .delete_tenant(operator(DeleteTenantRequest { id: tenant.id }))
            .await
            .unwrap();
        assert!(store.find_token(&id).unwrap().is_none());
    }

    mod purge {
        use hookplane_proto::v1::audit_service_server::AuditService as _;
        use hookplane_proto::v1::delivery_service_server::DeliveryService as _;
        use hookplane_proto::v1::{
            AttemptOutcome, DeliveryAttempt, ListAuditEventsRequest, RetryDeliveryRequest,
        };

        use super::*;
        use crate::delivery_log::Retention;

        struct Brand {
            id: String,
            fwd_id: String,
        }

        async fn brand(store: &Store) -> Brand {
            let tenant = create(store, tenant_input()).await.unwrap();
            let channel = create_channel(store, &tenant.id).await;
            let fwd_id = create_forwarding_set(store, &channel.id, raw_set_input())
                .await
                .unwrap()
                .id;
            Brand {
                id: tenant.id,
                fwd_id,
            }
        }

        fn failed(tenant_id: &str, fwd_id: &str, delivery_id: &str) -> DeliveryAttempt {
            DeliveryAttempt {
                delivery_id: delivery_id.into(),
                forwarding_set_id: fwd_id.into(),
                tenant_id: tenant_id.into(),
                time: Some(Time::now().to_proto()),
                outcome: AttemptOutcome::Failed as i32,
                reason: "502 Bad Gateway".into(),
                ..Default::default()
            }
        }

        fn notice(store: &Store, tenant_id: &str, id: &str, state: NotificationState) {
            let notice = Notification {
                id: id.into(),
                tenant_id: tenant_id.into(),
                subject: "Forwards are failing".into(),
                body_text: "https://crm.brand.example/line answered 502".into(),
                state: state as i32,
                ..Default::default()
            };
            store
                .notifications_tree()
                .insert(format!("{tenant_id}/{id}"), notice.encode_to_vec())
                .unwrap();
        }

        fn notice_body(store: &Store, tenant_id: &str, id: &str) -> String {
            let value = store
                .notifications_tree()
                .get(format!("{tenant_id}/{id}"))
                .unwrap()
                .unwrap();
            Notification::decode(value.as_ref()).unwrap().body_text
        }

        #[tokio::test]
        async fn a_purge_removes_the_tenants_attempts_deliveries_and_sent_notice_bodies_and_no_others()
         {
            let (_dir, store) = store();
            let (a, b) = (brand(&store).await, brand(&store).await);
            let (tx, mut nodes) = tokio::sync::broadcast::channel(16);
            let retention = Retention {
                count: 100,
                age: std::time::Duration::from_secs(3600),
            };
            let log = DeliveryLog::new(store.clone(), retention, tx).unwrap();
            log.record(
                "n",
                &[
                    failed(&a.id, &a.fwd_id, "dlv_a1"),
                    failed(&a.id, &a.fwd_id, "dlv_a2"),
                    // A forwarding set deleted since: its attempts still name the tenant.
                    failed(&a.id, "fwd_gone", "dlv_a3"),
                    failed(&b.id, &b.fwd_id, "dlv_b1"),
                ],
            )
            .unwrap();
            notice(&store, &a.id, "ntf_sent", NotificationState::Sent);
            notice(&store, &a.id, "ntf_queued", NotificationState::Queued);
            notice(&store, &b.id, "ntf_other", NotificationState::Sent);
            let api = api(&store).with_delivery_log(log.clone());

            let refused = api
                .purge_tenant_data(as_caller(
                    &tenant_admin_caller(&b.id),
                    PurgeTenantDataRequest {
                        tenant_id: a.id.clone(),
                    },
                ))
                .await;
            assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);

            let purged = api
                .purge_tenant_data(as_caller(
                    &tenant_admin_caller(&a.id),
                    PurgeTenantDataRequest {
                        tenant_id: a.id.clone(),
                    },
                ))
                .await
                .unwrap()
                .into_inner();

            assert_eq!(purged.attempts_deleted, 3);
            assert_eq!(purged.deliveries_deleted, 3);
            assert_eq!(purged.notification_bodies_deleted, 1);
            assert_eq!(listed_attempts(&log, &a.fwd_id).await.len(), 0);
            assert_eq!(listed_attempts(&log, &b.fwd_id).await.len(), 1);
            for id in ["dlv_a1", "dlv_a3"] {
                let retried = log
                    .retry_delivery(operator(RetryDeliveryRequest { id: id.into() }))
                    .await;
                assert_eq!(retried.unwrap_err().code(), Code::NotFound);
            }
            log.retry_delivery(operator(RetryDeliveryRequest {
                id: "dlv_b1".into(),
            }))
            .await
            .unwrap();
            assert!(nodes.try_recv().is_ok());
            assert_eq!(notice_body(&store, &a.id, "ntf_sent"), "");
            assert_ne!(notice_body(&store, &a.id, "ntf_queued"), "");
            assert_ne!(notice_body(&store, &b.id, "ntf_other"), "");

            // Nodes learn of it with the tenant, as they learn of any change to it.
            let record = store.tenant(&a.id).unwrap();
            assert_eq!(record.purged_before.map(Time::to_proto), purged.purge_time);
            assert_eq!(store.tenant(&b.id).unwrap().purged_before, None);
            let shown = api
                .get_tenant(operator(GetTenantRequest { id: a.id.clone() }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(shown.last_purge_time, purged.purge_time);

            let audit = crate::audit::AuditLog::new(&store)
                .list_audit_events(operator(ListAuditEventsRequest {
                    tenant_id: a.id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            let event = &audit.events[0];
            assert_eq!(event.method, "hookplane.v1.TenantService/PurgeTenantData");
            assert_eq!(event.token_name, "brand console");
        }
    }
}

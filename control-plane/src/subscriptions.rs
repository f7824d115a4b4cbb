//! SubscriptionService: a tenant's outgoing event webhooks, their share secrets (or ed25519 key
//! pairs), the active-subscription quota, the zone entitlements their event types need, and Send
//! test.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookplane_proto::v1::subscription_service_server::{self, SubscriptionService};
use hookplane_proto::v1::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, GetSubscriptionRequest,
    ListSubscriptionsRequest, ListSubscriptionsResponse, ResumeSubscriptionRequest,
    RevealSecretRequest, RevealSecretResponse, RotateSecretRequest, SendTestEventRequest,
    SendTestEventResponse, SignatureScheme, StopSubscriptionRequest, Subscription,
    SubscriptionState, UpdateSubscriptionRequest,
};
use hookplane_verify::standard_ed25519::SigningKey;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::sealing::Place;
use crate::store::{
    Change, Index, PreviousSecret, Store, SubscriptionRecord, TenantRecord, WriteGuard,
    child_id_of, index_prefix, sealed_field,
};
use crate::system_stop;
use crate::test_events::{TestEvents, TestTarget};
use crate::topics;
use crate::validate;

const UPDATE_PATHS: &[&str] = &["name", "url", "event_types", "signature_scheme"];
const STOPPED_BY_ADMIN: &str = "stopped by an admin";

pub(crate) struct SubscriptionApi {
    store: Store,
    test_events: TestEvents,
    audit: AuditLog,
}

/// The fields of `input` that are set, by name.
fn given_fields(input: &Subscription) -> Vec<&'static str> {
    let mut set = Vec::new();
    if !input.name.is_empty() {
        set.push("name");
    }
    if !input.url.is_empty() {
        set.push("url");
    }
    if !input.event_types.is_empty() {
        set.push("event_types");
    }
    if input.signature_scheme != 0 {
        set.push("signature_scheme");
    }
    set
}

fn method(name: &str) -> String {
    format!("{}/{name}", subscription_service_server::SERVICE_NAME)
}

/// Whether `scheme` (a `SignatureScheme` value) signs with an ed25519 key pair rather than a
/// shared HMAC secret.
fn signs_with_ed25519(scheme: i32) -> bool {
    scheme == SignatureScheme::StandardWebhooksEd25519 as i32
}

/// A fresh secret of the kind `scheme` signs with, from 32 random bytes: `whsec_` and their
/// standard base64, or for ed25519 the `whsk_` signing key they are the secret key of.
fn new_secret(scheme: i32) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    if signs_with_ed25519(scheme) {
        SigningKey::from_bytes(&bytes).to_whsk_string()
    } else {
        format!("whsec_{}", STANDARD.encode(bytes))
    }
}

fn is_active(r: &SubscriptionRecord) -> bool {
    r.state == SubscriptionState::Active as i32
}

impl SubscriptionApi {
    pub fn new(store: Store, test_events: TestEvents) -> SubscriptionApi {
        SubscriptionApi {
            audit: AuditLog::new(&store),
            store,
            test_events,
        }
    }

    /// The subscription `id`, if the caller may act on its tenant.
    fn subscription(&self, caller: &Caller, id: &str) -> Result<SubscriptionRecord, Error> {
        let record = self.store.subscription(id)?;
        caller.check_tenant(&record.tenant_id)?;
        Ok(record)
    }

    fn create(
        &self,
        caller: &Caller,
        req: CreateSubscriptionRequest,
    ) -> Result<Subscription, Error> {
        let tenant_id = validate::id("tenant_id", &req.tenant_id)?;
        caller.check_tenant(tenant_id)?;
        let input = validate::present("subscription", req.subscription.as_ref())?;
        let now = Time::now();
        let id = ids::new_id(ids::SUBSCRIPTION);
        // Of the kind the requested scheme signs with; a scheme `apply` refuses stores nothing.
        let secret = self.store.sealer().seal(
            &new_secret(input.signature_scheme),
            Place::new(&id, sealed_field::SECRET),
        );
        let mut record = SubscriptionRecord {
            id,
            tenant_id: tenant_id.to_owned(),
            name: String::new(),
            url: String::new(),
            event_types: Vec::new(),
            state: SubscriptionState::Active as i32,
            signature_scheme: SignatureScheme::Maac as i32,
            secret,
            previous_secret: None,
            state_reason: String::new(),
            stopped_by_system: false,
            create_time: now,
            update_time: now,
        };
        let paths: Vec<String> = UPDATE_PATHS.iter().map(|p| (*p).to_owned()).collect();
        apply(&mut record, input, &paths)?;
        let guard = self.store.lock_writes();
        let tenant = self.store.tenant(tenant_id)?;
        check_entitlements(&tenant, &record.event_types, now)?;
        self.check_quota(&guard, &tenant)?;
        let mut change = Change::default();
        change.put_subscription(&record);
        self.store.commit(&guard, change)?;
        Ok(to_proto(&record, Some(&tenant), now))
    }

    /// The tenant must have room for one more ACTIVE subscription. Needs the writer lock so that
    /// concurrent creates and resumes cannot both take the last place.
    fn check_quota(&self, _guard: &WriteGuard<'_>, tenant: &TenantRecord) -> Result<(), Error> {
        let mut active = 0usize;
        for id in self
            .store
            .child_ids(Index::TenantSubscriptions, &tenant.id)?
        {
            if self
                .store
                .find_subscription(&id)?
                .is_some_and(|s| is_active(&s))
            {
                active += 1;
            }
        }
        let limit = tenant.max_active_subscriptions();
        if active >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return Err(Error::FailedPrecondition(format!(
                "tenant \"{}\" already has {active} active subscriptions, its limit \
                 (max_active_subscriptions)",
                tenant.id
            )));
        }
        Ok(())
    }

    /// Returns the subscription and the paths it changed.
    fn update(
        &self,
        caller: &Caller,
        req: UpdateSubscriptionRequest,
    ) -> Result<(Subscription, Vec<String>), Error> {
        let input = validate::present("subscription", req.subscription.as_ref())?;
        let id = validate::id("subscription.id", &input.id)?;
        let paths = validate::update_paths(req.update_mask.as_ref(), UPDATE_PATHS, || {
            given_fields(input)
        })?;
        let guard = self.store.lock_writes();
        let mut record = self.subscription(caller, id)?;
        let was_ed25519 = signs_with_ed25519(record.signature_scheme);
        apply(&mut record, input, &paths)?;
        if signs_with_ed25519(record.signature_scheme) != was_ed25519 {
            // An HMAC secret cannot sign v1a, nor an ed25519 key v1 or MAAC: the subscription
            // needs a key of the other kind, and a previous one of the old kind would not sign.
            self.replace_secret(&mut record);
        }
        let tenant = self.store.tenant(&record.tenant_id)?;
        let now = Time::now();
        if is_active(&record) && paths.iter().any(|p| p == "event_types") {
            check_entitlements(&tenant, &record.event_types, now)?;
        }
        record.update_time = now;
        let mut change = Change::default();
        change.put_subscription(&record);
        self.store.commit(&guard, change)?;
        drop(guard);
        if paths.iter().any(|p| p == "url") {
            // Failures of the old URL say nothing about the new one.
            system_stop::start_afresh(&self.store, &record.id, now)?;
        }
        Ok((to_proto(&record, Some(&tenant), now), paths))
    }

    fn stop(&self, caller: &Caller, id: &str) -> Result<Subscription, Error> {
        let guard = self.store.lock_writes();
        let mut record = self.subscription(caller, id)?;
        let tenant = self.store.find_tenant(&record.tenant_id)?;
        let now = Time::now();
        if is_active(&record) {
            record.state = SubscriptionState::Stopped as i32;
            record.state_reason = STOPPED_BY_ADMIN.to_owned();
            record.stopped_by_system = false;
            record.update_time = now;
            let mut change = Change::default();
            change.put_subscription(&record);
            self.store.commit(&guard, change)?;
        }
        Ok(to_proto(&record, tenant.as_ref(), now))
    }

    fn resume(&self, caller: &Caller, id: &str) -> Result<Subscription, Error> {
        let guard = self.store.lock_writes();
        let mut record = self.subscription(caller, id)?;
        let tenant = self.store.tenant(&record.tenant_id)?;
        let now = Time::now();
        if !is_active(&record) {
            check_entitlements(&tenant, &record.event_types, now)?;
            self.check_quota(&guard, &tenant)?;
            record.state = SubscriptionState::Active as i32;
            record.state_reason = String::new();
            record.stopped_by_system = false;
            record.update_time = now;
            let mut change = Change::default();
            change.put_subscription(&record);
            self.store.commit(&guard, change)?;
            // A resumed subscription gets a whole failure window before the system stops it again.
            system_stop::start_afresh(&self.store, id, now)?;
        }
        Ok(to_proto(&record, Some(&tenant), now))
    }

    /// Gives `record` a fresh secret of the kind its scheme signs with, and ends any previous one.
    fn replace_secret(&self, record: &mut SubscriptionRecord) {
        record.secret = self.store.sealer().seal(
            &new_secret(record.signature_scheme),
            Place::new(&record.id, sealed_field::SECRET),
        );
        record.previous_secret = None;
    }

    /// The current secret, and the subscription's tenant for the audit trail.
    fn reveal(&self, caller: &Caller, id: &str) -> Result<(RevealSecretResponse, String), Error> {
        let record = self.subscription(caller, id)?;
        Ok((
            self.secret_response(&record, Time::now())?,
            record.tenant_id,
        ))
    }

    /// What a receiver verifies with: the share secret, or for ed25519 only the public key.
    fn secret_response(
        &self,
        record: &SubscriptionRecord,
        now: Time,
    ) -> Result<RevealSecretResponse, Error> {
        let secret = self
            .store
            .sealer()
            .open(&record.secret, Place::new(&record.id, sealed_field::SECRET))?;
        let (secret, public_key) = if signs_with_ed25519(record.signature_scheme) {
            let key = SigningKey::parse(&secret).map_err(|e| Error::Corrupt {
                tree: "subscriptions",
                detail: format!("the signing key of {}: {e}", record.id),
            })?;
            (String::new(), key.public_key().to_whpk_string())
        } else {
            (secret, String::new())
        };
        Ok(RevealSecretResponse {
            secret,
            public_key,
            previous_secret_valid_until: record
                .previous_secret
                .as_ref()
                .filter(|p| p.still_valid(now))
                .map(|p| p.valid_until.to_proto()),
        })
    }

    /// The new secret, and the subscription's tenant for the audit trail.
    fn rotate(
        &self,
        caller: &Caller,
        req: &RotateSecretRequest,
    ) -> Result<(RevealSecretResponse, String), Error> {
        let id = validate::id("id", &req.id)?;
        let grace = validate::grace_period("grace_period", req.grace_period.as_ref())?;
        let guard = self.store.lock_writes();
        let mut record = self.subscription(caller, id)?;
        let now = Time::now();
        let sealer = self.store.sealer();
        let current = Place::new(&record.id, sealed_field::SECRET);
        // Each value is bound to its field: the current secret is sealed again as the previous.
        record.previous_secret = if grace.is_zero() {
            None
        } else {
            Some(PreviousSecret {
                secret: sealer.reseal(
                    &record.secret,
                    current,
                    Place::new(&record.id, sealed_field::PREVIOUS_SECRET),
                )?,
                valid_until: now.plus(grace),
            })
        };
        record.secret = sealer.seal(&new_secret(record.signature_scheme), current);
        record.update_time = now;
        let mut change = Change::default();
        change.put_subscription(&record);
        self.store.commit(&guard, change)?;
        Ok((self.secret_response(&record, now)?, record.tenant_id))
    }

    /// Returns the tenant the subscription belonged to.
    fn delete(&self, caller: &Caller, id: &str) -> Result<String, Error> {
        let guard = self.store.lock_writes();
        let record = self.subscription(caller, id)?;
        let mut change = Change::default();
        change.remove_subscription(&record.tenant_id, id);
        self.store.commit(&guard, change)?;
        system_stop::forget(&self.store, id)?;
        Ok(record.tenant_id)
    }

    /// Sends a sample of the event type (the subscription's first when none is named) to the
    /// subscription's URL now, whatever its state and entitlements: it is how a brand checks an
    /// integration before resuming it.
    async fn send_test(
        &self,
        caller: &Caller,
        req: &SendTestEventRequest,
    ) -> Result<SendTestEventResponse, Error> {
        let id = validate::id("id", &req.id)?;
        let record = self.subscription(caller, id)?;
        let topic = match req.event_type.as_str() {
            "" => record.event_types.first().cloned().unwrap_or_default(),
            named => named.to_owned(),
        };
        if topics::zone_of(&topic).is_none() {
            return Err(Error::invalid(
                "event_type",
                format!(
                    "unknown event type {topic:?} (known: {})",
                    topics::known_names()
                ),
            ));
        }
        let now = Time::now();
        let sealer = self.store.sealer();
        let at = |field| Place::new(&record.id, field);
        let mut secrets = vec![sealer.open(&record.secret, at(sealed_field::SECRET))?];
        if let Some(previous) = record
            .previous_secret
            .as_ref()
            .filter(|p| p.still_valid(now))
        {
            secrets.push(sealer.open(&previous.secret, at(sealed_field::PREVIOUS_SECRET))?);
        }
        let scheme =
            SignatureScheme::try_from(record.signature_scheme).unwrap_or(SignatureScheme::Maac);
        let target = TestTarget {
            url: &record.url,
            scheme,
            secrets: &secrets,
        };
        Ok(self.test_events.send(&target, &topic).await)
    }

    fn get(&self, caller: &Caller, id: &str) -> Result<Subscription, Error> {
        let record = self.subscription(caller, id)?;
        let tenant = self.store.find_tenant(&record.tenant_id)?;
        Ok(to_proto(&record, tenant.as_ref(), Time::now()))
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListSubscriptionsRequest,
    ) -> Result<ListSubscriptionsResponse, Error> {
        let tenant_id = validate::id("tenant_id", caller.listing_tenant(&req.tenant_id)?)?;
        let prefix = index_prefix(tenant_id);
        let page = Page::new(req.page_size, &req.page_token, &prefix)?;
        let tenant = self.store.tenant(tenant_id)?;
        let entries = page.read(self.store.index_tree(Index::TenantSubscriptions))?;
        let now = Time::now();
        let mut subscriptions = Vec::with_capacity(entries.items.len());
        for (key, _) in &entries.items {
            if let Some(record) = self
                .store
                .find_subscription(&child_id_of(key, prefix.len()))?
            {
                subscriptions.push(to_proto(&record, Some(&tenant), now));
            }
        }
        Ok(ListSubscriptionsResponse {
            subscriptions,
            next_page_token: entries.next_page_token,
        })
    }
}

/// Copies the fields named by `paths` from `input` into `record`, validating each.
fn apply(
    record: &mut SubscriptionRecord,
    input: &Subscription,
    paths: &[String],
) -> Result<(), Error> {
    for path in paths {
        match path.as_str() {
            "name" => record.name = validate::name("subscription.name", &input.name)?,
            "url" => record.url = validate::http_url("subscription.url", &input.url)?,
            "event_types" => record.event_types = event_types(&input.event_types)?,
            "signature_scheme" => {
                record.signature_scheme = match SignatureScheme::try_from(input.signature_scheme) {
                    Ok(SignatureScheme::Unspecified) => SignatureScheme::Maac as i32,
                    Ok(scheme) => scheme as i32,
                    Err(_) => {
                        return Err(Error::invalid(
                            "subscription.signature_scheme",
                            "must be MAAC, STANDARD_WEBHOOKS, BOTH or STANDARD_WEBHOOKS_ED25519",
                        ));
                    }
                };
            }
            _ => {}
        }
    }
    Ok(())
}

fn event_types(input: &[String]) -> Result<Vec<String>, Error> {
    if input.is_empty() {
        return Err(Error::invalid(
            "subscription.event_types",
            "must name at least one event type",
        ));
    }
    let mut seen = HashSet::new();
    for (i, topic) in input.iter().enumerate() {
        let field = format!("subscription.event_types[{i}]");
        if topics::zone_of(topic).is_none() {
            return Err(Error::invalid(
                field,
                format!(
                    "unknown event type {topic:?} (known: {})",
                    topics::known_names()
                ),
            ));
        }
        if !seen.insert(topic.as_str()) {
            return Err(Error::invalid(field, format!("{topic:?} is listed twice")));
        }
    }
    Ok(input.to_vec())
}

/// Why `topic` cannot be delivered for `tenant` at `now`, if it cannot.
fn entitlement_problem(tenant: &TenantRecord, topic: &str, now: Time) -> Option<String> {
    let zone = topics::zone_of(topic)?;
    let zone_name = zone.as_str_name();
    match tenant.zone_valid_until(zone as i32) {
        None => Some(format!(
            "event type \"{topic}\" needs {zone_name}, which tenant \"{}\" has not bought",
            tenant.id
        )),
        Some(until) if until <= now => Some(format!(
            "event type \"{topic}\" needs {zone_name}, whose entitlement ended at {}",
            until.rfc3339()
        )),
        Some(_) => None,
    }
}

fn check_entitlements(
    tenant: &TenantRecord,
    event_types: &[String],
    now: Time,
) -> Result<(), Error> {
    match event_types
        .iter()
        .find_map(|t| entitlement_problem(tenant, t, now))
    {
        Some(problem) => Err(Error::FailedPrecondition(problem)),
        None => Ok(()),
    }
}

/// The subscription as returned; `valid_until` and (for an active one) `state_reason` derive from
/// the tenant's current entitlements.
pub(crate) fn to_proto(
    r: &SubscriptionRecord,
    tenant: Option<&TenantRecord>,
    now: Time,
) -> Subscription {
    let valid_until = tenant.and_then(|t| {
        r.event_types
            .iter()
            .filter_map(|topic| topics::zone_of(topic))
            .filter_map(|zone| t.zone_valid_until(zone as i32))
            .min()
    });
    let state_reason = match tenant {
        Some(t) if is_active(r) => r
            .event_types
            .iter()
            .filter_map(|topic| entitlement_problem(t, topic, now))
            .collect::<Vec<_>>()
            .join("; "),
        _ => r.state_reason.clone(),
    };
    Subscription {
        id: r.id.clone(),
        tenant_id: r.tenant_id.clone(),
        name: r.name.clone(),
        url: r.url.clone(),
        event_types: r.event_types.clone(),
        state: r.state,
        signature_scheme: r.signature_scheme,
        valid_until: valid_until.map(Time::to_proto),
        create_time: Some(r.create_time.to_proto()),
        update_time: Some(r.update_time.to_proto()),
        state_reason,
        stopped_by_system: r.stopped_by_system,
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionApi {
    async fn create_subscription(
        &self,
        request: Request<CreateSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = Caller::of(&request)?;
        let fields = request
            .get_ref()
            .subscription
            .as_ref()
            .map(given_fields)
            .unwrap_or_default();
        let subscription = self.create(&caller, request.into_inner())?;
        self.audit.record(
            &caller,
            &method("CreateSubscription"),
            &subscription.tenant_id,
            &subscription.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(subscription))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        Ok(Response::new(self.get(&caller, id)?))
    }

    async fn list_subscriptions(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn update_subscription(
        &self,
        request: Request<UpdateSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = Caller::of(&request)?;
        let (subscription, paths) = self.update(&caller, request.into_inner())?;
        let fields: Vec<&str> = paths.iter().map(String::as_str).collect();
        self.audit.record(
            &caller,
            &method("UpdateSubscription"),
            &subscription.tenant_id,
            &subscription.id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(subscription))
    }

    async fn delete_subscription(
        &self,
        request: Request<DeleteSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let tenant_id = self.delete(&caller, id)?;
        self.audit
            .record(&caller, &method("DeleteSubscription"), &tenant_id, id, &[])?;
        self.store.flush().await?;
        Ok(Response::new(()))
    }

    async fn stop_subscription(
        &self,
        request: Request<StopSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let subscription = self.stop(&caller, id)?;
        self.audit.record(
            &caller,
            &method("StopSubscription"),
            &subscription.tenant_id,
            id,
            &["state"],
        )?;
        self.store.flush().await?;
        Ok(Response::new(subscription))
    }

    async fn resume_subscription(
        &self,
        request: Request<ResumeSubscriptionRequest>,
    ) -> Result<Response<Subscription>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let subscription = self.resume(&caller, id)?;
        self.audit.record(
            &caller,
            &method("ResumeSubscription"),
            &subscription.tenant_id,
            id,
            &["state"],
        )?;
        self.store.flush().await?;
        Ok(Response::new(subscription))
    }

    async fn reveal_secret(
        &self,
        request: Request<RevealSecretRequest>,
    ) -> Result<Response<RevealSecretResponse>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let (secret, tenant_id) = self.reveal(&caller, id)?;
        self.audit
            .record(&caller, &method("RevealSecret"), &tenant_id, id, &[])?;
        // A reveal changes no config; the flush only makes its audit event durable.
        self.store.flush().await?;
        Ok(Response::new(secret))
    }

    async fn rotate_secret(
        &self,
        request: Request<RotateSecretRequest>,
    ) -> Result<Response<RevealSecretResponse>, Status> {
        let caller = Caller::of(&request)?;
        let (response, tenant_id) = self.rotate(&caller, request.get_ref())?;
        let mut fields = vec!["secret"];
        if response.previous_secret_valid_until.is_some() {
            fields.push("grace_period");
        }
        self.audit.record(
            &caller,
            &method("RotateSecret"),
            &tenant_id,
            &request.get_ref().id,
            &fields,
        )?;
        self.store.flush().await?;
        Ok(Response::new(response))
    }

    async fn send_test_event(
        &self,
        request: Request<SendTestEventRequest>,
    ) -> Result<Response<SendTestEventResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(
            self.send_test(&caller, request.get_ref()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hookplane_proto::v1::{Entitlements, Tenant, Zone};
    use tonic::Code;

    use super::*;
    use crate::test_fixtures::*;

    fn api(store: &Store) -> SubscriptionApi {
        subscription_api(store)
    }

    async fn stop(store: &Store, id: &str) -> Subscription {
        api(store)
            .stop_subscription(operator(StopSubscriptionRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn resume(store: &Store, id: &str) -> Result<Subscription, Status> {
        api(store)
            .resume_subscription(operator(ResumeSubscriptionRequest { id: id.into() }))
            .await
            .map(Response::into_inner)
    }

    async fn reveal(store: &Store, id: &str) -> RevealSecretResponse {
        api(store)
            .reveal_secret(operator(RevealSecretRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    fn tenant_with_zones(zones: Vec<hookplane_proto::v1::ZoneEntitlement>) -> Tenant {
        Tenant {
            entitlements: Some(Entitlements {
                zones,
                ..Default::default()
            }),
            ..tenant_input()
        }
    }

    #[tokio::test]
    async fn a_new_subscription_is_active_and_signs_maac_by_default() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        assert!(sub.id.starts_with("sub_"));
        assert_eq!(sub.state, SubscriptionState::Active as i32);
        assert_eq!(sub.signature_scheme, SignatureScheme::Maac as i32);
        assert!(sub.state_reason.is_empty());
    }

    #[tokio::test]
    async fn a_share_secret_is_whsec_and_base64_of_32_bytes() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let secret = reveal(&store, &sub.id).await.secret;
        let encoded = secret.strip_prefix("whsec_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 32);
    }

    /// The subscription's signing secret as stored, opened.
    fn stored_secret(store: &Store, id: &str) -> String {
        let record = store.subscription(id).unwrap();
        store
            .sealer()
            .open(&record.secret, Place::new(id, sealed_field::SECRET))
            .unwrap()
    }

    async fn create_ed25519(store: &Store, tenant_id: &str) -> Subscription {
        let mut input = subscription_input();
        input.signature_scheme = SignatureScheme::StandardWebhooksEd25519 as i32;
        create_subscription(store, tenant_id, input).await.unwrap()
    }

    async fn set_scheme(store: &Store, id: &str, scheme: SignatureScheme) {
        api(store)
            .update_subscription(operator(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    id: id.into(),
                    signature_scheme: scheme as i32,
                    ..Default::default()
                }),
                update_mask: None,
            }))
            .await
            .unwrap();
    }

    async fn rotate(store: &Store, id: &str, grace_seconds: i64) -> RevealSecretResponse {
        api(store)
            .rotate_secret(operator(RotateSecretRequest {
                id: id.into(),
                grace_period: Some(prost_types::Duration {
                    seconds: grace_seconds,
                    nanos: 0,
                }),
            }))
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn an_ed25519_subscription_reveals_only_the_whpk_public_key_of_its_sealed_whsk_key() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_ed25519(&store, &tenant.id).await;
        assert_eq!(
            sub.signature_scheme,
            SignatureScheme::StandardWebhooksEd25519 as i32
        );
        let revealed = reveal(&store, &sub.id).await;
        assert!(revealed.secret.is_empty());
        let stored = stored_secret(&store, &sub.id);
        assert!(
            stored.starts_with("whsk_"),
            "the stored key is a signing key"
        );
        let key = SigningKey::parse(&stored).unwrap();
        assert_eq!(revealed.public_key, key.public_key().to_whpk_string());
        let encoded = revealed.public_key.strip_prefix("whpk_").unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_symmetric_subscription_reveals_no_public_key() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        assert!(reveal(&store, &sub.id).await.public_key.is_empty());
    }

    #[tokio::test]
    async fn switching_between_symmetric_and_ed25519_gives_a_fresh_secret_of_the_right_kind() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let whsec = stored_secret(&store, &sub.id);
        rotate(&store, &sub.id, 600).await;
        set_scheme(&store, &sub.id, SignatureScheme::StandardWebhooksEd25519).await;
        let whsk = stored_secret(&store, &sub.id);
        assert!(
            whsk.starts_with("whsk_"),
            "ed25519 signs with a signing key"
        );
        let record = store.subscription(&sub.id).unwrap();
        assert!(
            record.previous_secret.is_none(),
            "an HMAC secret cannot sign v1a"
        );
        assert!(!reveal(&store, &sub.id).await.public_key.is_empty());

        set_scheme(&store, &sub.id, SignatureScheme::StandardWebhooks).await;
        let back = stored_secret(&store, &sub.id);
        assert!(back.starts_with("whsec_"), "v1 signs with an HMAC secret");
        assert_ne!(back, whsec);
        assert_eq!(reveal(&store, &sub.id).await.secret, back);
    }

    #[tokio::test]
    async fn switching_among_symmetric_schemes_keeps_the_secret() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let before = stored_secret(&store, &sub.id);
        set_scheme(&store, &sub.id, SignatureScheme::Both).await;
        assert_eq!(stored_secret(&store, &sub.id), before);
    }

    #[tokio::test]
    async fn rotating_an_ed25519_key_with_grace_keeps_the_old_key_signing() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_ed25519(&store, &tenant.id).await;
        let old_key = stored_secret(&store, &sub.id);
        let old_public = reveal(&store, &sub.id).await.public_key;
        let rotated = rotate(&store, &sub.id, 600).await;
        assert!(rotated.secret.is_empty());
        assert!(rotated.public_key.starts_with("whpk_"));
        assert_ne!(rotated.public_key, old_public);
        assert!(rotated.previous_secret_valid_until.is_some());
        assert!(stored_secret(&store, &sub.id).starts_with("whsk_"));
        let record = store.subscription(&sub.id).unwrap();
        let previous = record.previous_secret.as_ref().unwrap();
        let at = Place::new(&record.id, sealed_field::PREVIOUS_SECRET);
        assert_eq!(store.sealer().open(&previous.secret, at).unwrap(), old_key);
    }

    #[tokio::test]
    async fn an_unknown_event_type_is_invalid_and_the_catalog_is_listed() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = subscription_input();
        input.event_types = vec!["foo".into()];
        let status = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("subscription.event_types[0]: unknown event type \"foo\" (known: ")
        );
        assert!(status.message().contains("message.first_open"));
    }

    #[tokio::test]
    async fn no_event_types_is_invalid() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = subscription_input();
        input.event_types.clear();
        assert_status(
            create_subscription(&store, &tenant.id, input).await,
            Code::InvalidArgument,
            "subscription.event_types: must name at least one event type",
        );
    }

    #[tokio::test]
    async fn an_event_type_of_an_unbought_zone_is_refused() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut input = subscription_input();
        input.event_types = vec!["message.first_open".into()];
        assert_status(
            create_subscription(&store, &tenant.id, input).await,
            Code::FailedPrecondition,
            &format!(
                "event type \"message.first_open\" needs ZONE_2, which tenant \"{}\" has not bought",
                tenant.id
            ),
        );
    }

    #[tokio::test]
    async fn an_event_type_of_an_expired_zone_is_refused() {
        let (_dir, store) = store();
        let ended = in_days(-1);
        let tenant = create_tenant(&store, tenant_with_zones(vec![zone(Zone::Zone1, ended)])).await;
        let status = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().starts_with(
                "event type \"receipt.receipt_validated\" needs ZONE_1, whose entitlement ended at "
            ),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn valid_until_is_the_earliest_end_among_its_zones() {
        let (_dir, store) = store();
        let zone_2_end = in_days(30);
        let tenant = create_tenant(
            &store,
            tenant_with_zones(vec![
                zone(Zone::Zone1, in_days(365)),
                zone(Zone::Zone2, zone_2_end),
            ]),
        )
        .await;
        let mut input = subscription_input();
        input.event_types = vec![
            "receipt.receipt_validated".into(),
            "message.first_open".into(),
        ];
        let sub = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap();
        assert_eq!(sub.valid_until, Some(zone_2_end));
    }

    #[tokio::test]
    async fn the_fourth_active_subscription_is_refused() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        for _ in 0..3 {
            create_subscription(&store, &tenant.id, subscription_input())
                .await
                .unwrap();
        }
        assert_status(
            create_subscription(&store, &tenant.id, subscription_input()).await,
            Code::FailedPrecondition,
            &format!(
                "tenant \"{}\" already has 3 active subscriptions, its limit (max_active_subscriptions)",
                tenant.id
            ),
        );
    }

    #[tokio::test]
    async fn a_stopped_subscription_frees_its_place_and_resuming_needs_one() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let mut subs = Vec::new();
        for _ in 0..3 {
            subs.push(
                create_subscription(&store, &tenant.id, subscription_input())
                    .await
                    .unwrap(),
            );
        }
        stop(&store, &subs[0].id).await;
        create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let refused = resume(&store, &subs[0].id).await;
        assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    }

    #[test]
    fn concurrent_creates_never_exceed_the_quota() {
        let (_dir, store) = store();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let tenant = runtime.block_on(create_tenant(&store, tenant_input()));
        let api = Arc::new(api(&store));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let api = Arc::clone(&api);
                let tenant_id = tenant.id.clone();
                std::thread::spawn(move || {
                    api.create(
                        &operator_caller(),
                        CreateSubscriptionRequest {
                            tenant_id,
                            subscription: Some(subscription_input()),
                        },
                    )
                    .is_ok()
                })
            })
            .collect();
        let created = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(created, 3);
    }

    #[tokio::test]
    async fn stopping_records_why_and_resuming_clears_it() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let stopped = stop(&store, &sub.id).await;
        assert_eq!(stopped.state, SubscriptionState::Stopped as i32);
        assert_eq!(stopped.state_reason, "stopped by an admin");
        let resumed = resume(&store, &sub.id).await.unwrap();
        assert_eq!(resumed.state, SubscriptionState::Active as i32);
        assert!(resumed.state_reason.is_empty());
    }

    #[tokio::test]
    async fn stop_and_resume_each_advance_the_revision() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let before = store.revision();
        stop(&store, &sub.id).await;
        resume(&store, &sub.id).await.unwrap();
        assert_eq!(store.revision(), before + 2);
    }

    #[tokio::test]
    async fn a_rotation_with_grace_returns_the_new_secret_and_the_old_ones_end() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let old = reveal(&store, &sub.id).await.secret;
        let rotated = api(&store)
            .rotate_secret(operator(RotateSecretRequest {
                id: sub.id.clone(),
                grace_period: Some(prost_types::Duration {
                    seconds: 600,
                    nanos: 0,
                }),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(rotated.secret, old);
        assert!(rotated.previous_secret_valid_until.is_some());
        assert_eq!(reveal(&store, &sub.id).await.secret, rotated.secret);
        let record = store.subscription(&sub.id).unwrap();
        let previous = record.previous_secret.as_ref().unwrap();
        let at = Place::new(&record.id, sealed_field::PREVIOUS_SECRET);
        assert_eq!(store.sealer().open(&previous.secret, at).unwrap(), old);
    }

    #[tokio::test]
    async fn a_rotation_without_grace_ends_the_old_secret_at_once() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let rotated = api(&store)
            .rotate_secret(operator(RotateSecretRequest {
                id: sub.id.clone(),
                grace_period: None,
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(rotated.previous_secret_valid_until.is_none());
    }

    #[tokio::test]
    async fn updating_event_types_of_an_active_subscription_checks_zones() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let result = api(&store)
            .update_subscription(operator(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    id: sub.id,
                    event_types: vec!["message.first_open".into()],
                    ..Default::default()
                }),
                update_mask: None,
            }))
            .await;
        assert_eq!(result.unwrap_err().code(), Code::FailedPrecondition);
    }

    /// A one-shot HTTP server answering `status`; hands back the raw request it got.
    async fn answer_once(status: u16) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while !got.ends_with(b"}") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok");
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (url, served)
    }

    async fn send_test(
        store: &Store,
        id: &str,
        event_type: &str,
    ) -> Result<SendTestEventResponse, Status> {
        api(store)
            .send_test_event(operator(SendTestEventRequest {
                id: id.into(),
                event_type: event_type.into(),
            }))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn send_test_reaches_a_stopped_subscriptions_url_and_reports_the_answer() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let (url, served) = answer_once(200).await;
        let mut input = subscription_input();
        input.url = url;
        let sub = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap();
        stop(&store, &sub.id).await;
        let result = send_test(&store, &sub.id, "receipt.receipt_validated")
            .await
            .unwrap();
        assert!(result.success);
        assert_eq!(result.http_status, 200);
        assert_eq!(result.response_body, "ok");
        let request = served.await.unwrap();
        assert!(request.ends_with(&result.request_body), "{request}");
    }

    #[tokio::test]
    async fn send_test_needs_no_entitlement_for_the_topic() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let (url, _served) = answer_once(200).await;
        let mut input = subscription_input();
        input.url = url;
        let sub = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap();
        let result = send_test(&store, &sub.id, "message.first_open")
            .await
            .unwrap();
        assert!(result.success);
        assert!(
            result
                .request_body
                .contains("\"topic\":\"message.first_open\"")
        );
    }

    #[tokio::test]
    async fn send_test_signs_with_the_revealed_secret() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let (url, served) = answer_once(200).await;
        let mut input = subscription_input();
        input.url = url;
        let sub = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap();
        let secret = reveal(&store, &sub.id).await.secret;
        let result = send_test(&store, &sub.id, "").await.unwrap();
        let request = served.await.unwrap();
        let signature = request
            .lines()
            .find_map(|l| l.strip_prefix("cresclab-signature: "))
            .unwrap();
        assert!(
            hookplane_verify::maac::verify(
                secret.as_bytes(),
                result.request_body.as_bytes(),
                signature.trim()
            )
            .is_ok()
        );
        assert!(
            result
                .request_body
                .contains("\"topic\":\"receipt.receipt_validated\"")
        );
    }

    #[tokio::test]
    async fn send_test_of_an_ed25519_subscription_signs_v1a_that_the_revealed_public_key_verifies()
    {
        use hookplane_verify::standard_ed25519::{self, PublicKey};
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let (url, served) = answer_once(200).await;
        let mut input = subscription_input();
        input.url = url;
        input.signature_scheme = SignatureScheme::StandardWebhooksEd25519 as i32;
        let sub = create_subscription(&store, &tenant.id, input)
            .await
            .unwrap();
        let public_key = PublicKey::parse(&reveal(&store, &sub.id).await.public_key).unwrap();
        let result = send_test(&store, &sub.id, "").await.unwrap();
        let request = served.await.unwrap();
        let header = |name: &str| {
            request
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap()
                .trim()
                .to_owned()
        };
        let signature = header("webhook-signature");
        assert!(signature.starts_with("v1a,"), "{signature}");
        assert!(!request.contains("cresclab-signature"));
        let timestamp = header("webhook-timestamp");
        assert!(
            standard_ed25519::verify(
                &[public_key],
                &header("webhook-id"),
                &timestamp,
                &signature,
                result.request_body.as_bytes(),
                timestamp.parse().unwrap(),
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn send_test_of_an_unknown_event_type_is_invalid() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let status = send_test(&store, &sub.id, "order.created")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("event_type: unknown event type \"order.created\" (known: "),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn send_test_of_an_unknown_subscription_is_not_found() {
        let (_dir, store) = store();
        let status = send_test(&store, "sub_nope", "prize.points_added")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn a_zone_that_ended_shows_in_the_active_subscriptions_reason() {
        use hookplane_proto::v1::UpdateTenantRequest;
        use hookplane_proto::v1::tenant_service_server::TenantService as _;
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        crate::tenants::TenantApi::new(store.clone())
            .update_tenant(operator(UpdateTenantRequest {
                tenant: Some(Tenant {
                    id: tenant.id.clone(),
                    entitlements: Some(Entitlements {
                        zones: vec![zone(Zone::Zone1, in_days(-1))],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["entitlements.zones".into()],
                }),
            }))
            .await
            .unwrap();
        let got = api(&store)
            .get_subscription(operator(GetSubscriptionRequest { id: sub.id }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.state, SubscriptionState::Active as i32);
        assert!(
            got.state_reason.starts_with(
                "event type \"receipt.receipt_validated\" needs ZONE_1, whose entitlement ended at "
            ),
            "{}",
            got.state_reason
        );
    }
}

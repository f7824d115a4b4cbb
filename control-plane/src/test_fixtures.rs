//! Builders shared by the crate's unit tests: a store in a temporary directory and requests for
//! resources that pass validation.

use hookplane_proto::v1::{
    Channel, CreateChannelRequest, CreateForwardingSetRequest, CreateSubscriptionRequest,
    CreateTenantRequest, Entitlements, ForwardingSet, Subscription, Tenant, Zone, ZoneEntitlement,
};
use tonic::{Code, Request, Status};

use crate::caller::Caller;
use crate::channels::ChannelApi;
use crate::clock::Time;
use crate::forwarding::ForwardingApi;
use crate::sealing::{MasterKey, Sealer};
use crate::store::Store;
use crate::subscriptions::SubscriptionApi;
use crate::tenants::TenantApi;
use crate::test_events::TestEvents;

/// The bootstrap admin token's caller: an operator.
pub(crate) fn operator_caller() -> Caller {
    Caller::bootstrap(None)
}

/// A request as the admin check passes it on for the bootstrap admin token.
pub(crate) fn operator<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(operator_caller());
    request
}

/// The attempts `log` lists for a forwarding set, as an operator sees them (first page).
pub(crate) async fn listed_attempts(
    log: &crate::delivery_log::DeliveryLog,
    forwarding_set_id: &str,
) -> Vec<hookplane_proto::v1::DeliveryAttempt> {
    use hookplane_proto::v1::delivery_service_server::DeliveryService as _;
    log.list_delivery_attempts(operator(hookplane_proto::v1::ListDeliveryAttemptsRequest {
        forwarding_set_id: forwarding_set_id.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
    .attempts
}

/// A tenant admin token's caller.
pub(crate) fn tenant_admin_caller(tenant_id: &str) -> Caller {
    Caller {
        token_id: "tok_01TENANTADMIN0000000000000".into(),
        name: "brand console".into(),
        scope: crate::caller::Scope::Tenant(tenant_id.into()),
        peer: None,
    }
}

/// A request as the admin check passes it on for `caller`.
pub(crate) fn as_caller<T>(caller: &Caller, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(caller.clone());
    request
}

pub(crate) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("store"),
        Sealer::new(&MasterKey::generate()),
    )
    .unwrap();
    (dir, store)
}

/// A tenant as the store keeps it, written without the API.
pub(crate) fn tenant_record(id: &str) -> crate::store::TenantRecord {
    crate::store::TenantRecord {
        id: id.into(),
        display_name: "Brand".into(),
        notification_emails: vec![],
        zones: vec![],
        max_active_subscriptions: None,
        max_forwarding_sets_per_channel: None,
        create_time: Time::now(),
        update_time: Time::now(),
        purged_before: None,
    }
}

pub(crate) fn in_days(days: i64) -> prost_types::Timestamp {
    let now = Time::now();
    prost_types::Timestamp {
        seconds: now.seconds + days * 86_400,
        nanos: 0,
    }
}

pub(crate) fn zone(zone: Zone, valid_until: prost_types::Timestamp) -> ZoneEntitlement {
    ZoneEntitlement {
        zone: zone as i32,
        valid_until: Some(valid_until),
    }
}

/// A tenant that bought ZONE_1 for a year.
pub(crate) fn tenant_input() -> Tenant {
    Tenant {
        display_name: "Brand".into(),
        notification_emails: vec!["ops@brand.example".into()],
        entitlements: Some(Entitlements {
            zones: vec![zone(Zone::Zone1, in_days(365))],
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn channel_input() -> Channel {
    Channel {
        display_name: "Brand OA".into(),
        line_channel_secret: "line-secret-0123456789".into(),
        ..Default::default()
    }
}

pub(crate) fn raw_set_input() -> ForwardingSet {
    ForwardingSet {
        name: "CRM".into(),
        url: "https://crm.brand.example/line".into(),
        ..Default::default()
    }
}

pub(crate) fn subscription_input() -> Subscription {
    Subscription {
        name: "Receipts".into(),
        url: "https://hooks.brand.example/receipts".into(),
        event_types: vec!["receipt.receipt_validated".into()],
        ..Default::default()
    }
}

pub(crate) async fn create_tenant(store: &Store, tenant: Tenant) -> Tenant {
    use hookplane_proto::v1::tenant_service_server::TenantService as _;
    TenantApi::new(store.clone())
        .create_tenant(operator(CreateTenantRequest {
            tenant: Some(tenant),
        }))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn create_channel(store: &Store, tenant_id: &str) -> Channel {
    use hookplane_proto::v1::channel_service_server::ChannelService as _;
    ChannelApi::new(store.clone())
        .create_channel(operator(CreateChannelRequest {
            tenant_id: tenant_id.into(),
            channel: Some(channel_input()),
        }))
        .await
        .unwrap()
        .into_inner()
}

pub(crate) async fn create_forwarding_set(
    store: &Store,
    channel_id: &str,
    set: ForwardingSet,
) -> Result<ForwardingSet, Status> {
    use hookplane_proto::v1::forwarding_service_server::ForwardingService as _;
    ForwardingApi::new(store.clone())
        .create_forwarding_set(operator(CreateForwardingSetRequest {
            channel_id: channel_id.into(),
            forwarding_set: Some(set),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// A store holding a tenant, its channel and a RAW forwarding set of it; returns the set's id.
pub(crate) async fn store_with_forwarding_set() -> (tempfile::TempDir, Store, String) {
    let (dir, store) = store();
    let tenant = create_tenant(&store, tenant_input()).await;
    let channel = create_channel(&store, &tenant.id).await;
    let fwd_id = create_forwarding_set(&store, &channel.id, raw_set_input())
        .await
        .unwrap()
        .id;
    (dir, store, fwd_id)
}

/// The report intake of `log`, following subscription failures with a 60 s stop window.
pub(crate) fn report_intake(
    dir: &tempfile::TempDir,
    store: &Store,
    log: &crate::delivery_log::DeliveryLog,
) -> crate::report_intake::ReportIntake {
    let options = crate::options::ControlOptions::with_data_dir(dir.path());
    let notifier = crate::notify::Notifier::open(store, &options).unwrap();
    let system_stop = crate::system_stop::SystemStop::new(
        store.clone(),
        std::time::Duration::from_secs(60),
        notifier,
    )
    .unwrap();
    let metrics = crate::metrics::ControlMetrics::new(store.clone());
    crate::report_intake::ReportIntake::start(store.clone(), log.clone(), system_stop, metrics)
        .unwrap()
}

/// The subscription service, sending test events to loopback receivers too.
pub(crate) fn subscription_api(store: &Store) -> SubscriptionApi {
    let outbound = hookplane_outbound::OutboundOptions {
        allow_target_network: vec!["127.0.0.0/8".parse().unwrap()],
    };
    SubscriptionApi::new(store.clone(), TestEvents::new(&outbound).unwrap())
}

pub(crate) async fn create_subscription(
    store: &Store,
    tenant_id: &str,
    subscription: Subscription,
) -> Result<Subscription, Status> {
    use hookplane_proto::v1::subscription_service_server::SubscriptionService as _;
    subscription_api(store)
        .create_subscription(operator(CreateSubscriptionRequest {
            tenant_id: tenant_id.into(),
            subscription: Some(subscription),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts the status has `code` and exactly `message`.
#[track_caller]
pub(crate) fn assert_status(
    result: Result<impl std::fmt::Debug, Status>,
    code: Code,
    message: &str,
) {
    let status = result.expect_err("expected an error status");
    assert_eq!(status.code(), code, "{}", status.message());
    assert_eq!(status.message(), message);
}

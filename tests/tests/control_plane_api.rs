//! The admin API of the control plane, over gRPC against the real `hookplane control` process:
//! validation, quotas, zone entitlements, cascades, secrets, pagination, auth.

use hookplane_client::{Client, v1};
use hookplane_tests::{ControlProcess, api::*};
use tonic::Code;

async fn control() -> (ControlProcess, Client) {
    let control = ControlProcess::start().await.expect("control plane starts");
    let client = control.admin().await.expect("admin client connects");
    (control, client)
}

fn assert_status(err: tonic::Status, code: Code, needle: &str) {
    assert_eq!(err.code(), code, "unexpected status: {err:?}");
    assert!(
        err.message().contains(needle),
        "message {:?} should mention {needle:?}",
        err.message()
    );
}

#[tokio::test]
async fn create_tenant_fills_ids_times_and_default_quotas() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    assert!(t.id.starts_with("tnt_"), "{}", t.id);
    assert!(t.create_time.is_some() && t.update_time.is_some());
    let e = t.entitlements.unwrap();
    assert_eq!(e.max_active_subscriptions, Some(3));
    assert_eq!(e.max_forwarding_sets_per_channel, Some(10));
}

#[tokio::test]
async fn tenant_without_name_is_invalid_argument_naming_the_field() {
    let (_cp, client) = control().await;
    let err = client
        .tenants()
        .create_tenant(v1::CreateTenantRequest {
            tenant: Some(tenant("")),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "display_name");
}

#[tokio::test]
async fn tenant_with_a_bad_email_is_invalid_argument_naming_the_field() {
    let (_cp, client) = control().await;
    let mut t = tenant("Brand");
    t.notification_emails = vec!["ok@brand.example".into(), "not-an-email".into()];
    let err = client
        .tenants()
        .create_tenant(v1::CreateTenantRequest { tenant: Some(t) })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "notification_emails[1]");
}

#[tokio::test]
async fn forwarding_url_must_be_http_or_https() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    for bad in ["ftp://example.com/hook", "not a url", ""] {
        let err = create_forwarding_set(&client, &ch.id, bad)
            .await
            .unwrap_err();
        let status = err.downcast::<tonic::Status>().unwrap();
        assert_status(status, Code::InvalidArgument, "url");
    }
}

#[tokio::test]
async fn channel_requires_a_secret() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let err = create_channel(&client, &t.id, "").await.unwrap_err();
    let status = err.downcast::<tonic::Status>().unwrap();
    assert_status(status, Code::InvalidArgument, "line_channel_secret");
}

#[tokio::test]
async fn unknown_event_type_is_invalid_argument_naming_the_field() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let err = client
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: t.id,
            subscription: Some(subscription(
                "crm",
                "https://crm.example/hook",
                &["receipt.receipt_validated", "order.created"],
            )),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "event_types[1]");
}

#[tokio::test]
async fn unknown_resources_are_not_found() {
    let (_cp, client) = control().await;
    let err = client
        .tenants()
        .get_tenant(v1::GetTenantRequest {
            id: "tnt_missing".into(),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::NotFound, "tnt_missing");
    let err = create_channel(&client, "tnt_missing", "s")
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast::<tonic::Status>().unwrap().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn eleventh_forwarding_set_fails_precondition_naming_the_limit() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    for i in 0..10 {
        create_forwarding_set(&client, &ch.id, &format!("https://t{i}.example/hook"))
            .await
            .unwrap();
    }
    let err = create_forwarding_set(&client, &ch.id, "https://t10.example/hook")
        .await
        .unwrap_err();
    let status = err.downcast::<tonic::Status>().unwrap();
    assert_status(status.clone(), Code::FailedPrecondition, "10");
    assert!(status.message().contains("max_forwarding_sets_per_channel"));
}

async fn create_sub(
    client: &Client,
    tenant_id: &str,
    types: &[&str],
) -> Result<v1::Subscription, tonic::Status> {
    client
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: tenant_id.to_owned(),
            subscription: Some(subscription("hook", "https://crm.example/hook", types)),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn fourth_active_subscription_fails_precondition() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    for _ in 0..3 {
        create_sub(&client, &t.id, &["prize.points_added"])
            .await
            .unwrap();
    }
    let err = create_sub(&client, &t.id, &["prize.points_added"])
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "3");
}

#[tokio::test]
async fn stopped_subscriptions_free_quota_and_resume_checks_it_again() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(
            create_sub(&client, &t.id, &["prize.points_added"])
                .await
                .unwrap(),
        );
    }
    let stopped = client
        .subscriptions()
        .stop_subscription(v1::StopSubscriptionRequest {
            id: subs[0].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, v1::SubscriptionState::Stopped as i32);
    create_sub(&client, &t.id, &["prize.points_added"])
        .await
        .unwrap();
    let err = client
        .subscriptions()
        .resume_subscription(v1::ResumeSubscriptionRequest {
            id: subs[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_active_quota() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let attempts = (0..16).map(|_| {
        let client = client.clone();
        let id = t.id.clone();
        tokio::spawn(async move { create_sub(&client, &id, &["pnp.status_updated"]).await })
    });
    let mut created = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => assert_eq!(e.code(), Code::FailedPrecondition),
        }
    }
    assert_eq!(created, 3);
}

#[tokio::test]
async fn event_type_of_a_zone_not_bought_fails_naming_the_zone() {
    let (_cp, client) = control().await;
    let mut t = tenant("Brand");
    t.entitlements.as_mut().unwrap().zones = vec![zone(v1::Zone::Zone1, 30 * DAY)];
    let t = client
        .tenants()
        .create_tenant(v1::CreateTenantRequest { tenant: Some(t) })
        .await
        .unwrap()
        .into_inner();
    let err = create_sub(&client, &t.id, &["message.first_open"])
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "ZONE_2");
}

#[tokio::test]
async fn event_type_of_an_expired_zone_fails_naming_the_zone() {
    let (_cp, client) = control().await;
    let mut t = tenant("Brand");
    t.entitlements.as_mut().unwrap().zones =
        vec![zone(v1::Zone::Zone1, -DAY), zone(v1::Zone::Zone2, 30 * DAY)];
    let t = client
        .tenants()
        .create_tenant(v1::CreateTenantRequest { tenant: Some(t) })
        .await
        .unwrap()
        .into_inner();
    let err = create_sub(&client, &t.id, &["receipt.receipt_validated"])
        .await
        .unwrap_err();
    assert_status(err, Code::FailedPrecondition, "ZONE_1");
}

#[tokio::test]
async fn subscription_valid_until_is_the_earliest_expiry_of_its_zones() {
    let (_cp, client) = control().await;
    let mut t = tenant("Brand");
    let zone1 = zone(v1::Zone::Zone1, 300 * DAY);
    let zone2 = zone(v1::Zone::Zone2, 30 * DAY);
    t.entitlements.as_mut().unwrap().zones = vec![zone1, zone2];
    let t = client
        .tenants()
        .create_tenant(v1::CreateTenantRequest { tenant: Some(t) })
        .await
        .unwrap()
        .into_inner();
    let only_zone1 = create_sub(&client, &t.id, &["prize.points_added"])
        .await
        .unwrap();
    assert_eq!(
        only_zone1.valid_until.unwrap().seconds,
        zone1.valid_until.unwrap().seconds
    );
    let both = create_sub(
        &client,
        &t.id,
        &["prize.points_added", "message.first_open"],
    )
    .await
    .unwrap();
    assert_eq!(
        both.valid_until.unwrap().seconds,
        zone2.valid_until.unwrap().seconds
    );
}

#[tokio::test]
async fn channel_secrets_are_never_returned() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let mut ch = channel("Brand OA", "channel-secret-value");
    ch.line_channel_access_token = "access-token-value".into();
    let created = client
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: t.id.clone(),
            channel: Some(ch),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.ingress_path,
        format!("/api/webhook/line/{}/events", created.id)
    );
    assert!(created.has_access_token);
    let got = client
        .channels()
        .get_channel(v1::GetChannelRequest {
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = client
        .channels()
        .list_channels(v1::ListChannelsRequest {
            tenant_id: t.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .channels;
    for c in [created, got].into_iter().chain(listed) {
        assert!(c.line_channel_secret.is_empty(), "secret returned: {c:?}");
        assert!(
            c.line_channel_access_token.is_empty(),
            "token returned: {c:?}"
        );
    }
}

#[tokio::test]
async fn reveal_secret_returns_the_share_secret_and_rotate_replaces_it() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let sub = create_sub(&client, &t.id, &["prize.points_added"])
        .await
        .unwrap();
    let revealed = client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert!(revealed.starts_with("whsec_"), "{revealed}");
    let rotated = client
        .subscriptions()
        .rotate_secret(v1::RotateSecretRequest {
            id: sub.id.clone(),
            grace_period: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_ne!(rotated, revealed);
    let again = client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_eq!(again, rotated);
}

#[tokio::test]
async fn rotate_channel_secret_shows_the_grace_period() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "old-secret").await.unwrap();
    let rotated = client
        .channels()
        .rotate_channel_secret(v1::RotateChannelSecretRequest {
            id: ch.id,
            new_secret: "new-secret".into(),
            grace_period: Some(duration(std::time::Duration::from_secs(3600))),
        })
        .await
        .unwrap()
        .into_inner();
    let until = rotated
        .previous_secret_valid_until
        .expect("grace end shown");
    let expected = from_now(3600).seconds;
    assert!((until.seconds - expected).abs() < 60, "{until:?}");
    assert!(rotated.line_channel_secret.is_empty());
}

#[tokio::test]
async fn deleting_a_tenant_removes_its_channels_sets_and_subscriptions() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    let fwd = create_forwarding_set(&client, &ch.id, "https://crm.example/hook")
        .await
        .unwrap();
    let sub = create_sub(&client, &t.id, &["prize.points_added"])
        .await
        .unwrap();
    client
        .tenants()
        .delete_tenant(v1::DeleteTenantRequest { id: t.id.clone() })
        .await
        .unwrap();
    assert_eq!(
        client
            .tenants()
            .get_tenant(v1::GetTenantRequest { id: t.id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .channels()
            .get_channel(v1::GetChannelRequest { id: ch.id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .forwarding()
            .get_forwarding_set(v1::GetForwardingSetRequest { id: fwd.id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .subscriptions()
            .get_subscription(v1::GetSubscriptionRequest { id: sub.id })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn deleting_a_channel_removes_its_forwarding_sets() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    let fwd = create_forwarding_set(&client, &ch.id, "https://crm.example/hook")
        .await
        .unwrap();
    client
        .channels()
        .delete_channel(v1::DeleteChannelRequest { id: ch.id })
        .await
        .unwrap();
    let err = client
        .forwarding()
        .get_forwarding_set(v1::GetForwardingSetRequest { id: fwd.id })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The tenant itself stays.
    client
        .tenants()
        .get_tenant(v1::GetTenantRequest { id: t.id })
        .await
        .unwrap();
}

async fn all_tenant_ids(client: &Client, page_size: i32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .tenants()
            .list_tenants(v1::ListTenantsRequest {
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.tenants.len() <= page_size as usize);
        ids.extend(page.tenants.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn pagination_returns_every_item_once_in_creation_order() {
    let (_cp, client) = control().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            create_tenant(&client, &format!("Brand {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    assert_eq!(all_tenant_ids(&client, 3).await, created);
}

#[tokio::test]
async fn pagination_is_stable_while_items_are_added() {
    let (_cp, client) = control().await;
    let mut created = Vec::new();
    for i in 0..4 {
        created.push(
            create_tenant(&client, &format!("Brand {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let first = client
        .tenants()
        .list_tenants(v1::ListTenantsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    created.push(create_tenant(&client, "Late brand").await.unwrap().id);
    let mut seen: Vec<String> = first.tenants.into_iter().map(|t| t.id).collect();
    let mut token = first.next_page_token;
    while !token.is_empty() {
        let page = client
            .tenants()
            .list_tenants(v1::ListTenantsRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.tenants.into_iter().map(|t| t.id));
        token = page.next_page_token;
    }
    assert_eq!(seen, created);
}

#[tokio::test]
async fn a_garbled_page_token_is_invalid_argument() {
    let (_cp, client) = control().await;
    let err = client
        .tenants()
        .list_tenants(v1::ListTenantsRequest {
            page_size: 2,
            page_token: "%%%garbage%%%".into(),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "page_token");
}

#[tokio::test]
async fn update_changes_only_the_masked_fields() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let updated = client
        .tenants()
        .update_tenant(v1::UpdateTenantRequest {
            tenant: Some(v1::Tenant {
                id: t.id.clone(),
                display_name: "Renamed".into(),
                notification_emails: vec!["other@brand.example".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.display_name, "Renamed");
    assert_eq!(updated.notification_emails, t.notification_emails);
    assert_eq!(updated.entitlements, t.entitlements);
}

#[tokio::test]
async fn update_with_an_unknown_mask_path_is_invalid_argument() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let err = client
        .tenants()
        .update_tenant(v1::UpdateTenantRequest {
            tenant: Some(v1::Tenant {
                id: t.id,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["colour".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_status(err, Code::InvalidArgument, "colour");
}

#[tokio::test]
async fn admin_calls_without_the_admin_token_are_unauthenticated() {
    let control = ControlProcess::start().await.unwrap();
    for token in [
        "",
        "wrong-token",
        control.node_token.as_str(),
        control.publisher_token.as_str(),
    ] {
        let client = Client::connect(&control.url(), token).await.unwrap();
        let err = client
            .tenants()
            .list_tenants(v1::ListTenantsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
        assert!(!err.message().contains(&control.admin_token));
    }
}

#[tokio::test]
async fn the_config_stream_needs_the_node_token() {
    let control = ControlProcess::start().await.unwrap();
    let with_admin = Client::connect(&control.url(), &control.admin_token)
        .await
        .unwrap();
    let err = with_admin
        .config()
        .watch_config(v1::WatchConfigRequest {
            node_id: "n1".into(),
            last_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let with_node = Client::connect(&control.url(), &control.node_token)
        .await
        .unwrap();
    let mut stream = with_node
        .config()
        .watch_config(v1::WatchConfigRequest {
            node_id: "n1".into(),
            last_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.snapshot);
}

#[tokio::test]
async fn concurrent_admin_writes_all_complete() {
    let (_cp, client) = control().await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    let writes = (0..32).map(|i| {
        let client = client.clone();
        let tenant = t.id.clone();
        tokio::spawn(async move { create_channel(&client, &tenant, &format!("secret-{i}")).await })
    });
    // Bounded so a store that wedges fails the test instead of hanging the suite.
    let all = tokio::time::timeout(std::time::Duration::from_secs(60), futures_join_all(writes))
        .await
        .expect("every concurrent write completes");
    assert!(all.iter().all(|r| r.is_ok()));
}

async fn futures_join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

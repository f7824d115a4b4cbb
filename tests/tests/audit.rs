//! The audit trail end to end against the real `hookplane` binary: a change and a secret reveal
//! made with a tenant admin token are listed newest first with who, what, which fields and from
//! where, without any secret; a tenant admin lists only its tenant's events; `hookctl audit`.

use hookplane_client::{Client, v1};
use hookplane_tests::{Standalone, api::*, binaries};

const CHANNEL_SECRET: &str = "audit-channel-secret-0001";
const ROTATED_SECRET: &str = "audit-rotated-secret-0002";

async fn tenant_admin(admin: &Client, tenant_id: &str) -> (v1::Token, String) {
    let made = admin
        .tokens()
        .create_token(v1::CreateTokenRequest {
            token: Some(v1::Token {
                display_name: "brand console".into(),
                role: v1::Role::TenantAdmin as i32,
                tenant_id: tenant_id.to_owned(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    (made.token.unwrap(), made.secret)
}

async fn events(client: &Client, request: v1::ListAuditEventsRequest) -> Vec<v1::AuditEvent> {
    client
        .audit()
        .list_audit_events(request)
        .await
        .unwrap()
        .into_inner()
        .events
}

#[tokio::test]
async fn a_change_and_a_reveal_are_listed_with_their_caller_method_fields_and_peer_and_no_secret() {
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let brand = create_tenant(&admin, "Brand").await.unwrap();
    let channel = create_channel(&admin, &brand.id, CHANNEL_SECRET)
        .await
        .unwrap();
    let subscription = admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: brand.id.clone(),
            subscription: Some(subscription(
                "points",
                "https://hooks.brand.example/points",
                &["prize.points_added"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let (token, secret) = tenant_admin(&admin, &brand.id).await;
    let console = Client::connect(&sa.control_url(), &secret).await.unwrap();

    console
        .channels()
        .update_channel(v1::UpdateChannelRequest {
            channel: Some(v1::Channel {
                id: channel.id.clone(),
                display_name: "Renamed OA".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await
        .unwrap();
    console
        .channels()
        .rotate_channel_secret(v1::RotateChannelSecretRequest {
            id: channel.id.clone(),
            new_secret: ROTATED_SECRET.into(),
            grace_period: None,
        })
        .await
        .unwrap();
    let share_secret = console
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest {
            id: subscription.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;

    let listed = events(&admin, v1::ListAuditEventsRequest::default()).await;
    let methods: Vec<&str> = listed.iter().map(|e| e.method.as_str()).collect();
    assert_eq!(
        methods[..3],
        [
            "hookplane.v1.SubscriptionService/RevealSecret",
            "hookplane.v1.ChannelService/RotateChannelSecret",
            "hookplane.v1.ChannelService/UpdateChannel",
        ],
        "newest first: {methods:?}"
    );
    let (reveal, rotate, update) = (&listed[0], &listed[1], &listed[2]);
    for event in [reveal, rotate, update] {
        assert_eq!(event.token_id, token.id);
        assert_eq!(event.token_name, "brand console");
        assert_eq!(event.tenant_id, brand.id);
        assert!(event.peer.starts_with("127.0.0.1:"), "{event:?}");
        assert!(event.time.is_some());
    }
    assert_eq!(update.resource_id, channel.id);
    assert_eq!(update.fields, ["display_name"]);
    assert_eq!(rotate.fields, ["line_channel_secret"]);
    assert_eq!(reveal.resource_id, subscription.id);
    assert!(reveal.fields.is_empty());
    // The operator's own writes name the bootstrap token.
    let created = listed
        .iter()
        .find(|e| e.method == "hookplane.v1.ChannelService/CreateChannel")
        .unwrap();
    assert_eq!(created.token_name, "bootstrap admin");
    assert!(created.token_id.is_empty());
    assert!(created.fields.contains(&"line_channel_secret".to_owned()));

    // One resource's events.
    let of_channel = events(
        &admin,
        v1::ListAuditEventsRequest {
            resource_id: channel.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_channel.len(), 3, "{of_channel:?}");

    // No secret anywhere, in the API's answer or in hookctl's.
    let output = std::process::Command::new(binaries::hookctl())
        .args(["--server", &sa.control_url(), "--token", &sa.admin_token])
        .args(["--json", "audit"])
        .env_remove("HOOKPLANE_SERVER")
        .env_remove("HOOKPLANE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(printed.contains("RevealSecret"), "{printed}");
    let answered = format!("{listed:?}");
    for secret in [
        CHANNEL_SECRET,
        ROTATED_SECRET,
        share_secret.as_str(),
        secret.as_str(),
        sa.admin_token.as_str(),
    ] {
        assert!(!answered.contains(secret), "a secret in {answered}");
        assert!(!printed.contains(secret), "a secret in {printed}");
    }
}

#[tokio::test]
async fn a_tenant_admin_lists_only_its_tenants_audit_events() {
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let ours = create_tenant(&admin, "Ours").await.unwrap();
    let theirs = create_tenant(&admin, "Theirs").await.unwrap();
    let our_channel = create_channel(&admin, &ours.id, "our-secret")
        .await
        .unwrap();
    let their_channel = create_channel(&admin, &theirs.id, "their-secret")
        .await
        .unwrap();
    let (_, secret) = tenant_admin(&admin, &ours.id).await;
    let console = Client::connect(&sa.control_url(), &secret).await.unwrap();

    let seen = events(&console, v1::ListAuditEventsRequest::default()).await;
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|e| e.tenant_id == ours.id), "{seen:?}");
    assert!(seen.iter().any(|e| e.resource_id == our_channel.id));

    let theirs_by_resource = events(
        &console,
        v1::ListAuditEventsRequest {
            resource_id: their_channel.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(theirs_by_resource.is_empty(), "{theirs_by_resource:?}");
    let refused = console
        .audit()
        .list_audit_events(v1::ListAuditEventsRequest {
            tenant_id: theirs.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // The operator sees both.
    let all = events(&admin, v1::ListAuditEventsRequest::default()).await;
    assert!(all.iter().any(|e| e.tenant_id == theirs.id));
}

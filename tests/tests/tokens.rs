//! API tokens end to end: tokens made through TokenService against the real `hookplane` binary, a
//! tenant admin kept to its tenant on the admin API, publisher tokens kept to their tenant on a
//! node's EventService and refused there once revoked, and `hookctl token` as a user types it.

use std::process::Output;
use std::time::Duration;

use hookplane_client::{Client, v1};
use hookplane_tests::{ControlProcess, DataNode, Standalone, api::*, binaries, eventually};
use prost_types::{Struct, Value, value::Kind};
use tonic::Code;

/// Long enough for a slow machine; the polls end as soon as the awaited state is there.
const WAIT: Duration = Duration::from_secs(20);

async fn make_token(
    admin: &Client,
    role: v1::Role,
    tenant_id: &str,
) -> anyhow::Result<v1::CreateTokenResponse> {
    Ok(admin
        .tokens()
        .create_token(v1::CreateTokenRequest {
            token: Some(v1::Token {
                display_name: format!("{} of {tenant_id}", role.as_str_name()),
                role: role as i32,
                tenant_id: tenant_id.to_owned(),
                ..Default::default()
            }),
        })
        .await?
        .into_inner())
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error status").code()
}

fn points_event(tenant_id: &str) -> v1::PublishEventRequest {
    let field = |kind| Value { kind: Some(kind) };
    v1::PublishEventRequest {
        tenant_id: tenant_id.to_owned(),
        topic: "prize.points_added".to_owned(),
        data: Some(field(Kind::StructValue(Struct {
            fields: [("points_count".to_owned(), field(Kind::NumberValue(5.0)))]
                .into_iter()
                .collect(),
        }))),
        idempotency_key: String::new(),
    }
}

async fn publish(
    client: &Client,
    tenant_id: &str,
) -> Result<v1::PublishEventResponse, tonic::Status> {
    client
        .events()
        .publish_event(points_event(tenant_id))
        .await
        .map(tonic::Response::into_inner)
}

/// Two tenants, each with a channel and a subscription.
struct TwoBrands {
    sa: Standalone,
    admin: Client,
    ours: v1::Tenant,
    theirs: v1::Tenant,
    their_channel: v1::Channel,
    their_subscription: v1::Subscription,
}

async fn two_brands() -> TwoBrands {
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let ours = create_tenant(&admin, "Ours").await.unwrap();
    let theirs = create_tenant(&admin, "Theirs").await.unwrap();
    create_channel(&admin, &ours.id, "our-secret")
        .await
        .unwrap();
    let their_channel = create_channel(&admin, &theirs.id, "their-secret")
        .await
        .unwrap();
    let their_subscription = admin
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: theirs.id.clone(),
            subscription: Some(subscription(
                "points",
                "https://hooks.theirs.example/points",
                &["prize.points_added"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    TwoBrands {
        sa,
        admin,
        ours,
        theirs,
        their_channel,
        their_subscription,
    }
}

#[tokio::test]
async fn a_tenant_admin_token_sees_only_its_tenant_in_lists() {
    let b = two_brands().await;
    let secret = make_token(&b.admin, v1::Role::TenantAdmin, &b.ours.id)
        .await
        .unwrap()
        .secret;
    let console = Client::connect(&b.sa.control_url(), &secret).await.unwrap();

    let tenants = console
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tenants;
    let ids: Vec<_> = tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [b.ours.id.as_str()]);

    let channels = console
        .channels()
        .list_channels(v1::ListChannelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .channels;
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0].tenant_id, b.ours.id);

    let listing_theirs = console
        .subscriptions()
        .list_subscriptions(v1::ListSubscriptionsRequest {
            tenant_id: b.theirs.id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(listing_theirs), Code::PermissionDenied);
}

#[tokio::test]
async fn a_tenant_admin_token_is_denied_another_tenants_channel_and_subscription_and_creating_tenants()
 {
    let b = two_brands().await;
    let secret = make_token(&b.admin, v1::Role::TenantAdmin, &b.ours.id)
        .await
        .unwrap()
        .secret;
    let console = Client::connect(&b.sa.control_url(), &secret).await.unwrap();

    let get_channel = console
        .channels()
        .get_channel(v1::GetChannelRequest {
            id: b.their_channel.id.clone(),
        })
        .await;
    assert_eq!(code(get_channel), Code::PermissionDenied);
    let update_channel = console
        .channels()
        .update_channel(v1::UpdateChannelRequest {
            channel: Some(v1::Channel {
                id: b.their_channel.id.clone(),
                display_name: "Taken over".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await;
    assert_eq!(code(update_channel), Code::PermissionDenied);

    let get_subscription = console
        .subscriptions()
        .get_subscription(v1::GetSubscriptionRequest {
            id: b.their_subscription.id.clone(),
        })
        .await;
    assert_eq!(code(get_subscription), Code::PermissionDenied);
    let update_subscription = console
        .subscriptions()
        .update_subscription(v1::UpdateSubscriptionRequest {
            subscription: Some(v1::Subscription {
                id: b.their_subscription.id.clone(),
                url: "https://attacker.example/points".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await;
    assert_eq!(code(update_subscription), Code::PermissionDenied);
    let reveal = console
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest {
            id: b.their_subscription.id.clone(),
        })
        .await;
    assert_eq!(code(reveal), Code::PermissionDenied);

    let create_tenant = console
        .tenants()
        .create_tenant(v1::CreateTenantRequest {
            tenant: Some(tenant("Another")),
        })
        .await;
    assert_eq!(code(create_tenant), Code::PermissionDenied);

    // Nothing of theirs changed.
    let channel = b
        .admin
        .channels()
        .get_channel(v1::GetChannelRequest {
            id: b.their_channel.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(channel.display_name, b.their_channel.display_name);
}

#[tokio::test]
async fn a_publisher_token_publishes_for_its_tenant_only_and_not_after_it_is_revoked() {
    let b = two_brands().await;
    let made = make_token(&b.admin, v1::Role::Publisher, &b.ours.id)
        .await
        .unwrap();
    let token_id = made.token.unwrap().id;
    let producer = Client::connect(&b.sa.data_grpc_url(), &made.secret)
        .await
        .unwrap();

    // The token reaches the node through the config stream.
    eventually(
        WAIT,
        "the node to accept the new publisher token",
        || async { publish(&producer, &b.ours.id).await.ok() },
    )
    .await
    .unwrap();
    assert_eq!(
        code(publish(&producer, &b.theirs.id).await),
        Code::PermissionDenied
    );
    // The bootstrap publisher token still publishes for any tenant.
    let bootstrap = b.sa.publisher().await.unwrap();
    publish(&bootstrap, &b.theirs.id).await.unwrap();

    // Nor may it use the admin API.
    let on_admin_api = Client::connect(&b.sa.control_url(), &made.secret)
        .await
        .unwrap()
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await;
    assert_eq!(code(on_admin_api), Code::PermissionDenied);

    // The node tells the control plane of the token's first use.
    eventually(WAIT, "the token's last use to be listed", || async {
        let tokens = b
            .admin
            .tokens()
            .list_tokens(v1::ListTokensRequest {
                tenant_id: b.ours.id.clone(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .tokens;
        tokens
            .iter()
            .find(|t| t.id == token_id)?
            .last_used_time
            .map(|_| ())
    })
    .await
    .unwrap();

    b.admin
        .tokens()
        .revoke_token(v1::RevokeTokenRequest { id: token_id })
        .await
        .unwrap();
    let refused = eventually(WAIT, "the node to refuse the revoked token", || async {
        publish(&producer, &b.ours.id).await.err()
    })
    .await
    .unwrap();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_revoked_admin_token_is_unauthenticated() {
    let b = two_brands().await;
    let made = make_token(&b.admin, v1::Role::TenantAdmin, &b.ours.id)
        .await
        .unwrap();
    let console = Client::connect(&b.sa.control_url(), &made.secret)
        .await
        .unwrap();
    console
        .tenants()
        .get_tenant(v1::GetTenantRequest {
            id: b.ours.id.clone(),
        })
        .await
        .unwrap();
    let listed = b
        .admin
        .tokens()
        .list_tokens(v1::ListTokensRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let token = listed
        .iter()
        .find(|t| Some(&t.id) == made.token.as_ref().map(|t| &t.id))
        .expect("the new token is listed");
    assert!(token.last_used_time.is_some(), "{token:?}");

    b.admin
        .tokens()
        .revoke_token(v1::RevokeTokenRequest {
            id: token.id.clone(),
        })
        .await
        .unwrap();
    let after = console
        .tenants()
        .get_tenant(v1::GetTenantRequest {
            id: b.ours.id.clone(),
        })
        .await;
    assert_eq!(code(after), Code::Unauthenticated);
}

#[tokio::test]
async fn a_node_restarted_while_the_control_plane_is_away_keeps_its_publisher_tokens() {
    let mut control = ControlProcess::start().await.unwrap();
    let admin = control.admin().await.unwrap();
    let mut node = DataNode::start(&control, &[]).await.unwrap();
    let ours = create_tenant(&admin, "Ours").await.unwrap();
    let theirs = create_tenant(&admin, "Theirs").await.unwrap();
    let secret = make_token(&admin, v1::Role::Publisher, &ours.id)
        .await
        .unwrap()
        .secret;
    let producer = Client::connect_lazy(&node.grpc_url(), &secret).unwrap();
    eventually(
        WAIT,
        "the node to accept the new publisher token",
        || async { publish(&producer, &ours.id).await.ok() },
    )
    .await
    .unwrap();
    // The node saves its config a second after an update (a second in which later updates join
    // it), so one more change makes a save after this instant, which holds the token.
    let changed_at = std::time::SystemTime::now();
    create_tenant(&admin, "Later").await.unwrap();
    let saved = node.dir.path().join("spool").join("config.sealed");
    eventually(
        WAIT,
        "the node to save the config with the token",
        || async {
            let modified = std::fs::metadata(&saved).and_then(|m| m.modified()).ok()?;
            (modified > changed_at).then_some(())
        },
    )
    .await
    .unwrap();

    control.kill().await;
    node.restart().await.unwrap();
    publish(&producer, &ours.id).await.unwrap();
    assert_eq!(
        code(publish(&producer, &theirs.id).await),
        Code::PermissionDenied
    );
}

// ---------------------------------------------------------------- hookctl

fn hookctl(sa: &Standalone, token: &str, args: &[&str]) -> Output {
    std::process::Command::new(binaries::hookctl())
        .args(["--server", &sa.control_url(), "--token", token])
        .args(args)
        .env_remove("HOOKPLANE_SERVER")
        .env_remove("HOOKPLANE_ADMIN_TOKEN")
        .output()
        .expect("hookctl runs")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "hookctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

#[tokio::test]
async fn hookctl_creates_lists_and_revokes_a_token() {
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let brand = create_tenant(&admin, "Brand").await.unwrap();

    let created = json(&hookctl(
        &sa,
        &sa.admin_token,
        &[
            "--json",
            "token",
            "create",
            "--name",
            "brand console",
            "--role",
            "tenant-admin",
            "--tenant",
            &brand.id,
        ],
    ));
    let id = created["token"]["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tok_"));
    assert!(secret.starts_with(&format!("hp_{id}_")));
    assert_eq!(created["token"]["role"], "ROLE_TENANT_ADMIN");

    // The new token works with hookctl itself, for its tenant.
    let own = json(&hookctl(&sa, &secret, &["--json", "tenant", "list"]));
    assert_eq!(own["tenants"][0]["id"], brand.id.as_str());

    let listed = hookctl(&sa, &sa.admin_token, &["token", "list"]);
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table.contains(&id) && table.contains("brand console"),
        "{table}"
    );
    assert!(!table.contains(&secret), "{table}");

    let revoked = hookctl(&sa, &sa.admin_token, &["token", "revoke", &id]);
    assert!(revoked.status.success());
    assert_eq!(
        String::from_utf8_lossy(&revoked.stdout),
        format!("revoked {id}\n")
    );

    let refused = hookctl(&sa, &secret, &["tenant", "list"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    let after = json(&hookctl(&sa, &sa.admin_token, &["--json", "token", "list"]));
    assert!(after["tokens"].as_array().unwrap().is_empty(), "{after}");
}

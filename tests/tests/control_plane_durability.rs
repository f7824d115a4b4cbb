//! What the control plane keeps: restarts lose nothing (the revision and the store's id
//! included), secrets are sealed on disk and absent from logs, and generated tokens are stored
//! privately and never shown, only where they are.

use std::os::unix::fs::PermissionsExt;

use hookplane_client::{Client, v1};
use hookplane_tests::{ControlProcess, api::*};

async fn revision(control: &ControlProcess) -> u64 {
    first_update(control).await.revision
}

/// The first update a node without config gets.
async fn first_update(control: &ControlProcess) -> v1::ConfigUpdate {
    let client = Client::connect(&control.url(), &control.node_token)
        .await
        .unwrap();
    let mut stream = client
        .config()
        .watch_config(v1::WatchConfigRequest {
            node_id: "test-observer".into(),
            last_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap()
}

#[tokio::test]
async fn the_store_keeps_its_id_for_life_and_another_data_dir_has_another() {
    let mut control = ControlProcess::start().await.unwrap();
    let id = first_update(&control).await.store_id;
    assert!(id.starts_with("st_"), "{id}");
    control.kill().await;
    control.restart().await.unwrap();
    assert_eq!(first_update(&control).await.store_id, id);

    control.kill().await;
    let other = ControlProcess::start_in_place_of(&control).await.unwrap();
    let other_id = first_update(&other).await.store_id;
    assert!(other_id.starts_with("st_") && other_id != id, "{other_id}");
}

#[tokio::test]
async fn every_write_advances_the_revision_by_one() {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let before = revision(&control).await;
    let t = create_tenant(&client, "Brand").await.unwrap();
    assert_eq!(revision(&control).await, before + 1);
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    create_forwarding_set(&client, &ch.id, "https://crm.example/hook")
        .await
        .unwrap();
    assert_eq!(revision(&control).await, before + 3);
    // One cascade delete is one write.
    client
        .tenants()
        .delete_tenant(v1::DeleteTenantRequest { id: t.id })
        .await
        .unwrap();
    assert_eq!(revision(&control).await, before + 4);
}

#[tokio::test]
async fn reads_and_failed_writes_leave_the_revision_alone() {
    let control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let t = create_tenant(&client, "Brand").await.unwrap();
    let before = revision(&control).await;
    client
        .tenants()
        .get_tenant(v1::GetTenantRequest { id: t.id.clone() })
        .await
        .unwrap();
    let _ = create_channel(&client, &t.id, "").await.unwrap_err();
    assert_eq!(revision(&control).await, before);
}

#[tokio::test]
async fn a_restart_keeps_every_resource_and_the_revision() {
    let mut control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let t = create_tenant(&client, "Brand").await.unwrap();
    let ch = create_channel(&client, &t.id, "secret").await.unwrap();
    let fwd = create_forwarding_set(&client, &ch.id, "https://crm.example/hook")
        .await
        .unwrap();
    let sub = client
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: t.id.clone(),
            subscription: Some(subscription(
                "crm",
                "https://crm.example/events",
                &["prize.points_added"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let secret = client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let rev = revision(&control).await;

    control.kill().await;
    control.restart().await.unwrap();
    let client = control.admin().await.unwrap();

    assert_eq!(revision(&control).await, rev);
    let got = client
        .tenants()
        .get_tenant(v1::GetTenantRequest { id: t.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.display_name, "Brand");
    client
        .channels()
        .get_channel(v1::GetChannelRequest { id: ch.id })
        .await
        .unwrap();
    let got_fwd = client
        .forwarding()
        .get_forwarding_set(v1::GetForwardingSetRequest { id: fwd.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got_fwd.url, "https://crm.example/hook");
    let again = client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id })
        .await
        .unwrap()
        .into_inner()
        .secret;
    assert_eq!(again, secret);
    // Writes continue from the kept revision.
    create_tenant(&client, "Another").await.unwrap();
    assert_eq!(revision(&control).await, rev + 1);
}

fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn the_store_files_and_logs_hold_no_secret_in_plain_text() {
    let mut control = ControlProcess::start().await.unwrap();
    let client = control.admin().await.unwrap();
    let t = create_tenant(&client, "Brand").await.unwrap();
    let mut ch = channel("Brand OA", "plain-channel-secret-4f1c9a");
    ch.line_channel_access_token = "plain-access-token-8e2d7b".into();
    let ch = client
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: t.id.clone(),
            channel: Some(ch),
        })
        .await
        .unwrap()
        .into_inner();
    client
        .channels()
        .rotate_channel_secret(v1::RotateChannelSecretRequest {
            id: ch.id.clone(),
            new_secret: "plain-rotated-secret-77aa01".into(),
            grace_period: Some(duration(std::time::Duration::from_secs(600))),
        })
        .await
        .unwrap();
    let mut genesys = forwarding_set("genesys", "");
    genesys.kind = v1::ForwardingKind::GenesysOpenMessaging as i32;
    genesys.genesys = Some(v1::GenesysSettings {
        region_domain: "mypurecloud.com".into(),
        client_id: "client-id".into(),
        client_secret: "plain-genesys-client-secret-19c3".into(),
        integration_id: "integration-id".into(),
        outbound_signature_secret: "plain-genesys-signature-secret-5d0e".into(),
        ..Default::default()
    });
    client
        .forwarding()
        .create_forwarding_set(v1::CreateForwardingSetRequest {
            channel_id: ch.id,
            forwarding_set: Some(genesys),
        })
        .await
        .unwrap();
    let sub = client
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: t.id,
            subscription: Some(subscription(
                "crm",
                "https://crm.example/events",
                &["prize.points_added"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let share_secret = client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id })
        .await
        .unwrap()
        .into_inner()
        .secret;
    // A clean stop flushes everything sled holds in memory.
    control.terminate().await.unwrap();

    let store = control.dir.path().join("store");
    assert!(store.exists(), "the sled store lives in <data-dir>/store");
    for secret in [
        "plain-channel-secret-4f1c9a",
        "plain-access-token-8e2d7b",
        "plain-rotated-secret-77aa01",
        "plain-genesys-client-secret-19c3",
        "plain-genesys-signature-secret-5d0e",
        share_secret.as_str(),
        share_secret.trim_start_matches("whsec_"),
    ] {
        assert_eq!(
            files_containing(&store, secret.as_bytes()),
            Vec::<std::path::PathBuf>::new(),
            "{secret}"
        );
        assert!(!control.log().contains(secret), "log holds {secret}");
    }
}

#[tokio::test]
async fn generated_tokens_are_stored_privately_and_the_log_says_where_not_what() {
    let mut control = ControlProcess::start().await.unwrap();
    for file in ["admin.token", "node.token", "publisher.token", "master.key"] {
        let path = control.dir.path().join(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let master_key = std::fs::read_to_string(control.dir.path().join("master.key")).unwrap();
    let secrets = [
        control.admin_token.clone(),
        control.node_token.clone(),
        control.publisher_token.clone(),
        master_key.trim().to_owned(),
    ];
    let shown = |control: &ControlProcess| {
        let mut all = control.log();
        all.push_str(&control.stdout_lines().join("\n"));
        all
    };
    let first_run = shown(&control);
    for secret in &secrets {
        assert!(
            !first_run.contains(secret.as_str()),
            "a generated secret was printed"
        );
    }
    assert!(
        first_run.contains(&control.dir.path().join("admin.token").display().to_string()),
        "the log names where the admin token is: {first_run}"
    );
    control.restart().await.unwrap();
    let both_runs = shown(&control);
    for secret in &secrets {
        assert!(!both_runs.contains(secret.as_str()), "a secret was printed");
    }
    // And it still works after the restart.
    let client = control.admin().await.unwrap();
    client
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_given_admin_token_is_used_and_not_written_to_disk() {
    let control = ControlProcess::start_with(&["--admin-token", "hp_admin_given-by-operator"])
        .await
        .unwrap();
    assert!(!control.dir.path().join("admin.token").exists());
    let client = control.admin().await.unwrap();
    client
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap();
    assert!(
        !control
            .stdout_lines()
            .iter()
            .any(|l| l.contains("hp_admin_given-by-operator"))
    );
}

#[tokio::test]
async fn every_flag_names_its_environment_variable() {
    for (command, vars) in [
        (
            "control",
            &[
                "HOOKPLANE_LISTEN",
                "HOOKPLANE_DATA_DIR",
                "HOOKPLANE_ADMIN_TOKEN",
                "HOOKPLANE_MASTER_KEY",
            ][..],
        ),
        (
            "data",
            &[
                "HOOKPLANE_CONTROL_URL",
                "HOOKPLANE_NODE_TOKEN",
                "HOOKPLANE_INGRESS_LISTEN",
                "HOOKPLANE_SPOOL_DIR",
            ][..],
        ),
        (
            "standalone",
            &[
                "HOOKPLANE_CONTROL_LISTEN",
                "HOOKPLANE_DATA_GRPC_LISTEN",
                "HOOKPLANE_ADMIN_TOKEN",
                "HOOKPLANE_ALLOW_TARGET_NETWORKS",
                "HOOKPLANE_MAX_BODY_BYTES",
            ][..],
        ),
    ] {
        let output = std::process::Command::new(hookplane_tests::binaries::hookplane())
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        for var in vars {
            assert!(
                help.contains(var),
                "`hookplane {command} --help` should name {var}"
            );
        }
    }
}

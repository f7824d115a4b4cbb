//! Secrets at rest on the real binary: a master key rotation re-seals the store in the background
//! after which the new key alone opens everything, and tokens and keys read from files.

use std::time::Duration;

use hookplane_client::{Client, v1};
use hookplane_tests::ingress::wait_for_channel;
use hookplane_tests::{ControlProcess, DataNode, FIXTURE_CHANNEL_SECRET, api::*, eventually};

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

async fn reveal(client: &Client, subscription_id: &str) -> String {
    client
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest {
            id: subscription_id.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .secret
}

#[tokio::test]
async fn after_a_master_key_rotation_and_its_reseal_the_new_key_alone_opens_every_secret() {
    let mut control = ControlProcess::start_with(&["--master-key", KEY_A])
        .await
        .unwrap();
    let client = control.admin().await.unwrap();
    let tenant = create_tenant(&client, "Brand").await.unwrap();
    let channel = create_channel(&client, &tenant.id, FIXTURE_CHANNEL_SECRET)
        .await
        .unwrap();
    let subscription = client
        .subscriptions()
        .create_subscription(v1::CreateSubscriptionRequest {
            tenant_id: tenant.id.clone(),
            subscription: Some(subscription(
                "crm",
                "https://crm.example/hook",
                &["receipt.receipt_validated"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let share_secret = reveal(&client, &subscription.id).await;

    control
        .restart_with(&["--master-key", KEY_B, "--previous-master-key", KEY_A])
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the re-seal to be reported done",
        || async { control.log().contains("re-seal done").then_some(()) },
    )
    .await
    .unwrap();

    control
        .restart_with(&["--master-key", KEY_B])
        .await
        .unwrap();
    let client = control.admin().await.unwrap();
    assert_eq!(reveal(&client, &subscription.id).await, share_secret);
    // The node gets the channel's secret from the store, opened under key B alone, and accepts
    // a webhook signed with it.
    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_channel(&node.ingress_url(), &channel.id)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_store_under_another_key_is_refused_naming_the_key_id_not_the_key() {
    let mut control = ControlProcess::start_with(&["--master-key", KEY_A])
        .await
        .unwrap();
    // The start logs the id of its key (`master_key_id="..."`, maybe between colour codes).
    let log = control.log();
    let field = &log[log.find("master_key_id").expect("the key id is logged")..];
    let key_a_id: String = field[field.find('"').unwrap() + 1..]
        .chars()
        .take(8)
        .collect();
    control.kill().await;
    let started = control.restart_with(&["--master-key", KEY_B]).await;
    let err = format!(
        "{:#}",
        started.expect_err("the store opened under another key")
    );
    // The harness's message quotes the command line; the process's own error is its last line.
    let said = err
        .lines()
        .find(|l| l.contains("Error: master key:"))
        .unwrap_or_else(|| panic!("no master key error in {err}"));
    assert!(
        said.contains(&format!("sealed under master key id {key_a_id}")),
        "{said}"
    );
    assert!(!said.contains(KEY_A) && !said.contains(KEY_B), "{said}");
}

#[tokio::test]
async fn an_admin_token_read_from_a_file_works_for_admin_calls() {
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("admin.token");
    std::fs::write(&path, "hp_admin_from_a_file\n").unwrap();
    let control = ControlProcess::start_with(&["--admin-token-file", path.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(control.admin_token, "hp_admin_from_a_file");
    assert!(!control.dir.path().join("admin.token").exists());
    let client = control.admin().await.unwrap();
    create_tenant(&client, "Brand").await.unwrap();
}

#[tokio::test]
async fn a_node_token_read_from_a_file_lets_the_node_follow_the_control_plane() {
    let control = ControlProcess::start().await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("node.token");
    std::fs::write(&path, format!("{}\n", control.node_token)).unwrap();
    // Ready means its config stream was accepted with the token.
    DataNode::start(&control, &["--node-token-file", path.to_str().unwrap()])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_token_given_both_ways_or_an_unreadable_token_file_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let token_file = dir.path().join("admin.secret");
    std::fs::write(&token_file, "hp_admin_x").unwrap();
    let missing = dir.path().join("missing.token");
    for (args, needles) in [
        (
            vec![
                "--admin-token",
                "hp_admin_y",
                "--admin-token-file",
                token_file.to_str().unwrap(),
            ],
            vec!["--admin-token ", "--admin-token-file"],
        ),
        (
            vec!["--master-key-file", missing.to_str().unwrap()],
            vec![missing.to_str().unwrap()],
        ),
    ] {
        let output = std::process::Command::new(hookplane_tests::binaries::hookplane())
            .args(["control", "--data-dir", data_dir, "--listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("HOOKPLANE_ADMIN_TOKEN")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle} not in {stderr}"
            );
        }
        assert!(!stderr.contains("hp_admin_x") && !stderr.contains("hp_admin_y"));
    }
}

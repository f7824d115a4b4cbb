//! The admin CLI against a real control plane: the README's walkthrough, as a user types it.

use hookplane_tests::{ControlProcess, binaries, fixture, hookctl_json};

#[tokio::test]
async fn hookctl_creates_a_tenant_a_channel_and_a_forwarding_set() {
    let control = ControlProcess::start().await.unwrap();
    let tenant = hookctl_json(&control.hookctl(&[
        "--json",
        "tenant",
        "create",
        "--name",
        "Brand",
        "--email",
        "ops@brand.example",
        "--zone",
        "ZONE_1=2099-01-01T00:00:00Z",
    ]));
    let tenant_id = tenant["id"].as_str().unwrap();
    assert!(tenant_id.starts_with("tnt_"));
    let channel = hookctl_json(&control.hookctl(&[
        "--json", "channel", "create", "--tenant", tenant_id, "--name", "Brand OA", "--secret",
        "s3cret",
    ]));
    let channel_id = channel["id"].as_str().unwrap();
    assert_eq!(
        channel["ingressPath"].as_str().unwrap(),
        format!("/api/webhook/line/{channel_id}/events")
    );
    let set = hookctl_json(&control.hookctl(&[
        "--json",
        "forwarding",
        "create",
        "--channel",
        channel_id,
        "--name",
        "crm",
        "--url",
        "https://crm.example/hook",
    ]));
    assert!(set["id"].as_str().unwrap().starts_with("fwd_"));
    // Proto3 JSON as grpcurl prints it: enums by name, durations in seconds, the effective
    // `enabled`, and no key for the secret the channel was given.
    assert_eq!(set["kind"], "RAW", "{set}");
    assert_eq!(set["timeout"], "10s", "{set}");
    assert_eq!(set["enabled"], true, "{set}");
    assert!(channel.get("lineChannelSecret").is_none(), "{channel}");
    assert!(!channel.to_string().contains("s3cret"), "{channel}");
    let listed_json =
        hookctl_json(&control.hookctl(&["--json", "forwarding", "list", "--channel", channel_id]));
    assert_eq!(listed_json["forwardingSets"][0]["id"], set["id"]);
    assert_eq!(listed_json["nextPageToken"], "", "{listed_json}");
    let listed = control.hookctl(&["forwarding", "list", "--channel", channel_id]);
    assert!(listed.status.success());
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("https://crm.example/hook"), "{table}");
    assert!(table.contains(set["id"].as_str().unwrap()), "{table}");
}

#[tokio::test]
async fn hookctl_reads_server_and_token_from_the_environment() {
    let control = ControlProcess::start().await.unwrap();
    let output = std::process::Command::new(binaries::hookctl())
        .args(["tenant", "list"])
        .env("HOOKPLANE_SERVER", control.url())
        .env("HOOKPLANE_ADMIN_TOKEN", &control.admin_token)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn hookctl_reports_a_rejected_call_with_its_code_and_exits_non_zero() {
    let control = ControlProcess::start().await.unwrap();
    let output = control.hookctl(&["tenant", "create", "--name", ""]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidArgument") || stderr.contains("INVALID_ARGUMENT"),
        "{stderr}"
    );
    assert!(stderr.contains("display_name"), "{stderr}");
}

#[tokio::test]
async fn hookctl_subscription_secret_reveal_and_rotate() {
    let control = ControlProcess::start().await.unwrap();
    let tenant = hookctl_json(&control.hookctl(&[
        "--json",
        "tenant",
        "create",
        "--name",
        "Brand",
        "--zone",
        "ZONE_1=2099-01-01T00:00:00Z",
    ]));
    let sub = hookctl_json(&control.hookctl(&[
        "--json",
        "subscription",
        "create",
        "--tenant",
        tenant["id"].as_str().unwrap(),
        "--name",
        "crm",
        "--url",
        "https://crm.example/events",
        "--event-type",
        "prize.points_added",
    ]));
    let id = sub["id"].as_str().unwrap();
    let revealed = control.hookctl(&["subscription", "reveal-secret", id]);
    assert!(String::from_utf8_lossy(&revealed.stdout).contains("whsec_"));
    let rotated = control.hookctl(&["subscription", "rotate-secret", id]);
    assert!(rotated.status.success());
    assert_ne!(revealed.stdout, rotated.stdout);
}

#[tokio::test]
async fn hookctl_subscription_with_ed25519_reveals_and_rotates_only_a_public_key() {
    let control = ControlProcess::start().await.unwrap();
    let tenant = hookctl_json(&control.hookctl(&[
        "--json",
        "tenant",
        "create",
        "--name",
        "Brand",
        "--zone",
        "ZONE_1=2099-01-01T00:00:00Z",
    ]));
    let sub = hookctl_json(&control.hookctl(&[
        "--json",
        "subscription",
        "create",
        "--tenant",
        tenant["id"].as_str().unwrap(),
        "--name",
        "crm",
        "--url",
        "https://crm.example/events",
        "--event-type",
        "prize.points_added",
        "--scheme",
        "standard-webhooks-ed25519",
    ]));
    assert_eq!(sub["signatureScheme"], "STANDARD_WEBHOOKS_ED25519");
    let id = sub["id"].as_str().unwrap();
    let revealed = hookctl_json(&control.hookctl(&["--json", "subscription", "reveal-secret", id]));
    let public_key = revealed["publicKey"].as_str().unwrap();
    assert!(public_key.starts_with("whpk_"), "{revealed}");
    // The standard mapping prints the field empty: an ed25519 subscription has no share secret.
    assert_eq!(revealed["secret"], "", "{revealed}");
    let rotated = hookctl_json(&control.hookctl(&[
        "--json",
        "subscription",
        "rotate-secret",
        id,
        "--grace",
        "1h",
    ]));
    let rotated_key = rotated["publicKey"].as_str().unwrap();
    assert!(rotated_key.starts_with("whpk_"), "{rotated}");
    assert_ne!(rotated_key, public_key);
    assert!(rotated["previousSecretValidUntil"].is_string(), "{rotated}");
}

#[test]
fn hookctl_line_sign_prints_the_signature_line_computes() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("text.json");
    std::fs::write(&body, fixture("text.json")).unwrap();
    let output = std::process::Command::new(binaries::hookctl())
        .args([
            "line",
            "sign",
            "--secret",
            hookplane_tests::FIXTURE_CHANNEL_SECRET,
            "--file",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "QSwDoi32LtuyD6WmvYv/nL1SF85xwyQGbFI8qtZsyNM="
    );
}

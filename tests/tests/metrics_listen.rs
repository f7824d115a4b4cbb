//! `/metrics` off the public port: `--metrics-listen` on nodes, the control plane's own series,
//! and standalone's one listener for both, against the real binary.

use std::time::Duration;

use hookplane_client::v1;
use hookplane_tests::{
    ControlProcess, DataNode, Receiver, Standalone,
    api::*,
    eventually, fixture,
    ingress::{post_signed, wait_for_channel},
};

async fn get(url: &str) -> (u16, String) {
    let answer = reqwest::get(url).await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

/// Waits until the text at `url` holds `series` (a whole `name{labels} value` line's start).
async fn wait_for_series(url: &str, series: &str) -> String {
    eventually(Duration::from_secs(10), series, || async {
        let (_, text) = get(url).await;
        text.lines().any(|l| l.starts_with(series)).then_some(text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn with_metrics_listen_a_node_serves_metrics_there_and_the_ingress_answers_404() {
    let control = ControlProcess::start().await.unwrap();
    let node = DataNode::start(&control, &["--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let (status, text) = get(&node.metrics_url().unwrap()).await;
    assert_eq!(status, 200);
    assert!(text.contains("hookplane_queue_depth"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (status, _) = get(&format!("{}/metrics", node.ingress_url())).await;
    assert_eq!(status, 404);
    // The rest of the ingress is where it was.
    let (status, _) = get(&format!("{}/readyz", node.ingress_url())).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn without_metrics_listen_the_ingress_keeps_metrics() {
    let control = ControlProcess::start().await.unwrap();
    let node = DataNode::start(&control, &[]).await.unwrap();
    assert!(node.metrics_url().is_none());
    let (status, text) = get(&format!("{}/metrics", node.ingress_url())).await;
    assert_eq!(status, 200);
    assert!(text.contains("hookplane_queue_depth"), "{text}");
}

#[tokio::test]
async fn the_control_planes_metrics_count_rpcs_subscribers_and_the_revision() {
    let control = ControlProcess::start_with(&["--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let url = control.metrics_url().unwrap();
    let client = control.admin().await.unwrap();
    client
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap();
    create_tenant(&client, "Brand").await.unwrap();
    let unauthenticated = hookplane_client::Client::connect(&control.url(), "not-a-token")
        .await
        .unwrap();
    unauthenticated
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap_err();
    let text = wait_for_series(
        &url,
        "hookplane_control_rpcs_total{method=\"/hookplane.v1.TenantService/ListTenants\",code=\"OK\"} 1",
    )
    .await;
    for series in [
        "hookplane_control_rpcs_total{method=\"/hookplane.v1.TenantService/ListTenants\",code=\"UNAUTHENTICATED\"} 1",
        "hookplane_control_rpcs_total{method=\"/hookplane.v1.TenantService/CreateTenant\",code=\"OK\"} 1",
        "hookplane_control_config_revision 1",
        "hookplane_control_config_subscribers 0",
        "hookplane_control_attempt_log_writes_total 0",
        "hookplane_control_notices{state=\"logged\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing from\n{text}"
        );
    }

    let node = DataNode::start(&control, &[]).await.unwrap();
    wait_for_series(&url, "hookplane_control_config_subscribers 1").await;
    drop(node);
    wait_for_series(&url, "hookplane_control_config_subscribers 0").await;
    // The gRPC port serves no /metrics of its own.
    let served = reqwest::get(format!("{}/metrics", control.url()))
        .await
        .is_ok_and(|answer| answer.status() == 200);
    assert!(!served);
}

#[tokio::test]
async fn standalone_serves_both_planes_metrics_on_one_listener_and_none_on_the_ingress() {
    let standalone = Standalone::start_with(&["--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let url = standalone.metrics_url().unwrap();
    // The node inside holds its config stream.
    let text = wait_for_series(&url, "hookplane_control_config_subscribers 1").await;
    assert!(text.contains("hookplane_queue_depth"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let (status, _) = get(&format!("{}/metrics", standalone.ingress_url())).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn standalones_node_reports_attempts_to_its_own_control_plane_without_report_deliveries() {
    let receiver = Receiver::start().await.unwrap();
    let standalone = Standalone::start_with(&["--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let url = standalone.metrics_url().unwrap();
    let admin = standalone.admin().await.unwrap();
    let (channel_id, sets) = channel_forwarding_to(&admin, &[receiver.url("/hook")])
        .await
        .unwrap();
    wait_for_channel(&standalone.ingress_url(), &channel_id)
        .await
        .unwrap();
    let answer = post_signed(
        &standalone.ingress_url(),
        &channel_id,
        &fixture("text.json"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    receiver.wait_for(1, Duration::from_secs(10)).await.unwrap();

    // The attempt is in the log, stored by the same intake ReportDeliveries feeds.
    let attempts = eventually(Duration::from_secs(10), "the attempt listed", || async {
        let attempts = set_attempts(&admin, &sets[0]).await.ok()?;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await
    .unwrap();
    assert_eq!(attempts[0].http_status, 200);
    let text = wait_for_series(&url, "hookplane_control_attempt_log_writes_total 1").await;
    // ... and it did not come over gRPC.
    assert!(!text.contains("ReportDeliveries"), "{text}");
}

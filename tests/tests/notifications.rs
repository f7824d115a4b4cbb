//! Failure reminder emails, end to end: real forwards failing at a real receiver, a real SMTP
//! server (aiosmtpd) receiving what the control plane sends, the quiet window, the periodic
//! sweep, retries of a failed send, and NotificationService listing it all.

use std::time::Duration;

use hookplane_client::{Client, v1};
use hookplane_tests::{
    ControlProcess, FIXTURE_CHANNEL_SECRET, Mail, Receiver, Respond, SmtpReceiver, Standalone,
    api::*, eventually, fixture,
};
use hookplane_verify::line;

const WAIT: Duration = Duration::from_secs(20);
const SUBJECT: &str = "[System Notification] Brand OA -- LINE Webhook Forward Failure Reminder";

/// The text fixture as a distinct event (its own webhookEventId).
fn text_event(n: u32) -> Vec<u8> {
    String::from_utf8(fixture("text.json"))
        .unwrap()
        .replace(
            "01JGKZ7Q3N8V5T2R6W9X4Y1B0C",
            &format!("01JGKZ7Q3N8V5T2R6W9X4Y{n:04}"),
        )
        .into_bytes()
}

async fn notifications(client: &Client, tenant_id: &str) -> Vec<v1::Notification> {
    client
        .notifications()
        .list_notifications(v1::ListNotificationsRequest {
            tenant_id: tenant_id.to_owned(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notifications
}

/// A standalone forwarding the channel "Brand OA" of tenant "Brand" to `target`.
struct Forwarding {
    standalone: Standalone,
    client: Client,
    tenant: String,
    channel: String,
    set: String,
}

impl Forwarding {
    async fn start(target: &str, flags: &[&str]) -> Forwarding {
        let standalone = Standalone::start_with(flags).await.unwrap();
        let client = standalone.admin().await.unwrap();
        let tenant = create_tenant(&client, "Brand").await.unwrap().id;
        let channel = create_channel(&client, &tenant, FIXTURE_CHANNEL_SECRET)
            .await
            .unwrap()
            .id;
        let set = create_forwarding_set(&client, &channel, target)
            .await
            .unwrap()
            .id;
        let f = Forwarding {
            standalone,
            client,
            tenant,
            channel,
            set,
        };
        let verify = fixture("verify.json");
        eventually(WAIT, "the node to know the channel", || async {
            (f.post(&verify).await.status() == 200).then_some(())
        })
        .await
        .unwrap();
        f
    }

    async fn post(&self, body: &[u8]) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!(
                "{}/api/webhook/line/{}/events",
                self.standalone.ingress_url(),
                self.channel
            ))
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "x-line-signature",
                line::sign(FIXTURE_CHANNEL_SECRET.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn failed_attempts(&self) -> usize {
        hookplane_tests::api::set_attempts(&self.client, &self.set)
            .await
            .unwrap()
            .iter()
            .filter(|a| a.outcome != v1::AttemptOutcome::Succeeded as i32)
            .count()
    }
}

/// A control plane alone, with a tenant "Brand", its channel "Brand OA" and forwarding sets to
/// `urls`; failures are fed as a node would, through ConfigService.ReportDeliveries.
struct Reporting {
    control: ControlProcess,
    client: Client,
    tenant: String,
    channel: String,
    sets: Vec<String>,
}

impl Reporting {
    async fn start(urls: &[&str], flags: &[&str]) -> Reporting {
        let control = ControlProcess::start_with(flags).await.unwrap();
        let client = control.admin().await.unwrap();
        let tenant = create_tenant(&client, "Brand").await.unwrap().id;
        let channel = create_channel(&client, &tenant, FIXTURE_CHANNEL_SECRET)
            .await
            .unwrap()
            .id;
        let mut sets = Vec::new();
        for url in urls {
            sets.push(
                create_forwarding_set(&client, &channel, url)
                    .await
                    .unwrap()
                    .id,
            );
        }
        Reporting {
            control,
            client,
            tenant,
            channel,
            sets,
        }
    }

    /// Reports one attempt of set `set` (`None`: it succeeded).
    async fn report(&self, set: usize, reason: Option<&str>) {
        let (outcome, http_status) = match reason {
            Some(reason) => (
                v1::AttemptOutcome::Failed,
                reason
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
            ),
            None => (v1::AttemptOutcome::Succeeded, 200),
        };
        let attempt = v1::DeliveryAttempt {
            delivery_id: format!("dlv_{}", ulid_like()),
            forwarding_set_id: self.sets[set].clone(),
            tenant_id: self.tenant.clone(),
            channel_id: self.channel.clone(),
            attempt_number: 1,
            time: Some(from_now(0)),
            http_status,
            reason: reason.unwrap_or_default().to_owned(),
            outcome: outcome as i32,
            ..Default::default()
        };
        let node = Client::connect(&self.control.url(), &self.control.node_token)
            .await
            .unwrap();
        let accepted = node
            .config()
            .report_deliveries(tokio_stream::iter([v1::DeliveryReport {
                node_id: "test-node".into(),
                attempts: vec![attempt],
            }]))
            .await
            .unwrap()
            .into_inner()
            .accepted;
        assert_eq!(accepted, 1);
    }
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos}_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn assert_reminder_names(mail: &Mail, url: &str, reason: &str) {
    let text = mail.text();
    for line in [
        "Dear Brand Partner:",
        "We have detected that the webhook forward failed.",
        "Official account: Brand OA",
        &format!("Error reason: {reason}"),
        &format!("Webhook endpoint URL: {url}"),
        "Please check your integration service. Thanks!",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from\n{text}"
        );
    }
}

#[tokio::test]
async fn a_failed_forward_emails_the_tenant_over_smtp() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let target = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let url = target.url("/LineServer/index.html");
    let f = Forwarding::start(&url, &["--smtp-url", &smtp.url()]).await;

    assert_eq!(f.post(&text_event(1)).await.status(), 200);
    let mails = smtp.wait_for(1, WAIT).await.unwrap();

    let mail = &mails[0];
    assert_eq!(mail.rcpt_tos, ["ops@brand.example"]);
    assert_eq!(mail.to, "ops@brand.example");
    assert_eq!(mail.subject, SUBJECT);
    assert_eq!(mail.from, "hookplane <noreply@localhost>");
    assert_eq!(mail.content_type, "multipart/alternative");
    assert_reminder_names(mail, &url, "404 Not Found");
    assert!(mail.text().contains("received properly"), "{}", mail.text());
    let html = mail.html();
    assert!(html.contains("Dear Brand Partner:"), "{html}");
    assert!(
        html.contains("Error reason: <b>404 Not Found</b>"),
        "{html}"
    );
    assert!(
        html.contains(&format!("<a href=\"{url}\">{url}</a>")),
        "{html}"
    );

    let listed = eventually(WAIT, "the notice to be SENT", || async {
        let listed = notifications(&f.client, &f.tenant).await;
        listed
            .first()
            .is_some_and(|n| n.state == v1::NotificationState::Sent as i32)
            .then_some(listed)
    })
    .await
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].kind, "forward_failure");
    assert_eq!(listed[0].subject, SUBJECT);
    assert_eq!(listed[0].recipients, ["ops@brand.example"]);
    assert!(listed[0].sent_time.is_some());
    assert!(listed[0].last_error.is_empty());
}

#[tokio::test]
async fn a_failure_email_shows_the_endpoint_without_its_credentials() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let target = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let url = target
        .url("/LineServer/index.html?token=t0ken-in-url&brand=7")
        .replacen("http://", "http://bot:pa55word@", 1);
    let f = Forwarding::start(&url, &["--smtp-url", &smtp.url()]).await;

    assert_eq!(f.post(&text_event(1)).await.status(), 200);
    let mails = smtp.wait_for(1, WAIT).await.unwrap();
    let shown = target
        .url("/LineServer/index.html?token=***&brand=***")
        .replacen("http://", "http://***@", 1);
    assert_reminder_names(&mails[0], &shown, "404 Not Found");
    for part in [mails[0].text(), mails[0].html()] {
        for secret in ["t0ken-in-url", "pa55word", "bot:"] {
            assert!(!part.contains(secret), "{secret} in\n{part}");
        }
    }
}

#[tokio::test]
async fn a_second_failure_within_the_window_waits_and_is_summed_up_after_it() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let target = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let url = target.url("/crm");
    let f = Forwarding::start(&url, &["--smtp-url", &smtp.url(), "--notify-window", "8s"]).await;

    f.post(&text_event(1)).await;
    smtp.wait_for(1, WAIT).await.unwrap();
    f.post(&text_event(2)).await;
    eventually(WAIT, "the second failure in the log", || async {
        (f.failed_attempts().await >= 2).then_some(())
    })
    .await
    .unwrap();
    // Give a wrongly eager reminder time to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        smtp.messages().unwrap().len(),
        1,
        "a second email inside the window"
    );

    let mails = smtp.wait_for(2, WAIT).await.unwrap();
    let summary = &mails[1];
    assert_eq!(summary.subject, SUBJECT);
    assert_reminder_names(summary, &url, "404 Not Found");
    let text = summary.text();
    assert!(
        text.contains("Count: 1 failed attempt since the last reminder"),
        "{text}"
    );
    assert!(text.contains("(2 failed attempts in all)"), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().unwrap().len(), 2);
    let listed = notifications(&f.client, &f.tenant).await;
    assert_eq!(listed.len(), 2);
    let created: Vec<_> = listed
        .iter()
        .map(|n| n.create_time.unwrap().seconds)
        .collect();
    assert!(created[0] > created[1], "newest first: {created:?}");
}

#[tokio::test]
async fn failures_held_in_the_window_are_listed_per_endpoint_and_reason() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let r = Reporting::start(
        &[
            "https://crm.brand.example/line",
            "https://bot.brand.example/hook",
        ],
        &["--smtp-url", &smtp.url(), "--notify-window", "5s"],
    )
    .await;

    r.report(0, Some("404 Not Found")).await;
    let first = smtp.wait_for(1, WAIT).await.unwrap();
    assert_reminder_names(&first[0], "https://crm.brand.example/line", "404 Not Found");
    r.report(0, Some("404 Not Found")).await;
    r.report(1, Some("500 Internal Server Error")).await;
    r.report(1, Some("remote network error")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(smtp.messages().unwrap().len(), 1);

    let mails = smtp.wait_for(2, WAIT).await.unwrap();
    let summary = &mails[1];
    assert_eq!(summary.rcpt_tos, ["ops@brand.example"]);
    assert_reminder_names(summary, "https://crm.brand.example/line", "404 Not Found");
    assert_reminder_names(
        summary,
        "https://bot.brand.example/hook",
        "500 Internal Server Error",
    );
    assert!(
        summary
            .text()
            .contains("Error reason: remote network error")
    );
}

#[tokio::test]
async fn the_last_email_time_survives_a_restart() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let mut r = Reporting::start(
        &["https://crm.brand.example/line"],
        &["--smtp-url", &smtp.url(), "--notify-window", "1h"],
    )
    .await;
    r.report(0, Some("404 Not Found")).await;
    smtp.wait_for(1, WAIT).await.unwrap();
    // A kill between the send and its SENT mark being flushed would send it again (at least
    // once), which is not what this test is about. The mark is listed as soon as it is written,
    // before the flush; "notice sent" is logged after it. Waiting for the listing alone let the
    // kill fall in between now and then.
    eventually(WAIT, "the notice to be SENT and flushed", || async {
        let listed = notifications(&r.client, &r.tenant).await;
        (listed
            .iter()
            .any(|n| n.state == v1::NotificationState::Sent as i32)
            && r.control.log().contains("notice sent"))
        .then_some(())
    })
    .await
    .unwrap();

    r.control.restart().await.unwrap();
    r.client = r.control.admin().await.unwrap();
    r.report(0, Some("502 Bad Gateway")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(smtp.messages().unwrap().len(), 1);
    assert_eq!(notifications(&r.client, &r.tenant).await.len(), 1);
}

#[tokio::test]
async fn without_smtp_the_notice_is_logged_and_listed() {
    let r = Reporting::start(&["https://crm.brand.example/line"], &[]).await;
    r.report(0, Some("403 Forbidden")).await;

    let listed = eventually(WAIT, "a notice", || async {
        let listed = notifications(&r.client, &r.tenant).await;
        (!listed.is_empty()).then_some(listed)
    })
    .await
    .unwrap();
    let notice = &listed[0];
    assert_eq!(notice.state, v1::NotificationState::Logged as i32);
    assert_eq!(notice.subject, SUBJECT);
    assert_eq!(notice.recipients, ["ops@brand.example"]);
    assert!(notice.body_text.contains("Error reason: 403 Forbidden"));
    assert!(notice.create_time.is_some());
    assert!(notice.sent_time.is_none());
    assert!(
        r.control.log().contains("notice logged"),
        "{}",
        r.control.log()
    );
}

#[tokio::test]
async fn a_failed_smtp_send_is_retried_until_the_server_answers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = Reporting::start(
        &["https://crm.brand.example/line"],
        &["--smtp-url", &format!("smtp://127.0.0.1:{port}")],
    )
    .await;
    r.report(0, Some("404 Not Found")).await;
    let queued = eventually(WAIT, "a failed send on the notice", || async {
        let listed = notifications(&r.client, &r.tenant).await;
        listed
            .into_iter()
            .find(|n| n.state == v1::NotificationState::Queued as i32 && !n.last_error.is_empty())
    })
    .await
    .unwrap();
    assert!(
        queued.last_error.starts_with("attempt 1:"),
        "{}",
        queued.last_error
    );

    // A second report on the way is stored at once: the failing SMTP server holds nothing up.
    r.report(0, Some("404 Not Found")).await;

    let port = port.to_string();
    let smtp = SmtpReceiver::start_with(&["--port", &port]).await.unwrap();
    let mails = smtp.wait_for(1, Duration::from_secs(40)).await.unwrap();
    assert_eq!(mails[0].subject, SUBJECT);
    eventually(WAIT, "the notice to be SENT", || async {
        notifications(&r.client, &r.tenant)
            .await
            .iter()
            .any(|n| n.id == queued.id && n.state == v1::NotificationState::Sent as i32)
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_periodic_sweep_emails_about_sets_that_still_fail() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let r = Reporting::start(
        &[
            "https://crm.brand.example/line",
            "https://bot.brand.example/hook",
        ],
        &["--smtp-url", &smtp.url(), "--failure-sweep-interval", "5s"],
    )
    .await;
    r.report(0, Some("404 Not Found")).await;
    r.report(1, Some("502 Bad Gateway")).await;
    r.report(1, None).await;

    let summary = eventually(WAIT, "the periodic summary", || async {
        smtp.messages()
            .ok()?
            .into_iter()
            .find(|m| m.text().contains("periodic check"))
    })
    .await
    .unwrap();
    assert_eq!(summary.subject, SUBJECT);
    assert_eq!(summary.rcpt_tos, ["ops@brand.example"]);
    assert_reminder_names(&summary, "https://crm.brand.example/line", "404 Not Found");
    assert!(
        !summary.text().contains("https://bot.brand.example/hook"),
        "a set whose latest attempt succeeded is not still failing:\n{}",
        summary.text()
    );
    let kinds: Vec<_> = notifications(&r.client, &r.tenant)
        .await
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert!(kinds.contains(&"weekly_summary".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn smtp_login_is_used_and_its_password_never_logged() {
    let smtp = SmtpReceiver::start_with(&["--auth", "mailer:pw-3b8f1c"])
        .await
        .unwrap();
    let url = format!("smtp://mailer:pw-3b8f1c@127.0.0.1:{}", smtp.port());
    let r = Reporting::start(
        &["https://crm.brand.example/line"],
        &[
            "--smtp-url",
            &url,
            "--smtp-from",
            "Alerts <alerts@hookplane.example>",
        ],
    )
    .await;
    r.report(0, Some("401 Unauthorized")).await;

    let mails = smtp.wait_for(1, WAIT).await.unwrap();
    assert_eq!(mails[0].login.as_deref(), Some("mailer"));
    assert_eq!(mails[0].from, "Alerts <alerts@hookplane.example>");
    assert_eq!(mails[0].mail_from, "alerts@hookplane.example");
    let log = r.control.log();
    assert!(!log.contains("pw-3b8f1c"), "the password is in the log");
    assert!(
        !r.control
            .stdout_lines()
            .iter()
            .any(|l| l.contains("pw-3b8f1c"))
    );
}

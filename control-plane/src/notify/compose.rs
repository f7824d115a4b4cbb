//! The words of every notice: its subject, plain text and HTML, in the shape of the forwarding
//! help page's "system notification letter". Brand URLs appear masked (`masked_url`): an email
//! goes to several people and is kept in the notifications tree.

use std::fmt::Write as _;
use std::time::Duration;

use hookplane_outbound::masked_url;

use crate::clock::Time;

/// What one notice says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// How often, and when, one endpoint failed for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReasonCount {
    pub reason: String,
    pub count: u64,
    pub first: Time,
    pub last: Time,
}

/// One failing forwarding target as the email names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailingEndpoint {
    /// The channel's display name: the LINE official account.
    pub official_account: String,
    pub forwarding_set: String,
    pub url: String,
    pub reasons: Vec<ReasonCount>,
    /// Since when it has failed without a success in between, and how many attempts failed since.
    pub failing_since: Option<(Time, u64)>,
}

/// Why a failure email goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Occasion {
    /// A failure as it happens (or what piled up during the quiet window).
    Reminder,
    /// The periodic check of endpoints that failed during the period and still fail.
    PeriodicSummary { period: Duration },
}

/// A subscription the system stopped, as its notice names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoppedWebhook {
    pub name: String,
    pub url: String,
    pub reason: String,
    pub since: Time,
}

const DETECTED: &str = "We have detected that the webhook forward failed.";
const CHECK_REQUEST: &str = "Please check your integration service. Thanks!";
const WHAT_TO_CHECK: [&str; 3] = [
    "Please check with the relevant team or vendor whether the LINE Webhook Event is received properly at the webhook endpoint URL.",
    "Check the settings of the receiver at that URL: a 4xx reason means it refused the request, a 5xx reason that it failed, and \"remote network error\" that it could not be reached at all.",
    "If you no longer use the service of that team or vendor, ask our Customer Success team to remove the LINE Webhook forwarding setting.",
];

/// Header values come from admin input: a line break must not start a header of its own.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Escapes text for HTML element content and attribute values.
pub(crate) fn html_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn attempts(count: u64) -> String {
    if count == 1 {
        "1 failed attempt".to_owned()
    } else {
        format!("{count} failed attempts")
    }
}

fn when(r: &ReasonCount) -> String {
    if r.count == 1 || r.first == r.last {
        format!("at {}", r.first.rfc3339())
    } else {
        format!("from {} to {}", r.first.rfc3339(), r.last.rfc3339())
    }
}

fn counted_over(occasion: Occasion) -> String {
    match occasion {
        Occasion::Reminder => "since the last reminder".to_owned(),
        Occasion::PeriodicSummary { period } => {
            format!("in the past {}", humantime::format_duration(period))
        }
    }
}

/// The subject every forward-failure email carries; several accounts are named by the first.
pub(crate) fn failure_subject(official_account: &str) -> String {
    format!(
        "[System Notification] {} -- LINE Webhook Forward Failure Reminder",
        one_line(official_account)
    )
}

/// The forward-failure email: one block per endpoint and reason, in the order given.
pub(crate) fn failure_reminder(
    tenant_name: &str,
    endpoints: &[FailingEndpoint],
    occasion: Occasion,
) -> Email {
    let account = endpoints
        .first()
        .map_or("LINE official account", |e| e.official_account.as_str());
    let over = counted_over(occasion);
    let summary_line = match occasion {
        Occasion::Reminder => None,
        Occasion::PeriodicSummary { period } => Some(format!(
            "This is the periodic check: the webhook endpoints below failed in the past {} and are still failing.",
            humantime::format_duration(period)
        )),
    };

    let mut text = format!("Dear {} Partner:\n{DETECTED}\n", one_line(tenant_name));
    if let Some(line) = &summary_line {
        let _ = writeln!(text, "{line}");
    }
    let mut html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>Dear {} Partner:</p>\n<p>{DETECTED}</p>\n",
        html_escape(tenant_name)
    );
    if let Some(line) = &summary_line {
        let _ = writeln!(html, "<p>{}</p>", html_escape(line));
    }
    for endpoint in endpoints {
        for reason in &endpoint.reasons {
            let _ = write!(
                text,
                "\nOfficial account: {}\nError reason: {}\nWebhook endpoint URL: {}\nForwarding set: {}\nCount: {} {over}, {}\n",
                endpoint.official_account,
                reason.reason,
                masked_url(&endpoint.url),
                endpoint.forwarding_set,
                attempts(reason.count),
                when(reason),
            );
            let _ = write!(
                html,
                "<p>Official account: <b>{}</b><br>\nError reason: <b>{}</b><br>\nWebhook endpoint URL: <a href=\"{url}\">{url}</a><br>\nForwarding set: {}<br>\nCount: {} {over}, {}",
                html_escape(&endpoint.official_account),
                html_escape(&reason.reason),
                html_escape(&endpoint.forwarding_set),
                attempts(reason.count),
                html_escape(&when(reason)),
                url = html_escape(&masked_url(&endpoint.url)),
            );
            if let Some((since, total)) = endpoint.failing_since {
                let line = format!(
                    "Failing since: {} ({} in all)",
                    since.rfc3339(),
                    attempts(total)
                );
                let _ = writeln!(text, "{line}");
                let _ = write!(html, "<br>\n{}", html_escape(&line));
            }
            html.push_str("</p>\n");
        }
    }
    let _ = write!(text, "\n{CHECK_REQUEST}\n\nWhat to check:\n");
    let _ = write!(
        html,
        "<p>{CHECK_REQUEST}</p>\n<p>What to check:</p>\n<ul>\n"
    );
    for item in WHAT_TO_CHECK {
        let _ = writeln!(text, "- {item}");
        let _ = writeln!(html, "<li>{}</li>", html_escape(item));
    }
    html.push_str("</ul>\n</body></html>\n");
    Email {
        subject: failure_subject(account),
        text,
        html,
    }
}

/// The email telling a tenant that the system stopped one of its webhook subscriptions.
pub(crate) fn subscription_stopped(tenant_name: &str, webhook: &StoppedWebhook) -> Email {
    const STOPPED: &str =
        "We have stopped the webhook subscription below because deliveries to it kept failing.";
    const AFTER: &str = "Events are no longer delivered to this webhook. Please check the service receiving it, then resume the subscription. Thanks!";
    let since = webhook.since.rfc3339();
    let text = format!(
        "Dear {} Partner:\n{STOPPED}\n\nWebhook name: {}\nWebhook URL: {}\nReason: {}\nStopped since: {since}\n\n{AFTER}\n",
        one_line(tenant_name),
        webhook.name,
        masked_url(&webhook.url),
        webhook.reason,
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>Dear {} Partner:</p>\n<p>{STOPPED}</p>\n<p>Webhook name: <b>{}</b><br>\nWebhook URL: <a href=\"{url}\">{url}</a><br>\nReason: <b>{}</b><br>\nStopped since: {since}</p>\n<p>{AFTER}</p>\n</body></html>\n",
        html_escape(tenant_name),
        html_escape(&webhook.name),
        html_escape(&webhook.reason),
        url = html_escape(&masked_url(&webhook.url)),
    );
    Email {
        subject: format!(
            "[System Notification] {} -- Webhook Subscription Stopped",
            one_line(&webhook.name)
        ),
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time { seconds, nanos: 0 }
    }

    fn endpoint(account: &str, url: &str, reasons: &[(&str, u64)]) -> FailingEndpoint {
        FailingEndpoint {
            official_account: account.into(),
            forwarding_set: "CRM".into(),
            url: url.into(),
            reasons: reasons
                .iter()
                .map(|(reason, count)| ReasonCount {
                    reason: (*reason).into(),
                    count: *count,
                    first: at(1_700_000_000),
                    last: at(1_700_000_060),
                })
                .collect(),
            failing_since: None,
        }
    }

    #[test]
    fn the_subject_names_the_official_account() {
        let email = failure_reminder(
            "Brand",
            &[endpoint(
                "Crescendo Lab",
                "https://example.com.tw/x",
                &[("404 Not Found", 1)],
            )],
            Occasion::Reminder,
        );
        assert_eq!(
            email.subject,
            "[System Notification] Crescendo Lab -- LINE Webhook Forward Failure Reminder"
        );
    }

    #[test]
    fn the_text_reads_like_the_help_pages_example() {
        let email = failure_reminder(
            "Crescendo Lab",
            &[endpoint(
                "Crescendo Lab",
                "https://example.com.tw/LineServer/index.html",
                &[("404 Not Found", 1)],
            )],
            Occasion::Reminder,
        );
        let expected_lines = [
            "Dear Crescendo Lab Partner:",
            "We have detected that the webhook forward failed.",
            "Official account: Crescendo Lab",
            "Error reason: 404 Not Found",
            "Webhook endpoint URL: https://example.com.tw/LineServer/index.html",
            "Please check your integration service. Thanks!",
        ];
        let lines: Vec<_> = email.text.lines().collect();
        for line in expected_lines {
            assert!(
                lines.contains(&line),
                "{line:?} missing from\n{}",
                email.text
            );
        }
        assert!(email.text.contains("received properly"));
        assert!(
            email
                .text
                .contains("remove the LINE Webhook forwarding setting")
        );
    }

    #[test]
    fn several_accounts_take_the_first_ones_name_and_list_every_endpoint_and_reason() {
        let email = failure_reminder(
            "Brand",
            &[
                endpoint("First OA", "https://a.example/1", &[("404 Not Found", 3)]),
                endpoint(
                    "Second OA",
                    "https://b.example/2",
                    &[
                        ("500 Internal Server Error", 2),
                        ("remote network error", 1),
                    ],
                ),
            ],
            Occasion::Reminder,
        );
        assert!(email.subject.contains("] First OA --"));
        for needle in [
            "Official account: Second OA",
            "Webhook endpoint URL: https://b.example/2",
            "Error reason: 500 Internal Server Error",
            "Error reason: remote network error",
            "Count: 3 failed attempts since the last reminder",
            "Count: 1 failed attempt since the last reminder",
        ] {
            assert!(email.text.contains(needle), "{needle:?} missing");
        }
    }

    #[test]
    fn the_html_part_escapes_every_value() {
        let email = failure_reminder(
            "<Brand & Co>",
            &[endpoint(
                "OA \"quoted\"",
                "https://x.example/?a=1&b=<2>",
                &[("404 Not Found", 1)],
            )],
            Occasion::Reminder,
        );
        assert!(email.html.contains("Dear &lt;Brand &amp; Co&gt; Partner:"));
        assert!(email.html.contains("OA &quot;quoted&quot;"));
        assert!(email.html.contains("https://x.example/?a=***&amp;b=***"));
        assert!(!email.html.contains("<Brand"));
    }

    #[test]
    fn a_line_break_in_a_name_cannot_reach_the_subject() {
        let subject = failure_subject("OA\r\nBcc: victim@example.com");
        assert!(!subject.contains('\n') && !subject.contains('\r'));
    }

    #[test]
    fn the_periodic_summary_says_over_which_period_it_counts() {
        let email = failure_reminder(
            "Brand",
            &[endpoint(
                "OA",
                "https://a.example/1",
                &[("502 Bad Gateway", 4)],
            )],
            Occasion::PeriodicSummary {
                period: Duration::from_secs(7 * 86_400),
            },
        );
        assert!(
            email
                .text
                .contains("failed in the past 7days and are still failing")
        );
        assert!(
            email
                .text
                .contains("Count: 4 failed attempts in the past 7days")
        );
    }

    #[test]
    fn an_endpoint_failing_for_a_while_says_since_when_and_how_often_in_all() {
        let mut failing = endpoint("OA", "https://a.example/1", &[("404 Not Found", 1)]);
        failing.failing_since = Some((at(1_700_000_000), 2));
        let email = failure_reminder("Brand", &[failing], Occasion::Reminder);
        assert!(
            email
                .text
                .contains("Failing since: 2023-11-14T22:13:20Z (2 failed attempts in all)"),
            "{}",
            email.text
        );
    }

    #[test]
    fn the_stopped_subscription_notice_names_the_webhook() {
        let email = subscription_stopped(
            "Brand",
            &StoppedWebhook {
                name: "Receipts".into(),
                url: "https://hooks.brand.example/r".into(),
                reason: "500 Internal Server Error".into(),
                since: at(1_700_000_000),
            },
        );
        assert_eq!(
            email.subject,
            "[System Notification] Receipts -- Webhook Subscription Stopped"
        );
        for needle in [
            "Webhook name: Receipts",
            "Webhook URL: https://hooks.brand.example/r",
            "Reason: 500 Internal Server Error",
            "Stopped since: 2023-11-14T22:13:20Z",
        ] {
            assert!(email.text.contains(needle), "{needle:?} missing");
        }
        assert!(email.html.contains("<b>Receipts</b>"));
    }

    #[test]
    fn credentials_in_a_url_never_reach_an_email() {
        let reminder = failure_reminder(
            "Brand",
            &[endpoint(
                "Brand OA",
                "https://bot:pa55word@crm.brand.example/line?token=t0ken",
                &[("404 Not Found", 1)],
            )],
            Occasion::Reminder,
        );
        let stopped = subscription_stopped(
            "Brand",
            &StoppedWebhook {
                name: "Receipts".into(),
                url: "https://hooks.brand.example/r?key=k3y".into(),
                reason: "500 Internal Server Error".into(),
                since: at(1_700_000_000),
            },
        );
        for email in [&reminder, &stopped] {
            for secret in ["pa55word", "bot:", "t0ken", "k3y"] {
                assert!(!email.text.contains(secret), "{secret} in {}", email.text);
                assert!(!email.html.contains(secret), "{secret} in {}", email.html);
            }
        }
        assert!(
            reminder
                .text
                .contains("Webhook endpoint URL: https://***@crm.brand.example/line?token=***"),
            "{}",
            reminder.text
        );
        assert!(
            stopped
                .text
                .contains("Webhook URL: https://hooks.brand.example/r?key=***")
        );
    }
}

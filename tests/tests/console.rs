//! The web console end to end: a real `hookplane standalone`, its console driven by Debian's
//! headless Chromium over WebDriver, and real receivers. Each browser test saves a screenshot of
//! the page it ends on under `target/console-screenshots/`. Without Chromium the browser tests
//! say SKIPPED and pass (`.ci/run` installs it, so CI runs them).

use std::time::Duration;

use hookplane_client::v1;
use hookplane_tests::api::create_tenant;
use hookplane_tests::browser::Browser;
use hookplane_tests::{Receiver, Respond, Standalone, eventually, fixture, ingress};

const WAIT: Duration = Duration::from_secs(20);

/// A standalone with one tenant, and a browser signed in to its console as the operator.
struct Setup {
    sa: Standalone,
    admin: hookplane_client::Client,
    tenant: v1::Tenant,
    browser: Browser,
}

async fn setup() -> Option<Setup> {
    let browser = Browser::start().await.unwrap()?;
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let tenant = create_tenant(&admin, "Brand Tea").await.unwrap();
    browser
        .sign_in(&sa.console_url(), &sa.admin_token)
        .await
        .unwrap();
    Some(Setup {
        sa,
        admin,
        tenant,
        browser,
    })
}

#[tokio::test]
async fn signing_in_with_the_admin_token_shows_the_tenants_and_signing_out_ends_the_session() {
    let Some(Setup {
        sa,
        tenant,
        browser,
        ..
    }) = setup().await
    else {
        return;
    };
    let start = browser.wait_for_text("Brand Tea").await.unwrap();
    assert!(start.contains(&tenant.id), "{start}");
    assert!(start.contains("Channels and forwarding"), "{start}");
    // The token is never rendered back into a page, nor put in a URL.
    assert!(!browser.source().await.unwrap().contains(&sa.admin_token));
    assert!(!browser.url().await.unwrap().contains(&sa.admin_token));

    browser.press("header", "Sign out").await.unwrap();
    browser
        .wait_for_text("Sign in with an API token")
        .await
        .unwrap();
    // The session is gone: the start page sends back to sign-in.
    browser.goto(&sa.console_url()).await.unwrap();
    browser
        .wait_for_text("Sign in with an API token")
        .await
        .unwrap();
    assert!(browser.url().await.unwrap().ends_with("/sign-in"));

    // The keyboard is enough: Enter in the token field submits the form.
    browser
        .fill("token", "hp_not_a_token\u{E007}")
        .await
        .unwrap();
    browser
        .wait_for_text("This token is not accepted")
        .await
        .unwrap();
    // The refused token is not written back into the form.
    assert!(!browser.source().await.unwrap().contains("hp_not_a_token"));
    browser.screenshot("sign-in-refused").await.unwrap();
    browser.close().await.unwrap();
}

/// A plain HTTP client that keeps the console's cookies by hand and never follows redirects.
struct Http {
    client: reqwest::Client,
    base: String,
    cookies: Vec<String>,
}

impl Http {
    fn new(base: String) -> Http {
        Http {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base,
            cookies: Vec::new(),
        }
    }

    fn keep(&mut self, response: &reqwest::Response) -> Vec<String> {
        let set: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        for cookie in &set {
            let pair = cookie.split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            self.cookies.push(pair);
        }
        set
    }

    async fn get(&mut self, path: &str) -> (reqwest::StatusCode, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookies.join("; "))
            .send()
            .await
            .unwrap();
        self.keep(&response);
        (response.status(), response.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookies.join("; "))
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test]
async fn a_form_posted_without_the_csrf_token_is_refused() {
    let sa = Standalone::start().await.unwrap();
    let mut http = Http::new(sa.console_url());

    // Sign-in itself needs the form's CSRF value.
    let refused = http.post("/sign-in", &[("token", &sa.admin_token)]).await;
    assert_eq!(refused.status(), 403);

    let (_, form) = http.get("/sign-in").await;
    let sign_in_csrf = csrf_of(&form);
    let signed_in = http
        .post(
            "/sign-in",
            &[("token", &sa.admin_token), ("csrf", &sign_in_csrf)],
        )
        .await;
    assert_eq!(signed_in.status(), 303);
    let session_cookie = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("hookplane_session="))
        .expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly"), "{session_cookie}");
    assert!(
        session_cookie.contains("SameSite=Strict"),
        "{session_cookie}"
    );
    assert!(session_cookie.contains("Path=/"), "{session_cookie}");

    let (status, start) = http.get("/").await;
    assert_eq!(status, 200);
    let headers = http
        .client
        .get(format!("{}/", http.base))
        .header("cookie", http.cookies.join("; "))
        .send()
        .await
        .unwrap()
        .headers()
        .clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers.contains_key("content-security-policy"));
    assert!(!start.contains(&sa.admin_token));
    let csrf = csrf_of(&start);

    let without = http
        .post("/tenants", &[("display_name", "Forged Brand")])
        .await;
    assert_eq!(without.status(), 403);
    let wrong = http
        .post(
            "/tenants",
            &[("display_name", "Forged Brand"), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let admin = sa.admin().await.unwrap();
    let tenants = admin
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert!(tenants.is_empty(), "a refused form changed nothing");

    let with = http
        .post(
            "/tenants",
            &[("display_name", "Real Brand"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(with.status(), 303);

    // Signing out ends the session: its cookie no longer opens a page, and its CSRF token is dead.
    let out = http.post("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    let (status, _) = http.get("/").await;
    assert_eq!(status, 303, "a signed-out session is sent to sign in");
    // Signing out again, with the session already gone, just leads to the sign-in page.
    let again = http.post("/sign-out", &[]).await;
    assert_eq!(again.status(), 303);
    let after = http
        .post(
            "/tenants",
            &[("display_name", "Late Brand"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(after.status(), 403);
}

#[tokio::test]
async fn a_channel_and_a_forwarding_set_made_in_the_console_show_the_webhook_url_and_forward() {
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    let receiver = Receiver::start().await.unwrap();
    // One click from the start page.
    browser
        .press("main", "Channels and forwarding")
        .await
        .unwrap();
    browser
        .wait_for_text("Channels of Brand Tea")
        .await
        .unwrap();
    browser.fill("new-channel-name", "Tea OA").await.unwrap();
    browser
        .fill(
            "new-channel-secret",
            hookplane_tests::FIXTURE_CHANNEL_SECRET,
        )
        .await
        .unwrap();
    browser.press("main", "Add channel").await.unwrap();
    let page = browser.wait_for_text("Channel Tea OA added").await.unwrap();
    let channel = s
        .admin
        .channels()
        .list_channels(v1::ListChannelsRequest {
            tenant_id: s.tenant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .channels
        .remove(0);
    let webhook_url = ingress::webhook_url(&s.sa.ingress_url(), &channel.id);
    assert!(page.contains(&webhook_url), "{page}");
    assert!(page.contains("Forwarding sets (0 of 10)"), "{page}");
    let copy = browser
        .find(&format!("button[data-copy='{webhook_url}']"))
        .await
        .unwrap();
    assert!(copy.is_displayed().await.unwrap(), "the copy button shows");

    let card = format!("section#{}", channel.id);
    browser
        .click(&format!("{card} details summary"))
        .await
        .unwrap();
    browser
        .fill(&format!("{}-set-name", channel.id), "CRM")
        .await
        .unwrap();
    browser
        .fill(&format!("{}-set-url", channel.id), &receiver.url("/line"))
        .await
        .unwrap();
    browser.press(&card, "Add forwarding set").await.unwrap();
    let page = browser
        .wait_for_text("Forwarding set CRM added")
        .await
        .unwrap();
    assert!(page.contains("Forwarding sets (1 of 10)"), "{page}");
    assert!(page.contains("Enabled"), "{page}");

    // LINE's request to the URL the page shows reaches the set's receiver.
    ingress::wait_for_channel(&s.sa.ingress_url(), &channel.id)
        .await
        .unwrap();
    let body = fixture("text.json");
    let sent = ingress::post_signed(&s.sa.ingress_url(), &channel.id, &body)
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    eventually(WAIT, "the forward at the receiver", || async {
        receiver
            .requests()
            .iter()
            .any(|r| r.path == "/line" && r.body.as_ref() == body.as_slice())
            .then_some(())
    })
    .await
    .unwrap();

    // The channel secret changes with a grace period for the old one.
    browser
        .click(&format!("{card} details:nth-of-type(2) summary"))
        .await
        .unwrap();
    browser
        .fill(
            &format!("{}-new-secret", channel.id),
            "fedcba9876543210fedcba9876543210",
        )
        .await
        .unwrap();
    browser.press(&card, "Change secret").await.unwrap();
    browser
        .wait_for_text("Channel secret changed; the old one keeps working until")
        .await
        .unwrap();

    // Disable, then delete behind a confirmation.
    browser.press(&card, "Disable").await.unwrap();
    let page = browser
        .wait_for_text("Forwarding set CRM disabled")
        .await
        .unwrap();
    assert!(page.contains("Disabled"), "{page}");
    browser.press(&card, "Delete").await.unwrap();
    browser
        .wait_for_text("Delete the forwarding set CRM")
        .await
        .unwrap();
    browser.press("main", "Yes, delete").await.unwrap();
    let page = browser
        .wait_for_text("Forwarding set CRM deleted")
        .await
        .unwrap();
    assert!(page.contains("Forwarding sets (0 of 10)"), "{page}");
    browser.screenshot("channels").await.unwrap();

    // At phone width nothing runs off the side of the page.
    browser.client.set_window_size(390, 900).await.unwrap();
    browser.client.refresh().await.unwrap();
    browser
        .wait_for_text("Channels of Brand Tea")
        .await
        .unwrap();
    browser.screenshot("channels-phone").await.unwrap();
    let widths = browser
        .client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             Array.from(document.querySelectorAll('*')) \
               .filter(e => e.getBoundingClientRect().right > window.innerWidth) \
               .map(e => e.tagName + '.' + e.className).join(' ')];",
            vec![],
        )
        .await
        .unwrap();
    // [page width, window width, what sticks out]
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "{widths}");
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn a_webhook_made_in_the_console_with_ed25519_shows_its_public_key_and_never_its_signing_key()
{
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    browser.press("main", "Webhooks").await.unwrap();
    browser
        .wait_for_text("Webhooks of Brand Tea")
        .await
        .unwrap();
    browser.fill("webhook-name", "Signed").await.unwrap();
    browser
        .fill("webhook-url", "https://hooks.brand.example/in")
        .await
        .unwrap();
    browser.click("#type-prize\\.points_added").await.unwrap();
    browser
        .click("#webhook-scheme option[value='ed25519']")
        .await
        .unwrap();
    browser.press("main", "Create webhook").await.unwrap();
    let page = browser
        .wait_for_text("Webhook Signed created")
        .await
        .unwrap();
    assert!(
        page.contains("ed25519 public-key signatures (v1a)"),
        "{page}"
    );
    let sub = s
        .admin
        .subscriptions()
        .list_subscriptions(v1::ListSubscriptionsRequest {
            tenant_id: s.tenant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions
        .remove(0);
    assert_eq!(
        sub.signature_scheme,
        v1::SignatureScheme::StandardWebhooksEd25519 as i32
    );
    let card = format!("section#{}", sub.id);
    browser.press(&card, "Show public key").await.unwrap();
    let shown = browser.text(&format!("{card} code.secret")).await.unwrap();
    let revealed = s
        .admin
        .subscriptions()
        .reveal_secret(v1::RevealSecretRequest { id: sub.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(shown.starts_with("whpk_"), "{shown}");
    assert_eq!(shown, revealed.public_key);
    let source = browser.source().await.unwrap();
    assert!(source.contains("It is not a secret"), "{source}");
    assert!(!source.contains("whsk_"));
}

#[tokio::test]
async fn a_webhook_made_in_the_console_reveals_and_changes_its_secret_and_its_test_reads_200() {
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    let receiver = Receiver::start().await.unwrap();
    browser.press("main", "Webhooks").await.unwrap();
    browser
        .wait_for_text("Webhooks of Brand Tea")
        .await
        .unwrap();
    browser.fill("webhook-name", "Points").await.unwrap();
    browser
        .fill("webhook-url", &receiver.url("/hooks"))
        .await
        .unwrap();
    browser.click("#type-prize\\.points_added").await.unwrap();
    browser.press("main", "Create webhook").await.unwrap();
    let page = browser
        .wait_for_text("Webhook Points created")
        .await
        .unwrap();
    assert!(page.contains("Working"), "{page}");
    assert!(page.contains("Purchase valid until"), "{page}");
    let sub = s
        .admin
        .subscriptions()
        .list_subscriptions(v1::ListSubscriptionsRequest {
            tenant_id: s.tenant.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions
        .remove(0);
    let card = format!("section#{}", sub.id);
    let secret_of = || async {
        s.admin
            .subscriptions()
            .reveal_secret(v1::RevealSecretRequest { id: sub.id.clone() })
            .await
            .unwrap()
            .into_inner()
            .secret
    };

    // The secret shows only after an explicit click, and never in a URL.
    let before = secret_of().await;
    assert!(!browser.source().await.unwrap().contains(&before));
    browser.press(&card, "Reveal share secret").await.unwrap();
    let shown = browser.text(&format!("{card} code.secret")).await.unwrap();
    assert_eq!(shown, before);
    assert!(!browser.url().await.unwrap().contains(&before));

    // Changing it with a grace period shows the new one and until when the old one works.
    browser
        .click(&format!("{card} details summary"))
        .await
        .unwrap();
    browser.press(&card, "Change share secret").await.unwrap();
    let page = browser
        .wait_for_text("The share secret was changed")
        .await
        .unwrap();
    assert!(
        page.contains("The previous secret keeps working until"),
        "{page}"
    );
    let after = secret_of().await;
    assert_ne!(after, before);
    assert_eq!(
        browser.text(&format!("{card} code.secret")).await.unwrap(),
        after
    );

    // And without one: the old secret stops at once.
    browser
        .click(&format!("{card} details summary"))
        .await
        .unwrap();
    browser
        .find(&format!("{card} select[name=grace] option[value='0']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.press(&card, "Change share secret").await.unwrap();
    // The page before says "changed" too: the new one shows a secret other than `after`.
    let page = browser
        .wait_for_page("the second change's page", |text| {
            text.contains("The share secret was changed") && !text.contains(&after)
        })
        .await
        .unwrap();
    assert!(
        !page.contains("The previous secret keeps working until"),
        "{page}"
    );
    let last = secret_of().await;
    assert_ne!(last, after);
    assert!(page.contains(&last));

    // A test event reaches the real receiver; the page reads its answer.
    browser.press(&card, "Send test").await.unwrap();
    let status = browser.text(&format!("{card} .test-status")).await.unwrap();
    assert_eq!(status, "200");
    let page = browser.wait_for_text("Succeeded").await.unwrap();
    assert!(page.contains("Latency"), "{page}");
    assert!(receiver.requests().iter().any(|r| r.path == "/hooks"));
    browser.screenshot("webhooks").await.unwrap();

    browser.press(&card, "Stop").await.unwrap();
    let page = browser
        .wait_for_text("Webhook Points stopped")
        .await
        .unwrap();
    assert!(page.contains("Stopped"), "{page}");
    browser.press(&card, "Resume").await.unwrap();
    browser
        .wait_for_text("Webhook Points resumed")
        .await
        .unwrap();
    browser.press(&card, "Delete").await.unwrap();
    browser
        .wait_for_text("Delete the webhook Points")
        .await
        .unwrap();
    browser.press("main", "Yes, delete").await.unwrap();
    browser
        .wait_for_text("Webhook Points deleted")
        .await
        .unwrap();
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn event_types_of_a_zone_not_bought_are_shown_disabled_with_why() {
    let Some(s) = setup().await else {
        return;
    };
    let mut only_zone_1 = hookplane_tests::api::tenant("Zone One Brand");
    only_zone_1
        .entitlements
        .as_mut()
        .unwrap()
        .zones
        .retain(|z| z.zone == v1::Zone::Zone1 as i32);
    let tenant = s
        .admin
        .tenants()
        .create_tenant(v1::CreateTenantRequest {
            tenant: Some(only_zone_1),
        })
        .await
        .unwrap()
        .into_inner();
    s.browser
        .goto(&format!(
            "{}/tenants/{}/webhooks",
            s.sa.console_url(),
            tenant.id
        ))
        .await
        .unwrap();
    let page = s
        .browser
        .wait_for_text("Zone 2 is not bought")
        .await
        .unwrap();
    assert!(!page.contains("Zone 1 is not bought"), "{page}");
    let first_open = s.browser.find("#type-message\\.first_open").await.unwrap();
    assert!(!first_open.is_enabled().await.unwrap());
    let points = s.browser.find("#type-prize\\.points_added").await.unwrap();
    assert!(points.is_enabled().await.unwrap());
    s.browser.screenshot("webhook-zones").await.unwrap();
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_forward_shows_in_the_attempts_with_its_reason_and_can_be_retried() {
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    let receiver = Receiver::start_with(Respond::Status(404)).await.unwrap();
    let channel = hookplane_tests::api::create_channel(
        &s.admin,
        &s.tenant.id,
        hookplane_tests::FIXTURE_CHANNEL_SECRET,
    )
    .await
    .unwrap();
    let set =
        hookplane_tests::api::create_forwarding_set(&s.admin, &channel.id, &receiver.url("/gone"))
            .await
            .unwrap();
    ingress::wait_for_channel(&s.sa.ingress_url(), &channel.id)
        .await
        .unwrap();
    let sent = ingress::post_signed(&s.sa.ingress_url(), &channel.id, &fixture("text.json"))
        .await
        .unwrap();
    assert_eq!(sent.status(), 200);
    eventually(WAIT, "the failed attempt in the log", || async {
        let attempts = hookplane_tests::api::set_attempts(&s.admin, &set.id)
            .await
            .ok()?;
        attempts
            .iter()
            .any(|a| a.outcome == v1::AttemptOutcome::Failed as i32)
            .then_some(())
    })
    .await
    .unwrap();

    // Two clicks from the start page: the channels, then the set's attempts.
    browser
        .press("main", "Channels and forwarding")
        .await
        .unwrap();
    browser
        .press(&format!("section#{}", channel.id), "Attempts")
        .await
        .unwrap();
    let page = browser
        .wait_for_text("Delivery attempts: crm")
        .await
        .unwrap();
    assert!(page.contains("404 Not Found"), "{page}");
    assert!(page.contains("Failed"), "{page}");

    // Filtering by outcome: none delivered yet, the failure under "Failed".
    browser
        .find("#outcome option[value='succeeded']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.press("main", "Filter").await.unwrap();
    browser
        .wait_for_text("No delivery attempts with this outcome")
        .await
        .unwrap();
    browser
        .find("#outcome option[value='failed']")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.press("main", "Filter").await.unwrap();
    browser.wait_for_text("404 Not Found").await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("outcome=failed"));

    receiver.respond(Respond::Status(200));
    browser.press("table", "Retry").await.unwrap();
    browser.wait_for_text("queued again").await.unwrap();
    eventually(WAIT, "the retried forward at the receiver", || async {
        (receiver.requests().len() >= 2).then_some(())
    })
    .await
    .unwrap();
    let shown = eventually(WAIT, "the delivered attempt on the page", || async {
        browser
            .goto(&format!(
                "{}/forwarding-sets/{}/attempts",
                s.sa.console_url(),
                set.id
            ))
            .await
            .ok()?;
        let text = browser.text("main").await.ok()?;
        // The retried delivery's success, counted in the last 24 hours.
        text.contains("1 delivered").then_some(text)
    })
    .await
    .unwrap();
    assert!(shown.contains("404 Not Found"), "{shown}");
    // The last 24 hours: one delivered, one failed, drawn as two bars.
    assert!(shown.contains("1 delivered · 1 failed in 24 h"), "{shown}");
    let bars = browser
        .client
        .find_all(fantoccini::Locator::Css("svg.chart rect"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 2);
    browser.screenshot("attempts").await.unwrap();

    // The failure reminder it caused is listed with its state (no SMTP here: logged).
    browser.goto(&s.sa.console_url()).await.unwrap();
    browser.press("main", "Notifications").await.unwrap();
    let page = browser
        .wait_for_text("LINE Webhook Forward Failure Reminder")
        .await
        .unwrap();
    assert!(page.contains("Logged (no SMTP server)"), "{page}");
    assert!(page.contains("ops@brand.example"), "{page}");
    browser.screenshot("notifications").await.unwrap();
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn the_operator_adds_a_tenant_and_edits_its_emails_and_zones() {
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    browser
        .fill("tenant-new-name", "Noodle House")
        .await
        .unwrap();
    browser
        .fill("tenant-new-emails", "ops@noodle.example")
        .await
        .unwrap();
    browser
        .set_value("tenant-new-zone1", "2030-01-31")
        .await
        .unwrap();
    browser.press("main", "Add tenant").await.unwrap();
    let page = browser
        .wait_for_text("Tenant Noodle House added")
        .await
        .unwrap();
    assert!(page.contains("Zone 1 · valid until 2030-01-31"), "{page}");
    let tenant = s
        .admin
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tenants
        .into_iter()
        .find(|t| t.display_name == "Noodle House")
        .unwrap();
    assert_eq!(tenant.notification_emails, ["ops@noodle.example"]);

    // A bad email comes back next to the form, with what was typed kept.
    browser
        .goto(&format!("{}/tenants/{}", s.sa.console_url(), tenant.id))
        .await
        .unwrap();
    let form = format!("tenant-{}", tenant.id);
    browser
        .fill(&format!("{form}-emails"), "not-an-email")
        .await
        .unwrap();
    browser.press("main", "Save").await.unwrap();
    browser.find(".error").await.unwrap();
    let kept = browser
        .find(&format!("#{form}-emails"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("not-an-email"));

    browser
        .fill(
            &format!("{form}-emails"),
            "ops@noodle.example\ncs@noodle.example",
        )
        .await
        .unwrap();
    browser
        .set_value(&format!("{form}-zone2"), "2031-06-30")
        .await
        .unwrap();
    browser.press("main", "Save").await.unwrap();
    browser.wait_for_text("Saved.").await.unwrap();
    let tenant = s
        .admin
        .tenants()
        .get_tenant(v1::GetTenantRequest {
            id: tenant.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        tenant.notification_emails,
        ["ops@noodle.example", "cs@noodle.example"]
    );
    let zones = tenant.entitlements.unwrap().zones;
    assert_eq!(zones.len(), 2);
    browser.screenshot("tenant-settings").await.unwrap();
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn a_genesys_set_made_in_the_console_shows_its_outbound_url_and_can_be_renamed() {
    let Some(s) = setup().await else {
        return;
    };
    let browser = &s.browser;
    let channel = s
        .admin
        .channels()
        .create_channel(v1::CreateChannelRequest {
            tenant_id: s.tenant.id.clone(),
            channel: Some(v1::Channel {
                line_channel_access_token: "line-access-token".to_owned(),
                ..hookplane_tests::api::channel("Tea OA", hookplane_tests::FIXTURE_CHANNEL_SECRET)
            }),
        })
        .await
        .unwrap()
        .into_inner();
    browser
        .press("main", "Channels and forwarding")
        .await
        .unwrap();
    let card = format!("section#{}", channel.id);
    browser
        .click(&format!("{card} details summary"))
        .await
        .unwrap();
    let field = |name: &str| format!("{}-set-{name}", channel.id);
    browser
        .fill(&field("name"), "Contact centre")
        .await
        .unwrap();
    browser
        .find(&format!("#{} option[value=genesys]", field("kind")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .fill(&field("region"), "mypurecloud.com")
        .await
        .unwrap();
    browser.fill(&field("client"), "client-id").await.unwrap();
    browser
        .fill(&field("client-secret"), "GENESYS-CLIENT-SECRET-1")
        .await
        .unwrap();
    browser
        .fill(&field("integration"), "integration-id")
        .await
        .unwrap();
    browser
        .fill(&field("signing"), "GENESYS-SIGNING-SECRET-2")
        .await
        .unwrap();
    browser.press(&card, "Add forwarding set").await.unwrap();
    let page = browser
        .wait_for_text("Forwarding set Contact centre added")
        .await
        .unwrap();
    let set = s
        .admin
        .forwarding()
        .list_forwarding_sets(v1::ListForwardingSetsRequest {
            channel_id: channel.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .forwarding_sets
        .remove(0);
    assert_eq!(set.kind, v1::ForwardingKind::GenesysOpenMessaging as i32);
    assert!(page.contains("Genesys Cloud Open Messaging"), "{page}");
    let outbound = format!("{}{}", s.sa.ingress_url(), set.outbound_path);
    assert!(page.contains(&outbound), "{page}");
    // Secrets typed into the form are never shown back.
    let source = browser.source().await.unwrap();
    assert!(!source.contains("GENESYS-CLIENT-SECRET-1"));
    assert!(!source.contains("GENESYS-SIGNING-SECRET-2"));

    browser.press(&card, "Edit").await.unwrap();
    browser
        .wait_for_text("Forwarding set Contact centre")
        .await
        .unwrap();
    browser.fill("set-name", "Genesys TH").await.unwrap();
    browser.fill("set-timeout", "99").await.unwrap();
    browser.press("main", "Save").await.unwrap();
    // The API's refusal shows next to the form, with the input kept.
    browser.find(".error").await.unwrap();
    let kept = browser
        .find("#set-name")
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("Genesys TH"));
    browser.fill("set-timeout", "20").await.unwrap();
    browser.press("main", "Save").await.unwrap();
    browser
        .wait_for_text("Forwarding set Genesys TH saved")
        .await
        .unwrap();
    browser.screenshot("genesys-set").await.unwrap();
    s.browser.close().await.unwrap();
}

#[tokio::test]
async fn the_console_listens_on_8081_by_default_and_off_disables_it() {
    for command in ["standalone", "control"] {
        let output = std::process::Command::new(hookplane_tests::binaries::hookplane())
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("HOOKPLANE_CONSOLE_LISTEN"), "{help}");
        assert!(help.contains("[default: 127.0.0.1:8081]"), "{help}");
    }
    let on = Standalone::start().await.unwrap();
    assert!(
        on.stdout_lines()
            .iter()
            .any(|l| l.starts_with("console listening on ")),
        "{:?}",
        on.stdout_lines()
    );
    let (status, _) = Http::new(on.console_url()).get("/sign-in").await;
    assert_eq!(status, 200);
    let off = Standalone::start_with(&["--console-listen", "off"])
        .await
        .unwrap();
    assert!(
        !off.stdout_lines()
            .iter()
            .any(|l| l.starts_with("console listening on ")),
        "{:?}",
        off.stdout_lines()
    );
}

#[tokio::test]
async fn a_tenant_admin_sees_and_changes_only_its_tenant() {
    let Some(browser) = Browser::start().await.unwrap() else {
        return;
    };
    let sa = Standalone::start().await.unwrap();
    let admin = sa.admin().await.unwrap();
    let own = create_tenant(&admin, "Brand Tea").await.unwrap();
    let other = create_tenant(&admin, "Other Brand").await.unwrap();
    let other_channel = hookplane_tests::api::create_channel(
        &admin,
        &other.id,
        hookplane_tests::FIXTURE_CHANNEL_SECRET,
    )
    .await
    .unwrap();
    let token = admin
        .tokens()
        .create_token(v1::CreateTokenRequest {
            token: Some(v1::Token {
                display_name: "Brand Tea's admin".to_owned(),
                role: v1::Role::TenantAdmin as i32,
                tenant_id: own.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    browser.sign_in(&sa.console_url(), &token).await.unwrap();
    let start = browser.wait_for_text("Brand Tea").await.unwrap();
    assert!(!start.contains("Other Brand"), "{start}");
    assert!(!start.contains(&other.id), "{start}");

    // Its own tenant's pages work.
    browser
        .press("main", "Channels and forwarding")
        .await
        .unwrap();
    browser
        .wait_for_text("Channels of Brand Tea")
        .await
        .unwrap();

    // Another tenant's page, typed in: the API refuses and the page says so.
    browser
        .goto(&format!(
            "{}/tenants/{}/channels",
            sa.console_url(),
            other.id
        ))
        .await
        .unwrap();
    let page = browser
        .wait_for_text("Your token may not do this")
        .await
        .unwrap();
    assert!(!page.contains("Other Brand"), "{page}");
    assert!(!page.contains(&other_channel.id), "{page}");

    // Adding a tenant is an operator's act.
    browser.goto(&sa.console_url()).await.unwrap();
    browser
        .fill("tenant-new-name", "Sneaky Brand")
        .await
        .unwrap();
    browser.press("main", "Add tenant").await.unwrap();
    browser
        .wait_for_text("Your token may not do this")
        .await
        .unwrap();
    let kept = browser
        .find("#tenant-new-name")
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("Sneaky Brand"));
    browser.screenshot("tenant-admin").await.unwrap();
    let tenants = admin
        .tenants()
        .list_tenants(v1::ListTenantsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tenants;
    assert_eq!(tenants.len(), 2);
    browser.close().await.unwrap();
}

/// With TLS on the control plane's gRPC port, the console still reaches the API: it dials
/// https, trusting exactly the certificate the port serves (here one no CA signed).
#[tokio::test]
async fn the_console_signs_in_when_the_grpc_port_takes_only_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("control.crt");
    let key = dir.path().join("control.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let sa = Standalone::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let mut http = Http::new(sa.console_url());
    let (_, form) = http.get("/sign-in").await;
    let csrf = csrf_of(&form);
    let signed_in = http
        .post("/sign-in", &[("token", &sa.admin_token), ("csrf", &csrf)])
        .await;
    // Sign-in checks the token with a call to the API: a 303 means the call went through.
    assert_eq!(signed_in.status(), 303);
    let (status, _) = http.get("/").await;
    assert_eq!(status, 200);
}

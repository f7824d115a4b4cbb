//! A real browser for the web console's tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver`, started here on a free port), with the few steps the tests repeat: sign in,
//! fill a field, press a button, read the page, save a screenshot.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, ClientBuilder, Locator};
use tokio::process::{Child, Command};

use crate::eventually;

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const WAIT: Duration = Duration::from_secs(20);

/// Chromium under chromedriver; dropping it ends both.
pub struct Browser {
    pub client: Client,
    _driver: Child,
}

/// Whether Chromium and chromedriver are installed (`.ci/run` installs them).
fn installed() -> bool {
    std::path::Path::new(CHROMIUM).exists()
        && std::process::Command::new(CHROMEDRIVER)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (said loudly) when they are not installed.
    pub async fn start() -> anyhow::Result<Option<Browser>> {
        if !installed() {
            eprintln!(
                "SKIPPED: chromium and chromium-driver are not installed \
                 (apt-get install chromium chromium-driver; .ci/run does)"
            );
            return Ok(None);
        }
        // A free port, released for chromedriver to take (it has no port-0 mode that reports back).
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        eventually(WAIT, "chromedriver to answer", || async {
            let answer = http.get(&status).send().await.ok()?;
            answer.status().is_success().then_some(())
        })
        .await?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1200,1400",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("opening a Chromium session")?;
        Ok(Some(Browser {
            client,
            _driver: driver,
        }))
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client.goto(url).await?)
    }

    /// Types `text` into the input labelled by the element with id `id`.
    pub async fn fill(&self, id: &str, text: &str) -> anyhow::Result<()> {
        let input = self.find(&format!("#{}", css_id(id))).await?;
        input.clear().await?;
        input.send_keys(text).await?;
        Ok(())
    }

    /// Sets the value of the input with id `id` directly (date inputs take typed keys in the
    /// browser's locale format, not as `YYYY-MM-DD`).
    pub async fn set_value(&self, id: &str, value: &str) -> anyhow::Result<()> {
        self.find(&format!("#{}", css_id(id))).await?;
        self.client
            .execute(
                "document.getElementById(arguments[0]).value = arguments[1];",
                vec![serde_json::json!(id), serde_json::json!(value)],
            )
            .await?;
        Ok(())
    }

    /// Clicks the element `css` selects and waits for the page it leads to.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css).await?.click().await?;
        Ok(())
    }

    /// Clicks the button (or link) whose text is exactly `text`, inside `within` (a CSS selector).
    pub async fn press(&self, within: &str, text: &str) -> anyhow::Result<()> {
        let scope = self.find(within).await?;
        let target = scope
            .find(Locator::XPath(&format!(
                ".//*[(self::button or self::a) and normalize-space(.)={}]",
                xpath_literal(text)
            )))
            .await
            .with_context(|| format!("no button {text:?} in {within}"))?;
        target.click().await?;
        Ok(())
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("no element {css}"))
    }

    /// The visible text of the element `css` selects.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// Waits until the page's text holds `needle`; returns the whole text.
    pub async fn wait_for_text(&self, needle: &str) -> anyhow::Result<String> {
        self.wait_for_page(&format!("{needle:?} on the page"), |text| {
            text.contains(needle)
        })
        .await
    }

    /// Waits until the page's text is as `wanted` says (`what` names it in the error); returns
    /// the whole text. For a page that replaces one with the same words (a second change of the
    /// same thing), say what tells the new page from the old.
    pub async fn wait_for_page(
        &self,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let found = eventually(WAIT, what, || async {
            let body = self.client.find(Locator::Css("body")).await.ok()?;
            let text = body.text().await.ok()?;
            wanted(&text).then_some(text)
        })
        .await;
        match found {
            Ok(text) => Ok(text),
            Err(e) => {
                let source = self.client.source().await.unwrap_or_default();
                Err(e.context(format!("the page was:\n{source}")))
            }
        }
    }

    /// The page's HTML.
    pub async fn source(&self) -> anyhow::Result<String> {
        Ok(self.client.source().await?)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// Signs in at `console_url` with `token` and waits for the start page.
    pub async fn sign_in(&self, console_url: &str, token: &str) -> anyhow::Result<()> {
        self.goto(console_url).await?;
        self.fill("token", token).await?;
        self.press("main", "Sign in").await?;
        self.wait_for_text("Tenants").await?;
        Ok(())
    }

    /// Saves the page as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<()> {
        let png = self.client.screenshot().await?;
        let dir = crate::binaries::target_path("console-screenshots");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.png")), png)?;
        Ok(())
    }

    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await?;
        Ok(())
    }
}

/// `id` escaped for a CSS `#id` selector (ids hold dots, as event types do).
fn css_id(id: &str) -> String {
    id.chars()
        .flat_map(|c| {
            let escape = !(c.is_ascii_alphanumeric() || c == '-' || c == '_');
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// `text` as an XPath string literal.
fn xpath_literal(text: &str) -> String {
    if text.contains('\'') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

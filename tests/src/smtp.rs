//! A real SMTP server for the notification tests: `tests/receivers/smtp_receiver.py` (aiosmtpd)
//! records each message it receives, parsed by Python's `email` package, as a JSON line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tempfile::TempDir;

use crate::PyReceiver;

/// One received message: its envelope and its parsed MIME.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mail_from: String,
    /// The envelope recipients (RCPT TO).
    pub rcpt_tos: Vec<String>,
    /// The login of the SMTP session, when it authenticated.
    pub login: Option<String>,
    pub subject: String,
    pub from: String,
    pub to: String,
    /// The top-level MIME type, e.g. `multipart/alternative`.
    pub content_type: String,
    /// The text/plain part, line breaks as `\n`.
    pub text: Option<String>,
    /// The text/html part, line breaks as `\n`.
    pub html: Option<String>,
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

impl Mail {
    fn from_json(v: &Value) -> Mail {
        Mail {
            mail_from: text(v, "mail_from"),
            rcpt_tos: v["rcpt_tos"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            login: v["login"].as_str().map(str::to_owned),
            subject: text(v, "subject"),
            from: text(v, "from"),
            to: text(v, "to"),
            content_type: text(v, "content_type"),
            text: v["text"].as_str().map(str::to_owned),
            html: v["html"].as_str().map(str::to_owned),
        }
    }

    /// The plain-text part, or an empty string.
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or_default()
    }

    /// The HTML part, or an empty string.
    pub fn html(&self) -> &str {
        self.html.as_deref().unwrap_or_default()
    }
}

/// The SMTP server process; it is killed when dropped.
pub struct SmtpReceiver {
    receiver: PyReceiver,
    _dir: TempDir,
    messages: PathBuf,
}

impl SmtpReceiver {
    /// Listens on a port the OS picks, accepting mail without login.
    pub async fn start() -> anyhow::Result<SmtpReceiver> {
        SmtpReceiver::start_with(&[]).await
    }

    /// Starts with extra arguments: `--port PORT`, `--auth USER:PASSWORD` (login then required).
    pub async fn start_with(args: &[&str]) -> anyhow::Result<SmtpReceiver> {
        let dir = tempfile::tempdir()?;
        let messages = dir.path().join("messages.jsonl");
        let mut all = vec![messages.to_str().context("utf-8 temp dir")?];
        all.extend_from_slice(args);
        let receiver = PyReceiver::start("smtp_receiver.py", &all).await?;
        Ok(SmtpReceiver {
            receiver,
            _dir: dir,
            messages,
        })
    }

    pub fn port(&self) -> u16 {
        self.receiver.port
    }

    /// `smtp://127.0.0.1:PORT`, for `--smtp-url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port())
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> anyhow::Result<Vec<Mail>> {
        let content = match std::fs::read_to_string(&self.messages) {
            Ok(content) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        content
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Ok(Mail::from_json(&serde_json::from_str(l)?)))
            .collect()
    }

    /// Waits until at least `n` messages arrived and returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Mail>> {
        crate::eventually(timeout, &format!("{n} email(s)"), || async {
            self.messages().ok().filter(|m| m.len() >= n)
        })
        .await
    }
}

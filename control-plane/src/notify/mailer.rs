//! Sending over SMTP with lettre (rustls): plain, STARTTLS or implicit TLS, with or without login,
//! all from the `--smtp-url`.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::compose::Email;
use crate::error::Error;

/// A stuck server must not hold the sender (and the mails queued behind) forever.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The URL without its password, for logs.
    shown_url: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("url", &self.shown_url)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

fn permanent(detail: impl Into<String>) -> Error {
    Error::Mail {
        detail: detail.into(),
        permanent: true,
    }
}

/// The URL with any password replaced, fit for logs and debug output.
pub(crate) fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl Mailer {
    /// Checks the URL and the From address; connects only when sending.
    pub fn new(url: &str, from: &str) -> Result<Mailer, Error> {
        let shown_url = redacted_url(url);
        let from: Mailbox = from
            .parse()
            .map_err(|e| permanent(format!("--smtp-from {from:?}: {e}")))?;
        // lettre's messages name neither the URL nor its password.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| permanent(format!("--smtp-url {shown_url}: {e}")))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer {
            transport,
            from,
            shown_url,
        })
    }

    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// The multipart/alternative message (plain text, then HTML) for `recipients`.
    pub fn message(&self, recipients: &[String], email: &Email) -> Result<Message, Error> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(email.subject.clone());
        for recipient in recipients {
            let mailbox: Mailbox = recipient
                .parse()
                .map_err(|e| permanent(format!("recipient {recipient:?}: {e}")))?;
            builder = builder.to(mailbox);
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| permanent(format!("building the message: {e}")))
    }

    /// Sends once; `Error::Mail { permanent }` tells whether trying again can help.
    pub async fn send(&self, recipients: &[String], email: &Email) -> Result<(), Error> {
        let message = self.message(recipients, email)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| Error::Mail {
                permanent: e.is_permanent(),
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            subject: "[System Notification] OA -- LINE Webhook Forward Failure Reminder".into(),
            text: "Dear Brand Partner:".into(),
            html: "<p>Dear Brand Partner:</p>".into(),
        }
    }

    #[test]
    fn every_url_form_of_the_help_is_accepted() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example.com:587?tls=required",
            "smtp://user:pass@mail.example.com:587?tls=opportunistic",
            "smtps://user:pass@mail.example.com",
        ] {
            Mailer::new(url, "hookplane <noreply@localhost>").unwrap();
        }
    }

    #[test]
    fn an_unknown_scheme_is_refused_without_echoing_the_password() {
        let err = Mailer::new("imap://u:hunter22@mail.example.com", "a@b.example").unwrap_err();
        let shown = err.to_string();
        assert!(matches!(
            err,
            Error::Mail {
                permanent: true,
                ..
            }
        ));
        assert!(!shown.contains("hunter22"), "{shown}");
    }

    #[test]
    fn a_malformed_from_is_refused() {
        let err = Mailer::new("smtp://127.0.0.1:25", "not an address").unwrap_err();
        assert!(err.to_string().contains("--smtp-from"), "{err}");
    }

    #[test]
    fn the_redacted_url_hides_only_the_password() {
        assert_eq!(
            redacted_url("smtps://mailer:s3cret@smtp.example.com:465"),
            "smtps://mailer:***@smtp.example.com:465"
        );
        assert_eq!(redacted_url("smtp://h:25"), "smtp://h:25");
    }

    #[test]
    fn the_message_is_multipart_alternative_with_text_and_html() {
        let mailer = Mailer::new("smtp://127.0.0.1:25", "hookplane <noreply@localhost>").unwrap();
        let message = mailer
            .message(
                &["ops@brand.example".into(), "cto@brand.example".into()],
                &email(),
            )
            .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
        assert!(raw.contains("ops@brand.example"));
        assert_eq!(
            message.envelope().to().len(),
            2,
            "both recipients are in the envelope"
        );
    }
}

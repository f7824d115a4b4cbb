//! The background sender: takes due emails off the outbox one by one and hands them to the SMTP
//! server; a failed send is kept for a later try, never retried in a tight loop.

use super::books::Books;
use super::compose::Email;
use super::mailer::Mailer;
use super::outbox;
use crate::clock::Time;
use crate::error::Error;

/// Sends every email due at `now`; returns when the next one is due.
pub(crate) async fn send_due(
    books: &Books,
    mailer: &Mailer,
    now: Time,
) -> Result<Option<Time>, Error> {
    let mut next: Option<Time> = None;
    let queued = outbox::queued(books)?;
    if queued.iter().any(|(_, e)| e.next_try <= now) {
        books.flush().await?;
    }
    for (key, entry) in queued {
        if entry.next_try > now {
            next = Some(next.map_or(entry.next_try, |n| n.min(entry.next_try)));
            continue;
        }
        let email = Email {
            subject: entry.subject.clone(),
            text: entry.text.clone(),
            html: entry.html.clone(),
        };
        match mailer.send(&entry.recipients, &email).await {
            Ok(()) => {
                outbox::sent(books, &key, Time::now())?;
                books.flush().await?;
                tracing::info!(
                    tenant_id = %entry.tenant_id,
                    subject = %entry.subject,
                    recipients = entry.recipients.len(),
                    "notice sent"
                );
            }
            Err(e) => {
                let tenant_id = entry.tenant_id.clone();
                match outbox::failed_once(books, &key, entry, &e, Time::now())? {
                    Some(retry_at) => {
                        tracing::warn!(
                            %tenant_id,
                            error = %e,
                            retry_at = %retry_at.rfc3339(),
                            server = mailer.shown_url(),
                            "sending a notice failed; it will be tried again"
                        );
                        next = Some(next.map_or(retry_at, |n| n.min(retry_at)));
                    }
                    None => tracing::error!(
                        %tenant_id,
                        error = %e,
                        server = mailer.shown_url(),
                        "sending a notice failed for good"
                    ),
                }
            }
        }
    }
    Ok(next)
}

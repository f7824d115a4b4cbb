//! Signed LINE webhook requests, each a distinct event: the fixture `text.json` with its own
//! webhookEventId, so the spool never folds two requests into one delivery.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;

use crate::binary::fixture;

/// The channel secret the bench configures and signs with.
pub const CHANNEL_SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The fixture's own event id, replaced in every request.
const FIXTURE_EVENT_ID: &str = "01JGKZ7Q3N8V5T2R6W9X4Y1B0C";

/// One signed request: the exact body and its `x-line-signature`.
pub struct Signed {
    pub body: Bytes,
    pub signature: String,
}

#[derive(Clone)]
pub struct LineRequests {
    before: Arc<str>,
    after: Arc<str>,
    run: Arc<str>,
    next: Arc<AtomicU64>,
}

impl LineRequests {
    pub fn new() -> anyhow::Result<LineRequests> {
        let text = String::from_utf8(fixture("text.json")?)?;
        let (before, after) = text
            .split_once(FIXTURE_EVENT_ID)
            .ok_or_else(|| anyhow::anyhow!("text.json lost its webhookEventId"))?;
        // A run-unique prefix: a spool reused across runs still sees new events.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        Ok(LineRequests {
            before: before.into(),
            after: after.into(),
            run: format!("{:012X}", nanos % 0xFFFF_FFFF_FFFF).into(),
            next: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The next distinct event, signed with [`CHANNEL_SECRET`].
    pub fn next(&self) -> Signed {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = format!("{}{}{n:014}{}", self.before, self.run, self.after);
        let signature = hookplane_verify::line::sign(CHANNEL_SECRET.as_bytes(), body.as_bytes());
        Signed {
            body: Bytes::from(body),
            signature,
        }
    }
}

/// The Verify button's body (`events: []`), signed: 200 once a node knows the channel.
pub fn verify_request() -> anyhow::Result<Signed> {
    let body = fixture("verify.json")?;
    let signature = hookplane_verify::line::sign(CHANNEL_SECRET.as_bytes(), &body);
    Ok(Signed {
        body: Bytes::from(body),
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_id(body: &[u8]) -> String {
        let text = std::str::from_utf8(body).unwrap();
        let start = text.find("\"webhookEventId\":\"").unwrap() + 18;
        text[start..start + 26].to_owned()
    }

    #[test]
    fn every_request_is_a_distinct_event_of_ulid_length() {
        let requests = LineRequests::new().unwrap();
        let (a, b) = (requests.next(), requests.next());
        assert_ne!(event_id(&a.body), event_id(&b.body));
        assert!(!event_id(&a.body).contains('"'));
    }

    #[test]
    fn every_request_is_signed_with_the_channel_secret() {
        assert!(signed_by_the_channel(&LineRequests::new().unwrap().next()));
    }

    #[test]
    fn the_verify_request_is_signed_too() {
        assert!(signed_by_the_channel(&verify_request().unwrap()));
    }

    fn signed_by_the_channel(signed: &Signed) -> bool {
        hookplane_verify::line::verify(CHANNEL_SECRET.as_bytes(), &signed.body, &signed.signature)
            .is_ok()
    }
}

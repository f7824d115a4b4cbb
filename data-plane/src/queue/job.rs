//! The queue's vocabulary: a [`Job`] (one delivery of one event to one target), its stable
//! delivery id, and one constructor per kind of job, so every producer (the ingress, the
//! Genesys connector, event publishing) makes jobs the same way and none imports another.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// One delivery of one event to one target, as it waits in the queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    /// `dlv_...`, stable per (event, target) so a duplicate after a crash shares it.
    #[prost(string, tag = "1")]
    pub delivery_id: String,
    /// `evt_...`, sent as x-hookplane-event-id.
    #[prost(string, tag = "2")]
    pub event_id: String,
    /// Set for a LINE forward.
    #[prost(string, tag = "3")]
    pub forwarding_set_id: String,
    /// Set for an outgoing event webhook.
    #[prost(string, tag = "4")]
    pub subscription_id: String,
    #[prost(string, tag = "5")]
    pub channel_id: String,
    #[prost(string, tag = "6")]
    pub tenant_id: String,
    /// The exact bytes to send.
    #[prost(bytes = "bytes", tag = "7")]
    pub body: Bytes,
    /// Headers replayed verbatim (x-line-signature, content-type).
    #[prost(message, repeated, tag = "8")]
    pub headers: Vec<Header>,
    /// Attempts made so far.
    #[prost(uint32, tag = "9")]
    pub attempts: u32,
    /// Unix milliseconds when the current attempt budget began (first enqueue, or a manual retry).
    #[prost(uint64, tag = "10")]
    pub first_enqueued_ms: u64,
    /// `attempts` when the current budget began: a manual retry grants a fresh budget while the
    /// attempt numbers keep counting up.
    #[prost(uint32, tag = "11")]
    pub budget_start: u32,
    /// Which call a forwarding set's job makes: the raw forward, or one of a connector's.
    #[prost(enumeration = "Leg", tag = "12")]
    pub leg: i32,
    /// The W3C `traceparent` of the span that queued it, so each attempt (later, maybe on another
    /// node) is a span of the request's trace. Set only while traces are exported.
    #[prost(string, optional, tag = "13")]
    pub traceparent: Option<String>,
}

/// The calls a forwarding set's jobs make. Jobs spooled before connectors existed decode as
/// `Forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Leg {
    /// The identical LINE request to the set's URL.
    Forward = 0,
    /// One LINE message, translated, to Genesys Open Messaging (`body` is the inbound message).
    GenesysInbound = 1,
    /// One agent message to the LINE push API (`body` is the push request).
    LinePush = 2,
}

/// A replayed header. Its name and value are shared bytes, not strings (the same on the wire:
/// both are length-delimited), so the ten jobs of a fan-out, and each job read back from the
/// bodies' cache, share them rather than copying them, and a request's header value is made
/// from them without a copy (docs/BENCHMARKS.md, change 40).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl Job {
    /// The target it goes to, as its breaker and concurrency cap know it: the forwarding set (a
    /// connector's agent replies to LINE apart, so Genesys in trouble cannot hold them back), or
    /// the subscription.
    pub fn lane(&self) -> Cow<'_, str> {
        if self.forwarding_set_id.is_empty() {
            return Cow::Borrowed(&self.subscription_id);
        }
        match self.leg() {
            Leg::LinePush => Cow::Owned(format!("{}#line-push", self.forwarding_set_id)),
            Leg::Forward | Leg::GenesysInbound => Cow::Borrowed(&self.forwarding_set_id),
        }
    }

    /// Attempts made within the current budget.
    pub fn attempts_in_budget(&self) -> u32 {
        self.attempts.saturating_sub(self.budget_start)
    }

    /// A manual retry: the attempts from now on count against a fresh budget that begins at
    /// `now_ms`, while attempt numbers keep counting up.
    pub fn grant_fresh_budget(&mut self, now_ms: u64) {
        self.budget_start = self.attempts;
        self.first_enqueued_ms = now_ms;
    }

    /// When the current budget began.
    pub fn budget_began(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.first_enqueued_ms)
    }
}

/// The forwarding set a job of a channel goes to.
#[derive(Clone, Copy, Debug)]
pub struct ForwardingSetRef<'a> {
    pub id: &'a str,
    pub channel_id: &'a str,
    pub tenant_id: &'a str,
}

impl Job {
    /// A LINE webhook forwarded as received (`headers`: those replayed verbatim).
    pub fn forward(
        event_id: &str,
        set: ForwardingSetRef<'_>,
        body: Bytes,
        headers: Vec<Header>,
        now_ms: u64,
    ) -> Job {
        Job {
            headers,
            ..Job::for_set(event_id, set, body, Leg::Forward, now_ms)
        }
    }

    /// One LINE message, translated, for a Genesys connector.
    pub fn genesys_inbound(
        event_id: &str,
        set: ForwardingSetRef<'_>,
        body: Bytes,
        now_ms: u64,
    ) -> Job {
        Job::for_set(event_id, set, body, Leg::GenesysInbound, now_ms)
    }

    /// One agent message pushed to LINE.
    pub fn line_push(
        event_id: &str,
        set: ForwardingSetRef<'_>,
        body: Bytes,
        headers: Vec<Header>,
        now_ms: u64,
    ) -> Job {
        Job {
            headers,
            ..Job::for_set(event_id, set, body, Leg::LinePush, now_ms)
        }
    }

    /// A published event for one subscription.
    pub fn event(
        event_id: &str,
        subscription_id: &str,
        tenant_id: &str,
        body: Bytes,
        now_ms: u64,
    ) -> Job {
        Job {
            delivery_id: delivery_id(event_id, subscription_id),
            event_id: event_id.to_owned(),
            subscription_id: subscription_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            body,
            first_enqueued_ms: now_ms,
            ..Job::default()
        }
    }

    fn for_set(
        event_id: &str,
        set: ForwardingSetRef<'_>,
        body: Bytes,
        leg: Leg,
        now_ms: u64,
    ) -> Job {
        Job {
            delivery_id: delivery_id(event_id, set.id),
            event_id: event_id.to_owned(),
            forwarding_set_id: set.id.to_owned(),
            channel_id: set.channel_id.to_owned(),
            tenant_id: set.tenant_id.to_owned(),
            body,
            first_enqueued_ms: now_ms,
            leg: leg.into(),
            ..Job::default()
        }
    }
}

/// `dlv_` + a hash of (event, target): stable, so a duplicate after a crash, a LINE redelivery
/// or a repeated idempotency key shares it and the queue stores it once.
pub fn delivery_id(event_id: &str, target_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(event_id.as_bytes());
    hash.update(b"\n");
    hash.update(target_id.as_bytes());
    format!("dlv_{}", hex::encode(&hash.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_id_is_stable_per_event_and_target() {
        assert_eq!(delivery_id("evt_1", "fwd_a"), delivery_id("evt_1", "fwd_a"));
        assert_ne!(delivery_id("evt_1", "fwd_a"), delivery_id("evt_1", "fwd_b"));
        assert_ne!(delivery_id("evt_1", "fwd_a"), delivery_id("evt_2", "fwd_a"));
        assert!(delivery_id("evt_1", "fwd_a").starts_with("dlv_"));
    }

    #[test]
    fn a_jobs_traceparent_is_stored_with_it_and_a_job_stored_before_has_none() {
        use prost::Message as _;
        let set = ForwardingSetRef {
            id: "fwd_1",
            channel_id: "ch_1",
            tenant_id: "tnt_1",
        };
        let untraced = Job::forward("evt_1", set, Bytes::from_static(b"{}"), vec![], 7);
        // Untraced, a record holds nothing new; traced, the same bytes and the field after them.
        let bytes = untraced.encode_to_vec();
        assert_eq!(Job::decode(bytes.as_slice()).unwrap().traceparent, None);
        let traced = Job {
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..untraced.clone()
        };
        let stored = traced.encode_to_vec();
        assert_eq!(&stored[..bytes.len()], bytes.as_slice());
        assert_eq!(Job::decode(stored.as_slice()).unwrap(), traced);
    }

    #[test]
    fn a_header_stored_as_text_before_reads_back_the_same_and_is_stored_the_same() {
        use prost::Message as _;
        /// A header as spools and streams stored it before its fields were bytes.
        #[derive(Clone, PartialEq, prost::Message)]
        struct TextHeader {
            #[prost(string, tag = "1")]
            name: String,
            #[prost(string, tag = "2")]
            value: String,
        }
        let before = TextHeader {
            name: "x-line-signature".into(),
            value: "K2f8hUe0vRr4sC1nYxzQbLMi1dW9aPq3sF6gH5jT7kE=".into(),
        };
        let stored = before.encode_to_vec();
        let read = Header::decode(stored.as_slice()).unwrap();
        assert_eq!(read.name, "x-line-signature");
        assert_eq!(read.value, "K2f8hUe0vRr4sC1nYxzQbLMi1dW9aPq3sF6gH5jT7kE=");
        assert_eq!(read.encode_to_vec(), stored);
    }

    #[test]
    fn each_kind_of_job_goes_to_its_target_with_its_leg_and_delivery_id() {
        let set = ForwardingSetRef {
            id: "fwd_1",
            channel_id: "ch_1",
            tenant_id: "tnt_1",
        };
        let body = Bytes::from_static(b"{}");
        let forward = Job::forward("evt_1", set, body.clone(), vec![], 7);
        assert_eq!(forward.leg(), Leg::Forward);
        assert_eq!(forward.delivery_id, delivery_id("evt_1", "fwd_1"));
        assert_eq!(forward.first_enqueued_ms, 7);
        assert_eq!(
            Job::genesys_inbound("evt_1", set, body.clone(), 7).leg(),
            Leg::GenesysInbound
        );
        assert_eq!(
            Job::line_push("evt_1", set, body.clone(), vec![], 7).lane(),
            "fwd_1#line-push"
        );
        let event = Job::event("evt_2", "sub_1", "tnt_1", body, 7);
        assert_eq!(event.lane(), "sub_1");
        assert_eq!(event.delivery_id, delivery_id("evt_2", "sub_1"));
    }
}

//! What a job is delivered to, resolved from the configuration in force at attempt time (so a
//! rotated secret, a new URL or a stop applies to jobs already queued). Each kind of target
//! decides its own request; a new kind (a connector) is one more variant here.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use hookplane_outbound::{
    failure::Failure,
    sender::{Outgoing, Sender},
    signing::{self, Attempt},
};
use hookplane_proto::v1::{
    NodeChannel, NodeForwardingSet, NodeSubscription, SignatureScheme, SubscriptionState,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{
    attempt::AttemptResult,
    config::Snapshot,
    connectors::{Connectors, genesys::inbound::inbound_url},
    queue::{Job, Leg},
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header names a forward sets, and the one custom header every forward replays.
const LINE_SIGNATURE: HeaderName = HeaderName::from_static("x-line-signature");
const EVENT_ID: HeaderName = HeaderName::from_static("x-hookplane-event-id");
const ATTEMPT: HeaderName = HeaderName::from_static("x-hookplane-attempt");
const FORWARDING_SET: HeaderName = HeaderName::from_static("x-hookplane-forwarding-set");

/// The first attempt numbers as header values, made once: `HeaderValue::from(u32)` allocates,
/// and nearly every attempt of a drain is a first (docs/BENCHMARKS.md, change 37).
static ATTEMPT_NUMBERS: [HeaderValue; 8] = [
    HeaderValue::from_static("1"),
    HeaderValue::from_static("2"),
    HeaderValue::from_static("3"),
    HeaderValue::from_static("4"),
    HeaderValue::from_static("5"),
    HeaderValue::from_static("6"),
    HeaderValue::from_static("7"),
    HeaderValue::from_static("8"),
];

/// Attempt `number` as a header value.
fn attempt_number(number: u32) -> HeaderValue {
    usize::try_from(number)
        .ok()
        .and_then(|n| ATTEMPT_NUMBERS.get(n.checked_sub(1)?))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(number))
}

#[derive(Debug, Clone)]
pub enum Target {
    /// A LINE forward: the received bytes with their original signature.
    Forward(Arc<NodeForwardingSet>),
    /// An outgoing event webhook: the envelope, signed per the subscription's scheme.
    Event(Arc<NodeSubscription>),
    /// One LINE message, translated, to a Genesys Open Messaging integration.
    GenesysInbound {
        set: Arc<NodeForwardingSet>,
        url: String,
    },
    /// One agent message to the LINE push API, with the channel's access token.
    LinePush {
        set: Arc<NodeForwardingSet>,
        channel: Arc<NodeChannel>,
        url: String,
        /// Its own breaker and cap: Genesys in trouble must not hold back agents' answers.
        key: String,
    },
}

/// The request of one attempt.
pub struct Request {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Target {
    /// The job's target in `snapshot`; `None` when it was deleted since the job was queued.
    /// `connectors` knows where the LINE API is.
    pub fn resolve(snapshot: &Snapshot, job: &Job, connectors: &Connectors) -> Option<Target> {
        if !job.forwarding_set_id.is_empty() {
            let set = Arc::clone(snapshot.forwarding_set(&job.forwarding_set_id)?);
            return Some(match job.leg() {
                Leg::Forward => Target::Forward(set),
                Leg::GenesysInbound => {
                    let url = set
                        .genesys
                        .as_ref()
                        .and_then(|g| inbound_url(&g.api_base_url, &g.integration_id))
                        .unwrap_or_default();
                    Target::GenesysInbound { set, url }
                }
                Leg::LinePush => {
                    let channel = Arc::clone(&snapshot.channel(&job.channel_id)?.channel);
                    let key = job.lane().into_owned();
                    Target::LinePush {
                        set,
                        channel,
                        url: connectors.push_url(),
                        key,
                    }
                }
            });
        }
        if !job.subscription_id.is_empty() {
            return snapshot
                .subscription(&job.subscription_id)
                .cloned()
                .map(Target::Event);
        }
        None
    }

    /// The key of its breaker and concurrency cap.
    pub fn id(&self) -> &str {
        match self {
            Target::Forward(set) | Target::GenesysInbound { set, .. } => &set.id,
            Target::Event(sub) => &sub.id,
            Target::LinePush { key, .. } => key,
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Target::Forward(set) => &set.url,
            Target::Event(sub) => &sub.url,
            Target::GenesysInbound { url, .. } | Target::LinePush { url, .. } => url,
        }
    }

    /// Per HTTP call: a connector's attempt may make several (a login, a retry with a fresh
    /// token).
    pub fn timeout(&self) -> Duration {
        let configured = match self {
            Target::Forward(set)
            | Target::GenesysInbound { set, .. }
            | Target::LinePush { set, .. } => set.timeout.and_then(|t| Duration::try_from(t).ok()),
            Target::Event(_) => None,
        };
        configured
            .filter(|t| !t.is_zero())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Why no request may go out now, if so. A subscription stopped after its event was queued
    /// gets nothing more: a brand stops a webhook to stop traffic, including retries.
    pub fn switched_off(&self) -> Option<&'static str> {
        match self {
            Target::Forward(set)
            | Target::GenesysInbound { set, .. }
            | Target::LinePush { set, .. }
                if !set.enabled =>
            {
                Some("forwarding set disabled")
            }
            Target::Event(sub) if sub.state != SubscriptionState::Active as i32 => {
                Some("subscription stopped")
            }
            Target::Forward(_)
            | Target::Event(_)
            | Target::GenesysInbound { .. }
            | Target::LinePush { .. } => None,
        }
    }

    /// Makes attempt `number` of `job` at `now`: one request for a forward or an event, the
    /// connector's calls for a connector.
    pub async fn attempt(
        &self,
        job: &Job,
        number: u32,
        now: SystemTime,
        sender: &Sender,
        connectors: &Connectors,
    ) -> AttemptResult {
        let timeout = self.timeout();
        match self {
            // Boxed, so their larger state machines (a login, a retry with a fresh token) do
            // not size every forward's attempt, which the engine copies into its task.
            Target::GenesysInbound { set, .. } => {
                Box::pin(connectors.genesys_inbound(set, job, timeout)).await
            }
            Target::LinePush { channel, .. } => {
                Box::pin(connectors.line_push(channel, job, timeout)).await
            }
            Target::Forward(_) | Target::Event(_) => {
                let mut request = match self.request(job, number, now) {
                    Ok(request) => request,
                    Err(failure) => return AttemptResult::not_sent(&failure),
                };
                // The receiver continues the attempt's span (when traces are exported).
                hookplane_trace_context::inject(&tracing::Span::current(), &mut request.headers);
                let sent = sender
                    .send(Outgoing {
                        url: self.url(),
                        body: request.body,
                        headers: request.headers,
                        timeout,
                    })
                    .await;
                AttemptResult::from_send(sent)
            }
        }
    }

    /// The request of attempt `number` of `job`, made at `now`.
    fn request(&self, job: &Job, number: u32, now: SystemTime) -> Result<Request, Failure> {
        match self {
            // Connectors make their own calls in `attempt`.
            Target::GenesysInbound { .. } | Target::LinePush { .. } => {
                Err(Failure::NotSent("not a single request"))
            }
            Target::Forward(set) => {
                // One map, sized once, with our own names static: a name that is not a standard
                // header is parsed into an allocation of its own, per attempt (header building
                // was about 5 % of a delivery thread's samples in the drain's profile).
                let mut headers = HeaderMap::with_capacity(job.headers.len() + 4);
                for header in &job.headers {
                    let name = match &header.name[..] {
                        b"x-line-signature" => Ok(LINE_SIGNATURE),
                        other => HeaderName::from_bytes(other),
                    };
                    let value = HeaderValue::from_maybe_shared(header.value.clone());
                    if let (Ok(name), Ok(value)) = (name, value) {
                        headers.insert(name, value);
                    }
                }
                for (name, value) in [
                    (EVENT_ID, HeaderValue::from_str(&job.event_id)),
                    (ATTEMPT, Ok(attempt_number(number))),
                    (FORWARDING_SET, HeaderValue::from_str(&set.id)),
                ] {
                    if let Ok(value) = value {
                        headers.insert(name, value);
                    }
                }
                Ok(Request {
                    headers,
                    body: job.body.clone(),
                })
            }
            Target::Event(sub) => {
                let scheme = SignatureScheme::try_from(sub.signature_scheme)
                    .unwrap_or(SignatureScheme::Maac);
                let secrets = signing::secrets_in_force(&sub.secrets, now);
                let unix_time = now
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                let headers = signing::headers(
                    scheme,
                    &secrets,
                    Attempt {
                        event_id: &job.event_id,
                        unix_time,
                        body: &job.body,
                    },
                )
                .map_err(|_| Failure::NotSent("no usable share secret"))?;
                Ok(Request {
                    headers,
                    body: job.body.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::{
        ConfigResource, ConfigUpdate, NodeSecret, config_resource::Resource,
    };
    use hookplane_verify::{maac, standard};

    use super::*;
    use crate::queue::Header;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn subscription(state: SubscriptionState, scheme: SignatureScheme) -> NodeSubscription {
        NodeSubscription {
            id: "sub_1".into(),
            tenant_id: "tnt_1".into(),
            url: "https://hooks.brand.example/in".into(),
            event_types: vec!["prize.points_added".into()],
            state: state as i32,
            signature_scheme: scheme as i32,
            secrets: vec![NodeSecret {
                secret: SECRET.into(),
                valid_until: None,
            }],
            ..NodeSubscription::default()
        }
    }

    fn event_job() -> Job {
        Job {
            delivery_id: "dlv_1".into(),
            event_id: "evt_1".into(),
            subscription_id: "sub_1".into(),
            tenant_id: "tnt_1".into(),
            body: Bytes::from_static(
                br#"{"timestamp":"t","topic":"prize.points_added","data":{}}"#,
            ),
            ..Job::default()
        }
    }

    fn snapshot(resources: Vec<Resource>) -> Snapshot {
        Snapshot::default().apply(&ConfigUpdate {
            revision: 1,
            snapshot: true,
            upserts: resources
                .into_iter()
                .map(|r| ConfigResource { resource: Some(r) })
                .collect(),
            ..ConfigUpdate::default()
        })
    }

    fn connectors() -> Connectors {
        let sender = Sender::from_options(&hookplane_outbound::OutboundOptions::default()).unwrap();
        Connectors::new(Arc::new(sender), "https://line.gateway.example/")
    }

    fn genesys_set(enabled: bool) -> NodeForwardingSet {
        NodeForwardingSet {
            id: "fwd_g".into(),
            channel_id: "ch_1".into(),
            enabled,
            kind: hookplane_proto::v1::ForwardingKind::GenesysOpenMessaging.into(),
            genesys: Some(hookplane_proto::v1::GenesysSettings {
                api_base_url: "https://api.mypurecloud.jp".into(),
                integration_id: "int-1".into(),
                ..Default::default()
            }),
            ..NodeForwardingSet::default()
        }
    }

    fn channel() -> NodeChannel {
        NodeChannel {
            id: "ch_1".into(),
            tenant_id: "tnt_1".into(),
            access_token: "tok".into(),
            ..NodeChannel::default()
        }
    }

    fn connector_job(leg: Leg) -> Job {
        Job {
            delivery_id: "dlv_1".into(),
            forwarding_set_id: "fwd_g".into(),
            channel_id: "ch_1".into(),
            leg: leg.into(),
            ..Job::default()
        }
    }

    #[test]
    fn a_genesys_inbound_job_goes_to_the_integrations_inbound_url() {
        let s = snapshot(vec![
            Resource::Channel(channel()),
            Resource::ForwardingSet(genesys_set(true)),
        ]);
        let target =
            Target::resolve(&s, &connector_job(Leg::GenesysInbound), &connectors()).unwrap();
        assert!(matches!(target, Target::GenesysInbound { .. }));
        assert_eq!(
            target.url(),
            "https://api.mypurecloud.jp/api/v2/conversations/messages/int-1/inbound/open/message"
        );
        assert_eq!(target.id(), "fwd_g");
    }

    #[test]
    fn a_line_push_job_goes_to_the_push_api_with_a_breaker_of_its_own() {
        let s = snapshot(vec![
            Resource::Channel(channel()),
            Resource::ForwardingSet(genesys_set(true)),
        ]);
        let target = Target::resolve(&s, &connector_job(Leg::LinePush), &connectors()).unwrap();
        let Target::LinePush { channel, .. } = &target else {
            panic!("not a push: {target:?}")
        };
        assert_eq!(channel.access_token, "tok");
        assert_eq!(
            target.url(),
            "https://line.gateway.example/v2/bot/message/push"
        );
        assert_ne!(target.id(), "fwd_g");
    }

    #[test]
    fn a_line_push_without_its_channel_resolves_to_nothing() {
        let s = snapshot(vec![Resource::ForwardingSet(genesys_set(true))]);
        assert!(Target::resolve(&s, &connector_job(Leg::LinePush), &connectors()).is_none());
    }

    #[test]
    fn a_disabled_genesys_set_sends_neither_way() {
        let s = snapshot(vec![
            Resource::Channel(channel()),
            Resource::ForwardingSet(genesys_set(false)),
        ]);
        for leg in [Leg::GenesysInbound, Leg::LinePush] {
            let target = Target::resolve(&s, &connector_job(leg), &connectors()).unwrap();
            assert_eq!(target.switched_off(), Some("forwarding set disabled"));
        }
    }

    #[test]
    fn a_job_with_a_subscription_resolves_to_an_event_target() {
        let s = snapshot(vec![Resource::Subscription(subscription(
            SubscriptionState::Active,
            SignatureScheme::Maac,
        ))]);
        let target = Target::resolve(&s, &event_job(), &connectors()).unwrap();
        assert!(matches!(target, Target::Event(_)));
        assert_eq!(target.url(), "https://hooks.brand.example/in");
    }

    #[test]
    fn a_deleted_subscription_resolves_to_nothing() {
        assert!(Target::resolve(&snapshot(vec![]), &event_job(), &connectors()).is_none());
    }

    #[test]
    fn a_stopped_subscription_is_switched_off() {
        let target = Target::Event(Arc::new(subscription(
            SubscriptionState::Stopped,
            SignatureScheme::Maac,
        )));
        assert_eq!(target.switched_off(), Some("subscription stopped"));
    }

    #[test]
    fn an_event_is_signed_over_the_queued_bytes_at_attempt_time() {
        let target = Target::Event(Arc::new(subscription(
            SubscriptionState::Active,
            SignatureScheme::Both,
        )));
        let job = event_job();
        let now = SystemTime::now();
        let request = target.request(&job, 1, now).unwrap();
        assert_eq!(request.body, job.body);
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert!(maac::verify(SECRET.as_bytes(), &job.body, header("cresclab-signature")).is_ok());
        let unix = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
        assert_eq!(header("webhook-timestamp"), unix.to_string());
        assert!(
            standard::verify(
                &[standard::Secret::parse(SECRET).unwrap()],
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                &job.body,
                unix,
            )
            .is_ok()
        );
    }

    #[test]
    fn an_ed25519_subscription_is_signed_v1a_for_its_public_key_at_attempt_time() {
        use hookplane_verify::standard_ed25519::{self, SigningKey};
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let mut sub = subscription(
            SubscriptionState::Active,
            SignatureScheme::StandardWebhooksEd25519,
        );
        sub.secrets[0].secret = key.to_whsk_string();
        let job = event_job();
        let now = SystemTime::now();
        let request = Target::Event(Arc::new(sub)).request(&job, 1, now).unwrap();
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert!(header("webhook-signature").starts_with("v1a,"));
        assert!(request.headers.get("cresclab-signature").is_none());
        let unix = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
        assert!(
            standard_ed25519::verify(
                &[key.public_key()],
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                &job.body,
                unix,
            )
            .is_ok()
        );
    }

    #[test]
    fn an_event_without_a_secret_in_force_is_not_sent() {
        let mut sub = subscription(SubscriptionState::Active, SignatureScheme::Maac);
        sub.secrets.clear();
        let failure = Target::Event(Arc::new(sub))
            .request(&event_job(), 1, SystemTime::now())
            .err();
        assert_eq!(failure, Some(Failure::NotSent("no usable share secret")));
    }

    #[test]
    fn a_forward_replays_its_headers_and_names_the_attempt() {
        let set = NodeForwardingSet {
            id: "fwd_1".into(),
            enabled: true,
            ..NodeForwardingSet::default()
        };
        let job = Job {
            event_id: "evt_1".into(),
            headers: vec![Header {
                name: "x-line-signature".into(),
                value: "sig".into(),
            }],
            ..Job::default()
        };
        let request = Target::Forward(Arc::new(set))
            .request(&job, 3, SystemTime::now())
            .unwrap();
        let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
        assert_eq!(header("x-line-signature"), "sig");
        assert_eq!(header("x-hookplane-attempt"), "3");
        assert_eq!(header("x-hookplane-forwarding-set"), "fwd_1");
    }

    #[test]
    fn an_attempt_number_reads_as_its_decimal_whether_made_once_or_not() {
        for number in (0..=20).chain([u32::MAX]) {
            assert_eq!(
                attempt_number(number),
                HeaderValue::from(number),
                "{number}"
            );
        }
    }
}

//! `EventService.PublishEvent`: an internal producer's event becomes one durably queued delivery
//! per matching subscription. The envelope is serialised once here; those bytes are signed and sent
//! on every attempt.

mod auth;
pub mod idempotency;
mod json;
mod matching;
mod token_uses;

use std::{sync::Arc, time::SystemTime};

use hookplane_outbound::envelope;
use hookplane_proto::{
    topics,
    v1::{PublishEventRequest, PublishEventResponse, event_service_server::EventService},
};
use prost_types::value::Kind;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tracing::{Instrument, debug, error};

pub use idempotency::{IdempotencyBook, IdempotencyKeys, SharedIdempotencyKeys};
pub use token_uses::TokenUses;
pub(crate) use token_uses::report_token_uses;

use crate::{
    Error,
    config::ConfigStore,
    delivery::DeliveryPriority,
    enqueue_span::enqueue_span,
    queue::{Job, Queue, unix_ms},
};

const MAX_IDEMPOTENCY_KEY_CHARS: usize = 256;

pub struct Publisher {
    pub config: Arc<ConfigStore>,
    pub queue: Arc<dyn Queue>,
    pub book: Arc<dyn IdempotencyKeys>,
    pub token_uses: Arc<TokenUses>,
    /// Told of every PublishEvent, so deliveries yield to the ingress while it is busy.
    pub priority: Arc<DeliveryPriority>,
}

impl Publisher {
    async fn publish(
        &self,
        metadata: &MetadataMap,
        req: PublishEventRequest,
    ) -> Result<PublishEventResponse, Error> {
        if !self.config.is_ready() {
            return Err(Error::NotReady);
        }
        // One snapshot for the whole call, as for a webhook.
        let snapshot = self.config.load();
        let caller = auth::check(metadata, &snapshot, SystemTime::now())?;
        if req.tenant_id.is_empty() {
            return Err(Error::invalid("tenant_id", "required"));
        }
        caller.publishing.allows(&req.tenant_id)?;
        if let Some(id) = &caller.token_id {
            self.token_uses.note(id);
        }
        let zone = topics::zone_of(&req.topic).ok_or_else(|| {
            Error::invalid(
                "topic",
                format!(
                    "unknown topic {:?} (known: {})",
                    req.topic,
                    topics::known_names()
                ),
            )
        })?;
        let Some(Kind::StructValue(data)) = req.data.as_ref().and_then(|d| d.kind.as_ref()) else {
            return Err(Error::invalid("data", "must be a JSON object"));
        };
        if req.idempotency_key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            ));
        }
        let tenant = snapshot
            .tenant(&req.tenant_id)
            .ok_or_else(|| Error::NotFound {
                kind: "tenant",
                id: req.tenant_id.clone(),
            })?;
        let now = SystemTime::now();
        let keyed = !req.idempotency_key.is_empty();
        if keyed
            && let Some(prior) = self
                .book
                .find(&tenant.id, &req.idempotency_key, now)
                .await?
        {
            debug!(event_id = %prior.event_id, "repeated idempotency key; nothing enqueued");
            return Ok(PublishEventResponse {
                event_id: prior.event_id,
                matched_subscriptions: prior.matched,
            });
        }
        let event_id = if keyed {
            idempotency::event_id(&tenant.id, &req.idempotency_key)
        } else {
            format!("evt_{}", ulid::Ulid::new().to_string().to_lowercase())
        };
        let subscriptions = matching::matching(&snapshot, tenant, &req.topic, zone, now);
        let body = envelope::event_body(now, &req.topic, &json::object(data));
        let enqueued_ms = unix_ms(now);
        let mut jobs: Vec<Job> = subscriptions
            .iter()
            .map(|sub| Job::event(&event_id, &sub.id, &tenant.id, body.clone(), enqueued_ms))
            .collect();
        let matched = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
        let enqueue = enqueue_span(&mut jobs);
        if let Err(e) = self.queue.enqueue(jobs).instrument(enqueue).await {
            // A full spool logs its refusals itself, once a minute per tenant.
            if !matches!(e, Error::SpoolFull(_)) {
                error!(tenant_id = %tenant.id, error = %e, "published event not queued");
            }
            return Err(e);
        }
        // Remembered only once queued: a crash in between lets the producer's retry enqueue again,
        // and the stable delivery ids keep that from doubling a job still in the spool.
        if keyed {
            self.book
                .remember(
                    &tenant.id,
                    &req.idempotency_key,
                    &idempotency::Prior {
                        event_id: event_id.clone(),
                        matched,
                        published_ms: enqueued_ms,
                    },
                )
                .await?;
        }
        debug!(event_id, topic = req.topic, matched, "event published");
        Ok(PublishEventResponse {
            event_id,
            matched_subscriptions: matched,
        })
    }
}

#[tonic::async_trait]
impl EventService for Publisher {
    async fn publish_event(
        &self,
        request: Request<PublishEventRequest>,
    ) -> Result<Response<PublishEventResponse>, Status> {
        self.priority.ingress_arrived();
        let (metadata, _, req) = request.into_parts();
        Ok(Response::new(self.publish(&metadata, req).await?))
    }
}

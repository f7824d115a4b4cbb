//! The audit trail: who (token id and name) did what (method, resource, fields changed, never a
//! value), when and from where, for every admin write, secret reveal and rotation and token
//! change; AuditService lists it newest first, and a periodic trim drops events past retention.
//!
//! Events live in three sled trees holding the same encoded `hookplane.v1.AuditEvent`: by key
//! alone, by `tenant_id/key` and by `resource_id/key`, so every listing is one range read. A key
//! is `u64::MAX` minus a sequence number the store never hands out twice, big-endian: the newest
//! event has the smallest key, so newest-first is plain key order and the oldest sit at the end,
//! where the trim starts.

use std::time::Duration;

use hookplane_proto::v1::audit_service_server::AuditService;
use hookplane_proto::v1::{AuditEvent, ListAuditEventsRequest, ListAuditEventsResponse};
use prost::Message as _;
use sled::Tree;
use tonic::{Request, Response, Status};

use crate::caller::Caller;
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::pagination::Page;
use crate::store::{Store, index_prefix};

/// How many events one trim pass removes at most before it lets other work in.
const TRIM_BATCH: usize = 10_000;

/// The audit trail of one store; cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditLog {
    store: Store,
    events: Tree,
    by_tenant: Tree,
    by_resource: Tree,
}

fn decode_event(bytes: &[u8]) -> Result<AuditEvent, Error> {
    AuditEvent::decode(bytes).map_err(|e| Error::Corrupt {
        tree: "audit_events",
        detail: e.to_string(),
    })
}

fn index_key(parent: &str, key: &[u8]) -> Vec<u8> {
    let mut full = index_prefix(parent);
    full.extend_from_slice(key);
    full
}

impl AuditLog {
    pub fn new(store: &Store) -> AuditLog {
        AuditLog {
            events: store.audit_events_tree().clone(),
            by_tenant: store.audit_by_tenant_tree().clone(),
            by_resource: store.audit_by_resource_tree().clone(),
            store: store.clone(),
        }
    }

    /// Records that `caller` called `method` on `resource_id` (of `tenant_id`, empty for none),
    /// setting `fields` (their names only). Called once the change is committed, before the flush
    /// that makes the change durable, so that flush covers the event too.
    pub fn record(
        &self,
        caller: &Caller,
        method: &str,
        tenant_id: &str,
        resource_id: &str,
        fields: &[&str],
    ) -> Result<(), Error> {
        let event = AuditEvent {
            id: ids::new_id(ids::AUDIT_EVENT),
            time: Some(Time::now().to_proto()),
            token_id: caller.token_id.clone(),
            token_name: caller.name.clone(),
            method: method.to_owned(),
            resource_id: resource_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            peer: caller.peer.map(|p| p.to_string()).unwrap_or_default(),
        };
        let key = (u64::MAX - self.store.next_sequence()?).to_be_bytes();
        let value = event.encode_to_vec();
        self.events.insert(key, value.as_slice())?;
        if !tenant_id.is_empty() {
            self.by_tenant
                .insert(index_key(tenant_id, &key), value.as_slice())?;
        }
        if !resource_id.is_empty() {
            self.by_resource
                .insert(index_key(resource_id, &key), value.as_slice())?;
        }
        tracing::info!(
            method,
            resource_id,
            tenant_id,
            token_id = %caller.token_id,
            token_name = %caller.name,
            fields = ?fields,
            peer = %event.peer,
            "audit"
        );
        Ok(())
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListAuditEventsRequest,
    ) -> Result<ListAuditEventsResponse, Error> {
        let tenant_id = caller.listing_tenant(&req.tenant_id)?;
        let (tree, prefix) = match (req.resource_id.as_str(), tenant_id) {
            ("", "") => (&self.events, Vec::new()),
            ("", tenant) => (&self.by_tenant, index_prefix(tenant)),
            (resource, _) => (&self.by_resource, index_prefix(resource)),
        };
        let entries = Page::new(req.page_size, &req.page_token, &prefix)?.read(tree)?;
        let mut events = Vec::with_capacity(entries.items.len());
        for (_, value) in &entries.items {
            let event = decode_event(value)?;
            // A resource's events all belong to its tenant; the check keeps a tenant admin naming
            // another tenant's resource from seeing anything of it.
            if tenant_id.is_empty() || event.tenant_id == tenant_id {
                events.push(event);
            }
        }
        Ok(ListAuditEventsResponse {
            events,
            next_page_token: entries.next_page_token,
        })
    }

    /// Removes events older than `cutoff`, oldest first; returns how many.
    pub fn trim(&self, cutoff: Time) -> Result<usize, Error> {
        let mut removed = 0;
        while removed < TRIM_BATCH {
            let Some((key, value)) = self.events.last()? else {
                break;
            };
            let event = decode_event(&value)?;
            let time = event
                .time
                .as_ref()
                .and_then(Time::from_proto)
                .unwrap_or(cutoff);
            if time >= cutoff {
                break;
            }
            if !event.tenant_id.is_empty() {
                self.by_tenant.remove(index_key(&event.tenant_id, &key))?;
            }
            if !event.resource_id.is_empty() {
                self.by_resource
                    .remove(index_key(&event.resource_id, &key))?;
            }
            self.events.remove(&key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes events older than `retention` every `every` until `stopping`.
    pub async fn trim_periodically(
        self,
        retention: Duration,
        every: Duration,
        mut stopping: crate::shutdown::Stopping,
    ) {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stopping.wait() => return,
            }
            let log = self.clone();
            let trimmed = tokio::task::spawn_blocking(move || {
                let cutoff = Time::now().minus(retention);
                let mut total = 0;
                loop {
                    let removed = log.trim(cutoff)?;
                    total += removed;
                    if removed < TRIM_BATCH {
                        return Ok::<_, Error>(total);
                    }
                }
            })
            .await;
            match trimmed {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "audit events past retention removed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "audit trim failed"),
                Err(e) => tracing::warn!(error = %e, "audit trim panicked"),
            }
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditLog {
    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::caller::Scope;
    use crate::test_fixtures::*;

    /// A tenant admin calling from a known address.
    fn tenant_admin_from_afar(tenant: &str) -> Caller {
        Caller {
            token_id: "tok_1".into(),
            name: "console".into(),
            scope: Scope::Tenant(tenant.into()),
            peer: Some("192.0.2.7:4000".parse().unwrap()),
        }
    }

    fn methods(response: &ListAuditEventsResponse) -> Vec<&str> {
        response.events.iter().map(|e| e.method.as_str()).collect()
    }

    #[test]
    fn events_are_listed_newest_first_with_who_what_and_where() {
        let (_dir, store) = store();
        let log = AuditLog::new(&store);
        let admin = tenant_admin_from_afar("tnt_a");
        log.record(&admin, "first", "tnt_a", "ch_1", &["display_name"])
            .unwrap();
        log.record(&admin, "second", "tnt_a", "ch_1", &[]).unwrap();
        let listed = log
            .list(&operator_caller(), &ListAuditEventsRequest::default())
            .unwrap();
        assert_eq!(methods(&listed), ["second", "first"]);
        let first = &listed.events[1];
        assert_eq!(first.token_id, "tok_1");
        assert_eq!(first.token_name, "console");
        assert_eq!(first.fields, ["display_name"]);
        assert_eq!(first.peer, "192.0.2.7:4000");
        assert!(first.id.starts_with("aud_"));
    }

    #[test]
    fn pages_continue_where_the_last_one_ended() {
        let (_dir, store) = store();
        let log = AuditLog::new(&store);
        for method in ["1", "2", "3"] {
            log.record(&operator_caller(), method, "tnt_a", "ch_1", &[])
                .unwrap();
        }
        let request = |page_token: String| ListAuditEventsRequest {
            resource_id: "ch_1".into(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let first = log
            .list(&operator_caller(), &request(String::new()))
            .unwrap();
        assert_eq!(methods(&first), ["3", "2"]);
        let second = log
            .list(&operator_caller(), &request(first.next_page_token))
            .unwrap();
        assert_eq!(methods(&second), ["1"]);
        assert!(second.next_page_token.is_empty());
    }

    #[test]
    fn a_tenant_admin_lists_only_its_tenants_events() {
        let (_dir, store) = store();
        let log = AuditLog::new(&store);
        log.record(&operator_caller(), "ours", "tnt_a", "ch_1", &[])
            .unwrap();
        log.record(&operator_caller(), "theirs", "tnt_b", "ch_2", &[])
            .unwrap();
        log.record(&operator_caller(), "nobodys", "", "tok_9", &[])
            .unwrap();
        let admin = tenant_admin_from_afar("tnt_a");
        let listed = log
            .list(&admin, &ListAuditEventsRequest::default())
            .unwrap();
        assert_eq!(methods(&listed), ["ours"]);
        let by_resource = log
            .list(
                &admin,
                &ListAuditEventsRequest {
                    resource_id: "ch_2".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(by_resource.events.is_empty());
        let refused = log
            .list(
                &admin,
                &ListAuditEventsRequest {
                    tenant_id: "tnt_b".into(),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(Status::from(refused).code(), Code::PermissionDenied);
        let all = log
            .list(&operator_caller(), &ListAuditEventsRequest::default())
            .unwrap();
        assert_eq!(all.events.len(), 3);
    }

    #[test]
    fn the_trim_removes_events_past_retention_from_every_listing() {
        let (_dir, store) = store();
        let log = AuditLog::new(&store);
        log.record(&operator_caller(), "old", "tnt_a", "ch_1", &[])
            .unwrap();
        let cutoff = Time::now().plus(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        log.record(&operator_caller(), "new", "tnt_a", "ch_1", &[])
            .unwrap();
        assert_eq!(log.trim(cutoff).unwrap(), 1);
        for request in [
            ListAuditEventsRequest::default(),
            ListAuditEventsRequest {
                tenant_id: "tnt_a".into(),
                ..Default::default()
            },
            ListAuditEventsRequest {
                resource_id: "ch_1".into(),
                ..Default::default()
            },
        ] {
            let listed = log.list(&operator_caller(), &request).unwrap();
            assert_eq!(methods(&listed), ["new"], "{request:?}");
        }
        assert_eq!(log.trim(cutoff).unwrap(), 0);
    }
}

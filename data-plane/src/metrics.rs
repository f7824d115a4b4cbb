//! Prometheus text for `/metrics`.

use std::time::Duration;

use crate::queue::Storage;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    tenant: String,
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tenant {
    tenant: String,
}

pub struct Metrics {
    registry: Registry,
    ingress_requests: Family<Outcome, Counter>,
    ingress_ack_latency: Histogram,
    delivery_attempts: Family<Outcome, Counter>,
    delivery_latency: Histogram,
    deliveries_deferred: Counter,
    queue_depth: Gauge,
    config_revision: Gauge,
    config_refused: Family<Reason, Counter>,
    config_refusing: Gauge,
    outcomes_unsent: Gauge,
    genesys_events_skipped: Counter,
    genesys_outbound_requests: Family<Outcome, Counter>,
    purged_jobs: Family<State, Counter>,
    ingress_connections_refused: Counter,
    spool_corrupt_bytes: Gauge,
    spool_storage_failures: Counter,
    spool_segments_abandoned: Counter,
    spool: SpoolSeries,
}

/// The spool's cap and who holds what (queue/budget.rs).
#[derive(Default)]
struct SpoolSeries {
    refused: Family<Refused, Counter>,
    bytes: Gauge,
    max_bytes: Gauge,
    tenant_max_bytes: Gauge,
    tenant_bytes: Family<Tenant, Gauge>,
}

impl SpoolSeries {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "hookplane_spool_refused",
            "Requests whose jobs the spool did not store, by tenant and by the limit reached \
             (tenant_share: --spool-tenant-share; spool: --spool-max-bytes)",
            self.refused.clone(),
        );
        registry.register(
            "hookplane_spool_bytes",
            "Bytes of the spool's journal on disk, what --spool-max-bytes bounds",
            self.bytes.clone(),
        );
        registry.register(
            "hookplane_spool_max_bytes",
            "The spool's cap (--spool-max-bytes)",
            self.max_bytes.clone(),
        );
        registry.register(
            "hookplane_spool_tenant_max_bytes",
            "What one tenant may hold in the spool (--spool-tenant-share of the cap)",
            self.tenant_max_bytes.clone(),
        );
        registry.register(
            "hookplane_spool_tenant_bytes",
            "Bytes of jobs and bodies held in the spool per tenant",
            self.tenant_bytes.clone(),
        );
    }
}

fn gauge_value(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Default for Metrics {
    fn default() -> Self {
        let ingress_requests = Family::<Outcome, Counter>::default();
        // From 0.5 ms: the ack is an fsync away, and LINE's limit is 2 s.
        let ingress_ack_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let delivery_attempts = Family::<Outcome, Counter>::default();
        let delivery_latency = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let deliveries_deferred = Counter::default();
        let queue_depth = Gauge::default();
        let config_revision = Gauge::default();
        let config_refused = Family::<Reason, Counter>::default();
        let config_refusing = Gauge::default();
        let outcomes_unsent = Gauge::default();
        let ingress_connections_refused = Counter::default();
        let spool_corrupt_bytes = Gauge::default();
        let spool_storage_failures = Counter::default();
        let spool_segments_abandoned = Counter::default();
        let spool = SpoolSeries::default();
        let mut registry = Registry::default();
        spool.register(&mut registry);
        registry.register(
            "hookplane_spool_storage_failures",
            "Spool journal writes and syncs that failed (a full or failing disk)",
            spool_storage_failures.clone(),
        );
        registry.register(
            "hookplane_spool_segments_abandoned",
            "Spool journal segments left after a failed sync, their later records written again",
            spool_segments_abandoned.clone(),
        );
        registry.register(
            "hookplane_spool_corrupt_bytes",
            "Bytes of corrupt spool records skipped in the middle of the journal when it was opened",
            spool_corrupt_bytes.clone(),
        );
        registry.register(
            "hookplane_ingress_connections_refused",
            "Connections closed at once because the ingress held --ingress-max-connections",
            ingress_connections_refused.clone(),
        );
        registry.register(
            "hookplane_ingress_requests",
            "LINE webhook requests by outcome",
            ingress_requests.clone(),
        );
        registry.register(
            "hookplane_ingress_ack_latency_seconds",
            "Time from request to the answer for accepted webhooks",
            ingress_ack_latency.clone(),
        );
        registry.register(
            "hookplane_delivery_attempts",
            "Delivery attempts by outcome (succeeded, retrying, failed)",
            delivery_attempts.clone(),
        );
        registry.register(
            "hookplane_delivery_latency_seconds",
            "Duration of delivery attempts",
            delivery_latency.clone(),
        );
        registry.register(
            "hookplane_deliveries_deferred",
            "Due deliveries pushed back without an attempt (open breaker, busy target)",
            deliveries_deferred.clone(),
        );
        registry.register(
            "hookplane_queue_depth",
            "Deliveries waiting or in flight",
            queue_depth.clone(),
        );
        registry.register(
            "hookplane_config_revision",
            "The configuration revision this node serves",
            config_revision.clone(),
        );
        registry.register(
            "hookplane_config_refused",
            "Config updates refused, by reason: store_id (the control plane has another store) or \
             revision (its store went back to an earlier revision)",
            config_refused.clone(),
        );
        registry.register(
            "hookplane_config_refusing",
            "1 while the node refuses the control plane's config and serves its own (not ready)",
            config_refusing.clone(),
        );
        registry.register(
            "hookplane_outcomes_unsent",
            "Delivery outcomes not yet reported to the control plane",
            outcomes_unsent.clone(),
        );
        let genesys_events_skipped = Counter::default();
        registry.register(
            "hookplane_genesys_events_skipped",
            "LINE events not sent to Genesys connectors (not messages, or no user to answer)",
            genesys_events_skipped.clone(),
        );
        let genesys_outbound_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "hookplane_genesys_outbound_requests",
            "Agent messages Genesys posted to the outbound endpoint, by outcome",
            genesys_outbound_requests.clone(),
        );
        let purged_jobs = Family::<State, Counter>::default();
        registry.register(
            "hookplane_purged_jobs",
            "Jobs this node dropped for PurgeTenantData, by state (queued, parked); with NATS, \
             those it erased from the streams and the parked bucket itself",
            purged_jobs.clone(),
        );
        Self {
            registry,
            ingress_requests,
            ingress_ack_latency,
            delivery_attempts,
            delivery_latency,
            deliveries_deferred,
            queue_depth,
            config_revision,
            config_refused,
            config_refusing,
            outcomes_unsent,
            genesys_events_skipped,
            genesys_outbound_requests,
            purged_jobs,
            ingress_connections_refused,
            spool_corrupt_bytes,
            spool_storage_failures,
            spool_segments_abandoned,
            spool,
        }
    }
}

impl Metrics {
    pub fn ingress(&self, outcome: &'static str) {
        self.ingress_requests
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    pub fn spool_corrupt_bytes(&self, bytes: u64) {
        self.spool_corrupt_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A request the spool refused for `tenant` at `limit` (queue/budget.rs).
    pub fn spool_refused(&self, tenant: &str, limit: &'static str) {
        self.spool
            .refused
            .get_or_create(&Refused {
                tenant: tenant.to_owned(),
                limit,
            })
            .inc();
    }

    /// What the spool holds, read at scrape time.
    pub fn spool_usage(&self, usage: &crate::queue::SpoolUsage) {
        let spool = &self.spool;
        spool.bytes.set(gauge_value(usage.disk_bytes));
        if let Some(limits) = usage.limits {
            spool.max_bytes.set(gauge_value(limits.max_bytes));
            spool.tenant_max_bytes.set(gauge_value(limits.tenant_bytes));
        }
        // Only tenants holding something now: one whose backlog drained leaves the series.
        spool.tenant_bytes.clear();
        for (tenant, bytes) in &usage.tenants {
            spool
                .tenant_bytes
                .get_or_create(&Tenant {
                    tenant: tenant.clone(),
                })
                .set(gauge_value(*bytes));
        }
    }

    pub fn ingress_connection_refused(&self) {
        self.ingress_connections_refused.inc();
    }

    pub fn ingress_acked(&self, latency: Duration) {
        self.ingress_ack_latency.observe(latency.as_secs_f64());
    }

    pub fn attempt(&self, outcome: &'static str, latency: Duration) {
        self.delivery_attempts
            .get_or_create(&Outcome { outcome })
            .inc();
        self.delivery_latency.observe(latency.as_secs_f64());
    }

    pub fn deferred(&self) {
        self.deliveries_deferred.inc();
    }

    pub fn set_config_revision(&self, revision: u64) {
        self.config_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// An update refused for `reason` (`store_id` or `revision`); the node now refuses.
    pub fn purged(&self, queued: u64, parked: u64) {
        for (state, jobs) in [("queued", queued), ("parked", parked)] {
            self.purged_jobs
                .get_or_create(&State { state })
                .inc_by(jobs);
        }
    }

    pub fn config_refused(&self, reason: &'static str) {
        self.config_refused.get_or_create(&Reason { reason }).inc();
        self.config_refusing.set(1);
    }

    /// An update taken: the node no longer refuses.
    pub fn config_taken(&self) {
        self.config_refusing.set(0);
    }

    pub fn set_outcomes_unsent(&self, unsent: u64) {
        self.outcomes_unsent
            .set(i64::try_from(unsent).unwrap_or(i64::MAX));
    }

    pub fn genesys_skipped(&self, events: usize) {
        self.genesys_events_skipped
            .inc_by(u64::try_from(events).unwrap_or(u64::MAX));
    }

    pub fn genesys_outbound(&self, outcome: &'static str) {
        self.genesys_outbound_requests
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// The queue's storage faults, read at scrape time: the queue counts, the counters catch
    /// up with it.
    pub fn spool_storage(&self, storage: &Storage) {
        for (counter, total) in [
            (&self.spool_storage_failures, storage.failures),
            (&self.spool_segments_abandoned, storage.abandoned),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The exposition text, with the queue depth read at scrape time.
    pub fn render(&self, queue_depth: u64) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_promised_series() {
        let m = Metrics::default();
        m.ingress("accepted");
        m.ingress_acked(Duration::from_millis(3));
        m.attempt("succeeded", Duration::from_millis(20));
        m.set_config_revision(7);
        m.config_refused("store_id");
        m.genesys_skipped(2);
        m.genesys_outbound("queued");
        m.spool_refused("tnt_a", "tenant_share");
        m.spool_usage(&crate::queue::SpoolUsage {
            disk_bytes: 300,
            limits: Some(crate::queue::budget::Limits {
                max_bytes: 1000,
                tenant_bytes: 500,
            }),
            tenants: vec![("tnt_a".to_owned(), 200)],
        });
        let storage = Storage {
            failure: None,
            failures: 3,
            abandoned: 1,
        };
        m.spool_storage(&storage);
        m.spool_storage(&storage);
        let text = m.render(4);
        for needle in [
            "hookplane_spool_storage_failures_total 3",
            "hookplane_spool_segments_abandoned_total 1",
            "hookplane_ingress_requests_total{outcome=\"accepted\"} 1",
            "hookplane_queue_depth 4",
            "hookplane_delivery_attempts_total{outcome=\"succeeded\"} 1",
            "hookplane_delivery_latency_seconds_bucket",
            "hookplane_ingress_ack_latency_seconds_count 1",
            "hookplane_config_revision 7",
            "hookplane_config_refused_total{reason=\"store_id\"} 1",
            "hookplane_config_refusing 1",
            "hookplane_genesys_events_skipped_total 2",
            "hookplane_genesys_outbound_requests_total{outcome=\"queued\"} 1",
            "hookplane_spool_refused_total{tenant=\"tnt_a\",limit=\"tenant_share\"} 1",
            "hookplane_spool_bytes 300",
            "hookplane_spool_max_bytes 1000",
            "hookplane_spool_tenant_max_bytes 500",
            "hookplane_spool_tenant_bytes{tenant=\"tnt_a\"} 200",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}

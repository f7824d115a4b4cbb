//! The spool's cap and each tenant's share of it: what may be stored, who holds what, and who is
//! refused. A brand whose endpoints are all down keeps enqueueing while nothing drains; without a
//! bound its backlog would fill the node's disk and every other brand's webhooks would fail with
//! it. So the spool refuses new work of a tenant that holds its share (`--spool-tenant-share` of
//! `--spool-max-bytes`), and of everyone once the journal on disk reaches the cap; the ingress
//! answers 503 (LINE redelivers later) and PublishEvent RESOURCE_EXHAUSTED, never 200 for work
//! not stored.
//!
//! What a tenant holds is an account kept in memory, counted again from the records when the
//! spool is opened: each job is charged [`JOB_CHARGE`] for its record, and each stored body (one
//! per request, shared by its fan-out) its stored size, to the tenant of the jobs naming it. A
//! charge lasts as long as the record on disk: an ack, or a parked failure pruned, gives it back;
//! a parked failure keeps it (it is on disk, an admin can still retry it, and there are at most
//! 10,000). The whole-spool cap is checked against the journal's bytes on disk instead, the
//! truth of what the node's disk holds: settled records wait there for compaction.
//!
//! Only new work is refused: retries, deferrals and the rewrites of jobs held, and an enqueue of
//! jobs held already (a redelivery of a request stored before), add nothing or next to nothing
//! and always go through, so a full spool keeps delivering and so drains.
//!
//! The accounting ([`Ledger`]), the admission decision and the log throttle are pure: the spool
//! passes in the bytes on disk and the time.

use std::{
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use foldhash::{HashMap, HashMapExt as _};
use tracing::warn;

use super::Job;
use crate::metrics::Metrics;

/// The smallest cap accepted. The journal writes 64 MiB segments, deletes a segment once
/// nothing in it is current and copies one forward only once the journal holds more than twice
/// its live bytes and a segment besides; under four segments its own slack could keep the spool
/// over the cap with nothing left to deliver, refusing everyone for good.
pub const MIN_MAX_BYTES: u64 = 4 * super::journal::SEGMENT_BYTES;
/// The default cap, in percent of what the spool's filesystem has room for when the node
/// starts (its free space plus what the spool holds already): the rest is left to the
/// system, logs and the node's other state.
pub const DEFAULT_DISK_PERCENT: u64 = 80;
/// What a job's record is charged: about what one takes in the journal (its ids, times and body
/// key, the record's header and key: 264 bytes for a forward) and its body's record header.
/// With it a tenant's account stays within 5 % of what its requests of 1 to 10 forwarding sets
/// wrote to the journal (`a_tenants_account_follows_the_journal`).
pub const JOB_CHARGE: u64 = 288;
/// A refused request waits at least this long before trying again (`Retry-After`).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// At most one log line per tenant in this long; the metric counts every refusal.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// A size in bytes as an operator writes it: `2GiB`, `500MB`, `1.5GiB`, or a number of bytes.
/// The units are the unambiguous ones only (kB, MB, GB, TB in powers of 1000; KiB, MiB, GiB,
/// TiB in powers of 1024): a bare `G` means 10⁹ to some tools and 2³⁰ to others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "{s:?}: expected a size such as 2GiB, 500MB or 1073741824 \
                     (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
                ));
            }
        };
        let invalid = || format!("{s:?}: expected a size such as 2GiB, 500MB or 1073741824");
        if number.is_empty() {
            return Err(invalid());
        }
        if let Ok(whole) = number.parse::<u64>() {
            return whole
                .checked_mul(unit_bytes)
                .map(ByteSize)
                .ok_or_else(|| format!("{s:?} is too large"));
        }
        let fraction: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = (fraction * unit_bytes as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("{s:?} is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size {
                let whole = self.0 / size;
                let tenths = (self.0 % size) * 10 / size;
                return match tenths {
                    0 => write!(f, "{whole} {name}"),
                    t => write!(f, "{whole}.{t} {name}"),
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

/// The part of the spool one tenant may hold: `50%` or `0.5`, above 0 and at most all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    per_million: u32,
}

impl Share {
    /// Half: one tenant's outage can take at most half the node's spool, so the others always
    /// keep the other half; it takes two tenants down at once to reach the cap itself.
    pub const DEFAULT: Share = Share {
        per_million: 500_000,
    };

    /// `share` of `bytes`.
    pub fn of(self, bytes: u64) -> u64 {
        let part = u128::from(bytes) * u128::from(self.per_million) / 1_000_000;
        u64::try_from(part).unwrap_or(u64::MAX)
    }
}

impl Default for Share {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for Share {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let invalid = || format!("{s:?}: expected a share above 0 and at most 100%, as 50% or 0.5");
        let fraction = match s.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().map_err(|_| invalid())? / 100.0,
            None => s.parse::<f64>().map_err(|_| invalid())?,
        };
        let per_million = (fraction * 1_000_000.0).round();
        if !(1.0..=1_000_000.0).contains(&per_million) {
            return Err(invalid());
        }
        Ok(Share {
            per_million: per_million as u32,
        })
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = f64::from(self.per_million) / 10_000.0;
        write!(f, "{percent}%")
    }
}

/// The default cap: [`DEFAULT_DISK_PERCENT`] of the filesystem's free space plus what the spool
/// holds already, and at least [`MIN_MAX_BYTES`].
pub fn default_max_bytes(free: u64, spool_bytes: u64) -> u64 {
    let room = u128::from(free) + u128::from(spool_bytes);
    let share = room * u128::from(DEFAULT_DISK_PERCENT) / 100;
    u64::try_from(share).unwrap_or(u64::MAX).max(MIN_MAX_BYTES)
}

/// The bounds in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the journal on disk past which no new work is stored.
    pub max_bytes: u64,
    /// What one tenant may hold.
    pub tenant_bytes: u64,
}

impl Limits {
    /// No bound: a spool opened without limits (tests, tools).
    pub const NONE: Limits = Limits {
        max_bytes: u64::MAX,
        tenant_bytes: u64::MAX,
    };

    pub fn new(max_bytes: u64, share: Share) -> Limits {
        Limits {
            max_bytes,
            tenant_bytes: share.of(max_bytes),
        }
    }
}

/// Which bound refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The tenant holds its share (`--spool-tenant-share`).
    TenantShare,
    /// The journal on disk is at the cap (`--spool-max-bytes`).
    Spool,
}

impl Limit {
    /// The `limit` label of `hookplane_spool_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::TenantShare => "tenant_share",
            Limit::Spool => "spool",
        }
    }
}

/// Why new work of a tenant was not stored. Its text goes to the PublishEvent caller and the
/// node's log: the tenant and the bound, never what the request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tenant_id: String,
    pub limit: Limit,
    /// What the tenant holds (its share) or the journal holds on disk (the cap), before this
    /// request.
    pub used: u64,
    pub allowed: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (tenant, used, allowed) =
            (&self.tenant_id, ByteSize(self.used), ByteSize(self.allowed));
        match self.limit {
            Limit::TenantShare => write!(
                f,
                "tenant {tenant:?} holds {used} of its {allowed} share of this node's spool \
                 (deliveries waiting for its endpoints); try again once they drain"
            ),
            Limit::Spool => write!(
                f,
                "this node's spool holds {used} of its {allowed} cap; tenant {tenant:?}'s \
                 request is not stored; try again later"
            ),
        }
    }
}

/// What a batch of jobs asks for, per tenant, before it is stored: [`JOB_CHARGE`] a job and
/// each body once (a fan-out shares one `Bytes`, as the spool stores it once). An estimate of
/// what [`Charges`] will say once the batch is stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Demand {
    tenants: Vec<(Arc<str>, u64)>,
}

impl Demand {
    pub fn of(jobs: &[Job]) -> Demand {
        let mut demand = Demand::default();
        let mut last_body: Option<(*const u8, usize)> = None;
        for job in jobs {
            let body = (job.body.as_ptr(), job.body.len());
            let stored = if last_body == Some(body) {
                0
            } else {
                stored_estimate(job)
            };
            last_body = Some(body);
            demand.add(&job.tenant_id, JOB_CHARGE + stored);
        }
        demand
    }

    fn add(&mut self, tenant: &str, bytes: u64) {
        match self.tenants.iter_mut().find(|(t, _)| &**t == tenant) {
            Some((_, held)) => *held += bytes,
            None => self.tenants.push((Arc::from(tenant), bytes)),
        }
    }

    fn total(&self) -> u64 {
        self.tenants.iter().map(|(_, b)| *b).sum()
    }
}

/// About what `bodies.rs` stores for a job's body and headers.
fn stored_estimate(job: &Job) -> u64 {
    let headers: usize = job
        .headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 6)
        .sum();
    (job.body.len() + headers + 8) as u64
}

/// What a stored batch costs, per tenant: its jobs added and its bodies newly stored (less any
/// given back at once, a body all of whose jobs were held already). Signed while it is summed.
#[derive(Debug, Default)]
pub struct Charges {
    tenants: Vec<(Arc<str>, i128)>,
    lanes: Vec<(Arc<str>, Arc<str>)>,
}

impl Charges {
    /// A job added: its record, and who its lane belongs to (an ack knows only the lane).
    pub fn job(&mut self, job: &Job) {
        let tenant = self.add(&job.tenant_id, i128::from(JOB_CHARGE));
        let lane = job.lane();
        if !self.lanes.iter().any(|(l, _)| **l == *lane) {
            self.lanes.push((Arc::from(lane.as_ref()), tenant));
        }
    }

    /// A body newly stored for `tenant`'s jobs.
    pub fn body(&mut self, tenant: &str, bytes: u64) {
        self.add(tenant, i128::from(bytes));
    }

    /// A body this batch stored and removed again.
    pub fn body_gone(&mut self, tenant: &str, bytes: u64) {
        self.add(tenant, -i128::from(bytes));
    }

    fn add(&mut self, tenant: &str, bytes: i128) -> Arc<str> {
        match self.tenants.iter_mut().find(|(t, _)| &**t == tenant) {
            Some((t, held)) => {
                *held += bytes;
                Arc::clone(t)
            }
            None => {
                let t: Arc<str> = Arc::from(tenant);
                self.tenants.push((Arc::clone(&t), bytes));
                t
            }
        }
    }
}

/// Who holds what, against the limits. Pure: the spool tells it what was stored and removed and
/// what the journal holds on disk.
#[derive(Debug)]
pub struct Ledger {
    limits: Limits,
    /// Bytes charged per tenant; a tenant holding nothing has no entry.
    tenants: HashMap<Arc<str>, u64>,
    /// The tenant of each lane seen (a target belongs to one tenant): an ack names only the lane.
    lanes: HashMap<Arc<str>, Arc<str>>,
    /// Demands admitted and not yet stored, which the journal's bytes do not show yet.
    reserved: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(Limits::NONE)
    }
}

impl Ledger {
    pub fn new(limits: Limits) -> Ledger {
        Ledger {
            limits,
            tenants: HashMap::new(),
            lanes: HashMap::new(),
            reserved: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Admits `demand` and reserves it (charged to its tenants and counted against the cap until
    /// [`Ledger::settle`] or [`Ledger::give_back`]), or refuses it whole. `disk_bytes`: what the
    /// journal holds on disk now.
    pub fn admit(&mut self, demand: &Demand, disk_bytes: u64) -> Result<(), Refusal> {
        let Some((first, _)) = demand.tenants.first() else {
            return Ok(());
        };
        let on_disk = disk_bytes.saturating_add(self.reserved);
        if on_disk.saturating_add(demand.total()) > self.limits.max_bytes {
            return Err(Refusal {
                tenant_id: first.to_string(),
                limit: Limit::Spool,
                used: on_disk,
                allowed: self.limits.max_bytes,
            });
        }
        for (tenant, bytes) in &demand.tenants {
            let held = self.held(tenant);
            if held.saturating_add(*bytes) > self.limits.tenant_bytes {
                return Err(Refusal {
                    tenant_id: tenant.to_string(),
                    limit: Limit::TenantShare,
                    used: held,
                    allowed: self.limits.tenant_bytes,
                });
            }
        }
        for (tenant, bytes) in &demand.tenants {
            self.charge(tenant, *bytes);
        }
        self.reserved = self.reserved.saturating_add(demand.total());
        Ok(())
    }

    /// An admitted demand was not stored after all.
    pub fn give_back(&mut self, demand: &Demand) {
        for (tenant, bytes) in &demand.tenants {
            self.release(tenant, *bytes);
        }
        self.reserved = self.reserved.saturating_sub(demand.total());
    }

    /// An admitted demand was stored and cost `charges`: they replace the reservation.
    pub fn settle(&mut self, demand: &Demand, charges: Charges) {
        self.give_back(demand);
        for (tenant, bytes) in charges.tenants {
            match u64::try_from(bytes) {
                Ok(bytes) => self.charge(&tenant, bytes),
                Err(_) => self.release(&tenant, u64::try_from(-bytes).unwrap_or(u64::MAX)),
            }
        }
        for (lane, tenant) in charges.lanes {
            self.lanes.entry(lane).or_insert(tenant);
        }
    }

    /// A job found when the spool is opened, and the bytes of its body if it is the first job
    /// naming it.
    pub fn replayed(&mut self, job: &Job, body_bytes: u64) {
        self.charge(&job.tenant_id, JOB_CHARGE + body_bytes);
        let lane = job.lane();
        // Looked up first: a backlog of millions replays a few lanes over and over.
        if !self.lanes.contains_key(lane.as_ref()) {
            self.lanes
                .insert(Arc::from(lane.as_ref()), Arc::from(job.tenant_id.as_str()));
        }
    }

    pub fn charge(&mut self, tenant: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        match self.tenants.get_mut(tenant) {
            Some(held) => *held = held.saturating_add(bytes),
            None => {
                self.tenants.insert(Arc::from(tenant), bytes);
            }
        }
    }

    /// Gives back what `tenant`'s record (and body, when it went too) was charged.
    pub fn release(&mut self, tenant: &str, bytes: u64) {
        if let Some(held) = self.tenants.get_mut(tenant) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.tenants.remove(tenant);
            }
        }
    }

    /// [`Ledger::release`] for the tenant a lane belongs to.
    pub fn release_lane(&mut self, lane: &str, bytes: u64) {
        if let Some(tenant) = self.lanes.get(lane).cloned() {
            self.release(&tenant, bytes);
        }
    }

    /// What `tenant` is charged now.
    pub fn held(&self, tenant: &str) -> u64 {
        self.tenants.get(tenant).copied().unwrap_or(0)
    }

    /// Every tenant holding something, with what it holds.
    pub fn tenants(&self) -> Vec<(String, u64)> {
        self.tenants
            .iter()
            .map(|(t, b)| (t.to_string(), *b))
            .collect()
    }
}

/// At most one log line per key in a window, counting what it held back. Pure: the caller
/// passes the time.
#[derive(Debug, Default)]
pub struct Throttle {
    last: HashMap<String, (Instant, u64)>,
}

impl Throttle {
    /// Keys kept before the ones whose window has ended are dropped.
    const KEPT: usize = 1024;

    /// `Some(n)` when a line is due for `key` at `now` (`n` occurrences were held back since
    /// the last one), `None` when this one is held back.
    pub fn admit(&mut self, key: &str, now: Instant, every: Duration) -> Option<u64> {
        if let Some((at, held_back)) = self.last.get_mut(key) {
            if now.saturating_duration_since(*at) < every {
                *held_back += 1;
                return None;
            }
            let n = *held_back;
            *at = now;
            *held_back = 0;
            return Some(n);
        }
        if self.last.len() >= Self::KEPT {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < every);
        }
        self.last.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

/// What the spool holds on disk and per tenant, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolUsage {
    /// The journal's bytes on disk (what the cap is checked against).
    pub disk_bytes: u64,
    pub limits: Option<Limits>,
    /// Bytes charged to each tenant holding something.
    pub tenants: Vec<(String, u64)>,
}

/// The spool's side of it: the ledger under a lock, the log throttle, the metric. The spool
/// calls it with what it knows (the jobs, the journal's bytes, the time).
#[derive(Default)]
pub struct SpoolBudget {
    ledger: Mutex<Ledger>,
    throttle: Mutex<Throttle>,
    metrics: Option<Arc<Metrics>>,
}

/// A demand admitted and reserved; given back when dropped unless settled.
pub struct Claim<'a> {
    budget: &'a SpoolBudget,
    demand: Demand,
    settled: bool,
}

impl Claim<'_> {
    /// The batch is stored and cost `charges`.
    pub fn settle(mut self, charges: Charges) {
        self.settled = true;
        self.budget.ledger().settle(&self.demand, charges);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.budget.ledger().give_back(&self.demand);
        }
    }
}

impl SpoolBudget {
    /// Limits in force from now on (what is held stays counted), and where refusals are counted.
    pub fn limit(&mut self, limits: Limits, metrics: Arc<Metrics>) {
        self.ledger().set_limits(limits);
        self.metrics = Some(metrics);
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits `jobs` or refuses them whole. `disk_bytes` is read under the ledger's lock, so
    /// concurrent enqueues see each other's reservations or their bytes on disk.
    pub fn claim(
        &self,
        jobs: &[Job],
        disk_bytes: impl FnOnce() -> u64,
    ) -> Result<Claim<'_>, Refusal> {
        let demand = Demand::of(jobs);
        {
            let mut ledger = self.ledger();
            let on_disk = disk_bytes();
            ledger.admit(&demand, on_disk)?;
        }
        Ok(Claim {
            budget: self,
            demand,
            settled: false,
        })
    }

    /// A refusal the caller answers: counted, and logged at most once a minute per tenant.
    pub fn refused(&self, refusal: &Refusal, now: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.spool_refused(&refusal.tenant_id, refusal.limit.label());
        }
        let due = self
            .throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&refusal.tenant_id, now, LOG_EVERY);
        if let Some(held_back) = due {
            warn!(
                tenant_id = %refusal.tenant_id,
                limit = refusal.limit.label(),
                used_bytes = refusal.used,
                allowed_bytes = refusal.allowed,
                refused_since_last_line = held_back,
                "new deliveries refused: {refusal} (its webhooks get 503, its PublishEvent calls \
                 RESOURCE_EXHAUSTED; logged once a minute per tenant, every refusal counted in \
                 hookplane_spool_refused_total)"
            );
        }
    }

    pub fn usage(&self, disk_bytes: u64) -> SpoolUsage {
        let ledger = self.ledger();
        SpoolUsage {
            disk_bytes,
            limits: Some(ledger.limits()),
            tenants: ledger.tenants(),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn job(tenant: &str, lane: &str, body: &Bytes) -> Job {
        Job {
            delivery_id: format!("dlv_{tenant}_{lane}"),
            tenant_id: tenant.to_owned(),
            forwarding_set_id: lane.to_owned(),
            body: body.clone(),
            ..Job::default()
        }
    }

    fn stored(ledger: &mut Ledger, jobs: &[Job]) -> Result<(), Refusal> {
        let demand = Demand::of(jobs);
        ledger.admit(&demand, 0)?;
        let mut charges = Charges::default();
        for job in jobs {
            charges.job(job);
        }
        charges.body(&jobs[0].tenant_id, stored_estimate(&jobs[0]));
        ledger.settle(&demand, charges);
        Ok(())
    }

    const KIB: u64 = 1 << 10;

    #[test]
    fn a_tenant_over_its_share_is_refused_while_others_are_admitted() {
        let mut ledger = Ledger::new(Limits {
            max_bytes: 100 * KIB,
            tenant_bytes: 10 * KIB,
        });
        let body = Bytes::from(vec![b'x'; 4000]);
        stored(&mut ledger, &[job("tnt_a", "fwd_a", &body)]).unwrap();
        stored(&mut ledger, &[job("tnt_a", "fwd_a", &body)]).unwrap();
        let refusal = stored(&mut ledger, &[job("tnt_a", "fwd_a", &body)]).unwrap_err();
        assert_eq!(refusal.limit, Limit::TenantShare);
        assert_eq!(refusal.tenant_id, "tnt_a");
        assert_eq!(refusal.allowed, 10 * KIB);
        stored(&mut ledger, &[job("tnt_b", "fwd_b", &body)]).unwrap();
    }

    #[test]
    fn a_refused_batch_is_charged_nothing() {
        let mut ledger = Ledger::new(Limits {
            max_bytes: 100 * KIB,
            tenant_bytes: 10 * KIB,
        });
        let big = Bytes::from(vec![b'x'; 11 * KIB as usize]);
        stored(&mut ledger, &[job("tnt_a", "fwd_a", &big)]).unwrap_err();
        assert_eq!(ledger.held("tnt_a"), 0);
        assert!(ledger.tenants().is_empty());
    }

    #[test]
    fn the_bytes_on_disk_at_the_cap_refuse_every_tenant() {
        let mut ledger = Ledger::new(Limits {
            max_bytes: 100 * KIB,
            tenant_bytes: 50 * KIB,
        });
        let demand = Demand::of(&[job("tnt_b", "fwd_b", &Bytes::from_static(b"{}"))]);
        let refusal = ledger.admit(&demand, 100 * KIB - 10).unwrap_err();
        assert_eq!(refusal.limit, Limit::Spool);
        assert_eq!(refusal.tenant_id, "tnt_b");
        assert_eq!(refusal.used, 100 * KIB - 10);
        ledger.admit(&demand, 50 * KIB).unwrap();
    }

    #[test]
    fn demands_admitted_and_not_yet_stored_count_against_the_cap() {
        let mut ledger = Ledger::new(Limits {
            max_bytes: 10 * KIB,
            tenant_bytes: 10 * KIB,
        });
        let body = Bytes::from(vec![b'x'; 4000]);
        let a = Demand::of(&[job("tnt_a", "fwd_a", &body)]);
        let b = Demand::of(&[job("tnt_b", "fwd_b", &body)]);
        ledger.admit(&a, 0).unwrap();
        ledger.admit(&b, 0).unwrap();
        assert_eq!(ledger.admit(&a, 0).unwrap_err().limit, Limit::Spool);
        ledger.give_back(&a);
        ledger.admit(&a, 0).unwrap();
    }

    #[test]
    fn a_fan_out_sharing_one_body_asks_for_it_once() {
        let body = Bytes::from(vec![b'x'; 4000]);
        let jobs: Vec<Job> = ["fwd_1", "fwd_2", "fwd_3"]
            .iter()
            .map(|lane| job("tnt_a", lane, &body))
            .collect();
        assert_eq!(
            Demand::of(&jobs).total(),
            3 * JOB_CHARGE + stored_estimate(&jobs[0])
        );
    }

    #[test]
    fn an_ack_named_by_its_lane_gives_its_tenant_room_again() {
        let mut ledger = Ledger::new(Limits {
            max_bytes: 100 * KIB,
            tenant_bytes: 10 * KIB,
        });
        let body = Bytes::from(vec![b'x'; 4000]);
        let jobs = [job("tnt_a", "fwd_a", &body)];
        stored(&mut ledger, &jobs).unwrap();
        stored(&mut ledger, &jobs).unwrap();
        stored(&mut ledger, &jobs).unwrap_err();
        ledger.release_lane("fwd_a", JOB_CHARGE + stored_estimate(&jobs[0]));
        stored(&mut ledger, &jobs).unwrap();
        ledger.release_lane("fwd_unknown", 1 << 30);
        assert!(ledger.held("tnt_a") > 0);
    }

    #[test]
    fn a_reservation_dropped_unsettled_is_given_back() {
        let budget = SpoolBudget::default();
        budget.ledger().set_limits(Limits {
            max_bytes: 100 * KIB,
            tenant_bytes: 10 * KIB,
        });
        let jobs = [job("tnt_a", "fwd_a", &Bytes::from(vec![b'x'; 4000]))];
        drop(budget.claim(&jobs, || 0).unwrap());
        assert_eq!(budget.ledger().held("tnt_a"), 0);
        budget
            .claim(&jobs, || 0)
            .unwrap()
            .settle(Charges::default());
        assert_eq!(budget.ledger().held("tnt_a"), 0);
    }

    #[test]
    fn a_tenant_is_logged_once_a_window_with_what_was_held_back() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(throttle.admit("tnt_a", t0, minute), Some(0));
        assert_eq!(
            throttle.admit("tnt_a", t0 + Duration::from_secs(1), minute),
            None
        );
        assert_eq!(
            throttle.admit("tnt_b", t0 + Duration::from_secs(2), minute),
            Some(0)
        );
        assert_eq!(
            throttle.admit("tnt_a", t0 + Duration::from_secs(59), minute),
            None
        );
        assert_eq!(throttle.admit("tnt_a", t0 + minute, minute), Some(2));
        assert_eq!(throttle.admit("tnt_a", t0 + minute, minute), None);
    }

    #[test]
    fn sizes_are_read_as_operators_write_them() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("2GiB"), Ok(2 << 30));
        assert_eq!(size("500MB"), Ok(500_000_000));
        assert_eq!(size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("256mib"), Ok(256 << 20));
        for wrong in ["", "GiB", "2G", "-1GiB", "1.2.3MB", "99999999999TiB"] {
            assert!(size(wrong).is_err(), "{wrong:?} was accepted");
        }
        assert_eq!(ByteSize(256 << 20).to_string(), "256 MiB");
        assert_eq!(ByteSize(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(ByteSize(100).to_string(), "100 B");
    }

    #[test]
    fn a_share_is_a_percentage_or_a_fraction_of_the_cap() {
        let share = |s: &str| s.parse::<Share>();
        assert_eq!(share("50%").unwrap().of(1000), 500);
        assert_eq!(share("0.25").unwrap().of(1000), 250);
        assert_eq!(share("100%").unwrap().of(1000), 1000);
        assert_eq!(share("0.5%").unwrap().of(1000), 5);
        for wrong in ["0", "0%", "101%", "1.5", "half", "-10%"] {
            assert!(share(wrong).is_err(), "{wrong:?} was accepted");
        }
        assert_eq!(Share::DEFAULT.to_string(), "50%");
    }

    #[test]
    fn the_default_cap_is_most_of_the_room_on_the_disk_and_never_below_the_minimum() {
        let gib = 1u64 << 30;
        assert_eq!(default_max_bytes(90 * gib, 10 * gib), 80 * gib);
        assert_eq!(default_max_bytes(0, 0), MIN_MAX_BYTES);
        assert_eq!(default_max_bytes(u64::MAX, u64::MAX), u64::MAX);
    }

    // The spool with its budget.

    use crate::{
        Error,
        queue::{ForwardingSetRef, Header, Leased, Queue, spool::Spool, unlimited},
    };

    fn open(dir: &std::path::Path, limits: Limits) -> Spool {
        Spool::open(dir)
            .unwrap()
            .with_limits(limits, Arc::new(Metrics::default()))
    }

    /// A LINE request of `tenant` (number `n`) forwarded to `sets` sets, with ids as long as
    /// the real ones.
    fn request(tenant: &str, n: u32, sets: usize, body_bytes: usize) -> Vec<Job> {
        let mut body = format!("{{\"request\":{n},\"text\":\"").into_bytes();
        body.resize(body_bytes, b'x');
        let body = Bytes::from(body);
        let tenant_id = format!("tnt_{tenant}{}", "0".repeat(26 - tenant.len()));
        (0..sets)
            .map(|i| {
                let set_id = format!("fwd_{tenant}{i:0>25}");
                let set = ForwardingSetRef {
                    id: &set_id,
                    channel_id: "ch_01jgkz7q3n8v5t2r6w9x4y1b0c",
                    tenant_id: &tenant_id,
                };
                let headers = vec![Header {
                    name: "x-line-signature".into(),
                    value: "K2f8hUe0vRr4sC1nYxzQbLMi1dW9aPq3sF6gH5jT7kE=".into(),
                }];
                let event_id = crate::queue::delivery_id(&format!("{n}"), "event");
                Job::forward(&event_id, set, body.clone(), headers, 1_735_689_600_123)
            })
            .collect()
    }

    fn held(spool: &Spool, tenant: &str) -> u64 {
        let usage = spool.usage().unwrap();
        let prefix = format!("tnt_{tenant}");
        usage
            .tenants
            .iter()
            .filter(|(t, _)| t.starts_with(&prefix))
            .map(|(_, b)| *b)
            .sum()
    }

    async fn lease_all(spool: &Spool) -> Vec<Leased> {
        spool
            .lease(100_000, Duration::ZERO, &unlimited)
            .await
            .unwrap()
    }

    /// Enqueues requests of `tenant` until one is refused; the refusal and the requests stored.
    async fn fill(spool: &Spool, tenant: &str, body_bytes: usize) -> (Refusal, u32) {
        for n in 0..10_000 {
            match spool.enqueue(request(tenant, n, 2, body_bytes)).await {
                Ok(()) => {}
                Err(Error::SpoolFull(refusal)) => return (refusal, n),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("the spool never refused {tenant}");
    }

    const SMALL: Limits = Limits {
        max_bytes: 1 << 20,
        tenant_bytes: 16 * KIB,
    };

    #[tokio::test]
    async fn a_tenant_over_its_share_is_refused_whole_and_the_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), SMALL);
        let (refusal, stored) = fill(&spool, "a", 1000).await;
        assert_eq!(refusal.limit, Limit::TenantShare);
        assert!(refusal.tenant_id.starts_with("tnt_a"));
        assert!(stored > 1);
        assert!(held(&spool, "a") <= SMALL.tenant_bytes);
        assert_eq!(spool.depth().await.unwrap(), u64::from(stored) * 2);
        spool.enqueue(request("b", 0, 2, 1000)).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), u64::from(stored) * 2 + 2);
    }

    #[tokio::test]
    async fn delivered_jobs_give_their_tenant_room_again() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), SMALL);
        let (_, stored) = fill(&spool, "a", 1000).await;
        for leased in lease_all(&spool).await {
            spool.ack(leased).await.unwrap();
        }
        assert_eq!(held(&spool, "a"), 0);
        spool.enqueue(request("a", stored, 2, 1000)).await.unwrap();
    }

    #[tokio::test]
    async fn what_a_tenant_holds_is_counted_again_when_the_spool_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let spool = open(dir.path(), SMALL);
            fill(&spool, "a", 1000).await;
            spool.enqueue(request("b", 0, 3, 500)).await.unwrap();
            (held(&spool, "a"), held(&spool, "b"))
        };
        let spool = open(dir.path(), SMALL);
        assert_eq!((held(&spool, "a"), held(&spool, "b")), before);
        let refused = spool.enqueue(request("a", 9_999, 2, 1000)).await;
        assert!(matches!(refused, Err(Error::SpoolFull(_))), "{refused:?}");
        for leased in lease_all(&spool).await {
            spool.ack(leased).await.unwrap();
        }
        assert!(spool.usage().unwrap().tenants.is_empty());
    }

    #[tokio::test]
    async fn a_redelivery_of_a_request_held_is_acknowledged_over_the_share() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), SMALL);
        let (_, stored) = fill(&spool, "a", 1000).await;
        let charged = held(&spool, "a");
        spool.enqueue(request("a", 0, 2, 1000)).await.unwrap();
        assert_eq!(held(&spool, "a"), charged);
        assert_eq!(spool.depth().await.unwrap(), u64::from(stored) * 2);
    }

    #[tokio::test]
    async fn a_parked_failure_stays_charged_and_a_retry_is_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), SMALL);
        fill(&spool, "a", 1000).await;
        let charged = held(&spool, "a");
        let mut leased = lease_all(&spool).await.into_iter();
        let first = leased.next().unwrap();
        spool.fail(first, 20, "410 Gone").await.unwrap();
        for job in leased {
            spool
                .retry(job, 1, std::time::SystemTime::now())
                .await
                .unwrap();
        }
        assert_eq!(held(&spool, "a"), charged);
    }

    #[tokio::test]
    async fn the_journal_at_the_cap_refuses_every_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let cap = Limits {
            max_bytes: 32 * KIB,
            tenant_bytes: u64::MAX,
        };
        let spool = open(dir.path(), cap);
        let (refusal, _) = fill(&spool, "a", 1000).await;
        assert_eq!(refusal.limit, Limit::Spool);
        assert!(spool.disk_bytes() <= cap.max_bytes);
        let other = spool.enqueue(request("b", 0, 2, 1000)).await;
        match other {
            Err(Error::SpoolFull(refusal)) => {
                assert_eq!(refusal.limit, Limit::Spool);
                assert!(refusal.tenant_id.starts_with("tnt_b"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_tenants_account_follows_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), Limits::NONE);
        for (sets, body) in [(1, 200), (3, 600), (10, 2000)] {
            let disk_before = spool.disk_bytes();
            for n in 0..100 {
                spool.enqueue(request("a", n, sets, body)).await.unwrap();
            }
            let charged = held(&spool, "a");
            let on_disk = spool.disk_bytes() - disk_before;
            let ratio = charged as f64 / on_disk as f64;
            assert!(
                (0.9..1.1).contains(&ratio),
                "{sets} set(s), {body} bytes: charged {charged} for {on_disk} on disk"
            );
            for leased in lease_all(&spool).await {
                spool.ack(leased).await.unwrap();
            }
            assert_eq!(held(&spool, "a"), 0);
        }
    }

    #[test]
    fn a_refusal_names_the_tenant_and_the_bound_in_human_sizes() {
        let refusal = Refusal {
            tenant_id: "tnt_a".to_owned(),
            limit: Limit::TenantShare,
            used: 127 << 20,
            allowed: 128 << 20,
        };
        let text = refusal.to_string();
        assert!(text.contains("\"tnt_a\""), "{text}");
        assert!(text.contains("127 MiB of its 128 MiB share"), "{text}");
    }
}

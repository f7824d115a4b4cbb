//! The queue contract: every behaviour the delivery engine relies on, written once against
//! `&dyn Queue` and run unchanged against the spool and against JetStream (a real `nats-server`
//! with JetStream on a free port and a temporary store, never the machine's own on 4222).
//!
//! Waits in here are bounds on how long a test looks for something, never assertions about
//! speed: a retried job must not come before its time, and must come within a generous wait
//! after it.

use std::{
    collections::HashSet,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;

use super::{Job, Leased, Queue, Room, jetstream::JetStreamQueue, spool::Spool, unix_ms};
use crate::nats::{Nats, NatsOptions};

/// The lease time both backends get here, so expiry can be seen within a test.
const LEASE: Duration = Duration::from_secs(3);
const NO_WAIT: Duration = Duration::from_millis(300);
/// How long a test waits for something that must come.
const PATIENCE: Duration = Duration::from_secs(15);

fn job(id: &str, lane: &str) -> Job {
    Job {
        delivery_id: id.to_owned(),
        event_id: format!("evt_{id}"),
        forwarding_set_id: lane.to_owned(),
        tenant_id: "tnt_1".to_owned(),
        channel_id: "ch_1".to_owned(),
        body: Bytes::from(format!("{{\"events\":[{{\"id\":\"{id}\"}}]}}")),
        headers: vec![super::Header {
            name: "x-line-signature".into(),
            value: "c2lnbmF0dXJl".into(),
        }],
        first_enqueued_ms: unix_ms(SystemTime::now()),
        ..Job::default()
    }
}

fn all(_lane: &str) -> usize {
    usize::MAX
}

/// Leases until `want` jobs came or [`PATIENCE`] ran out.
async fn lease_until(q: &dyn Queue, want: usize, room: &Room<'_>) -> Vec<Leased> {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < give_up {
        got.extend(
            q.lease(want - got.len(), Duration::from_secs(1), room)
                .await
                .unwrap(),
        );
    }
    got
}

async fn nothing_due(q: &dyn Queue) -> bool {
    q.lease(10, NO_WAIT, &all).await.unwrap().is_empty()
}

fn ids(leased: &[Leased]) -> Vec<&str> {
    let mut ids: Vec<&str> = leased.iter().map(|l| l.job.delivery_id.as_str()).collect();
    ids.sort_unstable();
    ids
}

async fn an_enqueued_job_is_handed_out_with_every_byte(q: &dyn Queue) {
    let sent = job("dlv_a", "fwd_1");
    q.enqueue(vec![sent.clone()]).await.unwrap();
    let got = lease_until(q, 1, &all).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, sent);
}

async fn a_leased_job_is_not_handed_out_again_while_its_lease_holds(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let _held = lease_until(q, 1, &all).await;
    assert!(nothing_due(q).await);
}

async fn an_acked_job_is_gone(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let leased = lease_until(q, 1, &all).await.pop().unwrap();
    q.ack(leased).await.unwrap();
    // Past the lease time too: an acked job never comes back.
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    assert!(nothing_due(q).await);
}

async fn a_lease_that_runs_out_hands_the_job_out_again(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let first = lease_until(q, 1, &all).await;
    assert_eq!(ids(&first), ["dlv_a"]);
    drop(first);
    let again = lease_until(q, 1, &all).await;
    assert_eq!(ids(&again), ["dlv_a"]);
}

async fn a_retried_job_comes_back_at_its_time_with_its_attempt_count(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let leased = lease_until(q, 1, &all).await.pop().unwrap();
    let due = SystemTime::now() + Duration::from_secs(2);
    q.retry(leased, 3, due).await.unwrap();
    assert!(nothing_due(q).await);
    let again = lease_until(q, 1, &all).await.pop().unwrap();
    assert!(SystemTime::now() >= due, "handed out before its time");
    assert_eq!(again.job.attempts, 3);
    assert_eq!(again.job.body, job("dlv_a", "fwd_1").body);
}

async fn a_deferred_job_comes_back_at_its_time_and_keeps_its_attempt_count(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let leased = lease_until(q, 1, &all).await.pop().unwrap();
    q.retry(leased, 2, SystemTime::now()).await.unwrap();
    let leased = lease_until(q, 1, &all).await.pop().unwrap();
    let due = SystemTime::now() + Duration::from_secs(2);
    q.defer(leased, due).await.unwrap();
    assert!(nothing_due(q).await);
    let again = lease_until(q, 1, &all).await.pop().unwrap();
    assert!(SystemTime::now() >= due, "handed out before its time");
    assert_eq!(again.job.attempts, 2);
}

async fn a_lane_without_room_does_not_hold_back_another(q: &dyn Queue) {
    let mut jobs: Vec<Job> = (0..5)
        .map(|i| job(&format!("dlv_a{i}"), "fwd_full"))
        .collect();
    jobs.push(job("dlv_b", "fwd_free"));
    q.enqueue(jobs).await.unwrap();
    let only_free = |lane: &str| if lane == "fwd_full" { 0 } else { usize::MAX };
    let got = lease_until(q, 1, &only_free).await;
    assert_eq!(ids(&got), ["dlv_b"]);
    // The full lane's jobs were left waiting, not lost, and come once it has room.
    let rest = lease_until(q, 5, &all).await;
    assert_eq!(
        ids(&rest),
        ["dlv_a0", "dlv_a1", "dlv_a2", "dlv_a3", "dlv_a4"]
    );
}

/// A fan-out to a hanging target and a healthy one: every job of the healthy lane comes while
/// the other lane has no room at all, far more of them than a node holds for a lane, and the
/// hanging lane's jobs are all still there once it has room.
async fn a_lane_that_stays_full_does_not_hold_back_the_jobs_enqueued_with_it(q: &dyn Queue) {
    const EVENTS: usize = 300;
    for i in 0..EVENTS {
        q.enqueue(vec![
            job(&format!("dlv_hang_{i}"), "fwd_hanging"),
            job(&format!("dlv_ok_{i}"), "fwd_healthy"),
        ])
        .await
        .unwrap();
    }
    let healthy_only = |lane: &str| if lane == "fwd_hanging" { 0 } else { usize::MAX };
    let healthy = lease_until(q, EVENTS, &healthy_only).await;
    assert_eq!(healthy.len(), EVENTS);
    assert!(
        healthy
            .iter()
            .all(|l| l.job.forwarding_set_id == "fwd_healthy")
    );
    for leased in healthy {
        q.ack(leased).await.unwrap();
    }
    // Jobs of a lane that stayed stuck come back after a wait that grows each time they found
    // no room (JetStream: from 5 s, doubling): the bound here is generous, and each is settled
    // as it comes so that no lease runs out meanwhile.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut hanging = HashSet::new();
    while hanging.len() < EVENTS && tokio::time::Instant::now() < give_up {
        for leased in q.lease(EVENTS, Duration::from_secs(1), &all).await.unwrap() {
            assert_eq!(leased.job.forwarding_set_id, "fwd_hanging");
            hanging.insert(leased.job.delivery_id.clone());
            q.ack(leased).await.unwrap();
        }
    }
    assert_eq!(hanging.len(), EVENTS);
}

async fn a_lease_takes_no_more_of_a_lane_than_its_room(q: &dyn Queue) {
    let jobs: Vec<Job> = (0..5).map(|i| job(&format!("dlv_a{i}"), "fwd_1")).collect();
    q.enqueue(jobs).await.unwrap();
    let two = |_: &str| 2;
    let mut seen = HashSet::new();
    let give_up = tokio::time::Instant::now() + PATIENCE;
    let mut held = Vec::new();
    while seen.len() < 5 && tokio::time::Instant::now() < give_up {
        let got = q.lease(10, Duration::from_secs(1), &two).await.unwrap();
        assert!(
            got.len() <= 2,
            "a lease took {} of a lane with room for 2",
            got.len()
        );
        seen.extend(got.iter().map(|l| l.job.delivery_id.clone()));
        held.extend(got);
    }
    assert_eq!(seen.len(), 5);
}

/// What a LINE redelivery of the same webhook, or the same request retried, does: the same
/// jobs enqueued again. (The spool also drops one delivery id that comes again among others;
/// JetStream, which stores the jobs enqueued together as one message, drops the same message
/// again, so a redelivery after the channel's forwarding sets changed reaches every set again.)
async fn the_same_jobs_enqueued_twice_are_delivered_once(q: &dyn Queue) {
    let jobs = || vec![job("dlv_a", "fwd_1"), job("dlv_b", "fwd_2")];
    q.enqueue(jobs()).await.unwrap();
    q.enqueue(vec![job("dlv_c", "fwd_1")]).await.unwrap();
    q.enqueue(jobs()).await.unwrap();
    q.enqueue(vec![job("dlv_c", "fwd_1")]).await.unwrap();
    let mut got = lease_until(q, 3, &all).await;
    got.sort_by(|a, b| a.job.delivery_id.cmp(&b.job.delivery_id));
    assert_eq!(ids(&got), ["dlv_a", "dlv_b", "dlv_c"]);
    assert!(nothing_due(q).await);
}

/// A body shared by the jobs enqueued together reaches each of them, and each is settled on
/// its own: one acknowledged, one failed, one retried, one deferred; only the last two come
/// again, each with its own attempt count.
async fn jobs_enqueued_together_are_settled_each_on_its_own(q: &dyn Queue) {
    let body = Bytes::from_static(b"{\"destination\":\"U1\",\"events\":[]}");
    let jobs: Vec<Job> = (0..4)
        .map(|i| Job {
            body: body.clone(),
            ..job(&format!("dlv_{i}"), &format!("fwd_{i}"))
        })
        .collect();
    q.enqueue(jobs.clone()).await.unwrap();
    let mut got = lease_until(q, 4, &all).await;
    got.sort_by(|a, b| a.job.delivery_id.cmp(&b.job.delivery_id));
    let handed: Vec<Job> = got.iter().map(|l| l.job.clone()).collect();
    assert_eq!(handed, jobs);
    let mut got = got.into_iter();
    q.ack(got.next().unwrap()).await.unwrap();
    q.fail(got.next().unwrap(), 1, "410 Gone").await.unwrap();
    let due = SystemTime::now() + Duration::from_millis(300);
    q.retry(got.next().unwrap(), 1, due).await.unwrap();
    q.defer(got.next().unwrap(), due).await.unwrap();
    let mut again = lease_until(q, 2, &all).await;
    again.sort_by(|a, b| a.job.delivery_id.cmp(&b.job.delivery_id));
    assert_eq!(ids(&again), ["dlv_2", "dlv_3"]);
    assert!(again.iter().all(|l| l.job.body == body));
    assert_eq!(again[0].job.attempts, 1);
    assert_eq!(again[1].job.attempts, 0);
    for leased in again {
        q.ack(leased).await.unwrap();
    }
    assert!(nothing_due(q).await);
    assert!(q.requeue_failed("dlv_1").await.unwrap());
}

async fn a_failed_job_is_parked_and_a_requeue_brings_it_back_with_a_fresh_budget(q: &dyn Queue) {
    q.enqueue(vec![job("dlv_a", "fwd_1")]).await.unwrap();
    let leased = lease_until(q, 1, &all).await.pop().unwrap();
    q.fail(leased, 4, "404 Not Found").await.unwrap();
    assert!(nothing_due(q).await);
    assert!(q.requeue_failed("dlv_a").await.unwrap());
    let again = lease_until(q, 1, &all).await.pop().unwrap();
    assert_eq!(again.job.attempts, 4);
    assert_eq!(again.job.budget_start, 4);
    assert_eq!(again.job.attempts_in_budget(), 0);
    // No longer parked: a second request finds nothing to requeue.
    assert!(!q.requeue_failed("dlv_a").await.unwrap());
}

async fn requeueing_an_unknown_job_does_nothing(q: &dyn Queue) {
    assert!(!q.requeue_failed("dlv_nobody").await.unwrap());
    assert!(nothing_due(q).await);
}

async fn concurrent_enqueues_all_land_and_each_is_handed_out(q: Arc<dyn Queue>) {
    let mut tasks = Vec::new();
    for t in 0..10 {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let jobs = (0..20)
                .map(|i| job(&format!("dlv_{t}_{i}"), &format!("fwd_{}", i % 3)))
                .collect();
            q.enqueue(jobs).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(q.depth().await.unwrap(), 200);
    let got = lease_until(&*q, 200, &all).await;
    let distinct: HashSet<_> = got.iter().map(|l| l.job.delivery_id.clone()).collect();
    assert_eq!(distinct.len(), 200);
    for leased in got {
        q.ack(leased).await.unwrap();
    }
    assert!(nothing_due(&*q).await);
}

/// A purge drops a tenant's queued and parked jobs enqueued until its time, whichever backend:
/// they are never handed out again nor requeued, while another tenant's job and the tenant's
/// later one still are.
async fn a_purged_tenants_jobs_are_never_handed_out_and_the_others_are(q: &dyn Queue) {
    let of = |id: &str, tenant: &str, lane: &str| Job {
        tenant_id: tenant.to_owned(),
        ..job(id, lane)
    };
    q.enqueue(vec![of("dlv_parked", "tnt_purged", "fwd_p")])
        .await
        .unwrap();
    let parked = lease_until(q, 1, &all).await.pop().unwrap();
    q.fail(parked, 20, "503").await.unwrap();
    q.enqueue(vec![
        of("dlv_queued_1", "tnt_purged", "fwd_p"),
        of("dlv_queued_2", "tnt_purged", "fwd_p"),
    ])
    .await
    .unwrap();
    q.enqueue(vec![of("dlv_other", "tnt_other", "fwd_o")])
        .await
        .unwrap();
    let purge_time = SystemTime::now();
    let later = Job {
        first_enqueued_ms: unix_ms(purge_time) + 1000,
        ..of("dlv_later", "tnt_purged", "fwd_p")
    };
    q.enqueue(vec![later]).await.unwrap();

    let purged = q.purge_tenant("tnt_purged", purge_time).await.unwrap();

    assert_eq!(purged.parked, 1);
    assert_eq!(
        purged.queued, 2,
        "the two queued jobs enqueued before the purge time"
    );
    assert!(!q.requeue_failed("dlv_parked").await.unwrap());
    let got = lease_until(q, 2, &all).await;
    assert_eq!(ids(&got), ["dlv_later", "dlv_other"]);
    for leased in got {
        q.ack(leased).await.unwrap();
    }
    assert!(nothing_due(q).await);
}

/// A spool in a temporary directory.
fn spool() -> (Arc<dyn Queue>, Box<dyn std::any::Any + Send>) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap().with_lease_time(LEASE);
    (Arc::new(spool), Box::new(dir))
}

/// A `nats-server` with JetStream on a free port and a temporary store, stopped when dropped.
pub(crate) struct NatsServer {
    child: Child,
    pub url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub(crate) fn start() -> Self {
        let store = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "nats-server must be installed (Debian package nats-server; .ci/run installs it)",
            );
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < give_up,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JetStream queue on a server of its own.
async fn jetstream() -> (Arc<dyn Queue>, Box<dyn std::any::Any + Send>) {
    let server = NatsServer::start();
    let options = NatsOptions {
        nats_ack_wait: LEASE.into(),
        ..NatsOptions::default()
    };
    let nats = Nats::connect(
        std::slice::from_ref(&server.url),
        &options,
        "node_test",
        Duration::from_secs(7 * 24 * 3600),
    )
    .await
    .unwrap();
    (Arc::new(JetStreamQueue::new(nats)), Box::new(server))
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_the_spool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (q, _keep) = super::spool();
                    super::$name(&*q).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_enqueues_all_land_and_each_is_handed_out() {
                let (q, _keep) = super::spool();
                super::concurrent_enqueues_all_land_and_each_is_handed_out(q).await;
            }
        }
        mod on_jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (q, _keep) = super::jetstream().await;
                    super::$name(&*q).await;
                }
            )*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_enqueues_all_land_and_each_is_handed_out() {
                let (q, _keep) = super::jetstream().await;
                super::concurrent_enqueues_all_land_and_each_is_handed_out(q).await;
            }
        }
    };
}

contract!(
    an_enqueued_job_is_handed_out_with_every_byte,
    a_leased_job_is_not_handed_out_again_while_its_lease_holds,
    an_acked_job_is_gone,
    a_lease_that_runs_out_hands_the_job_out_again,
    a_retried_job_comes_back_at_its_time_with_its_attempt_count,
    a_deferred_job_comes_back_at_its_time_and_keeps_its_attempt_count,
    a_lane_without_room_does_not_hold_back_another,
    a_lane_that_stays_full_does_not_hold_back_the_jobs_enqueued_with_it,
    a_lease_takes_no_more_of_a_lane_than_its_room,
    the_same_jobs_enqueued_twice_are_delivered_once,
    jobs_enqueued_together_are_settled_each_on_its_own,
    a_failed_job_is_parked_and_a_requeue_brings_it_back_with_a_fresh_budget,
    requeueing_an_unknown_job_does_nothing,
    a_purged_tenants_jobs_are_never_handed_out_and_the_others_are,
);

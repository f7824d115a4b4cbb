//! How the delivery threads share the CPU with the ingress. An acknowledgement is what LINE (or a
//! PublishEvent caller) waits for, with a timeout, while a delivery already safe in the queue can
//! wait a moment: while requests are arriving, the delivery threads run at `--delivery-niceness`
//! and yield to the ingress. Once the ingress has been quiet for a while they run at niceness 0
//! again: there is no acknowledgement left to yield to, and a lowered priority then only made
//! them yield to every other process of the host, which (on the bench's host, where the
//! receivers are) cost a backlog's drain about a quarter of its rate (docs/BENCHMARKS.md,
//! change 34).
//!
//! CPU shares go by weight: at niceness 10 (`--delivery-niceness`'s default) a delivery thread
//! gets about a tenth of an ingress thread's share while both want the CPU; measured against 0,
//! 5 and 19 in docs/BENCHMARKS.md.
//!
//! Raising a thread's priority back needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it
//! (`ulimit -e`, systemd's `LimitNICE=`); a node without either keeps its delivery threads at
//! `--delivery-niceness`, as it always did, and says so once. Linux keeps a niceness per thread;
//! elsewhere none of this does anything.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rustix::{io::Errno, process::Pid};
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the ingress's quiet is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Looks in a row without a request before the delivery threads stop yielding: a second. Short,
/// because a drain after the load has ended is where it pays; a request arriving meanwhile puts
/// them back at once, from its own thread.
const QUIET_LOOKS: u32 = 4;

/// The delivery threads' niceness, by whether the ingress is busy.
pub struct DeliveryPriority {
    /// `--delivery-niceness`: while the ingress is busy.
    yielding_niceness: u8,
    /// Set by every request that waits for an acknowledgement; taken by the quiet watch.
    arrived: AtomicBool,
    /// Whether the delivery threads are at `yielding_niceness` (or on their way there).
    yielding: AtomicBool,
    /// Cleared for good when the priority could not be raised back (no `CAP_SYS_NICE`).
    may_relax: AtomicBool,
    /// The delivery threads' ids; the lock also orders the changes of niceness.
    threads: Mutex<Vec<Pid>>,
}

impl DeliveryPriority {
    /// Delivery threads that start yielding at `yielding_niceness`, as a node with a backlog
    /// and traffic from its first moment needs.
    pub fn new(yielding_niceness: u8) -> Arc<Self> {
        Arc::new(Self {
            yielding_niceness,
            arrived: AtomicBool::new(false),
            yielding: AtomicBool::new(true),
            // At 0 there is nothing to relax from.
            may_relax: AtomicBool::new(yielding_niceness > 0),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Called on each delivery thread as it starts: it takes the niceness now in force.
    pub fn join_current_thread(&self) {
        let Some(tid) = current_thread() else {
            return;
        };
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.push(tid);
        let niceness = self.niceness_now();
        if niceness > 0
            && let Err(e) = set_niceness(tid, niceness)
        {
            warn!(error = %e, "could not lower the delivery threads' priority");
        }
    }

    /// Called on each delivery thread as it stops (a blocking-pool thread idle for a while): a
    /// thread id is not kept past its thread, whose id the system may give to another.
    pub fn leave_current_thread(&self) {
        let Some(tid) = current_thread() else {
            return;
        };
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        threads.retain(|t| *t != tid);
    }

    /// Called as each request that waits for an acknowledgement arrives: the delivery threads
    /// yield from now on. Two atomic loads unless they were not yielding (or a quarter second
    /// has passed since the quiet watch last looked).
    pub fn ingress_arrived(&self) {
        // SeqCst, with the quiet watch's side: one of the two sees the other's write.
        if !self.arrived.load(Ordering::Relaxed) {
            self.arrived.store(true, Ordering::SeqCst);
        }
        if !self.yielding.load(Ordering::SeqCst) {
            self.set_yielding(true);
        }
    }

    /// Lets the delivery threads stop yielding whenever the ingress has been quiet for a
    /// second, until `stop`.
    pub async fn relax_while_quiet(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut quiet = Quiet::default();
        loop {
            tokio::select! {
                () = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !self.may_relax.load(Ordering::Relaxed) {
                return;
            }
            let arrived = self.arrived.swap(false, Ordering::Relaxed);
            if quiet.look(arrived) && self.yielding.load(Ordering::Relaxed) {
                self.set_yielding(false);
            }
        }
    }

    fn niceness_now(&self) -> u8 {
        if self.yielding.load(Ordering::Relaxed) {
            self.yielding_niceness
        } else {
            0
        }
    }

    fn set_yielding(&self, yielding: bool) {
        if !yielding && !self.may_relax.load(Ordering::Relaxed) {
            return;
        }
        let threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        // A request that arrived since the quiet was judged keeps them yielding: it set
        // `arrived` before it looked at `yielding`, and either came in before this lock (seen
        // here) or waits for it (and lowers them again).
        if !yielding && self.arrived.load(Ordering::SeqCst) {
            return;
        }
        if self.yielding.swap(yielding, Ordering::SeqCst) == yielding {
            return;
        }
        let niceness = self.niceness_now();
        for &tid in threads.iter() {
            if let Err(e) = set_niceness(tid, niceness) {
                // A thread that ended between its stop hook and here: nothing to change.
                if e == Errno::SRCH {
                    continue;
                }
                if yielding {
                    warn!(error = %e, "could not lower the delivery threads' priority");
                    continue;
                }
                // Not allowed to raise it back: stay yielding, as before this existed.
                self.may_relax.store(false, Ordering::Relaxed);
                self.yielding.store(true, Ordering::Relaxed);
                info!(
                    error = %e,
                    niceness = self.yielding_niceness,
                    "the delivery threads keep --delivery-niceness while the ingress is quiet: \
                     raising a thread's priority needs CAP_SYS_NICE or RLIMIT_NICE"
                );
                return;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn current_thread() -> Option<Pid> {
    Some(rustix::thread::gettid())
}

#[cfg(not(target_os = "linux"))]
fn current_thread() -> Option<Pid> {
    None
}

fn set_niceness(tid: Pid, niceness: u8) -> rustix::io::Result<()> {
    rustix::process::setpriority_process(Some(tid), i32::from(niceness))
}

/// Whether the ingress has been quiet for `QUIET_LOOKS` looks in a row; pure, so the rule is
/// tested without clocks.
#[derive(Default)]
struct Quiet {
    looks: u32,
}

impl Quiet {
    /// One look: `arrived` says whether a request came since the last. True once quiet.
    fn look(&mut self, arrived: bool) -> bool {
        self.looks = if arrived {
            0
        } else {
            self.looks.saturating_add(1)
        };
        self.looks >= QUIET_LOOKS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingress_is_quiet_only_after_four_looks_without_a_request() {
        let mut quiet = Quiet::default();
        assert!(!quiet.look(false));
        assert!(!quiet.look(false));
        assert!(!quiet.look(false));
        assert!(quiet.look(false));
        assert!(quiet.look(false));
    }

    #[test]
    fn a_request_starts_the_quiet_over() {
        let mut quiet = Quiet::default();
        for _ in 0..3 {
            quiet.look(false);
        }
        assert!(!quiet.look(true));
        for _ in 0..3 {
            assert!(!quiet.look(false));
        }
        assert!(quiet.look(false));
    }

    #[test]
    fn at_niceness_zero_there_is_nothing_to_relax_from() {
        let priority = DeliveryPriority::new(0);
        assert!(!priority.may_relax.load(Ordering::Relaxed));
        assert_eq!(priority.niceness_now(), 0);
    }

    #[test]
    fn delivery_threads_yield_again_as_soon_as_a_request_arrives() {
        let priority = DeliveryPriority::new(10);
        // No threads joined: only the state moves.
        priority.set_yielding(false);
        assert_eq!(priority.niceness_now(), 0);
        priority.ingress_arrived();
        assert_eq!(priority.niceness_now(), 10);
        assert!(priority.arrived.load(Ordering::Relaxed));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_joins_at_the_niceness_in_force_and_is_forgotten_when_it_leaves() {
        let priority = DeliveryPriority::new(7);
        let on_thread = Arc::clone(&priority);
        let niceness = std::thread::spawn(move || {
            on_thread.join_current_thread();
            let tid = rustix::thread::gettid();
            let niceness = rustix::process::getpriority_process(Some(tid)).unwrap();
            on_thread.leave_current_thread();
            niceness
        })
        .join()
        .unwrap();
        assert_eq!(niceness, 7);
        assert!(priority.threads.lock().unwrap().is_empty());
    }

    #[test]
    fn a_request_arriving_as_the_quiet_is_judged_keeps_them_yielding() {
        let priority = DeliveryPriority::new(10);
        priority.ingress_arrived();
        priority.set_yielding(false);
        assert_eq!(priority.niceness_now(), 10);
        priority.arrived.store(false, Ordering::Relaxed);
        priority.set_yielding(false);
        assert_eq!(priority.niceness_now(), 0);
    }
}

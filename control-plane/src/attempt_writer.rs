//! Stores reported delivery attempts on a thread of its own, at a lower CPU priority. The
//! attempt log is bookkeeping that can trail by a moment; in standalone the same process
//! answers LINE's webhooks, which wait with a timeout. Storing a node's batch is synchronous
//! sled work of many milliseconds, so it also stays off the async workers. The log holds
//! attempts back for a moment ([`DeliveryLog::with_hold`]); between batches the writer writes
//! what has waited its hold, and what is left when it stops.

use std::{sync::Arc, time::Duration};

use hookplane_proto::v1::DeliveryAttempt;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, delivery_log::DeliveryLog};

/// Batches queued for the writer; ReportDeliveries waits beyond this, which holds the nodes back.
const QUEUED_BATCHES: usize = 16;
/// CPU shares go by weight: niceness 10 gives the writer about a tenth of a normal thread's
/// share while both want the CPU, and all of it when nothing else does.
const NICENESS: i32 = 10;
/// How often an idle writer looks for attempts that have waited their hold.
const HELD_CHECK: Duration = Duration::from_millis(250);

struct Batch {
    node_id: String,
    /// Shared with the reporter, which keeps it should the report fail.
    attempts: Arc<Vec<DeliveryAttempt>>,
    done: oneshot::Sender<Result<u64, Error>>,
}

#[derive(Clone)]
pub(crate) struct AttemptWriter {
    batches: mpsc::Sender<Batch>,
    /// Declared after `batches`: the last handle closes the queue, then waits for the thread,
    /// so the store is closed once the control plane is gone and can be opened again at once.
    _thread: Arc<Joined>,
}

struct Joined(Option<std::thread::JoinHandle<()>>);

impl Drop for Joined {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

impl AttemptWriter {
    /// Starts the writer thread; it ends when the last handle is dropped.
    pub fn start(log: DeliveryLog) -> Result<AttemptWriter, Error> {
        let (batches, mut queued) = mpsc::channel::<Batch>(QUEUED_BATCHES);
        // The writer's own clock, to write what waited its hold between batches.
        let timers = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| Error::Unavailable(format!("attempt log writer's timer: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("hookplane-attempt-log".to_owned())
            .spawn(move || {
                lower_priority();
                timers.block_on(async {
                    loop {
                        let batch = tokio::select! {
                            batch = queued.recv() => batch,
                            () = tokio::time::sleep(HELD_CHECK) => {
                                if let Err(e) = log.write_held_if_due() {
                                    tracing::warn!(error = %e, "could not write held-back delivery attempts");
                                }
                                continue;
                            }
                        };
                        let Some(Batch { node_id, attempts, done }) = batch else { break };
                        let stored = log.record(&node_id, &attempts);
                        // Let go before answering, so the reporter drops the last share and the
                        // attempts are freed by the thread that made them, not this one.
                        drop(attempts);
                        let _ = done.send(stored);
                    }
                });
                // The control plane is stopping: everything held back goes to the store.
                if let Err(e) = log.write_held() {
                    tracing::warn!(error = %e, "could not write held-back delivery attempts at stop");
                }
            })
            .map_err(|e| Error::Unavailable(format!("attempt log writer: {e}")))?;
        Ok(AttemptWriter {
            batches,
            _thread: Arc::new(Joined(Some(thread))),
        })
    }

    /// Stores a node's batch; returns how many attempts were stored.
    pub async fn record(
        &self,
        node_id: String,
        attempts: Arc<Vec<DeliveryAttempt>>,
    ) -> Result<u64, Error> {
        let (done, stored) = oneshot::channel();
        let gone = || Error::Unavailable("the attempt log writer has stopped".to_owned());
        self.batches
            .send(Batch {
                node_id,
                attempts,
                done,
            })
            .await
            .map_err(|_| gone())?;
        stored.await.map_err(|_| gone())?
    }
}

fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS) {
        tracing::warn!(error = %e, "could not lower the attempt log writer's priority");
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::AttemptOutcome;
    use tokio::sync::broadcast;

    use super::*;
    use crate::clock::Time;
    use crate::delivery_log::Retention;
    use crate::test_fixtures::*;

    /// A writer over a log holding attempts back for `hold`, and a forwarding set of it.
    async fn writer(hold: Duration) -> (tempfile::TempDir, AttemptWriter, DeliveryLog, String) {
        let (dir, store, fwd_id) = store_with_forwarding_set().await;
        let retention = Retention {
            count: 100,
            age: Duration::from_secs(86_400),
        };
        let log = DeliveryLog::new(store, retention, broadcast::channel(16).0)
            .unwrap()
            .with_hold(hold);
        (dir, AttemptWriter::start(log.clone()).unwrap(), log, fwd_id)
    }

    fn attempts(fwd_id: &str, n: usize) -> Vec<DeliveryAttempt> {
        (0..n)
            .map(|i| DeliveryAttempt {
                delivery_id: format!("dlv_{i}"),
                forwarding_set_id: fwd_id.to_owned(),
                time: Some(Time::now().to_proto()),
                outcome: AttemptOutcome::Succeeded as i32,
                ..DeliveryAttempt::default()
            })
            .collect()
    }

    /// A writer holding back for `hold` that took ten attempts and has not written them yet.
    async fn ten_held_back(
        hold: Duration,
    ) -> (tempfile::TempDir, AttemptWriter, DeliveryLog, String) {
        let (dir, writer, log, fwd_id) = writer(hold).await;
        let taken = writer
            .record("n".into(), Arc::new(attempts(&fwd_id, 10)))
            .await;
        assert_eq!(taken.unwrap(), 10);
        assert_eq!(log.written(&fwd_id), 0);
        (dir, writer, log, fwd_id)
    }

    #[tokio::test]
    async fn the_writer_lets_go_of_a_batch_before_it_answers() {
        let (_dir, writer, _log, fwd_id) = writer(Duration::ZERO).await;
        let batch = Arc::new(attempts(&fwd_id, 10));
        let taken = writer.record("n".into(), Arc::clone(&batch)).await;
        assert_eq!(taken.unwrap(), 10);
        // The reporter holds the last share, so the attempts are freed on its threads.
        assert_eq!(Arc::strong_count(&batch), 1);
    }

    #[tokio::test]
    async fn attempts_held_back_are_written_once_their_hold_is_over_without_another_batch() {
        let (_dir, _writer, log, fwd_id) = ten_held_back(Duration::from_millis(200)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while log.written(&fwd_id) < 10 {
            assert!(tokio::time::Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn attempts_held_back_are_written_when_the_writer_stops() {
        let (_dir, writer, log, fwd_id) = ten_held_back(Duration::from_secs(3600)).await;
        // The last handle joins the thread, which writes what it held back first.
        tokio::task::spawn_blocking(move || drop(writer))
            .await
            .unwrap();
        assert_eq!(log.written(&fwd_id), 10);
    }
}

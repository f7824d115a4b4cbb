//! Stores reported delivery attempts on a thread of its own, at a lower CPU priority. The
//! attempt log is bookkeeping that can trail by a moment; in standalone the same process
//! answers LINE's webhooks, which wait with a timeout. Storing a node's batch is synchronous
//! sled work of many milliseconds, so it also stays off the async workers.

use std::sync::Arc;

use hookplane_proto::v1::DeliveryAttempt;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, delivery_log::DeliveryLog};

/// Batches queued for the writer; ReportDeliveries waits beyond this, which holds the nodes back.
const QUEUED_BATCHES: usize = 16;
/// CPU shares go by weight: niceness 10 gives the writer about a tenth of a normal thread's
/// share while both want the CPU, and all of it when nothing else does.
const NICENESS: i32 = 10;

struct Batch {
    node_id: String,
    attempts: Vec<DeliveryAttempt>,
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
        let thread = std::thread::Builder::new()
            .name("hookplane-attempt-log".to_owned())
            .spawn(move || {
                lower_priority();
                while let Some(batch) = queued.blocking_recv() {
                    let stored = log.record(&batch.node_id, batch.attempts);
                    let _ = batch.done.send(stored);
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
        attempts: Vec<DeliveryAttempt>,
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

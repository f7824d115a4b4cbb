//! Which API tokens published on this node, reported to the control plane so a token's
//! `last_used_time` covers publishing: a token's first use at once, then at most one report a
//! minute, however busy the node is.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookplane_proto::v1::ReportTokenUseRequest;
use tokio::sync::{Notify, watch};
use tracing::debug;

use crate::control::ControlPlane;

const REPORT_EVERY: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// The token ids used since the last report.
#[derive(Default)]
pub struct TokenUses {
    used: Mutex<HashSet<String>>,
    noted: Notify,
}

impl TokenUses {
    /// Notes a use of token `id`; cheap when it is already noted.
    pub fn note(&self, id: &str) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(id) {
            used.insert(id.to_owned());
            self.noted.notify_one();
        }
    }

    fn take(&self) -> Vec<String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.drain().collect()
    }
}

fn renote(uses: &TokenUses, token_ids: &[String]) {
    for id in token_ids {
        uses.note(id);
    }
}

/// Reports noted uses to `control` until `stop` turns true. Losing a report costs only a less
/// recent `last_used_time`, so a failed one is noted again and retried with the next.
pub(crate) async fn report_token_uses(
    uses: Arc<TokenUses>,
    control: ControlPlane,
    node_id: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = uses.noted.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let token_ids = uses.take();
        if token_ids.is_empty() {
            continue;
        }
        let request = ReportTokenUseRequest {
            node_id: node_id.clone(),
            token_ids: token_ids.clone(),
        };
        let mut client = control.config();
        match tokio::time::timeout(SEND_TIMEOUT, client.report_token_use(request)).await {
            Ok(Ok(_)) => {}
            // A control plane older than the call: nothing to tell it.
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {}
            Ok(Err(status)) => {
                debug!(code = ?status.code(), "token use not reported; it goes with the next report");
                renote(&uses, &token_ids);
            }
            Err(_) => {
                debug!("token use report timed out; it goes with the next report");
                renote(&uses, &token_ids);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(REPORT_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_reported_once_however_often_it_is_used() {
        let uses = TokenUses::default();
        uses.note("tok_a");
        uses.note("tok_a");
        uses.note("tok_b");
        let mut taken = uses.take();
        taken.sort();
        assert_eq!(taken, ["tok_a", "tok_b"]);
        assert!(uses.take().is_empty());
    }
}

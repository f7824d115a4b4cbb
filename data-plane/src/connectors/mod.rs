//! Connectors: forwarding targets that translate instead of forwarding the identical request.
//! Genesys Cloud Open Messaging takes LINE messages in and sends agents' answers back out through
//! the LINE push API.
//!
//! Connectors make their HTTP calls through [`transport::Transport`], so every call (logins
//! included) goes through the node's SSRF-guarded client, and tests can hand in a plain one.

pub mod genesys;
pub mod line_push;
pub mod transport;

#[cfg(test)]
pub(crate) mod fake_http;

use std::{sync::Arc, time::Duration};

use hookplane_proto::v1::{NodeChannel, NodeForwardingSet};

use crate::queue::Job;
use genesys::oauth::TokenCache;
use transport::Transport;

use crate::attempt::AttemptResult;

/// What connector attempts share on a node: the guarded transport, the Genesys tokens, and where
/// the LINE API is.
pub struct Connectors {
    transport: Arc<dyn Transport>,
    tokens: TokenCache,
    line_api_base_url: String,
}

impl Connectors {
    pub fn new(transport: Arc<dyn Transport>, line_api_base_url: impl Into<String>) -> Self {
        Self {
            transport,
            tokens: TokenCache::default(),
            line_api_base_url: line_api_base_url.into(),
        }
    }

    /// Where pushes go, for the attempt log.
    pub fn push_url(&self) -> String {
        format!(
            "{}{}",
            self.line_api_base_url.trim_end_matches('/'),
            line_push::PUSH_PATH
        )
    }

    /// Sends one queued Open Messaging inbound message (`job.body`) for `set`.
    pub async fn genesys_inbound(
        &self,
        set: &NodeForwardingSet,
        job: &Job,
        timeout: Duration,
    ) -> AttemptResult {
        let Some(settings) = set.genesys.as_ref() else {
            return AttemptResult::unusable("the forwarding set has no Genesys settings");
        };
        genesys::inbound::send_inbound(
            self.transport.as_ref(),
            &self.tokens,
            settings,
            job.body.clone(),
            timeout,
        )
        .await
    }

    /// Sends one queued LINE push (`job.body`, its retry key among `job.headers`) with the
    /// channel's access token as it is now.
    pub async fn line_push(
        &self,
        channel: &NodeChannel,
        job: &Job,
        timeout: Duration,
    ) -> AttemptResult {
        let Some(retry_key) = job
            .headers
            .iter()
            .find(|h| {
                h.name
                    .eq_ignore_ascii_case(line_push::RETRY_KEY_HEADER.as_bytes())
            })
            .and_then(|h| std::str::from_utf8(&h.value).ok())
        else {
            return AttemptResult::unusable("the queued push has no retry key");
        };
        line_push::push(
            self.transport.as_ref(),
            line_push::Push {
                base_url: &self.line_api_base_url,
                access_token: &channel.access_token,
                retry_key,
                body: job.body.clone(),
                timeout,
            },
        )
        .await
    }
}

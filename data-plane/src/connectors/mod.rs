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

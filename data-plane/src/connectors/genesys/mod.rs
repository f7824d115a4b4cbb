//! Genesys Cloud Open Messaging (PROTOCOLS.md §4): LINE messages in as Open Messaging inbound
//! messages, agents' messages back out as LINE pushes.
//!
//! - [`mapping`] and [`inbound_jobs`]: LINE webhook events to queued inbound messages.
//! - [`oauth`] and [`inbound`]: the client-credentials token and the inbound call.
//! - [`signature`], [`agent_message`] and [`outbound`]: the endpoint Genesys posts agents'
//!   messages to, and what they become on LINE.

pub mod agent_message;
pub mod inbound;
pub mod inbound_jobs;
pub mod mapping;
pub mod oauth;
pub mod outbound;
pub mod signature;

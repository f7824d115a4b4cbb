//! A typed client for the `hookplane.v1` gRPC API: one shared HTTP/2 channel, with the bearer
//! token attached to every call, handing out a stub per service.
//!
//! The same client serves admins (admin token), internal event producers (publisher token) and
//! data-plane nodes (node token): which token it carries decides what the server lets it do.
//! `https://` servers are dialled over TLS ([`ClientTls`]: system roots, extra CAs, a client
//! certificate), never in clear.

mod bearer;
mod client;
mod error;
mod tls;

pub use bearer::BearerToken;
pub use client::{AuthedChannel, CONFIG_MAX_DECODING_MESSAGE_SIZE, Client};
pub use error::Error;
/// The generated messages and stubs, so callers need no direct dependency on the proto crate.
pub use hookplane_proto::{FILE_DESCRIPTOR_SET, code_name, v1};
pub use tls::{ClientTls, endpoint};

//! Signing and verification of the webhook signatures hookplane speaks: LINE's
//! `x-line-signature`, MAAC's `CrescLab-Signature` and Standard Webhooks' `webhook-signature`,
//! symmetric (`v1`, HMAC) or asymmetric (`v1a`, ed25519).
//!
//! The data plane signs with it and receivers verify with it, so it stays free of any runtime:
//! plain functions over byte slices, every comparison in constant time.

mod error;
mod mac;

pub mod line;
pub mod maac;
pub mod standard;
pub mod standard_ed25519;

pub use error::Error;

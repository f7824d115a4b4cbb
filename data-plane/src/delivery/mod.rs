//! The delivery engine: takes due jobs from the queue and makes their attempts.

pub mod breaker;
mod engine;
pub mod failure;
pub mod retry;
pub mod sender;
mod slots;

pub use engine::{Engine, EngineSettings};

//! The delivery engine: takes due jobs from the queue and makes their attempts.

pub mod breaker;
mod engine;
mod lines;
pub mod retry;
mod target;

pub use engine::{Engine, EngineSettings};

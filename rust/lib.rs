//! The native core of llmrelay: every hot-path data structure of the engine.
//!
//! Each primitive is plain Rust, takes a [`clock::Clock`] where time matters,
//! and is thread-safe. The `python` feature adds the pyo3 bindings that make
//! up the extension module `llmrelay._core`; without it the crate needs no
//! Python, so `cargo test` and `cargo bench` run anywhere.
//!
//! | module | what |
//! | --- | --- |
//! | [`clock`] | monotonic and manual time sources |
//! | [`error`] | the one error enum |
//! | [`gate`] | one admission gate per deployment: scheduler, cells, breaker, retry budget |
//! | [`limiter`] | keyed GCRA rate limiter with FIFO reservations |
//! | [`breaker`] | circuit breaker on a count-based sliding window |
//! | [`metrics`] | counters, gauges and latency histograms per series |
//! | [`scheduler`] | priority admission, bounded queue, AIMD concurrency slots |
//! | [`dedup`] | in-flight request joining with a short result window |
//! | [`cache`] | memory, disk and hybrid response caches |
//! | [`runtime`] | the one lazily started tokio runtime |
//! | [`http`] | the pooled HTTP client behind the default transport, SSE/NDJSON framing |
//! | [`shared`] | limits shared by every process, on Redis |

pub mod breaker;
pub mod cache;
pub mod clock;
pub mod dedup;
pub mod error;
pub mod gate;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod runtime;
pub mod scheduler;
pub mod shared;

#[cfg(feature = "python")]
mod bindings;

pub use error::{Error, Result};

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
//! | [`runtime`] | the one lazily started tokio runtime |
//! | [`http`], [`http_body`] | the pooled HTTP client behind the default transport |

pub mod clock;
pub mod error;
pub mod http;
pub mod http_body;
pub mod runtime;

#[cfg(feature = "python")]
mod bindings;

pub use error::{Error, Result};

//! mito: a distributed task-execution system, wire-compatible with mitosis 0.6.
//!
//! One binary, four modes: `mito coordinator` (HTTP API over PostgreSQL), `mito worker`
//! (runs tasks), `mito client` (the CLI) and `mito manager` (local worker helper).
//! [`api`] holds the wire types all of them share.

pub mod api;
mod bench;
pub mod cli;
mod client;
mod config;
mod coordinator;
mod credentials;
mod logging;
mod manager;
mod opts;
mod private_files;
mod redact;
mod signal;
mod terminal;
mod tls;
mod worker;

/// Internals the integration tests drive directly (token signing, local-store URLs, the
/// claim, query and stats statements); not part of the library's interface.
#[doc(hidden)]
pub mod testing {
    pub use crate::coordinator::auth::{KeyError, Keys};
    pub use crate::coordinator::db::QUEUE_SETUP;
    pub use crate::coordinator::http::{percent_decode, DecodeError};
    pub use crate::coordinator::reaper::LOCK as REAPER_LOCK;
    pub use crate::coordinator::scheduler::CLAIM;
    pub use crate::coordinator::stats::STATE_COUNTS;
    pub use crate::coordinator::storage::local_url;
    pub use crate::coordinator::tasks::matching::page_statement as tasks_page_statement;
}

//! mito: a distributed task-execution system, wire-compatible with mitosis 0.6.
//!
//! One binary, four modes: `mito coordinator` (HTTP API over PostgreSQL), `mito worker`
//! (runs tasks), `mito client` (the CLI) and `mito manager` (local worker helper).
//! [`api`] holds the wire types all of them share.

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod credentials;
pub mod logging;
pub mod manager;
pub mod opts;
pub mod private_files;
pub mod redact;
pub mod signal;
mod terminal;
pub mod tls;
pub mod worker;

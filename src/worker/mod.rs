//! `mito worker`: fetches tasks from a coordinator and runs them (not available yet).

/// Entry point of `mito worker`; returns the exit status.
pub fn main(parser: &mut lexopt::Parser) -> i32 {
    crate::cli::not_yet(parser, "worker", "Run a mitosis worker")
}

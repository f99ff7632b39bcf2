//! `mito client`: the command-line client (not available yet).

/// Entry point of `mito client`; returns the exit status.
pub fn main(parser: &mut lexopt::Parser) -> i32 {
    crate::cli::not_yet(parser, "client", "Run a mitosis client")
}

//! The `mito` command line: dispatch to the modes. The option machinery they share lives
//! in `crate::opts`; only the binary's entry point uses this module.

use crate::opts::VERSION;

const TOP_HELP: &str = "\
mito: a distributed task-execution system (coordinator, worker and client),
wire-compatible with mitosis 0.6.

Usage: mito <COMMAND> [OPTIONS]

Commands:
  coordinator  Run the mitosis coordinator
  worker       Run a mitosis worker
  client       Run a mitosis client
  manager      Manage mitosis workers on this machine
  bench        Measure a coordinator (latency, throughput, memory)
  help         Print this message

Options:
  -h, --help     Print help (also `mito <COMMAND> --help`)
  -V, --version  Print version
";

/// Entry point of the binary; returns the process exit status.
pub fn main() -> i32 {
    let mut parser = lexopt::Parser::from_env();
    let cmd = match parser.next() {
        Ok(Some(lexopt::Arg::Value(v))) => v.to_string_lossy().into_owned(),
        Ok(Some(lexopt::Arg::Short('h'))) | Ok(Some(lexopt::Arg::Long("help"))) => {
            print!("{TOP_HELP}");
            return 0;
        }
        Ok(Some(lexopt::Arg::Short('V'))) | Ok(Some(lexopt::Arg::Long("version"))) => {
            println!("mito {VERSION}");
            return 0;
        }
        Ok(Some(other)) => {
            eprintln!("mito: unexpected {} before the command (see `mito --help`)", describe(&other));
            return 2;
        }
        Ok(None) => {
            eprint!("mito: a command is required\n\n{TOP_HELP}");
            return 2;
        }
        Err(e) => {
            eprintln!("mito: {e} (see `mito --help`)");
            return 2;
        }
    };
    match cmd.as_str() {
        "coordinator" => crate::coordinator::main(&mut parser),
        "worker" => crate::worker::main(&mut parser),
        "client" => crate::client::main(&mut parser),
        "manager" => crate::manager::main(&mut parser),
        "bench" => crate::bench::main(&mut parser),
        "help" => {
            print!("{TOP_HELP}");
            0
        }
        other => {
            eprintln!(
                "mito: unknown command {other:?}: expected coordinator, worker, client or manager (see `mito --help`)"
            );
            2
        }
    }
}

fn describe(arg: &lexopt::Arg) -> String {
    match arg {
        lexopt::Arg::Short(c) => format!("option -{c}"),
        lexopt::Arg::Long(l) => format!("option --{l}"),
        lexopt::Arg::Value(v) => format!("argument {:?}", v.to_string_lossy()),
    }
}

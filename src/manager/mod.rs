//! `mito manager`: starts and supervises this machine's workers, and finds them again by
//! what it recorded (pid and process start time), never by name.
//!
//! ```text
//! mito manager spawn 4 -c http://coord:5000 -u alice --password-file pw --tags gpu{i} \
//!     --env CUDA_VISIBLE_DEVICES={i}      # four detached workers, one record each
//! mito manager status [--json] [--prune]  # one line per recorded worker, then Total: N
//! mito manager kill [--force] [PID|WORKER_ID...]
//! mito manager run 4 [worker flags]       # foreground supervisor (systemd, a terminal)
//! ```
//!
//! `record.rs` holds the state directory and the `/proc` checks, `launch.rs` builds a
//! worker's command line, and each command has its file: `spawn.rs`, `status.rs`,
//! `kill.rs`, `supervise.rs` (`run`).

mod kill;
mod launch;
mod record;
mod spawn;
mod status;
mod supervise;

use crate::opts::{find_option, option_lines, usage_message, OptSpec, VERSION};
use std::time::Duration;

/// What went wrong in a manager command; usage and configuration mistakes exit 2, the rest 1.
#[derive(Debug)]
pub(crate) enum ManagerError {
    /// A command-line mistake (the message names the flag).
    Usage(String),
    /// The worker settings would not start a worker.
    Config(String),
    /// The state directory or a record could not be read or written.
    State(String),
    /// A worker could not be started, or died at once.
    Start(String),
    /// Workers still ran when `kill` gave up waiting.
    StillRunning(String),
    /// `kill` was asked for a worker it has no running record of.
    NotFound(String),
}

impl std::fmt::Display for ManagerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManagerError::Usage(m)
            | ManagerError::Config(m)
            | ManagerError::State(m)
            | ManagerError::Start(m)
            | ManagerError::StillRunning(m)
            | ManagerError::NotFound(m) => f.write_str(m),
        }
    }
}

impl ManagerError {
    fn exit_status(&self) -> i32 {
        match self {
            ManagerError::Usage(_) | ManagerError::Config(_) => 2,
            _ => 1,
        }
    }
}

const ABOUT: &str = "Manage mitosis workers on this machine";

const STATE_DIR: OptSpec = OptSpec::opt(
    "state-dir",
    None,
    "STATE_DIR",
    "Where the records of started workers live (default $XDG_STATE_HOME/mitosis/manager)",
);
const SPAWN_SPECS: &[OptSpec] = &[STATE_DIR];
const RUN_SPECS: &[OptSpec] = &[STATE_DIR];
const STATUS_SPECS: &[OptSpec] = &[
    STATE_DIR,
    OptSpec::flag("json", None, "Print one JSON document instead of lines"),
    OptSpec::flag("prune", None, "Remove the records (log and cache included) of workers that are no longer running"),
];
const KILL_SPECS: &[OptSpec] = &[
    STATE_DIR,
    OptSpec::flag("force", None, "SIGKILL the workers (and what they run) still alive when the timeout ends"),
    OptSpec::opt("timeout", None, "TIMEOUT", "How long to wait for a graceful stop (default 30s)"),
];

/// Upper bounds on what one command may ask for.
const MAX_COUNT: usize = 256;
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn top_help() -> String {
    format!(
        "{ABOUT}

Usage: mito manager <COMMAND> [OPTIONS]

Commands:
  spawn <COUNT> [WORKER OPTIONS]  Start COUNT workers in the background, each recorded
  status                          List the recorded workers, then `Total: N` (alive ones)
  kill [IDS...]                   Stop recorded workers (all, or by pid or worker id)
  run <COUNT> [WORKER OPTIONS]    Keep COUNT workers running in the foreground

`{{i}}` in a worker option becomes the worker's index (0, 1, ...), for example
`--tags gpu{{i}} --env CUDA_VISIBLE_DEVICES={{i}}`. See `mito manager <COMMAND> --help`.
"
    )
}

fn help(c: &Command) -> String {
    let mut s =
        format!("{}\n\nUsage: mito manager {} {}\n\nOptions:\n{}", c.about, c.name, c.usage, option_lines(c.specs));
    s.push_str("  -h, --help\n          Print help\n");
    if c.worker_flags {
        s.push_str(
            "\nEvery `mito worker` option is taken too (see `mito worker --help`), with `{i}` in a\n\
             value replaced by the worker's index. The password never reaches a worker's command\n\
             line: -p, MITO_PASSWORD or --password-stdin is handed to each worker on its stdin.\n",
        );
    }
    s
}

/// One parsed manager command line.
#[derive(Default)]
struct Args {
    own: Vec<(&'static str, Option<String>)>,
    worker: Vec<(OptSpec, Option<String>)>,
    config: Option<String>,
    positionals: Vec<String>,
}

impl Args {
    fn flag(&self, long: &str) -> bool {
        self.own.iter().any(|(l, _)| *l == long)
    }
    fn value(&self, long: &str) -> Option<&str> {
        self.own.iter().rev().find(|(l, _)| *l == long).and_then(|(_, v)| v.as_deref())
    }
}

/// Parses the options of one command: its own, and with `worker_flags` every worker option.
/// Err holds the exit status for help, version or a mistake (already printed).
fn parse(parser: &mut lexopt::Parser, cmd: &str, own: &[OptSpec], worker_flags: bool, help: &str) -> Result<Args, i32> {
    use lexopt::Arg;
    let name = format!("mito manager {cmd}");
    let mut all: Vec<OptSpec> = own.to_vec();
    if worker_flags {
        all.extend_from_slice(crate::worker::SPECS);
    }
    let mut out = Args::default();
    let fail = |m: String| {
        eprintln!("{m}");
        2
    };
    loop {
        let arg = match parser.next() {
            Ok(Some(a)) => a,
            Ok(None) => break,
            Err(e) => return Err(fail(usage_message(&name, &e.to_string()))),
        };
        match arg {
            Arg::Short('h') | Arg::Long("help") => {
                print!("{help}");
                return Err(0);
            }
            Arg::Short('V') | Arg::Long("version") => {
                println!("mito {VERSION}");
                return Err(0);
            }
            Arg::Value(v) => out.positionals.push(v.to_string_lossy().into_owned()),
            Arg::Long("config") if worker_flags => match parser.value() {
                Ok(v) => out.config = Some(v.to_string_lossy().into_owned()),
                Err(_) => return Err(fail(usage_message(&name, "--config needs a value <CONFIG>"))),
            },
            other => {
                let (spec, shown) = find_option(&name, &all, &other).map_err(|e| fail(e.to_string()))?;
                let value = match spec.metavar {
                    None => None,
                    Some(m) => match parser.value() {
                        Ok(v) => {
                            Some(v.into_string().map_err(|v| fail(format!("{name}: {shown} {v:?} is not UTF-8")))?)
                        }
                        Err(_) => return Err(fail(usage_message(&name, &format!("{shown} needs a value <{m}>")))),
                    },
                };
                if own.iter().any(|o| o.long == spec.long) {
                    out.own.push((spec.long, value));
                } else {
                    out.worker.push((*spec, value));
                }
            }
        }
    }
    Ok(out)
}

/// COUNT: the one positional of `spawn` and `run`.
fn count(cmd: &str, args: &Args) -> Result<usize, ManagerError> {
    let name = format!("mito manager {cmd}");
    match args.positionals.as_slice() {
        [n] => match n.parse::<usize>() {
            Ok(0) => Err(ManagerError::Usage(format!("Cannot spawn 0 workers: {name} needs a COUNT of at least 1"))),
            Ok(c) if c <= MAX_COUNT => Ok(c),
            _ => Err(ManagerError::Usage(usage_message(
                &name,
                &format!("COUNT {n:?} is not a number from 1 to {MAX_COUNT}"),
            ))),
        },
        [] => Err(ManagerError::Usage(usage_message(&name, "COUNT is required"))),
        more => Err(ManagerError::Usage(usage_message(
            &name,
            &format!("unexpected argument {:?} after COUNT (worker options start with -)", more[1]),
        ))),
    }
}

/// Entry point of `mito manager`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
    let cmd = match parser.next() {
        Ok(Some(lexopt::Arg::Value(v))) => v.to_string_lossy().into_owned(),
        Ok(Some(lexopt::Arg::Short('h') | lexopt::Arg::Long("help"))) => {
            print!("{}", top_help());
            return 0;
        }
        Ok(Some(lexopt::Arg::Short('V') | lexopt::Arg::Long("version"))) => {
            println!("mito {VERSION}");
            return 0;
        }
        Ok(None) => {
            eprint!("mito manager: a command is required\n\n{}", top_help());
            return 2;
        }
        Ok(Some(_)) | Err(_) => {
            eprintln!("mito manager: the command (spawn, status, kill or run) comes first (see `mito manager --help`)");
            return 2;
        }
    };
    if cmd == "help" {
        print!("{}", top_help());
        return 0;
    }
    let Some(command) = COMMANDS.iter().find(|c| c.name == cmd) else {
        eprintln!(
            "mito manager: unknown command {cmd:?}: expected spawn, status, kill or run (see `mito manager --help`)"
        );
        return 2;
    };
    let help = help(command);
    let args = match parse(parser, command.name, command.specs, command.worker_flags, &help) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match (command.run)(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mito manager {cmd}: {e}");
            e.exit_status()
        }
    }
}

/// One manager command: its help, options and handler, from one table.
struct Command {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    specs: &'static [OptSpec],
    /// Takes every `mito worker` option too.
    worker_flags: bool,
    run: fn(Args) -> Result<(), ManagerError>,
}

const COMMANDS: &[Command] = &[
    Command {
        name: "spawn",
        usage: "<COUNT> [OPTIONS]",
        about: "Start COUNT workers in the background, each in a session of its own with its own log file \
                and cache directory, and record them",
        specs: SPAWN_SPECS,
        worker_flags: true,
        run: run_spawn,
    },
    Command {
        name: "status",
        usage: "[OPTIONS]",
        about: "List the workers this manager started: index, pid, alive or dead, worker id, current task, \
                uptime, log file; then `Total: N` (the alive ones)",
        specs: STATUS_SPECS,
        worker_flags: false,
        run: run_status,
    },
    Command {
        name: "kill",
        usage: "[OPTIONS] [PID|WORKER_ID]...",
        about: "Stop the recorded workers (all, or those named): SIGTERM, then wait for each to unregister and exit",
        specs: KILL_SPECS,
        worker_flags: false,
        run: run_kill,
    },
    Command {
        name: "run",
        usage: "<COUNT> [OPTIONS]",
        about: "Keep COUNT workers running in the foreground: restart one that fails or dies (with backoff), \
                not one that was removed or whose lifetime ended; SIGTERM or SIGINT stops them all",
        specs: RUN_SPECS,
        worker_flags: true,
        run: run_supervise,
    },
];

fn no_positionals(cmd: &str, args: &Args) -> Result<(), ManagerError> {
    match args.positionals.first() {
        Some(p) => Err(ManagerError::Usage(usage_message(
            &format!("mito manager {cmd}"),
            &format!("unexpected argument {p:?}"),
        ))),
        None => Ok(()),
    }
}

fn run_spawn(args: Args) -> Result<(), ManagerError> {
    let count = count("spawn", &args)?;
    let state = record::state_dir(args.value("state-dir"))?;
    crate::worker::scrub_password_copies();
    let launch = launch::Launch::new(args.worker, args.config)?;
    spawn::spawn(&state, count, &launch)
}

fn run_supervise(args: Args) -> Result<(), ManagerError> {
    let count = count("run", &args)?;
    let state = record::state_dir(args.value("state-dir"))?;
    crate::worker::scrub_password_copies();
    let launch = launch::Launch::new(args.worker, args.config)?;
    supervise::run(&state, count, &launch)
}

fn run_status(args: Args) -> Result<(), ManagerError> {
    no_positionals("status", &args)?;
    let state = record::state_dir(args.value("state-dir"))?;
    status::status(&state, args.flag("json"), args.flag("prune"))
}

fn run_kill(args: Args) -> Result<(), ManagerError> {
    let state = record::state_dir(args.value("state-dir"))?;
    let timeout = match args.value("timeout") {
        None => Duration::from_secs(30),
        Some(t) => match humantime::parse_duration(t.trim()) {
            Ok(d) if d <= MAX_TIMEOUT => d,
            _ => {
                return Err(ManagerError::Usage(usage_message(
                    "mito manager kill",
                    &format!("--timeout {t:?} is not a duration of at most 1h (for example 30s)"),
                )))
            }
        },
    };
    kill::kill(&state, &args.positionals, timeout, args.flag("force"))
}

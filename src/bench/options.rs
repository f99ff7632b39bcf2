//! `mito bench`'s options: the table that drives parsing and help, and their bounds.

use super::error::BenchError;
use crate::config::coordinator::{DEFAULT_ADMIN_PASSWORD, DEFAULT_ADMIN_USER};
use crate::config::{concat_str, DEFAULT_COORDINATOR_ADDR};
use crate::opts::OptSpec;
use std::path::PathBuf;
use std::time::Duration;

/// The options; the last one, [`PRINT_SQL`], is left out of the help.
pub(super) const SPECS: &[OptSpec] = &[
    OptSpec::opt(
        "coordinator",
        Some('c'),
        "URL",
        concat_str!("The coordinator (default ", DEFAULT_COORDINATOR_ADDR, ")"),
    ),
    OptSpec::opt(
        "user",
        Some('u'),
        "USER",
        concat_str!("A user who may create a group (default ", DEFAULT_ADMIN_USER, ")"),
    ),
    OptSpec::opt("password", Some('p'), "PASSWORD", concat_str!("Its password (default ", DEFAULT_ADMIN_PASSWORD, ")")),
    OptSpec::opt("batch", None, "N", "Tasks per batch submit (default 5000; 0 skips this run)"),
    OptSpec::opt("array", None, "N", "Indices of the array submit (default 10000, the most; 0 skips this run)"),
    OptSpec::opt("tasks", None, "N", "Tasks in the end-to-end run (default 10000; 0 skips this run)"),
    OptSpec::opt("workers", None, "N", "Workers in the end-to-end run (default 16)"),
    OptSpec::opt("idle-workers", None, "N", "Parked workers in the latency run (default 4)"),
    OptSpec::opt("idle-wait", None, "SECS", "Their long polls' wait, 1 to 60 (default 30, as mito's worker asks)"),
    OptSpec::opt("samples", None, "N", "Latency samples (default 200; 0 skips this run)"),
    OptSpec::opt("repeat", None, "N", "Repetitions of the throughput runs (default 3)"),
    OptSpec::opt(
        "poll",
        None,
        "DURATION",
        "Poll at this interval instead of long-polling (for coordinators without it)",
    ),
    OptSpec::opt("coordinator-pid", None, "PID", "Read this process's memory, CPU time and context switches"),
    OptSpec::opt(
        "db",
        None,
        "URL",
        "The coordinator's database: count its statements and transactions per task end to end \
         (needs pg_stat_statements and a superuser; adds 22 s of waiting)",
    ),
    OptSpec::opt(
        "db-ceiling",
        None,
        "TPS",
        "Transactions/s `pgbench -N` reached on the same PostgreSQL: the end-to-end rate is also shown as a share of it",
    ),
    OptSpec::opt(
        "instructions",
        None,
        "N",
        "Instead of the other runs: instructions per task of a coordinator (--coordinator-pid) running under \
         valgrind --tool=callgrind, from end-to-end runs of N and 5N tasks",
    ),
    OptSpec::opt(
        "callgrind-dir",
        None,
        "DIR",
        "Where that coordinator's callgrind writes (--callgrind-out-file=DIR/callgrind.out); the profile goes there too",
    ),
    OptSpec::opt("against", None, "URL", "Also measure this coordinator, in turn with --coordinator, and print ratios"),
    OptSpec::opt("against-pid", None, "PID", "Its process, as --coordinator-pid"),
    OptSpec::opt("against-poll", None, "DURATION", "Its polling interval, as --poll"),
    OptSpec::opt("against-db", None, "URL", "Its database, as --db"),
    OptSpec::opt("rounds", None, "N", "Runs of each coordinator with --against, interleaved (default 3)"),
    OptSpec::opt("label", None, "NAME", "The name of --coordinator in the comparison (default A)"),
    OptSpec::opt("against-label", None, "NAME", "The name of --against in the comparison (default B)"),
    PRINT_SQL,
];

/// Prints a statement the coordinator runs (`claim`, `queue-setup`) and exits, so scripts
/// can EXPLAIN exactly what runs without parsing the source.
pub(super) const PRINT_SQL: OptSpec = OptSpec::opt("print-sql", None, "NAME", "");

const MAX_TASKS: usize = 1_000_000;
const MAX_WORKERS: usize = 1000;

/// Each idle worker is a thread and a connection here and a connection at the coordinator.
const MAX_IDLE_WORKERS: usize = 100_000;

#[derive(Clone)]
pub(super) struct Opts {
    pub base: String,
    pub user: String,
    pub password: String,
    pub batch: usize,
    pub array: usize,
    pub tasks: usize,
    pub workers: usize,
    pub idle: usize,
    pub idle_wait: u64,
    pub samples: usize,
    pub repeat: usize,
    pub poll: Option<Duration>,
    pub pid: Option<u32>,
    pub db: Option<String>,
    pub db_ceiling: Option<f64>,
    pub instructions: usize,
    pub callgrind_dir: Option<PathBuf>,
    pub against: Option<String>,
    pub against_pid: Option<u32>,
    pub against_poll: Option<Duration>,
    pub against_db: Option<String>,
    pub rounds: usize,
    pub label: String,
    pub against_label: String,
}

fn flag_error(name: &str, value: &str, expected: impl std::fmt::Display) -> BenchError {
    BenchError::Flag { flag: format!("--{name}"), value: value.to_string(), expected: expected.to_string() }
}

/// A positive number up to `max`.
fn num(args: &crate::opts::ParsedArgs, name: &str, default: usize, max: usize) -> Result<usize, BenchError> {
    match args.extra(name).flatten() {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| flag_error(name, v, format_args!("expected a number from 1 to {max}"))),
    }
}

/// A count up to `max`, where 0 means "skip this run".
fn count(args: &crate::opts::ParsedArgs, name: &str, default: usize, max: usize) -> Result<usize, BenchError> {
    match args.extra(name).flatten() {
        None => Ok(default),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| flag_error(name, v, format_args!("expected a number up to {max} (0 skips this run)"))),
    }
}

fn duration(args: &crate::opts::ParsedArgs, name: &str) -> Result<Option<Duration>, BenchError> {
    let Some(p) = args.extra(name).flatten() else { return Ok(None) };
    let d = humantime::parse_duration(p).map_err(|e| flag_error(name, p, e))?;
    if d > Duration::from_secs(10) {
        return Err(flag_error(name, p, "expected at most 10s"));
    }
    Ok(Some(d))
}

fn pid(args: &crate::opts::ParsedArgs, name: &str) -> Result<Option<u32>, BenchError> {
    args.extra(name).flatten().map(|p| p.parse().map_err(|_| flag_error(name, p, "expected a process id"))).transpose()
}

pub(super) fn parse_opts(args: &crate::opts::ParsedArgs) -> Result<Opts, BenchError> {
    let text = |name: &str, default: &str| args.extra(name).flatten().unwrap_or(default).to_string();
    let db_ceiling = args
        .extra("db-ceiling")
        .flatten()
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|t| t.is_finite() && *t > 0.0 && *t < 1e9)
                .ok_or_else(|| flag_error("db-ceiling", v, "expected transactions per second, above 0"))
        })
        .transpose()?;
    let o = Opts {
        base: text("coordinator", DEFAULT_COORDINATOR_ADDR).trim_end_matches('/').to_string(),
        user: text("user", DEFAULT_ADMIN_USER),
        password: text("password", DEFAULT_ADMIN_PASSWORD),
        batch: count(args, "batch", 5000, MAX_TASKS)?,
        array: count(
            args,
            "array",
            crate::api::array::MAX_ARRAY_TASKS as usize,
            crate::api::array::MAX_ARRAY_TASKS as usize,
        )?,
        tasks: count(args, "tasks", 10_000, MAX_TASKS)?,
        workers: num(args, "workers", 16, MAX_WORKERS)?,
        idle: num(args, "idle-workers", 4, MAX_IDLE_WORKERS)?,
        idle_wait: num(args, "idle-wait", 30, 60)? as u64,
        samples: count(args, "samples", 200, 100_000)?,
        repeat: num(args, "repeat", 3, 100)?,
        poll: duration(args, "poll")?,
        pid: pid(args, "coordinator-pid")?,
        db: args.extra("db").flatten().map(str::to_string),
        db_ceiling,
        instructions: count(args, "instructions", 0, MAX_TASKS / 5)?,
        callgrind_dir: args.extra("callgrind-dir").flatten().map(PathBuf::from),
        against: args.extra("against").flatten().map(|a| a.trim_end_matches('/').to_string()),
        against_pid: pid(args, "against-pid")?,
        against_poll: duration(args, "against-poll")?,
        against_db: args.extra("against-db").flatten().map(str::to_string),
        rounds: num(args, "rounds", 3, 100)?,
        label: text("label", "A"),
        against_label: text("against-label", "B"),
    };
    if o.instructions > 0 && (o.pid.is_none() || o.callgrind_dir.is_none()) {
        let n = o.instructions.to_string();
        return Err(flag_error("instructions", &n, "needs --coordinator-pid and --callgrind-dir"));
    }
    Ok(o)
}

/// `--print-sql NAME`: the statement, or exit status 2 for a name it does not know.
pub(super) fn print_sql(name: &str) -> i32 {
    match name {
        "claim" => println!("{}", *crate::coordinator::scheduler::CLAIM),
        "queue-setup" => println!("{}", crate::coordinator::db::QUEUE_SETUP),
        other => {
            eprintln!("mito bench: --print-sql {other:?}: expected claim or queue-setup");
            return 2;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Opts, BenchError> {
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        match crate::opts::parse_opts(&mut p, "mito bench", SPECS, false) {
            Ok(crate::opts::Parsed::Run(a)) => parse_opts(&a),
            _ => panic!("{args:?} do not parse"),
        }
    }

    #[test]
    fn counts_are_bounded_and_zero_skips() {
        let o =
            opts(&["--array", "0", "--tasks", "4000", "--against", "http://h:1/", "--against-poll", "5ms"]).unwrap();
        assert_eq!((o.array, o.tasks, o.against.as_deref()), (0, 4000, Some("http://h:1")));
        assert_eq!(o.against_poll, Some(Duration::from_millis(5)));
        let e = opts(&["--array", "10001"]).err().unwrap().to_string();
        assert_eq!(e, r#"--array "10001": expected a number up to 10000 (0 skips this run)"#);
        assert!(opts(&["--workers", "0"]).is_err());
        assert!(opts(&["--poll", "1h"]).is_err());
        assert!(opts(&["--db-ceiling", "-3"]).is_err());
    }

    #[test]
    fn instructions_need_the_coordinators_pid_and_its_callgrind_dir() {
        let e = opts(&["--instructions", "200"]).err().unwrap().to_string();
        assert!(e.contains("needs --coordinator-pid and --callgrind-dir"), "{e}");
        let o = opts(&["--instructions", "200", "--coordinator-pid", "7", "--callgrind-dir", "/tmp/cg"]).unwrap();
        assert_eq!((o.instructions, o.pid), (200, Some(7)));
    }

    #[test]
    fn print_sql_is_left_out_of_the_help_and_knows_its_statements() {
        assert_eq!(SPECS.last().map(|s| s.long), Some(PRINT_SQL.long));
        let help = crate::opts::help_text("", "", &SPECS[..SPECS.len() - 1], "");
        assert!(help.contains("--instructions") && !help.contains("print-sql"), "{help}");
        assert_eq!(print_sql("claim"), 0);
        assert_eq!(print_sql("queue-setup"), 0);
        assert_eq!(print_sql("nothing"), 2);
    }
}

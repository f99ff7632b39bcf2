//! The option parser every mode shares (coordinator, worker, client, bench).
//!
//! Each mode describes its options once as a table of [`OptSpec`]; the same table drives
//! parsing (lexopt), `--help` text and the mapping of flags to configuration keys:
//!
//! ```ignore
//! use mito::opts::{OptSpec, parse_opts, Parsed};
//! const SPECS: &[OptSpec] = &[OptSpec::value("bind", Some('b'), "bind", "BIND", "The address to bind to")];
//! let mut p = lexopt::Parser::from_args(["-b", "0.0.0.0:1"]);
//! let Parsed::Run(args) = parse_opts(&mut p, "mito x", SPECS, false).unwrap() else { panic!() };
//! assert_eq!(args.values[0].key, "bind");
//! ```

use crate::config::CliValue;
use std::ffi::OsString;
use std::path::PathBuf;

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One command-line option.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OptSpec {
    pub long: &'static str,
    pub short: Option<char>,
    /// The configuration key it sets; None for options handled by the mode itself.
    pub key: Option<&'static str>,
    /// The value's name in help; None for a switch.
    pub metavar: Option<&'static str>,
    pub help: &'static str,
    /// Repeatable, values accumulate into a list (`-t a -t b` or `-t a,b`).
    pub list: bool,
    /// For a list: a value is split at commas (`-t a,b`); off for values that may hold
    /// commas themselves (`--env CUDA_VISIBLE_DEVICES=0,1`).
    pub split: bool,
}

impl OptSpec {
    pub(crate) const fn value(
        long: &'static str,
        short: Option<char>,
        key: &'static str,
        metavar: &'static str,
        help: &'static str,
    ) -> Self {
        OptSpec { long, short, key: Some(key), metavar: Some(metavar), help, list: false, split: false }
    }

    pub(crate) const fn switch(long: &'static str, short: Option<char>, key: &'static str, help: &'static str) -> Self {
        OptSpec { long, short, key: Some(key), metavar: None, help, list: false, split: false }
    }

    pub(crate) const fn list(
        long: &'static str,
        short: Option<char>,
        key: &'static str,
        metavar: &'static str,
        help: &'static str,
    ) -> Self {
        OptSpec { list: true, split: true, ..Self::value(long, short, key, metavar, help) }
    }

    /// A repeatable option whose values accumulate whole, commas included.
    pub(crate) const fn repeated(
        long: &'static str,
        short: Option<char>,
        key: &'static str,
        metavar: &'static str,
        help: &'static str,
    ) -> Self {
        OptSpec { list: true, split: false, ..Self::value(long, short, key, metavar, help) }
    }

    /// An option with a value and no configuration key: the mode or command reads it itself.
    pub(crate) const fn opt(
        long: &'static str,
        short: Option<char>,
        metavar: &'static str,
        help: &'static str,
    ) -> Self {
        OptSpec { long, short, key: None, metavar: Some(metavar), help, list: false, split: false }
    }

    /// A switch with no configuration key.
    pub(crate) const fn flag(long: &'static str, short: Option<char>, help: &'static str) -> Self {
        OptSpec { long, short, key: None, metavar: None, help, list: false, split: false }
    }
}

/// The `--config <CONFIG>` option every mode has.
pub(crate) const CONFIG_OPT: OptSpec = OptSpec {
    long: "config",
    short: None,
    key: None,
    metavar: Some("CONFIG"),
    help: "The path of the config file (an error if it does not exist)",
    list: false,
    split: false,
};

/// What the parser found.
#[derive(Debug)]
pub(crate) enum Parsed {
    Help,
    Version,
    Run(ParsedArgs),
}

#[derive(Debug, Default)]
pub(crate) struct ParsedArgs {
    pub config: Option<PathBuf>,
    pub values: Vec<CliValue>,
    /// Options without a config key, by long name.
    pub extra: Vec<(&'static str, Option<String>)>,
    pub positionals: Vec<String>,
}

impl ParsedArgs {
    /// Whether the key-less switch or option `long` was given, and its last value.
    pub(crate) fn extra(&self, long: &str) -> Option<Option<&str>> {
        self.extra.iter().rev().find(|(l, _)| *l == long).map(|(_, v)| v.as_deref())
    }
}

/// A command-line mistake: the message is one line; the caller exits with status 2.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Something wrong in `cmd`'s words (an unknown flag, a missing value): `what` says
    /// what, and the message points at `cmd --help`.
    Usage { cmd: String, what: String },
    /// An argument (`what`: "an argument", or the flag it is the value of) that is not UTF-8.
    NotUtf8 { what: String, value: OsString },
    /// The parser's own complaint about the words after the first positional.
    Parser(lexopt::Error),
}

impl CliError {
    pub(crate) fn usage(cmd: &str, what: impl std::fmt::Display) -> Self {
        CliError::Usage { cmd: cmd.to_string(), what: what.to_string() }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage { cmd, what } => f.write_str(&usage_message(cmd, what)),
            CliError::NotUtf8 { what, value } => write!(f, "the value {value:?} of {what} is not valid UTF-8"),
            CliError::Parser(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::Parser(e) => Some(e),
            _ => None,
        }
    }
}

/// The one shape of a command-line mistake: what was wrong, and where the help is.
pub(crate) fn usage_message(cmd: &str, what: &str) -> String {
    format!("{cmd}: {what} (see `{cmd} --help`)")
}

/// The option in `specs` that a long or short flag names, and the flag as it was written
/// (`--name`, `-c`); an unknown flag or a plain value is a usage error.
pub(crate) fn find_option<'a>(
    cmd: &str,
    specs: &'a [OptSpec],
    arg: &lexopt::Arg,
) -> Result<(&'a OptSpec, String), CliError> {
    use lexopt::Arg;
    let (found, shown) = match arg {
        Arg::Long(l) => (specs.iter().find(|s| s.long == *l), format!("--{l}")),
        Arg::Short(c) => (specs.iter().find(|s| s.short == Some(*c)), format!("-{c}")),
        Arg::Value(v) => {
            let what = format!("unexpected argument {:?}", v.to_string_lossy());
            return Err(CliError::usage(cmd, what));
        }
    };
    match found {
        Some(spec) => Ok((spec, shown)),
        None => Err(CliError::usage(cmd, format_args!("unknown option {shown}"))),
    }
}

/// The help lines of `specs`: each flag, its value, and its explanation on the next line.
pub(crate) fn option_lines<'a>(specs: impl IntoIterator<Item = &'a OptSpec>) -> String {
    let mut s = String::new();
    for o in specs {
        let short = o.short.map(|c| format!("-{c}, ")).unwrap_or_else(|| "    ".into());
        let value = match (o.metavar, o.list) {
            (Some(m), true) => format!(" <{m}>..."),
            (Some(m), false) => format!(" <{m}>"),
            (None, _) => String::new(),
        };
        s.push_str(&format!("  {short}--{}{value}\n          {}\n", o.long, o.help));
    }
    s
}

fn os_to_string(v: OsString, what: &str) -> Result<String, CliError> {
    v.into_string().map_err(|value| CliError::NotUtf8 { what: what.to_string(), value })
}

/// Parses options until the end of the arguments (or `--`, after which all are positionals).
pub(crate) fn parse_opts(
    parser: &mut lexopt::Parser,
    cmd: &str,
    specs: &[OptSpec],
    allow_positionals: bool,
) -> Result<Parsed, CliError> {
    use lexopt::Arg;
    let mut out = ParsedArgs::default();
    let mut lists: Vec<(usize, Vec<String>, String)> = Vec::new();
    loop {
        let arg = parser.next().map_err(|e| CliError::usage(cmd, e))?;
        let Some(arg) = arg else { break };
        let (spec, shown) = match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Parsed::Help),
            Arg::Short('V') | Arg::Long("version") => return Ok(Parsed::Version),
            Arg::Long("config") => (&CONFIG_OPT, "--config".to_string()),
            Arg::Value(v) if allow_positionals => {
                out.positionals.push(os_to_string(v, "an argument")?);
                for rest in parser.raw_args().map_err(CliError::Parser)? {
                    out.positionals.push(os_to_string(rest, "an argument")?);
                }
                break;
            }
            other => find_option(cmd, specs, &other)?,
        };
        if spec.metavar.is_none() {
            match spec.key {
                Some(key) => out.values.push(CliValue { key, flag: shown, value: toml::Value::Boolean(true) }),
                None => out.extra.push((spec.long, None)),
            }
            continue;
        }
        let value = parser.value().map_err(|_| {
            let metavar = spec.metavar.unwrap_or("VALUE");
            CliError::usage(cmd, format_args!("{shown} needs a value <{metavar}>"))
        })?;
        let value = os_to_string(value, &shown)?;
        if spec.long == "config" {
            out.config = Some(PathBuf::from(value));
        } else if spec.list {
            let idx = specs.iter().position(|s| s.long == spec.long).expect("spec is from the table");
            let items: Vec<String> = if spec.split {
                value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
            } else {
                vec![value]
            };
            match lists.iter_mut().find(|(i, _, _)| *i == idx) {
                Some((_, v, _)) => v.extend(items),
                None => lists.push((idx, items, shown)),
            }
        } else {
            match spec.key {
                Some(key) => out.values.push(CliValue { key, flag: shown, value: toml::Value::String(value) }),
                None => out.extra.push((spec.long, Some(value))),
            }
        }
    }
    for (idx, items, shown) in lists {
        let key = specs[idx].key.expect("list options set a key");
        let arr = items.into_iter().map(toml::Value::String).collect();
        out.values.push(CliValue { key, flag: shown, value: toml::Value::Array(arr) });
    }
    Ok(Parsed::Run(out))
}

/// Help text in the familiar layout: about, usage, then each option and its explanation.
pub(crate) fn help_text(about: &str, usage: &str, specs: &[OptSpec], footer: &str) -> String {
    let mut s = format!("{about}\n\nUsage: {usage}\n\nOptions:\n");
    let mut all: Vec<OptSpec> = Vec::with_capacity(specs.len() + 1);
    all.push(CONFIG_OPT);
    all.extend_from_slice(specs);
    s.push_str(&option_lines(&all));
    s.push_str("  -h, --help\n          Print help\n  -V, --version\n          Print version\n");
    if !footer.is_empty() {
        s.push('\n');
        s.push_str(footer);
        if !footer.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// Reports a configuration mistake on stderr; returns exit status 2.
pub(crate) fn config_error(cmd: &str, e: &crate::config::ConfigError) -> i32 {
    eprintln!("{cmd}: {e}");
    2
}

/// Logs the config warnings, runs a mode, and turns its outcome into the exit status
/// (an error is logged and gives 1).
pub(crate) fn run_logged<E: std::fmt::Display>(warnings: &[String], run: impl FnOnce() -> Result<(), E>) -> i32 {
    for w in warnings {
        log::warn!("{w}");
    }
    match run() {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Runs the common part of a mode's argument handling: help, version and one-line errors.
/// Returns the parsed arguments, or the exit status to return at once.
pub(crate) fn parse_mode(
    parser: &mut lexopt::Parser,
    cmd: &str,
    specs: &[OptSpec],
    allow_positionals: bool,
    help: impl FnOnce() -> String,
) -> Result<ParsedArgs, i32> {
    match parse_opts(parser, cmd, specs, allow_positionals) {
        Ok(Parsed::Help) => {
            print!("{}", help());
            Err(0)
        }
        Ok(Parsed::Version) => {
            println!("mito {VERSION}");
            Err(0)
        }
        Ok(Parsed::Run(args)) => Ok(args),
        Err(e) => {
            eprintln!("{e}");
            Err(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[OptSpec] = &[
        OptSpec::value("bind", Some('b'), "bind", "BIND", "addr"),
        OptSpec::switch("file-log", None, "file_log", "log to file"),
        OptSpec::list("tags", Some('t'), "tags", "TAGS", "tags"),
    ];

    fn run(args: &[&str]) -> Result<Parsed, CliError> {
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        parse_opts(&mut p, "mito t", SPECS, false)
    }

    #[test]
    fn values_switches_and_lists() {
        let Parsed::Run(a) = run(&["--bind=1:2", "--file-log", "-t", "a,b", "-t", "c", "--config", "x.toml"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.config.as_deref(), Some(std::path::Path::new("x.toml")));
        assert_eq!(a.values.len(), 3);
        assert_eq!(a.values[2].value, toml::Value::Array(vec!["a".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn unknown_flags_and_missing_values_are_one_line_errors() {
        let e = run(&["--nope"]).unwrap_err().to_string();
        assert_eq!(e, "mito t: unknown option --nope (see `mito t --help`)");
        let e = run(&["--bind"]).unwrap_err().to_string();
        assert!(e.contains("--bind") && e.contains("BIND") && !e.contains('\n'), "{e}");
        assert!(run(&["stray"]).is_err());
    }

    #[test]
    fn help_lists_every_option() {
        let h = help_text("About", "mito t [OPTIONS]", SPECS, "");
        for s in ["-b, --bind <BIND>", "--file-log", "--tags <TAGS>...", "--config <CONFIG>", "--help", "--version"] {
            assert!(h.contains(s), "missing {s} in\n{h}");
        }
    }
}

/// The module documentation's example, run (doc tests see only the public API).
#[cfg(test)]
mod doc_example {
    #[test]
    fn runs() {
        use crate::opts::{parse_opts, OptSpec, Parsed};
        const SPECS: &[OptSpec] = &[OptSpec::value("bind", Some('b'), "bind", "BIND", "The address to bind to")];
        let mut p = lexopt::Parser::from_args(["-b", "0.0.0.0:1"]);
        let Parsed::Run(args) = parse_opts(&mut p, "mito x", SPECS, false).unwrap() else { panic!() };
        assert_eq!(args.values[0].key, "bind");
    }
}

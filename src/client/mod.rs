//! `mito client`: the command-line client, with the command tree of the mitosis 0.6 client
//! (same names, flags and defaults) plus exit codes, `--json` output and `tasks wait/logs`.
//!
//! ```text
//! mito client tasks submit -- echo "Hello, Mitosis!"
//! mito client --json tasks get 7f0c...       # the coordinator's JSON on stdout
//! mito client -i                              # [mito::client]> prompt, same commands
//! ```
//!
//! Every run first makes sure of a valid token (the credentials file, else a login), then
//! runs the command, then, with `-i`, reads more commands. Results go to stdout as plain
//! lines (or JSON with `--json`); errors go to stderr with the server's message, and the exit
//! status says what happened: 0 success, 1 failure, 2 a mistake in the command line,
//! 3 `tasks wait` saw a task that did not succeed, 124 `tasks wait` ran out of time.

pub(crate) mod args;
pub(crate) mod http;
pub(crate) mod transfer;

mod admin;
mod artifacts;
mod attachments;
mod groups;
mod output;
mod repl;
mod task_args;
mod tasks;
mod users;
mod workers;

use crate::config::{concat_str, ClientConfig, Layers, DEFAULT_COORDINATOR_ADDR};
use crate::opts::{help_text, parse_mode, OptSpec};
use args::{Args, Command, Group, Spec};
use http::Http;

/// Why a command did not succeed. The `Display` text is the message shown after `error: `.
#[derive(Debug)]
pub(crate) enum Error {
    /// A mistake in the command line (exit 2).
    Usage(String),
    /// The coordinator answered `call` (e.g. `GET /tasks/...`, without the query) with a
    /// status other than 2xx; `message` is the server's own message.
    Http { call: String, status: u16, reason: String, message: String },
    /// The object store refused a transfer: `what` was being done, `message` is its reason.
    Storage { what: String, status: u16, message: String },
    /// The coordinator or the object store could not be reached; the text says where and
    /// the likely fix, and never holds a signed URL.
    Transport(String),
    /// A local file could not be read or written: `action` is what was tried ("cannot read").
    File { action: &'static str, path: std::path::PathBuf, source: std::io::Error },
    /// The command failed for another reason (exit 1).
    Failed(String),
    /// Stop with this status; the message (if any) was already printed.
    Exit(i32),
}

impl Error {
    pub(crate) fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Exit(c) => *c,
            _ => 1,
        }
    }

    /// Whether the coordinator answered 404 Not Found.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Error::Http { status: 404, .. })
    }

    /// An I/O failure on a local file.
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { action, path, source }
    }

    fn report(&self) {
        if !matches!(self, Error::Exit(_)) {
            eprintln!("error: {self}");
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Usage(m) | Error::Transport(m) | Error::Failed(m) => f.write_str(m),
            Error::Http { call, status, reason, message } => write!(f, "{call}: {status} {reason}: {message}"),
            Error::Storage { what, status, message } => {
                write!(f, "{what}: the object store answered {status}: {message}")
            }
            Error::File { action, path, source } => write!(f, "{action} {}: {source}", path.display()),
            Error::Exit(c) => write!(f, "exit {c}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// What to do after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Leave interactive mode (`quit`, `exit`, a successful `admin shutdown`).
    Quit,
}

/// What a client command returns.
pub(crate) type CommandResult = Result<Flow, Error>;

/// A logged-in client: the coordinator handle with the user's token.
pub(crate) struct Session {
    pub http: Http,
    pub user: String,
    pub cfg: ClientConfig,
    /// `--json` given before the command (applies to every command of the run).
    pub json: bool,
}

impl Session {
    /// Whether this command prints JSON.
    pub(crate) fn json(&self, a: &Args) -> bool {
        self.json || a.json
    }
}

const ABOUT: &str = "Run a mitosis client";

const INTERACTIVE: OptSpec = OptSpec {
    long: "interactive",
    short: Some('i'),
    key: None,
    metavar: None,
    help: "Read commands from a [mito::client]> prompt after the given one (if any); quit, exit or Ctrl-D leave",
    list: false,
    split: false,
};

const JSON: OptSpec = OptSpec {
    long: "json",
    short: None,
    key: None,
    metavar: None,
    help: "Print every result as JSON",
    list: false,
    split: false,
};

const SPECS: &[OptSpec] = &[
    OptSpec::value(
        "coordinator",
        Some('c'),
        "coordinator_addr",
        "COORDINATOR_ADDR",
        concat_str!("The URL of the coordinator (default ", DEFAULT_COORDINATOR_ADDR, ")"),
    ),
    OptSpec::value(
        "credential-path",
        None,
        "credential_path",
        "CREDENTIAL_PATH",
        "The credentials file (default $XDG_CONFIG_HOME/mitosis/credentials)",
    ),
    OptSpec::value("user", Some('u'), "user", "USER", "The username"),
    OptSpec::value(
        "password",
        Some('p'),
        "password",
        "PASSWORD",
        "The password (used only when no valid token is cached)",
    ),
    INTERACTIVE,
    OptSpec::switch("retain", None, "retain", "Log in without signing this user out of their other sessions"),
    OptSpec::value(
        "ca-file",
        None,
        "ca_file",
        "CA_FILE",
        "A PEM file of CA certificates to trust besides the system's, for https coordinators and object storage",
    ),
    JSON,
];

pub(crate) const TOP: Group = Group {
    name: "mito client",
    about: ABOUT,
    commands: &[
        Command::group("admin", "Administrator commands (users, quotas, shutdown)", admin::run),
        Command::cmd("auth", "Show who is logged in", &users::AUTH, users::auth),
        Command::cmd("login", "Log in again, possibly as another user", &users::LOGIN, users::login),
        Command::group("users", "Your password and your groups", users::run),
        Command::group("groups", "Groups, their members and attachments", groups::run),
        Command::group("tasks", "Submit, query, wait for and manage tasks and their artifacts", tasks::run),
        Command::group("workers", "Query and manage workers", workers::run),
        Command::cmd("cmd", "Run a local shell command", &CMD, run_cmd),
        Command::group("quit", "Leave interactive mode (also `exit`)", |_, _| Ok(Flow::Quit)),
    ],
    aliases: &[("exit", "quit")],
};

/// The end of `mito client --help`: the commands (from the table) and what else to know.
fn footer() -> String {
    format!(
        "Commands:\n{}\n{}",
        TOP.command_lines(),
        "See `mito client <COMMAND> --help`. Options can also be set in the [client] table of a config
file (coordinator_addr, credential_path, user, password, retain, ca_file) or as MITO_<KEY>
variables.
Exit status: 0 success, 1 failure (the reason is on stderr), 2 a command-line mistake,
3 `tasks wait` saw a task that did not succeed, 124 `tasks wait --timeout` ran out."
    )
}

/// Entry point of `mito client`; returns the exit status.
pub(crate) fn main(parser: &mut lexopt::Parser) -> i32 {
    let args = match parse_mode(parser, "mito client", SPECS, true, || {
        help_text(ABOUT, "mito client [OPTIONS] [COMMAND]...", SPECS, &footer())
    }) {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Help for a command needs no login.
    if wants_help(&args.positionals) {
        return match dispatch(None, &args.positionals) {
            Ok(_) => 0,
            Err(e) => {
                e.report();
                e.code()
            }
        };
    }
    let interactive = args.extra("interactive").is_some();
    let json = args.extra("json").is_some();
    let cfg = match Layers::load("client", ClientConfig::KEYS, args.config.as_deref(), args.values).and_then(|l| {
        for w in &l.warnings {
            eprintln!("warning: {w}");
        }
        ClientConfig::from_layers(&l)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mito client: {e}");
            return 2;
        }
    };
    let tls = match crate::tls::Tls::new(cfg.ca_file.as_deref(), |m| eprintln!("warning: {m}")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mito client: {e}");
            return 2;
        }
    };
    let mut session = match users::setup(cfg, &tls, json) {
        Ok(s) => s,
        Err(e) => {
            e.report();
            return e.code();
        }
    };
    let mut code = 0;
    if !args.positionals.is_empty() {
        match dispatch(Some(&mut session), &args.positionals) {
            Ok(Flow::Quit) => return 0,
            Ok(Flow::Continue) => {}
            Err(e) => {
                e.report();
                code = e.code();
                if !interactive {
                    return code;
                }
            }
        }
    } else if !interactive {
        println!("Logged in as {}", session.user);
    }
    if interactive {
        code = repl::run(&mut session).max(code);
    }
    code
}

/// Whether the words ask only for help (`tasks --help`, `help groups`, `tasks submit -h`).
fn wants_help(words: &[String]) -> bool {
    let before_dashes = words.iter().take_while(|w| *w != "--");
    words.first().is_some_and(|w| w == "help") || before_dashes.clone().any(|w| w == "-h" || w == "--help")
}

/// Runs one command line. `session` is None only when the words ask for help, which every
/// command prints before it needs the coordinator.
pub(crate) fn dispatch(session: Option<&mut Session>, words: &[String]) -> CommandResult {
    match session {
        Some(s) => TOP.run(s, words),
        None => TOP.run(&mut users::offline_session(), words),
    }
}

const CMD: Spec = Spec {
    name: "cmd",
    usage: "-- <COMMAND>...",
    about: "Run a command with $SHELL -c (default /bin/bash) on this machine, e.g. `cmd -- ls -l`",
    flags: &[OptSpec::flag(
        "split",
        Some('s'),
        "Pass the words as separate arguments after -c instead of joining them",
    )],
};

fn run_cmd(_: &mut Session, a: &Args) -> CommandResult {
    let cmd = a.all_pos();
    if cmd.is_empty() {
        return Err(a.usage("missing <COMMAND>".into()));
    }
    let shell = std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/bash".into());
    let mut c = std::process::Command::new(&shell);
    c.arg("-c");
    if a.has("split") {
        c.args(&cmd);
    } else {
        c.arg(cmd.join(" "));
    }
    let status = c.status().map_err(|e| Error::Failed(format!("cannot run {shell}: {e}")))?;
    match status.code() {
        Some(0) => Ok(Flow::Continue),
        Some(n) => Err(Error::Failed(format!("the command exited with status {n}"))),
        None => Err(Error::Failed("the command was killed by a signal".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, reason: &str, message: &str) -> Error {
        Error::Http { call: "GET /tasks/x".into(), status, reason: reason.into(), message: message.into() }
    }

    #[test]
    fn a_404_is_told_by_its_status_code_not_its_text() {
        assert!(http(404, "Not Found", "Task with uuid x not found").is_not_found());
        // A server message that happens to hold " 404 " is not a 404.
        assert!(!http(500, "Internal Server Error", "upstream said 404 once").is_not_found());
        assert!(!Error::Failed("GET /tasks/x: 404 Not Found: gone".into()).is_not_found());
    }

    #[test]
    fn errors_read_as_one_line_with_what_was_asked() {
        assert_eq!(http(404, "Not Found", "gone").to_string(), "GET /tasks/x: 404 Not Found: gone");
        let e =
            Error::Storage { what: "downloading to a.bin".into(), status: 403, message: "Request has expired".into() };
        assert_eq!(e.to_string(), "downloading to a.bin: the object store answered 403: Request has expired");
        let e = Error::file("cannot read", "in.json")(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "cannot read in.json: entity not found");
        assert_eq!((e.code(), Error::Usage("x".into()).code(), Error::Exit(124).code()), (1, 2, 124));
    }
}

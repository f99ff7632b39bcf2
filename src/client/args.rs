//! Parsing one client command's words (after its name) against a table of its flags, the
//! same way on the command line and in interactive mode.
//!
//! ```ignore
//! use mito::client::args::{parse, Spec};
//! use mito::opts::OptSpec;
//! const SPEC: Spec = Spec {
//!     name: "tasks get", usage: "<UUID>", about: "Show a task",
//!     flags: &[OptSpec::opt("group", Some('g'), "GROUP", "The group")],
//! };
//! let words: Vec<String> = ["-g", "g1", "abc"].iter().map(|s| s.to_string()).collect();
//! let a = parse(&SPEC, &words).unwrap().unwrap();
//! assert_eq!(a.value("group"), Some("g1"));
//! assert_eq!(a.pos, vec!["abc"]);
//! ```
//!
//! Words after a literal `--` are kept apart (`trailing`): they are the task's command for
//! `tasks submit`, and plain positionals elsewhere (so `-- -1GB` passes a value that starts
//! with `-`). Every command also takes `--json` and `-h/--help`.
//!
//! Flags are the same [`OptSpec`]s the modes use, looked up, described in help and
//! reported in errors by the same functions of [`crate::opts`].
//!
//! A command group (`tasks`, `admin users`, ...) is one [`Group`]: a table of [`Command`]s
//! (name, one-line summary, spec and handler, or a nested group). The group's help, the
//! lookup of a command, the unknown-command error, the parsing and the call all read that
//! table, so adding a command is adding one row and one handler.

use super::{CommandResult, Error, Flow, Session};
use crate::opts::{find_option, option_lines, usage_message, CliError, OptSpec};
use std::str::FromStr;

const JSON: OptSpec = OptSpec::flag("json", None, "Print the result as JSON (one document on stdout)");

/// A command: its full name, the positional part of its usage, what it does, its flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub about: &'static str,
    pub flags: &'static [OptSpec],
}

impl Spec {
    pub(crate) fn help(&self) -> String {
        let mut s = format!("{}\n\nUsage: {} [OPTIONS] {}\n\nOptions:\n", self.about, self.name, self.usage);
        s.push_str(&option_lines(self.flags.iter().chain([&JSON])));
        s.push_str("  -h, --help\n          Print help\n");
        s
    }

    fn usage_error(&self, what: String) -> Error {
        Error::Usage(usage_message(self.name, &what))
    }
}

impl From<CliError> for Error {
    fn from(e: CliError) -> Error {
        Error::Usage(e.to_string())
    }
}

/// The parsed words of one command.
#[derive(Debug, Default)]
pub(crate) struct Args {
    name: &'static str,
    opts: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
    pub pos: Vec<String>,
    /// The words after `--`, if there was one.
    pub trailing: Option<Vec<String>>,
    pub json: bool,
}

/// Parses `words`; Ok(None) means help was asked for (and printed).
pub(crate) fn parse(spec: &Spec, words: &[String]) -> Result<Option<Args>, Error> {
    use lexopt::Arg;
    let (head, trailing) = match words.iter().position(|w| w == "--") {
        Some(i) => (&words[..i], Some(words[i + 1..].to_vec())),
        None => (words, None),
    };
    let mut out = Args { name: spec.name, trailing, ..Args::default() };
    let mut p = lexopt::Parser::from_args(head.iter().cloned());
    loop {
        let arg = p.next().map_err(|e| spec.usage_error(e.to_string()))?;
        let Some(arg) = arg else { break };
        let (flag, shown) = match arg {
            Arg::Short('h') | Arg::Long("help") => {
                print!("{}", spec.help());
                return Ok(None);
            }
            Arg::Long("json") => {
                out.json = true;
                continue;
            }
            // A negative number or size (`-1GB`) is a positional, not a cluster of flags.
            Arg::Short(c) if c.is_ascii_digit() && !spec.flags.iter().any(|f| f.short == Some(c)) => {
                let rest = p.optional_value().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
                out.pos.push(format!("-{c}{rest}"));
                continue;
            }
            Arg::Value(v) => {
                out.pos.push(v.to_string_lossy().into_owned());
                continue;
            }
            other => find_option(spec.name, spec.flags, &other)?,
        };
        match flag.metavar {
            None => out.switches.push(flag.long),
            Some(m) => {
                let v = p.value().map_err(|_| spec.usage_error(format!("{shown} needs a value <{m}>")))?;
                out.opts.push((flag.long, v.to_string_lossy().into_owned()));
            }
        }
    }
    Ok(Some(out))
}

impl Args {
    pub(crate) fn has(&self, long: &str) -> bool {
        self.switches.contains(&long)
    }

    /// The last value given for `long`.
    pub(crate) fn value(&self, long: &str) -> Option<&str> {
        self.opts.iter().rev().find(|(l, _)| *l == long).map(|(_, v)| v.as_str())
    }

    /// Every value given for `long`, comma lists split, empty items dropped.
    pub(crate) fn list(&self, long: &str) -> Vec<String> {
        self.opts
            .iter()
            .filter(|(l, _)| *l == long)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Like `list`, but None when the flag was not given at all.
    pub(crate) fn opt_list(&self, long: &str) -> Option<Vec<String>> {
        self.opts.iter().any(|(l, _)| *l == long).then(|| self.list(long))
    }

    /// The value of `long` parsed as `T`; `what` says what was expected.
    pub(crate) fn parsed<T: FromStr>(&self, long: &str, what: &str) -> Result<Option<T>, Error> {
        match self.value(long) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| self.usage(format!("--{long} {v:?} is not {what}"))),
        }
    }

    /// Positionals followed by the words after `--`, for commands without a trailing command.
    pub(crate) fn all_pos(&self) -> Vec<String> {
        let mut v = self.pos.clone();
        v.extend(self.trailing.iter().flatten().cloned());
        v
    }

    /// A usage error for this command.
    pub(crate) fn usage(&self, what: String) -> Error {
        Error::Usage(usage_message(self.name, &what))
    }

    /// Exactly `names.len()` positionals (after `--` too), or a usage error naming the missing one.
    pub(crate) fn exact(&self, names: &[&str]) -> Result<Vec<String>, Error> {
        let all = self.all_pos();
        if all.len() < names.len() {
            return Err(self.usage(format!("missing <{}>", names[all.len()])));
        }
        if all.len() > names.len() {
            return Err(self.usage(format!("unexpected argument {:?}", all[names.len()])));
        }
        Ok(all)
    }

    /// At most `max` positionals.
    pub(crate) fn at_most(&self, max: usize) -> Result<Vec<String>, Error> {
        let all = self.all_pos();
        if all.len() > max {
            return Err(self.usage(format!("unexpected argument {:?}", all[max])));
        }
        Ok(all)
    }
}

/// What a command does: parse its words against a spec and call the handler, or hand the
/// words to a nested group (`tasks artifacts`, `admin users`) that looks up its own table.
#[derive(Clone, Copy)]
pub(crate) enum Run {
    Cmd(&'static Spec, fn(&mut Session, &Args) -> CommandResult),
    Group(fn(&mut Session, &[String]) -> CommandResult),
}

/// One row of a group's table: the name typed, the line shown in the group's help, the action.
#[derive(Clone, Copy)]
pub(crate) struct Command {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: Run,
}

impl Command {
    pub(crate) const fn cmd(
        name: &'static str,
        summary: &'static str,
        spec: &'static Spec,
        f: fn(&mut Session, &Args) -> CommandResult,
    ) -> Self {
        Command { name, summary, run: Run::Cmd(spec, f) }
    }

    pub(crate) const fn group(
        name: &'static str,
        summary: &'static str,
        f: fn(&mut Session, &[String]) -> CommandResult,
    ) -> Self {
        Command { name, summary, run: Run::Group(f) }
    }
}

/// A group of commands (`tasks`, `groups attachments`, ...): the one table its help, lookup
/// and dispatch all read.
pub(crate) struct Group {
    pub name: &'static str,
    pub about: &'static str,
    pub commands: &'static [Command],
    /// Other names accepted for a command (old spellings), kept out of the help.
    pub aliases: &'static [(&'static str, &'static str)],
}

impl Group {
    pub(crate) fn help(&self) -> String {
        let mut s = format!("{}\n\nUsage: {} <COMMAND>\n\nCommands:\n", self.about, self.name);
        s.push_str(&self.command_lines());
        s.push_str(&format!("\nSee `{} <COMMAND> --help` for a command's options.\n", self.name));
        s
    }

    /// One aligned `  name  summary` line per command.
    pub(crate) fn command_lines(&self) -> String {
        let width = self.commands.iter().map(|c| c.name.len()).max().unwrap_or(0);
        self.commands.iter().map(|c| format!("  {:width$}  {}\n", c.name, c.summary)).collect()
    }

    /// Splits off the subcommand; Ok(None) when help was asked for (and printed).
    fn sub<'a>(&self, words: &'a [String]) -> Result<Option<(&'a str, &'a [String])>, Error> {
        match words.first().map(String::as_str) {
            None => Err(Error::Usage(format!("{}: a command is required\n\n{}", self.name, self.help()))),
            Some("-h" | "--help" | "help") => {
                print!("{}", self.help());
                Ok(None)
            }
            Some(w) => Ok(Some((w, &words[1..]))),
        }
    }

    fn find(&self, w: &str) -> Option<&'static Command> {
        let name = self.aliases.iter().find(|(alias, _)| *alias == w).map_or(w, |(_, name)| *name);
        self.commands.iter().find(|c| c.name == name)
    }

    fn unknown(&self, w: &str) -> Error {
        let names: Vec<&str> = self.commands.iter().map(|c| c.name).collect();
        Error::Usage(format!(
            "{}: unknown command {w:?}; expected one of {} (see `{} --help`)",
            self.name,
            names.join(", "),
            self.name
        ))
    }

    /// Runs `words` (the command's name first): help, lookup, parsing and the handler.
    pub(crate) fn run(&self, s: &mut Session, words: &[String]) -> CommandResult {
        let Some((name, rest)) = self.sub(words)? else { return Ok(Flow::Continue) };
        let command = self.find(name).ok_or_else(|| self.unknown(name))?;
        match command.run {
            Run::Cmd(spec, handler) => match parse(spec, rest)? {
                Some(a) => handler(s, &a),
                None => Ok(Flow::Continue),
            },
            Run::Group(run) => run(s, rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        name: "t x",
        usage: "<A>",
        about: "test",
        flags: &[OptSpec::opt("tags", Some('t'), "TAGS", "tags"), OptSpec::flag("force", Some('f'), "force")],
    };

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_positionals_and_trailing() {
        let a =
            parse(&SPEC, &w(&["-t", "a,b", "p1", "-f", "--tags=c", "--json", "--", "echo", "-t"])).unwrap().unwrap();
        assert_eq!(a.list("tags"), vec!["a", "b", "c"]);
        assert!(a.has("force") && a.json);
        assert_eq!(a.pos, vec!["p1"]);
        assert_eq!(a.trailing, Some(w(&["echo", "-t"])));
        assert_eq!(a.all_pos(), w(&["p1", "echo", "-t"]));
    }

    #[test]
    fn values_may_start_with_a_dash() {
        let a = parse(&SPEC, &w(&["-t", "-500MB", "g", "-1GiB"])).unwrap().unwrap();
        assert_eq!(a.value("tags"), Some("-500MB"));
        assert_eq!(a.pos, vec!["g", "-1GiB"]);
    }

    /// The words of each mistake, as they were before flags went through `crate::opts`.
    #[test]
    fn usage_errors_keep_their_wording() {
        let cases: [(&[&str], &str); 3] = [
            (&["--nope"], "t x: unknown option --nope (see `t x --help`)"),
            (&["-z"], "t x: unknown option -z (see `t x --help`)"),
            (&["-t"], "t x: -t needs a value <TAGS> (see `t x --help`)"),
        ];
        for (bad, want) in cases {
            match parse(&SPEC, &w(bad)) {
                Err(Error::Usage(m)) => assert_eq!(m, want),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let help = SPEC.help();
        assert!(
            help.contains("  -t, --tags <TAGS>\n          tags\n  -f, --force\n          force\n      --json\n"),
            "{help}"
        );
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for bad in [&["--nope"][..], &["-t"], &["-z"]] {
            match parse(&SPEC, &w(bad)) {
                Err(Error::Usage(m)) => assert!(m.contains("t x") && m.contains("--help"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let a = parse(&SPEC, &w(&["a", "b"])).unwrap().unwrap();
        assert!(a.exact(&["A"]).is_err());
        assert!(a.exact(&["A", "B", "C"]).is_err());
    }
}

/// The module documentation's example, run (doc tests see only the public API).
#[cfg(test)]
mod doc_example {
    #[test]
    fn runs() {
        use crate::client::args::{parse, Spec};
        use crate::opts::OptSpec;
        const SPEC: Spec = Spec {
            name: "tasks get",
            usage: "<UUID>",
            about: "Show a task",
            flags: &[OptSpec::opt("group", Some('g'), "GROUP", "The group")],
        };
        let words: Vec<String> = ["-g", "g1", "abc"].iter().map(|s| s.to_string()).collect();
        let a = parse(&SPEC, &words).unwrap().unwrap();
        assert_eq!(a.value("group"), Some("g1"));
        assert_eq!(a.pos, vec!["abc"]);
    }
}

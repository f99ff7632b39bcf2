//! Starting one worker: its command line from the flags given to the manager (with `{i}`
//! expanded), checked as `mito worker` would check it, and the password handed over on
//! the worker's stdin, never on its command line or in its environment.
//!
//! ```text
//! mito manager run 2 -u alice -p pw --tags gpu{i}
//!   → mito worker -u=alice --tags=gpu0 --password-stdin   (stdin: "pw\n", then closed)
//!   → mito worker -u=alice --tags=gpu1 --password-stdin
//! ```

use super::ManagerError;
use crate::config::{Layers, Source, WorkerConfig};
use crate::opts::{parse_opts, OptSpec, Parsed};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The worker flags given to `spawn` or `run`, and what they need to start each worker.
pub(super) struct Launch {
    /// The worker options in the order given, the password ones included.
    opts: Vec<(OptSpec, Option<String>)>,
    config: Option<String>,
    /// Handed to every worker on its stdin.
    password: Option<String>,
    exe: PathBuf,
}

/// Replaces every `{i}` with the worker's index.
pub(super) fn expand(value: &str, index: usize) -> String {
    value.replace("{i}", &index.to_string())
}

impl Launch {
    /// Checks the flags for worker 0 and takes the password out of them (reading it from
    /// stdin with `--password-stdin`).
    pub(super) fn new(opts: Vec<(OptSpec, Option<String>)>, config: Option<String>) -> Result<Launch, ManagerError> {
        let exe = std::env::current_exe()
            .map_err(|e| ManagerError::Start(format!("cannot find the mito binary to start workers with: {e}")))?;
        let mut launch = Launch { opts, config, password: None, exe };
        let (cfg, layers) = launch.config(0)?;
        let from_cli_or_env = matches!(layers.source("password"), Some(Source::Cli(_) | Source::Env(_)));
        launch.password = match cfg.password {
            Some(p) if from_cli_or_env => Some(p),
            // A password in a config file stays there: the worker reads that file itself.
            Some(_) => None,
            None if cfg.password_stdin => {
                Some(crate::worker::read_password_stdin().map_err(|e| ManagerError::Config(e.to_string()))?)
            }
            None => None,
        };
        Ok(launch)
    }

    /// The settings worker `index` will run with, as `mito worker` would load them.
    pub(super) fn config(&self, index: usize) -> Result<(WorkerConfig, Layers), ManagerError> {
        let args = self.expanded(index, true);
        let mut parser = lexopt::Parser::from_args(args);
        let parsed = parse_opts(&mut parser, "mito worker", crate::worker::SPECS, false)
            .map_err(|e| ManagerError::Usage(e.to_string()))?;
        let Parsed::Run(parsed) = parsed else {
            return Err(ManagerError::Usage("--help and --version are not worker flags here".into()));
        };
        let config = self.config.as_deref().map(|c| PathBuf::from(expand(c, index)));
        let layers = Layers::load("worker", WorkerConfig::KEYS, config.as_deref(), parsed.values)
            .map_err(|e| ManagerError::Config(e.to_string()))?;
        let cfg = WorkerConfig::from_layers(&layers).map_err(|e| ManagerError::Config(e.to_string()))?;
        Ok((cfg, layers))
    }

    /// The worker's flags with `{i}` expanded; without the password flags unless `all`.
    fn expanded(&self, index: usize, all: bool) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = &self.config {
            args.push(format!("--config={}", expand(c, index)));
        }
        for (spec, value) in &self.opts {
            let secret = matches!(spec.long, "password" | "password-stdin");
            if secret && !all && self.password.is_some() {
                continue;
            }
            match value {
                Some(v) => args.push(format!("--{}={}", spec.long, expand(v, index))),
                None => args.push(format!("--{}", spec.long)),
            }
        }
        args
    }

    /// The command that starts worker `index` in a session of its own, its cache in `cache`.
    /// With `die_with_parent`, it gets SIGTERM when the manager dies (the supervisor's
    /// workers); otherwise it outlives the manager (spawned workers).
    pub(super) fn command(&self, index: usize, cache: &Path, die_with_parent: bool) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker").args(self.expanded(index, false));
        if self.password.is_some() {
            cmd.arg("--password-stdin").stdin(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null());
        }
        cmd.env_remove("MITO_PASSWORD").env("XDG_CACHE_HOME", cache).env("NO_COLOR", "1");
        // SAFETY: setsid and prctl are async-signal-safe and touch no memory of ours.
        unsafe {
            cmd.pre_exec(move || {
                // A session of its own: no terminal signal (Ctrl-C, hang-up) reaches it
                // directly, only what the manager sends or forwards.
                libc::setsid();
                if die_with_parent {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Gives a just-started worker its password on stdin and closes it.
    pub(super) fn hand_over(&self, child: &mut Child) {
        if let (Some(p), Some(mut stdin)) = (&self.password, child.stdin.take()) {
            // A worker that died at once cannot read it; its exit status says why.
            let _ = stdin.write_all(format!("{p}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(long: &str) -> OptSpec {
        *crate::worker::SPECS.iter().find(|s| s.long == long).unwrap()
    }

    #[test]
    fn the_password_leaves_the_command_line_and_index_placeholders_expand() {
        let opts = vec![
            (spec("user"), Some("alice".to_string())),
            (spec("password"), Some("s3cret".to_string())),
            (spec("tags"), Some("gpu,gpu{i}".to_string())),
            (spec("env"), Some("CUDA_VISIBLE_DEVICES={i}".to_string())),
        ];
        let launch = Launch::new(opts, None).unwrap();
        let cmd = launch.command(2, Path::new("/tmp/c"), false);
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        assert!(args.contains(&"--tags=gpu,gpu2".to_string()), "{args:?}");
        assert!(args.contains(&"--env=CUDA_VISIBLE_DEVICES=2".to_string()), "{args:?}");
        assert!(args.contains(&"--password-stdin".to_string()), "{args:?}");
        let (cfg, _) = launch.config(3).unwrap();
        assert_eq!(cfg.tags, vec!["gpu", "gpu3"]);
        assert_eq!(cfg.env, vec![("CUDA_VISIBLE_DEVICES".to_string(), "3".to_string())]);
    }

    #[test]
    fn a_bad_worker_flag_is_refused_before_anything_starts() {
        let e = Launch::new(vec![(spec("lifetime"), Some("forever".into()))], None).err().unwrap();
        assert!(matches!(e, ManagerError::Config(ref m) if m.contains("lifetime")), "{e}");
    }
}

//! Logging setup shared by the coordinator and the worker: stderr always, plus an optional
//! file that is either exactly `log_path` or a daily-rotated file in a directory.
//!
//! ```no_run
//! use mito::logging::{init, FileTarget};
//! init(Some(FileTarget::Daily { dir: "/tmp/logs".into(), prefix: "127.0.0.1:5000.log".into() })).unwrap();
//! log::info!("started");
//! ```
//!
//! The level comes from `MITO_LOG` (or `RUST_LOG` when it is a bare level): error, warn,
//! info (the default), debug or trace.

use log::LevelFilter;
use simplelog::{ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

/// Where the log file goes, if anywhere.
#[derive(Debug, Clone)]
pub enum FileTarget {
    /// Exactly this file, appended to, never rotated.
    Exact(PathBuf),
    /// `<dir>/<prefix>.YYYY-MM-DD`, a new file each UTC day.
    Daily { dir: PathBuf, prefix: String },
}

fn level() -> LevelFilter {
    for var in ["MITO_LOG", "RUST_LOG"] {
        if let Ok(v) = std::env::var(var) {
            if let Ok(l) = v.trim().parse::<LevelFilter>() {
                return l;
            }
        }
    }
    LevelFilter::Info
}

/// Installs the global logger. Fails only if the log file cannot be opened.
pub fn init(file: Option<FileTarget>) -> Result<(), String> {
    let level = level();
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .add_filter_ignore_str("tokio_postgres")
        .add_filter_ignore_str("postgres")
        .add_filter_ignore_str("tiny_http")
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .set_time_format_rfc3339()
        .build();
    use std::io::IsTerminal;
    let color = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![TermLogger::new(level, config.clone(), TerminalMode::Stderr, color)];
    match file {
        Some(FileTarget::Exact(path)) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create log directory {}: {e}", parent.display()))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            loggers.push(WriteLogger::new(level, config, f));
        }
        Some(FileTarget::Daily { dir, prefix }) => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
            let mut w = DailyFile { dir, prefix, date: String::new(), file: None };
            w.rotate().map_err(|e| format!("cannot open log file: {e}"))?;
            loggers.push(WriteLogger::new(level, config, w));
        }
        None => {}
    }
    CombinedLogger::init(loggers).map_err(|e| format!("cannot install the logger: {e}"))
}

/// A file that starts anew each UTC day.
struct DailyFile {
    dir: PathBuf,
    prefix: String,
    date: String,
    file: Option<File>,
}

impl DailyFile {
    fn today() -> String {
        let ts = crate::api::time::format_timestamp(SystemTime::now());
        ts[..10].to_string()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let today = Self::today();
        if self.file.is_none() || today != self.date {
            let path = self.dir.join(format!("{}.{today}", self.prefix));
            self.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
            self.date = today;
        }
        Ok(())
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rotate()?;
        self.file.as_mut().expect("rotate opened it").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

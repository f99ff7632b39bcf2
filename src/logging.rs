//! Logging setup shared by the coordinator and the worker: stderr always, plus an optional
//! file that is either exactly `log_path` or a daily-rotated file in a directory.
//!
//! ```ignore
//! use mito::logging::{init, FileTarget};
//! init(Some(FileTarget::Daily { dir: "/tmp/logs".into(), prefix: "127.0.0.1:5000.log".into() })).unwrap();
//! log::info!("started");
//! ```
//!
//! The level comes from `MITO_LOG` (or `RUST_LOG` when it is a bare level): error, warn,
//! info (the default), debug or trace.

use crate::private_files;
use log::LevelFilter;
use simplelog::{ColorChoice, CombinedLogger, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

/// Where the log file goes, if anywhere.
#[derive(Debug, Clone)]
pub(crate) enum FileTarget {
    /// Exactly this file, appended to, never rotated.
    Exact(PathBuf),
    /// `<dir>/<prefix>.YYYY-MM-DD`, a new file each UTC day.
    Daily { dir: PathBuf, prefix: String },
    /// Like `Daily`, keeping only the `keep` newest files.
    DailyKeep { dir: PathBuf, prefix: String, keep: usize },
}

/// Why logging could not be set up.
#[derive(Debug)]
pub(crate) enum LogError {
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The log file (`path`, or today's file in a rotated directory) cannot be opened.
    Open {
        path: Option<PathBuf>,
        source: std::io::Error,
    },
    /// Another logger is installed already.
    Install(log::SetLoggerError),
    /// [`attach_file`] without [`init_late`] first.
    NotLate,
    /// [`attach_file`] called twice.
    AlreadyAttached,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::CreateDir { path, source } => {
                write!(f, "cannot create log directory {}: {source}", path.display())
            }
            LogError::Open { path: Some(path), source } => {
                write!(f, "cannot open log file {}: {source}", path.display())
            }
            LogError::Open { path: None, source } => write!(f, "cannot open log file: {source}"),
            LogError::Install(e) => write!(f, "cannot install the logger: {e}"),
            LogError::NotLate => f.write_str("the logger was not installed with init_late"),
            LogError::AlreadyAttached => f.write_str("a log file is already attached"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::CreateDir { source, .. } | LogError::Open { source, .. } => Some(source),
            LogError::Install(e) => Some(e),
            LogError::NotLate | LogError::AlreadyAttached => None,
        }
    }
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
pub(crate) fn init(file: Option<FileTarget>) -> Result<(), LogError> {
    let level = level();
    let config = config();
    let color = color();
    let mut loggers: Vec<Box<dyn SharedLogger>> =
        vec![TermLogger::new(level, config.clone(), TerminalMode::Stderr, color)];
    match file {
        Some(FileTarget::Exact(path)) => {
            let f = open_exact(&path)?;
            loggers.push(WriteLogger::new(level, config, f));
        }
        Some(FileTarget::Daily { dir, prefix }) => {
            loggers.push(WriteLogger::new(level, config, daily(dir, prefix, 0)?))
        }
        Some(FileTarget::DailyKeep { dir, prefix, keep }) => {
            loggers.push(WriteLogger::new(level, config, daily(dir, prefix, keep)?))
        }
        None => {}
    }
    CombinedLogger::init(loggers).map_err(LogError::Install)
}

/// A file that starts anew each UTC day.
struct DailyFile {
    dir: PathBuf,
    prefix: String,
    date: String,
    file: Option<File>,
    /// How many files to keep (0: all).
    keep: usize,
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
            self.file = Some(private_files::append(&path)?);
            self.date = today;
            if self.keep > 0 {
                self.prune();
            }
        }
        Ok(())
    }

    /// Removes all but the `keep` newest files (the date suffix sorts by age).
    fn prune(&self) {
        let start = format!("{}.", self.prefix);
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let mut names: Vec<String> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.strip_prefix(&start).is_some_and(|d| d.len() == 10 && d.as_bytes()[4] == b'-'))
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(self.keep);
        for n in &names[..excess] {
            let _ = std::fs::remove_file(self.dir.join(n));
        }
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

/// Installs a logger that writes to stderr now and to a file attached later with
/// [`attach_file`] (the worker learns its file name only once it is registered).
pub(crate) fn init_late() -> Result<(), LogError> {
    let level = level();
    let logger: &'static LateLogger = Box::leak(Box::new(LateLogger {
        level,
        term: TermLogger::new(level, config(), TerminalMode::Stderr, color()),
        file: std::sync::OnceLock::new(),
    }));
    log::set_logger(logger).map_err(LogError::Install)?;
    log::set_max_level(level);
    let _ = LATE.set(logger);
    Ok(())
}

/// Adds the file sink to the logger of [`init_late`]; every line gets `prefix` when one is given.
pub(crate) fn attach_file(target: FileTarget, prefix: Option<String>) -> Result<(), LogError> {
    let writer: Box<dyn Write + Send> = match target {
        FileTarget::Exact(path) => Box::new(open_exact(&path)?),
        FileTarget::Daily { dir, prefix } => Box::new(daily(dir, prefix, 0)?),
        FileTarget::DailyKeep { dir, prefix, keep } => Box::new(daily(dir, prefix, keep)?),
    };
    let writer: Box<dyn Write + Send> = match prefix {
        Some(p) => Box::new(LinePrefix { inner: writer, prefix: p, at_start: true }),
        None => writer,
    };
    let Some(late) = LATE.get() else {
        return Err(LogError::NotLate);
    };
    let sink = WriteLogger::new(late.level, config(), writer);
    late.file.set(sink).map_err(|_| LogError::AlreadyAttached)
}

/// The log file at `path`, 0600 (it holds secrets such as the coordinator's shutdown
/// secret); directories created for it are 0700.
fn open_exact(path: &std::path::Path) -> Result<File, LogError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        private_files::create_dir_all(parent)
            .map_err(|source| LogError::CreateDir { path: parent.to_path_buf(), source })?;
    }
    private_files::append(path).map_err(|source| LogError::Open { path: Some(path.to_path_buf()), source })
}

fn daily(dir: PathBuf, prefix: String, keep: usize) -> Result<DailyFile, LogError> {
    private_files::create_dir_all(&dir).map_err(|source| LogError::CreateDir { path: dir.clone(), source })?;
    let mut w = DailyFile { dir, prefix, date: String::new(), file: None, keep };
    w.rotate().map_err(|source| LogError::Open { path: None, source })?;
    Ok(w)
}

fn config() -> simplelog::Config {
    ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .add_filter_ignore_str("tokio_postgres")
        .add_filter_ignore_str("postgres")
        // tiny_http stays audible: the vendored copy logs only what an operator needs
        // (accept failures such as running out of file descriptors, contained panics).
        .add_filter_ignore_str("ureq")
        .add_filter_ignore_str("rustls")
        .set_time_format_rfc3339()
        .build()
}

fn color() -> ColorChoice {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    }
}

type FileSink = std::sync::OnceLock<Box<WriteLogger<Box<dyn Write + Send>>>>;

/// The late logger, reachable from `attach_file`.
static LATE: std::sync::OnceLock<&'static LateLogger> = std::sync::OnceLock::new();

struct LateLogger {
    level: LevelFilter,
    term: Box<TermLogger>,
    file: FileSink,
}

impl log::Log for LateLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &log::Record) {
        self.term.log(r);
        if let Some(f) = self.file.get() {
            f.log(r);
        }
    }
    fn flush(&self) {
        self.term.flush();
        if let Some(f) = self.file.get() {
            f.flush();
        }
    }
}

/// Puts `prefix` at the start of every line written through it.
struct LinePrefix {
    inner: Box<dyn Write + Send>,
    prefix: String,
    at_start: bool,
}

impl Write for LinePrefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = Vec::with_capacity(buf.len() + self.prefix.len());
        for &b in buf {
            if self.at_start {
                out.extend_from_slice(self.prefix.as_bytes());
            }
            out.push(b);
            self.at_start = b == b'\n';
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_prefix_marks_every_line_once() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut p = LinePrefix { inner: Box::new(W(buf.clone())), prefix: "[w] ".into(), at_start: true };
        p.write_all(b"one ").unwrap();
        p.write_all(b"line\ntwo\n").unwrap();
        assert_eq!(String::from_utf8(buf.lock().unwrap().clone()).unwrap(), "[w] one line\n[w] two\n");
    }

    #[test]
    fn daily_files_keep_only_the_newest() {
        let dir = std::env::temp_dir().join(format!("mito-logkeep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for d in ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"] {
            std::fs::write(dir.join(format!("workers.log.{d}")), "x").unwrap();
        }
        std::fs::write(dir.join("other.log"), "x").unwrap();
        let _w = daily(dir.clone(), "workers.log".into(), 3).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(
            left.contains(&"other.log".to_string()) && !left.contains(&"workers.log.2020-01-02".to_string()),
            "{left:?}"
        );
    }
}

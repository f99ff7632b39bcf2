//! Instructions the coordinator executes per task, counted by valgrind's callgrind: a
//! count that, unlike time, is the same on any machine running the same binary.
//!
//! The coordinator runs under `valgrind --tool=callgrind --callgrind-out-file=DIR/callgrind.out`;
//! the bench zeroes its counters, runs the end-to-end load of N tasks, dumps, runs 5N
//! tasks, dumps again, and divides the difference of the two totals by 4N. Whatever both
//! runs do alike (logging in, registering workers, background work of the first seconds)
//! cancels out.

use super::error::BenchError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The total of the first event (Ir, instructions executed) in a callgrind dump: its
/// `summary:` line, or `totals:` when an older valgrind wrote no summary.
pub(super) fn total_instructions(dump: &str) -> Option<u64> {
    let line = |key: &str| dump.lines().find_map(|l| l.strip_prefix(key));
    line("summary:").or_else(|| line("totals:"))?.split_whitespace().next()?.parse().ok()
}

/// Instructions per task from the totals of an `n`-task run and a `large`-task run.
pub(super) fn per_task(small_total: u64, large_total: u64, n: usize, large: usize) -> Option<f64> {
    (large > n && large_total >= small_total).then(|| (large_total - small_total) as f64 / (large - n) as f64)
}

/// A coordinator running under callgrind, dumping into `dir`.
pub(super) struct Callgrind {
    pub pid: u32,
    pub dir: PathBuf,
}

impl Callgrind {
    fn control(&self, flag: &str) -> Result<(), BenchError> {
        let out = Command::new("callgrind_control")
            .args([flag, &self.pid.to_string()])
            .output()
            .map_err(|e| BenchError::Tool { tool: "callgrind_control", reason: e.to_string() })?;
        if out.status.success() {
            Ok(())
        } else {
            let reason = format!("{} (is pid {} running under valgrind --tool=callgrind?)", out.status, self.pid);
            Err(BenchError::Tool { tool: "callgrind_control", reason })
        }
    }

    fn dumps(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("callgrind.out")))
            .collect()
    }

    /// Zeroes the counters.
    pub(super) fn zero(&self) -> Result<(), BenchError> {
        self.control("-z")
    }

    /// Dumps the counters since the last zero or dump; returns the new file.
    pub(super) fn dump(&self) -> Result<PathBuf, BenchError> {
        let before = self.dumps();
        self.control("-d")?;
        // callgrind_control returns once the request is taken; the file follows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(p) = self.dumps().into_iter().find(|p| !before.contains(p)) {
                // Written once its totals line is there (the last line of a dump).
                if std::fs::read_to_string(&p).ok().as_deref().and_then(total_instructions).is_some() {
                    return Ok(p);
                }
            }
            if std::time::Instant::now() > deadline {
                let reason = format!("no new dump in {} after 60 s", self.dir.display());
                return Err(BenchError::Tool { tool: "callgrind_control", reason });
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The instruction total of a dump.
    pub(super) fn total(dump: &Path) -> Result<u64, BenchError> {
        let text = std::fs::read_to_string(dump)
            .map_err(|e| BenchError::Tool { tool: "callgrind", reason: format!("{}: {e}", dump.display()) })?;
        total_instructions(&text).ok_or_else(|| BenchError::Tool {
            tool: "callgrind",
            reason: format!("{} has no summary: or totals: line", dump.display()),
        })
    }

    /// Writes `callgrind_annotate`'s per-function listing of a dump to `out`.
    pub(super) fn annotate(dump: &Path, out: &Path) -> Result<(), BenchError> {
        let tool = |reason: String| BenchError::Tool { tool: "callgrind_annotate", reason };
        let file = std::fs::File::create(out).map_err(|e| tool(format!("{}: {e}", out.display())))?;
        let status = Command::new("callgrind_annotate")
            .args(["--threshold=100", "--inclusive=no"])
            .arg(dump)
            .stdout(file)
            .status()
            .map_err(|e| tool(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(tool(status.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 77\ncmd:  mito coordinator\n\
        part: 1\n\ndesc: Timerange: Basic block 0 - 123\ntrigger: Program termination\n\npositions: line\n\
        events: Ir\nsummary: 326104522\n\n\nfn=(1) main\n0 12\n\ntotals: 326104522\n";

    #[test]
    fn the_total_is_the_summary_or_else_the_totals_line() {
        assert_eq!(total_instructions(DUMP), Some(326_104_522));
        assert_eq!(total_instructions("events: Ir\nfn=(1) main\n0 5\ntotals: 5 9\n"), Some(5));
        assert_eq!(total_instructions("events: Ir\nfn=(1) main\n0 5\n"), None);
    }

    #[test]
    fn per_task_divides_the_difference_by_the_extra_tasks() {
        assert_eq!(per_task(1_000_000, 1_000_000 + 4 * 500 * 326_000, 500, 2500), Some(326_000.0));
        assert_eq!(per_task(10, 5, 500, 2500), None, "a smaller second total is a broken measurement");
        assert_eq!(per_task(10, 50, 500, 500), None);
    }
}

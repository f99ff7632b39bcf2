//! What the kernel says about the coordinator, from /proc (Linux): CPU time (user and
//! system), resident memory and context switches.
//!
//! Context switches are counted per thread (`/proc/PID/task/TID/status`): the process's
//! own `status` shows only its main thread, which in the coordinator mostly sleeps.

use std::collections::HashMap;

/// One reading of a process's counters.
pub(super) struct ProcSample {
    user_ticks: u64,
    system_ticks: u64,
    /// Voluntary + involuntary context switches, by thread id.
    switches: HashMap<u32, u64>,
}

/// What a process spent between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProcDelta {
    pub cpu_secs: f64,
    pub system_secs: f64,
    /// Context switches of the threads alive at the later sample (a thread that ended in
    /// between takes its switches with it; the coordinator's connection threads outlive
    /// a measured run).
    pub switches: u64,
}

/// utime and stime (fields 14 and 15 of `/proc/PID/stat`), in clock ticks.
pub(super) fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may hold spaces and parentheses: fields after it start
    // after the last ") ".
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut f = rest.split_whitespace().skip(11);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// voluntary_ctxt_switches + nonvoluntary_ctxt_switches of a `status` file.
pub(super) fn status_switches(status: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// VmRSS of a `status` file, in KiB.
pub(super) fn status_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

/// The process's resident memory in KiB; None without a pid or when it cannot be read.
pub(super) fn rss_kib(pid: Option<u32>) -> Option<u64> {
    status_rss_kib(&std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?)
}

/// The process's thread count; None without a pid or when it cannot be read.
pub(super) fn threads(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Threads:"))?.split_whitespace().next()?.parse().ok()
}

fn ticks_per_sec() -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as f64)
}

impl ProcSample {
    /// Reads the process's counters; None without a pid or when /proc cannot be read.
    pub(super) fn take(pid: Option<u32>) -> Option<ProcSample> {
        let pid = pid?;
        let (user_ticks, system_ticks) = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        let mut switches = HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            // A thread may end between listing and reading: skip it.
            if let Some(n) =
                std::fs::read_to_string(entry.path().join("status")).ok().as_deref().and_then(status_switches)
            {
                switches.insert(tid, n);
            }
        }
        Some(ProcSample { user_ticks, system_ticks, switches })
    }

    /// What was spent from `self` to `later`.
    pub(super) fn until(&self, later: &ProcSample) -> Option<ProcDelta> {
        let hz = ticks_per_sec()?;
        let user = later.user_ticks.saturating_sub(self.user_ticks);
        let system = later.system_ticks.saturating_sub(self.system_ticks);
        Some(ProcDelta {
            cpu_secs: (user + system) as f64 / hz,
            system_secs: system as f64 / hz,
            switches: switch_delta(&self.switches, &later.switches),
        })
    }
}

/// Switches made between two per-thread readings: a thread first seen in `later` counts
/// from zero.
fn switch_delta(earlier: &HashMap<u32, u64>, later: &HashMap<u32, u64>) -> u64 {
    later.iter().map(|(tid, n)| n.saturating_sub(earlier.get(tid).copied().unwrap_or(0))).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (mito (x) y) S 1 4242 4242 0 -1 4194560 2337 0 0 0 1234 567 0 0 20 0 9 0 100 0";
        assert_eq!(stat_ticks(stat), Some((1234, 567)));
        assert_eq!(stat_ticks("4242 (mito) S 1 2"), None);
    }

    #[test]
    fn status_fields_are_summed_and_read() {
        let status = "Name:\tmito\nVmRSS:\t   7312 kB\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_switches(status), Some(127));
        assert_eq!(status_rss_kib(status), Some(7312));
        assert_eq!(status_switches("Name:\tmito\nvoluntary_ctxt_switches:\t1\n"), None);
    }

    #[test]
    fn switches_count_new_threads_from_zero_and_ignore_ended_ones() {
        let earlier = HashMap::from([(1, 100), (2, 50), (3, 10)]);
        let later = HashMap::from([(1, 130), (2, 50), (4, 5)]);
        assert_eq!(switch_delta(&earlier, &later), 30 + 5);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let pid = Some(std::process::id());
        let a = ProcSample::take(pid).expect("/proc is readable");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        let d = a.until(&ProcSample::take(pid).unwrap()).unwrap();
        assert!(d.cpu_secs >= d.system_secs && d.switches >= 1, "{d:?}");
        assert!(rss_kib(pid).unwrap() > 0);
    }
}

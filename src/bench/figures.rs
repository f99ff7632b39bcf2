//! The figures of one bench run, their medians over several runs, and how two
//! coordinators' figures are compared (`--against`).

/// What one run measured; None where the run was skipped or could not measure it.
#[derive(Debug, Clone, Default)]
pub(super) struct Figures {
    pub batch_tasks_per_sec: Option<f64>,
    pub array_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub end_to_end_tasks_per_sec: Option<f64>,
    pub cpu_us_per_task: Option<f64>,
    pub system_us_per_task: Option<f64>,
    pub switches_per_task: Option<f64>,
    pub statements_per_task: Option<f64>,
    pub transactions_per_task: Option<f64>,
    pub rss_idle_mb: Option<f64>,
    pub rss_peak_mb: Option<f64>,
}

/// A row of the comparison: its name, how to read it, and where it is in [`Figures`].
struct Row {
    name: &'static str,
    unit: &'static str,
    higher_is_better: bool,
    get: fn(&Figures) -> Option<f64>,
}

const ROWS: &[Row] = &[
    Row { name: "batch submit", unit: "tasks/s", higher_is_better: true, get: |f| f.batch_tasks_per_sec },
    Row { name: "array submit", unit: "ms", higher_is_better: false, get: |f| f.array_ms },
    Row { name: "end to end", unit: "tasks/s", higher_is_better: true, get: |f| f.end_to_end_tasks_per_sec },
    Row { name: "submit -> fetch latency p50", unit: "ms", higher_is_better: false, get: |f| f.latency_p50_ms },
    Row { name: "submit -> fetch latency p90", unit: "ms", higher_is_better: false, get: |f| f.latency_p90_ms },
    Row { name: "coordinator CPU per task", unit: "us", higher_is_better: false, get: |f| f.cpu_us_per_task },
    Row { name: "  of it system CPU", unit: "us", higher_is_better: false, get: |f| f.system_us_per_task },
    Row { name: "context switches per task", unit: "", higher_is_better: false, get: |f| f.switches_per_task },
    Row { name: "statements per task", unit: "", higher_is_better: false, get: |f| f.statements_per_task },
    Row { name: "transactions per task", unit: "", higher_is_better: false, get: |f| f.transactions_per_task },
    Row { name: "resident memory, idle", unit: "MB", higher_is_better: false, get: |f| f.rss_idle_mb },
    Row { name: "resident memory, peak", unit: "MB", higher_is_better: false, get: |f| f.rss_peak_mb },
];

/// The median of the values that are there (the upper one of an even count).
pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

/// A figure with as many digits as it needs: 84,000 / 490 / 4.4 / 0.62.
pub(super) fn figure(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if x < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `a / b` as a ratio: `4.9x`, `0.30x`; `-` when it cannot be formed.
pub(super) fn ratio(a: f64, b: f64) -> String {
    if !(a.is_finite() && b.is_finite()) || b == 0.0 {
        return "-".into();
    }
    let r = a / b;
    if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 1.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// The end-to-end rate as a share of what the database alone commits per second.
pub(super) fn share_of_ceiling(tasks_per_sec: f64, ceiling_tps: f64) -> String {
    if ceiling_tps <= 0.0 {
        return "-".into();
    }
    format!("{:.0}%", 100.0 * tasks_per_sec / ceiling_tps)
}

/// The comparison table: for each figure both medians over `a` and `b`, and `a / b`.
pub(super) fn comparison(a_name: &str, a: &[Figures], b_name: &str, b: &[Figures]) -> String {
    let med = |runs: &[Figures], get: fn(&Figures) -> Option<f64>| median(runs.iter().filter_map(get).collect());
    let mut out = format!(
        "{a_name} / {b_name}, medians of {} and {} interleaved runs (ratio > 1: {a_name} has more of it):\n",
        a.len(),
        b.len()
    );
    for row in ROWS {
        let (Some(x), Some(y)) = (med(a, row.get), med(b, row.get)) else { continue };
        let unit = if row.unit.is_empty() { String::new() } else { format!(" {}", row.unit) };
        let better = if row.higher_is_better { "higher is better" } else { "lower is better" };
        out.push_str(&format!(
            "  {:<28} {:>10}{unit} / {:>10}{unit} = {:>6} ({better})\n",
            row.name,
            figure(x),
            figure(y),
            ratio(x, y)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_the_digits_they_need() {
        assert_eq!(figure(84_213.4), "84,213");
        assert_eq!(figure(1_234_567.0), "1,234,567");
        assert_eq!(figure(490.4), "490");
        assert_eq!(figure(21.46), "21.5");
        assert_eq!(figure(1.234), "1.23");
        assert_eq!(figure(-2500.0), "-2,500");
    }

    #[test]
    fn ratios_round_to_two_significant_digits_and_refuse_zero() {
        assert_eq!(ratio(2400.0, 490.0), "4.9x");
        assert_eq!(ratio(84_000.0, 990.0), "85x");
        assert_eq!(ratio(1.3, 4.4), "0.30x");
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(ratio(f64::NAN, 1.0), "-");
        assert_eq!(share_of_ceiling(2400.0, 6000.0), "40%");
        assert_eq!(share_of_ceiling(2400.0, 0.0), "-");
    }

    #[test]
    fn medians_ignore_missing_figures() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn the_comparison_lists_figures_both_sides_have() {
        let run = |tps: f64, mem: Option<f64>| Figures {
            end_to_end_tasks_per_sec: Some(tps),
            rss_idle_mb: mem,
            ..Figures::default()
        };
        let t = comparison("mito", &[run(2400.0, Some(7.0)), run(2000.0, Some(7.2))], "mitosis", &[run(490.0, None)]);
        assert!(t.starts_with("mito / mitosis, medians of 2 and 1 interleaved runs"), "{t}");
        assert!(t.contains("end to end") && t.contains("2,400 tasks/s") && t.contains("490 tasks/s"), "{t}");
        assert!(t.contains("4.9x (higher is better)"), "{t}");
        assert!(!t.contains("resident memory"), "no memory figure for mitosis: {t}");
    }
}

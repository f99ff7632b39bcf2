//! The Prometheus text exposition format, written by hand: families, samples, labels
//! and numbers as the format wants them escaped and spelled.

use super::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

pub(super) fn family(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(w, "# TYPE {name} {kind}");
}

pub(super) fn counter(w: &mut String, name: &str, help: &str, v: u64) {
    family(w, name, "counter", help);
    sample(w, name, &[], v as f64);
}

pub(super) fn gauge(w: &mut String, name: &str, help: &str, v: f64) {
    family(w, name, "gauge", help);
    sample(w, name, &[], v);
}

pub(super) fn histogram(w: &mut String, name: &str, labels: &[(&str, &str)], bounds: &[f64], h: &Histogram) {
    let mut cumulative = 0u64;
    let mut le = String::new();
    for (i, b) in h.buckets.iter().enumerate().take(bounds.len() + 1) {
        cumulative += b.load(Relaxed);
        le.clear();
        match bounds.get(i) {
            Some(bound) => {
                let _ = write!(le, "{bound}");
            }
            None => le.push_str("+Inf"),
        }
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push(("le", &le));
        sample(w, &format!("{name}_bucket"), &all, cumulative as f64);
    }
    sample(w, &format!("{name}_sum"), labels, h.sum_micros.load(Relaxed) as f64 / 1e6);
    sample(w, &format!("{name}_count"), labels, cumulative as f64);
}

pub(super) fn sample(w: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    w.push_str(name);
    if !labels.is_empty() {
        w.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                w.push(',');
            }
            let _ = write!(w, "{k}=\"{}\"", escape_label(val));
        }
        w.push('}');
    }
    let _ = writeln!(w, " {}", number(v));
}

/// Label values escape backslash, double quote and newline.
pub(super) fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Help text escapes backslash and newline.
pub(super) fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction, others as Rust prints them (which the format accepts).
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

//! How results look: JSON documents for `--json`, and the small formatting helpers the plain
//! line output shares (timestamps to the second, lists, optional values).
//!
//! ```ignore
//! print_json(&serde_json::json!({"count": 1}));   // {"count":1}
//! assert_eq!(list(&["a".into(), "b".into()]), "a, b");
//! ```

use crate::api::Timestamp;

/// One JSON document on its own line of stdout.
pub(super) fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// A timestamp to the second, in UTC: `2026-11-23 09:28:40 UTC`.
pub(super) fn ts(t: &Timestamp) -> String {
    let s = t.to_string();
    match s.split_once('.') {
        Some((head, _)) => format!("{head} UTC"),
        None => s,
    }
}

/// Items joined with commas, or `(none)`.
pub(super) fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(", ")
    }
}

/// An optional value, or `(none)`.
pub(super) fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "(none)".into())
}

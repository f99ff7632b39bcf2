//! Task arrays: the `START-END[:STEP][%K]` notation, the indices it names, and the
//! per-index task made from a template.
//!
//! ```
//! let a = mito::api::array::parse("0-9:3%2").unwrap();
//! assert_eq!(mito::api::array::indices(&a).collect::<Vec<_>>(), vec![0, 3, 6, 9]);
//! assert_eq!(a.max_running, Some(2));
//! ```

use super::{ArraySpec, SubmitTaskReq};
use uuid::Uuid;

/// Tasks one array may hold: as many as one batch submission.
pub const MAX_ARRAY_TASKS: u64 = 10_000;

/// The label every task of an array carries (`array:<id>`), by which queries and
/// cancellations select the array.
pub fn label(id: Uuid) -> String {
    format!("array:{id}")
}

/// What is wrong with an array's indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayError {
    /// Not `START-END[:STEP][%K]`.
    Shape(String),
    /// END before START, a step or cap of 0.
    Empty(String),
    /// More indices than [`MAX_ARRAY_TASKS`].
    TooMany(u64),
}

impl std::fmt::Display for ArrayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArrayError::Shape(s) => write!(f, "array {s:?} is not START-END[:STEP][%K], e.g. 0-99 or 0-99:2%5"),
            ArrayError::Empty(why) => write!(f, "the array is empty or malformed: {why}"),
            ArrayError::TooMany(n) => {
                write!(f, "the array has {n} indices; at most {MAX_ARRAY_TASKS}: split it into several arrays")
            }
        }
    }
}

impl std::error::Error for ArrayError {}

/// Parses `START-END[:STEP][%K]` (END included).
pub fn parse(s: &str) -> Result<ArraySpec, ArrayError> {
    let shape = || ArrayError::Shape(s.to_string());
    let num = |t: &str| t.trim().parse::<u64>().map_err(|_| shape());
    let (range, cap) = match s.split_once('%') {
        Some((r, k)) => (r, Some(k.trim().parse::<u32>().map_err(|_| shape())?)),
        None => (s, None),
    };
    let (range, step) = match range.split_once(':') {
        Some((r, st)) => (r, num(st)?),
        None => (range, 1),
    };
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(range)?, num(range)?),
    };
    let spec = ArraySpec { start, end, step, max_running: cap, subst: false };
    check(&spec)?;
    Ok(spec)
}

/// How many indices `a` names, or why it names none or too many.
pub fn check(a: &ArraySpec) -> Result<u64, ArrayError> {
    if a.step == 0 {
        return Err(ArrayError::Empty("the step must be at least 1".into()));
    }
    if a.end < a.start {
        return Err(ArrayError::Empty(format!("the end {} is before the start {}", a.end, a.start)));
    }
    if a.max_running == Some(0) {
        return Err(ArrayError::Empty("%K must be at least 1".into()));
    }
    let n = (a.end - a.start) / a.step + 1;
    if n > MAX_ARRAY_TASKS {
        return Err(ArrayError::TooMany(n));
    }
    Ok(n)
}

/// The indices, in order (call [`check`] first: it bounds their number).
pub fn indices(a: &ArraySpec) -> impl Iterator<Item = u64> {
    (a.start..=a.end).step_by(a.step.max(1) as usize)
}

/// The task for `index`: the template with the array's label and environment, and `{i}`
/// in its arguments replaced when `subst` is set.
pub fn task_at(template: &SubmitTaskReq, a: &ArraySpec, id: Uuid, index: u64) -> SubmitTaskReq {
    let mut t = template.clone();
    t.labels.insert(label(id));
    t.task_spec.envs.insert("MITO_ARRAY_INDEX".into(), index.to_string());
    t.task_spec.envs.insert("MITO_ARRAY_ID".into(), id.to_string());
    if a.subst {
        let i = index.to_string();
        for arg in &mut t.task_spec.args {
            if arg.contains("{i}") {
                *arg = arg.replace("{i}", &i);
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_steps_and_caps() {
        let a = parse("0-99%5").unwrap();
        assert_eq!((a.start, a.end, a.step, a.max_running), (0, 99, 1, Some(5)));
        assert_eq!(check(&a).unwrap(), 100);
        let a = parse("10-20:5").unwrap();
        assert_eq!(indices(&a).collect::<Vec<_>>(), vec![10, 15, 20]);
        assert_eq!(indices(&parse("7").unwrap()).collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn refuses_bad_arrays() {
        for bad in ["", "a-b", "5-1", "0-9:0", "0-9%0", "0-9%x", "-3"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("0-10000"), Err(ArrayError::TooMany(10_001)));
        assert!(parse("0-9999").is_ok());
    }
}

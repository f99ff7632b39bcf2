//! Query filters: a WHERE clause built from optional parts, every value a `$n` parameter.
//!
//! ```ignore
//! use mito::coordinator::filter::{Sql, Comparison};
//! let mut q = Sql::new();
//! q.and("t.group_id = {}", 7i64);
//! let c: Comparison = ">=3".parse().unwrap();
//! q.and(&format!("t.priority {} {{}}", c.op), c.value);
//! assert_eq!(q.conditions(), "t.group_id = $1 AND t.priority >= $2");
//! ```

use super::error::ApiError;
use postgres::types::ToSql;

/// Parameters owned, for a statement run away from its [`Sql`].
pub type OwnedParams = Vec<Box<dyn ToSql + Sync + Send>>;

/// Conditions joined by AND, with their parameters.
#[derive(Default)]
pub(crate) struct Sql {
    clauses: Vec<String>,
    params: OwnedParams,
}

impl Sql {
    pub(crate) fn new() -> Sql {
        Sql::default()
    }

    /// Adds a condition; each `{}` in `clause` becomes the next parameter, bound to `value`.
    pub(crate) fn and<T: ToSql + Sync + Send + 'static>(&mut self, clause: &str, value: T) -> &mut Self {
        self.params.push(Box::new(value));
        let clause = clause.replacen("{}", &format!("${}", self.params.len()), 1);
        self.clauses.push(clause);
        self
    }

    /// Binds one more parameter without a condition and returns its placeholder.
    pub(crate) fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// The conditions joined by AND (`TRUE` when there are none).
    pub(crate) fn conditions(&self) -> String {
        if self.clauses.is_empty() {
            "TRUE".into()
        } else {
            self.clauses.join(" AND ")
        }
    }

    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }

    /// The parameters, owned (for a statement run elsewhere, as the tests' EXPLAIN).
    pub(crate) fn into_params(self) -> OwnedParams {
        self.params
    }
}

/// `[op]N`: `=` (default), `!=`, `>`, `>=`, `<`, `<=` against a whole number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Comparison {
    pub op: &'static str,
    pub value: i32,
}

/// A string that is not a [`Comparison`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotAComparison(pub String);

impl std::fmt::Display for NotAComparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} is not a comparison: expected a number with an optional =, !=, >, >=, < or <= before it",
            self.0
        )
    }
}

impl std::error::Error for NotAComparison {}

impl std::str::FromStr for Comparison {
    type Err = NotAComparison;
    fn from_str(s: &str) -> Result<Self, NotAComparison> {
        let t = s.trim();
        let (op, rest) = [("!=", "!="), (">=", ">="), ("<=", "<="), ("=", "="), (">", ">"), ("<", "<")]
            .iter()
            .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or(("=", t));
        let value = rest.trim().parse::<i32>().map_err(|_| NotAComparison(s.to_string()))?;
        Ok(Comparison { op, value })
    }
}

/// Parses an optional comparison field, naming it in the error.
pub(crate) fn comparison(field: &str, v: &Option<String>) -> Result<Option<Comparison>, ApiError> {
    v.as_deref().map(|s| s.parse().map_err(|e: NotAComparison| ApiError::bad(format!("{field}: {e}")))).transpose()
}

/// Rejects a filter given as an empty set.
pub(crate) fn not_empty<T>(field: &str, v: &Option<std::collections::BTreeSet<T>>) -> Result<(), ApiError> {
    match v {
        Some(s) if s.is_empty() => {
            Err(ApiError::bad(format!("the {field} filter is an empty list; leave it out to match everything")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        assert_eq!("5".parse::<Comparison>().unwrap(), Comparison { op: "=", value: 5 });
        assert_eq!("!=0".parse::<Comparison>().unwrap(), Comparison { op: "!=", value: 0 });
        assert_eq!(">= -3".parse::<Comparison>().unwrap(), Comparison { op: ">=", value: -3 });
        assert_eq!("<256".parse::<Comparison>().unwrap(), Comparison { op: "<", value: 256 });
        assert!("~5".parse::<Comparison>().is_err());
        assert!(">x".parse::<Comparison>().is_err());
        assert!("99999999999".parse::<Comparison>().is_err());
    }

    #[test]
    fn placeholders_number_in_order() {
        let mut q = Sql::new();
        assert_eq!(q.conditions(), "TRUE");
        q.and("a = {}", 1i32).and("c @> {}", vec!["x".to_string()]);
        assert_eq!(q.conditions(), "a = $1 AND c @> $2");
        assert_eq!(q.params().len(), 2);
        assert_eq!(q.bind(3i32), "$3");
    }
}

/// The module documentation's example, run (doc tests see only the public API).
#[cfg(test)]
mod doc_example {
    #[test]
    fn runs() {
        use crate::coordinator::filter::{Comparison, Sql};
        let mut q = Sql::new();
        q.and("t.group_id = {}", 7i64);
        let c: Comparison = ">=3".parse().unwrap();
        q.and(&format!("t.priority {} {{}}", c.op), c.value);
        assert_eq!(q.conditions(), "t.group_id = $1 AND t.priority >= $2");
    }
}

//! Quota change strings: `"+N"` adds, `"-N"` subtracts, `"=N"` or `"N"` sets. Storage
//! sizes take decimal and binary units (`10GB` = 10^10, `1GiB` = 2^30, a bare number is
//! bytes).
//!
//! ```
//! use mito::api::quota::{QuotaChange, parse_size};
//! assert_eq!(parse_size("1GiB"), Ok(1 << 30));
//! assert_eq!(QuotaChange::parse("+1GiB", parse_size).unwrap().apply(5), (1 << 30) + 5);
//! ```

/// Why a quota string was refused; the text says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    Empty,
    /// Not a whole number of groups.
    NotCount(String),
    /// Not a byte size.
    NotSize(String),
    /// A size above what the database can hold.
    TooLarge(String),
}

impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaError::Empty => f.write_str("the quota is empty: give N, +N, -N or =N"),
            QuotaError::NotCount(s) => write!(f, "{s:?} is not a whole number (expected N, +N, -N or =N)"),
            QuotaError::NotSize(s) => {
                write!(f, "{s:?} is not a size (expected e.g. 10GB, 500MB, 1GiB or a number of bytes)")
            }
            QuotaError::TooLarge(s) => write!(f, "{s:?} is too large"),
        }
    }
}

impl std::error::Error for QuotaError {}

/// How to change a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaChange {
    Add(i64),
    Sub(i64),
    Set(i64),
}

impl QuotaChange {
    /// Parses the operator and hands the amount to `amount`.
    pub fn parse(s: &str, amount: impl Fn(&str) -> Result<i64, QuotaError>) -> Result<QuotaChange, QuotaError> {
        let s = s.trim();
        let (ctor, rest): (fn(i64) -> QuotaChange, &str) = match s.as_bytes().first() {
            Some(b'+') => (QuotaChange::Add, &s[1..]),
            Some(b'-') => (QuotaChange::Sub, &s[1..]),
            Some(b'=') => (QuotaChange::Set, &s[1..]),
            Some(_) => (QuotaChange::Set, s),
            None => return Err(QuotaError::Empty),
        };
        Ok(ctor(amount(rest.trim())?))
    }

    /// The new value, saturating, never below zero.
    pub fn apply(self, current: i64) -> i64 {
        match self {
            QuotaChange::Add(n) => current.saturating_add(n),
            QuotaChange::Sub(n) => current.saturating_sub(n),
            QuotaChange::Set(n) => n,
        }
        .max(0)
    }
}

/// A whole number of groups.
pub fn parse_count(s: &str) -> Result<i64, QuotaError> {
    s.parse::<u32>().map(i64::from).map_err(|_| QuotaError::NotCount(s.to_string()))
}

/// A byte size such as `500MB`, `1.5GiB`, `10 gb` or `1024`.
pub fn parse_size(s: &str) -> Result<i64, QuotaError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let err = || QuotaError::NotSize(s.to_string());
    if num.is_empty() {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        "p" => 1e15,
        "ki" => 1024.0,
        "mi" => 1024f64.powi(2),
        "gi" => 1024f64.powi(3),
        "ti" => 1024f64.powi(4),
        "pi" => 1024f64.powi(5),
        _ => return Err(err()),
    };
    let bytes = (value * mult).round();
    if !(0.0..=i64::MAX as f64).contains(&bytes) {
        return Err(QuotaError::TooLarge(s.to_string()));
    }
    Ok(bytes as i64)
}

/// A size in decimal units for people (`16.00 GB`).
pub fn format_size(bytes: i64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v.abs() >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 kib"), Ok(1536));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("GB").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999EB").is_err());
        assert_eq!(parse_size("99999999999PB"), Err(QuotaError::TooLarge("99999999999PB".into())));
    }

    #[test]
    fn changes() {
        assert_eq!(QuotaChange::parse("+1GiB", parse_size).unwrap(), QuotaChange::Add(1 << 30));
        assert_eq!(QuotaChange::parse("-500MB", parse_size).unwrap().apply(100), 0);
        assert_eq!(QuotaChange::parse("=10GB", parse_size).unwrap().apply(1), 10_000_000_000);
        assert_eq!(QuotaChange::parse("10GB", parse_size).unwrap().apply(1), 10_000_000_000);
        assert_eq!(QuotaChange::parse("+3", parse_count).unwrap().apply(8), 11);
        assert!(QuotaChange::parse("+x", parse_count).is_err());
        assert_eq!(QuotaChange::parse("", parse_count), Err(QuotaError::Empty));
        let e = QuotaChange::parse("+x", parse_count).unwrap_err();
        assert_eq!(e.to_string(), r#""x" is not a whole number (expected N, +N, -N or =N)"#);
        assert_eq!(QuotaChange::Add(1).apply(i64::MAX), i64::MAX);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_size(16_000_000_000), "16.00 GB");
        assert_eq!(format_size(999), "999 B");
    }
}

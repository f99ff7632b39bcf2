//! Timestamps and durations as they travel on the wire.
//!
//! Timestamps look like `2023-11-14 22:13:20.123456 +00:00:00` (not RFC 3339): at least one
//! fraction digit, trailing zeros trimmed, always UTC. Durations are humantime strings
//! (`"10m"`, `"1h 30m"`); a bare number is rejected.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! assert_eq!(mito::api::time::format_timestamp(t), "2023-11-14 22:13:20.0 +00:00:00");
//! ```

use serde::{Deserialize, Deserializer, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, serialized in the peer's timestamp format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

impl serde::Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_timestamp(&s).map(Timestamp).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_timestamp(self.0))
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits a time into (seconds since epoch, microseconds), rounding toward the past.
fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_micros()),
        Err(e) => {
            let d = e.duration();
            let micros = d.subsec_micros();
            if micros == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000 - micros)
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS.f +00:00:00`, microsecond precision, trailing zeros trimmed.
pub fn format_timestamp(t: SystemTime) -> String {
    let (secs, micros) = split(t);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut frac = format!("{micros:06}");
    while frac.len() > 1 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}.{frac} +00:00:00", sod / 3600, sod / 60 % 60, sod % 60)
}

/// Parses the peer's timestamp format, with any `+HH:MM:SS` / `-HH:MM:SS` offset.
pub fn parse_timestamp(s: &str) -> Option<SystemTime> {
    let (date, rest) = s.split_once(' ')?;
    let (clock, offset) = rest.split_once(' ')?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let (hms, frac) = clock.split_once('.')?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut cp = hms.splitn(3, ':');
    let h: i64 = cp.next()?.parse().ok()?;
    let mi: i64 = cp.next()?.parse().ok()?;
    let se: i64 = cp.next()?.parse().ok()?;
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    let (sign, off) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    let mut op = off.split(':');
    let mut off_secs = 0i64;
    for (i, mult) in [3600, 60, 1].iter().enumerate() {
        match op.next() {
            Some(p) => off_secs += p.parse::<i64>().ok()? * mult,
            None if i > 0 => break,
            None => return None,
        }
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - sign * off_secs;
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs((-secs) as u64)
    };
    Some(base + Duration::from_nanos(nanos as u64))
}

/// The longest duration mito takes from outside: a task's timeout, a worker's lifetime, a
/// configured duration. Beyond it, timestamps computed from the duration leave
/// PostgreSQL's range, and nothing sensible runs or waits that long anyway. 366 days, so
/// that `"1y"` (365.25 days to humantime) still fits.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// A duration over [`MAX_DURATION`]: says which value and what the bound is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationTooLong {
    pub what: String,
    pub given: Duration,
}

impl std::fmt::Display for DurationTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} is too long: at most {} (366 days) is accepted",
            self.what,
            humantime::format_duration(self.given),
            humantime::format_duration(MAX_DURATION)
        )
    }
}

impl std::error::Error for DurationTooLong {}

/// Checks `d` against [`MAX_DURATION`]; `what` names the value in the error.
pub fn check_max(what: &str, d: Duration) -> Result<(), DurationTooLong> {
    if d > MAX_DURATION {
        return Err(DurationTooLong { what: what.to_string(), given: d });
    }
    Ok(())
}

/// Serde helpers for a humantime duration string (`"10m"`).
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e} (expected e.g. \"10m\")")))
    }
}

/// Serde helpers for an optional humantime duration string (`null` or `"10m"`).
pub mod option_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s)
                .map(Some)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e} (expected e.g. \"10m\")"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn formats_like_the_peer() {
        assert_eq!(format_timestamp(at(1_700_000_000, 0)), "2023-11-14 22:13:20.0 +00:00:00");
        assert_eq!(format_timestamp(at(1_700_000_000, 123_456)), "2023-11-14 22:13:20.123456 +00:00:00");
        assert_eq!(format_timestamp(at(1_700_000_000, 500_000)), "2023-11-14 22:13:20.5 +00:00:00");
        assert_eq!(format_timestamp(at(951_782_400, 0)), "2000-02-29 00:00:00.0 +00:00:00");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for t in [at(1_700_000_000, 123_456), at(0, 1), at(4_102_444_800, 999_999)] {
            assert_eq!(parse_timestamp(&format_timestamp(t)), Some(t));
        }
        assert_eq!(parse_timestamp("2023-11-14 23:13:20.0 +01:00:00"), Some(at(1_700_000_000, 0)));
    }

    #[test]
    fn rejects_rfc3339_and_missing_fraction() {
        assert_eq!(parse_timestamp("2023-11-14T22:13:20Z"), None);
        assert_eq!(parse_timestamp("2023-11-14 22:13:20 +00:00:00"), None);
        assert_eq!(parse_timestamp("2023-13-14 22:13:20.0 +00:00:00"), None);
    }

    #[test]
    fn durations_are_humantime_strings() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct T {
            #[serde(with = "duration")]
            d: Duration,
        }
        let t: T = serde_json::from_str(r#"{"d":"1h 30m"}"#).unwrap();
        assert_eq!(t.d, Duration::from_secs(5400));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"d":"1h 30m"}"#);
        assert!(serde_json::from_str::<T>(r#"{"d":"10"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"d":10}"#).is_err());
    }
}

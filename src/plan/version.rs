//! `BUILD_VERSION` and the dates derived from it.
//!
//! All arithmetic is in UTC, as upstream's Makefile exports `TZ=UTC`: the build day is the
//! version's first eight digits, the archive snapshot is the day before, and
//! SOURCE_DATE_EPOCH is 00:00:00 UTC of the build day.

use std::fmt;

use jiff::civil::Date;
use serde::Serialize;

use crate::error::{Error, Result};

/// The first day the Arch Linux Archive has `repos/YYYY/MM/DD` for.
pub const ARCHIVE_FIRST_DAY: Date = jiff::civil::date(2013, 8, 31);

const EXPECTED: &str = "expected YYYYMMDD.N.JOB (for example 20260518.0.532496): a real UTC date, \
     then a dot, a number, a dot and the CI job number";

/// A parsed `YYYYMMDD.N.JOB` build version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildVersion {
    raw: String,
    day: Date,
    series: u32,
    job: u64,
}

fn bad(raw: &str, why: &str) -> Error {
    Error::bad_input(
        format!("BUILD_VERSION {raw:?}"),
        format!("{why}; {EXPECTED}"),
    )
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl BuildVersion {
    pub fn parse(raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(bad(raw, "empty"));
        }
        if raw.trim() != raw {
            return Err(bad(raw, "surrounding whitespace"));
        }
        let parts: Vec<&str> = raw.split('.').collect();
        let (date, series, job) = match parts.as_slice() {
            [d, s, j] => (*d, *s, *j),
            [_] | [_, _] => return Err(bad(raw, "missing the job number")),
            _ => return Err(bad(raw, "too many dot-separated parts")),
        };
        if !digits(date) || date.len() != 8 {
            return Err(bad(raw, "the date part must be exactly 8 digits"));
        }
        if !digits(series) {
            return Err(bad(raw, "the middle part must be a number"));
        }
        if job.is_empty() {
            return Err(bad(raw, "missing the job number"));
        }
        if !digits(job) {
            return Err(bad(raw, "the job number must be digits"));
        }
        let year: i16 = date[0..4].parse().map_err(|_| bad(raw, "bad year"))?;
        let month: i8 = date[4..6].parse().map_err(|_| bad(raw, "bad month"))?;
        let dayn: i8 = date[6..8].parse().map_err(|_| bad(raw, "bad day"))?;
        if !(1..=12).contains(&month) {
            return Err(bad(raw, &format!("month {month:02} does not exist")));
        }
        let day = Date::new(year, month, dayn).map_err(|_| {
            bad(
                raw,
                &format!("{year:04}-{month:02}-{dayn:02} is not a day of the calendar"),
            )
        })?;
        let series = series
            .parse()
            .map_err(|_| bad(raw, "the middle number is too large"))?;
        let job = job
            .parse()
            .map_err(|_| bad(raw, "the job number is too large"))?;
        let v = BuildVersion {
            raw: raw.to_string(),
            day,
            series,
            job,
        };
        if v.snapshot_day() < ARCHIVE_FIRST_DAY {
            return Err(Error::bad_input(
                format!("BUILD_VERSION {raw:?}"),
                format!(
                    "its snapshot day {} is before the archive's first day {}",
                    v.snapshot_path(),
                    ARCHIVE_FIRST_DAY.strftime("%Y/%m/%d")
                ),
            ));
        }
        Ok(v)
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The build day (UTC).
    pub fn build_day(&self) -> Date {
        self.day
    }

    pub fn job(&self) -> u64 {
        self.job
    }

    pub fn series(&self) -> u32 {
        self.series
    }

    /// The archive snapshot day: the day before the build day.
    pub fn snapshot_day(&self) -> Date {
        self.day
            .yesterday()
            .expect("a 4-digit year has a day before it")
    }

    /// `YYYY/MM/DD`, the ARCHIVE_SNAPSHOT upstream's Makefile takes.
    pub fn snapshot_path(&self) -> String {
        self.snapshot_day().strftime("%Y/%m/%d").to_string()
    }

    /// `YYYY/MM/DD` of the build day (an archive day, like [`Self::snapshot_path`]).
    pub fn build_day_path(&self) -> String {
        self.day.strftime("%Y/%m/%d").to_string()
    }

    /// Seconds since the epoch at 00:00:00 UTC of the build day.
    pub fn source_date_epoch(&self) -> i64 {
        self.day
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .expect("a civil date at midnight UTC is always valid")
            .timestamp()
            .as_second()
    }

    /// The `org.opencontainers.image.created` label: `YYYY-MM-DDT00:00:00Z`.
    pub fn created(&self) -> String {
        self.day.strftime("%Y-%m-%dT00:00:00Z").to_string()
    }

    /// The release tag, `v` + BUILD_VERSION.
    pub fn tag(&self) -> String {
        format!("v{}", self.raw)
    }

    /// The `YYYY.MM.01` directory of the archive's `iso/` for the month of the snapshot day,
    /// where the monthly bootstrap tarball lives.
    pub fn iso_month(&self) -> String {
        self.snapshot_day()
            .first_of_month()
            .strftime("%Y.%m.%d")
            .to_string()
    }
}

impl fmt::Display for BuildVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for BuildVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for BuildVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> BuildVersion {
        BuildVersion::parse(s).unwrap()
    }

    #[test]
    fn snapshot_is_the_day_before_across_boundaries() {
        assert_eq!(v("20260301.0.1").snapshot_path(), "2026/02/28");
        assert_eq!(v("20240301.0.1").snapshot_path(), "2024/02/29");
        assert_eq!(v("20270101.0.1").snapshot_path(), "2026/12/31");
        assert_eq!(v("20260501.0.1").snapshot_path(), "2026/04/30");
        assert_eq!(v("20260518.0.532496").snapshot_path(), "2026/05/17");
    }

    #[test]
    fn source_date_epoch_is_midnight_utc() {
        assert_eq!(v("20260331.0.1").source_date_epoch(), 1774915200);
        assert_eq!(v("20240229.0.7").source_date_epoch(), 1709164800);
        assert_eq!(v("20260331.0.1").created(), "2026-03-31T00:00:00Z");
    }

    #[test]
    fn tag_iso_month_and_parts() {
        let b = v("20260518.0.532496");
        assert_eq!(b.tag(), "v20260518.0.532496");
        assert_eq!(b.job(), 532496);
        assert_eq!(b.series(), 0);
        assert_eq!(b.iso_month(), "2026.05.01");
        // snapshot day in the previous month picks that month's bootstrap
        assert_eq!(v("20260501.0.1").iso_month(), "2026.04.01");
    }

    #[test]
    fn malformed_versions_are_rejected_with_the_input_named() {
        for (bad, why) in [
            ("", "empty"),
            (" 20260518.0.1", "whitespace"),
            ("20260518.0.1 ", "whitespace"),
            ("2026051.0.1", "8 digits"),
            ("202605180.0.1", "8 digits"),
            ("20260230.0.1", "not a day"),
            ("20261301.0.1", "month 13"),
            ("20260001.0.1", "month 00"),
            ("2026O518.0.1", "8 digits"),
            ("20260518.0.", "job number"),
            ("20260518.0", "job number"),
            ("20260518", "job number"),
            ("20260518.0.12a", "digits"),
            ("20260518.x.1", "middle"),
            ("20260518.0.1.2", "too many"),
            ("20250229.0.1", "not a day"),
            ("20130831.0.1", "before the archive"),
        ] {
            let e = BuildVersion::parse(bad).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(msg.contains(&format!("{bad:?}")), "{bad:?}: {msg}");
        }
        // The archive's first day itself is fine.
        assert_eq!(v("20130901.0.1").snapshot_path(), "2013/08/31");
    }
}

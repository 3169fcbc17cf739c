//! Sizes and durations as operators write them: `1GiB`, `512MB`, `7d`,
//! `1h30m`, `250ms`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is empty; write a number with a unit, e.g. {1}")]
    Empty(String, &'static str),
    #[error("{input:?}: unknown unit {unit:?}; use one of {allowed}")]
    UnknownUnit {
        input: String,
        unit: String,
        allowed: &'static str,
    },
    #[error("{0:?} is not a number followed by a unit")]
    Malformed(String),
    #[error("{0:?} is too large")]
    Overflow(String),
}

const SIZE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB";
const DURATION_UNITS: &str = "ms, s, m, h, d, w, y";

/// A number of bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = UnitError;

    /// Parses `1024`, `16KiB`, `1.5 GiB`, `500MB` (case-insensitive units;
    /// `K`, `M`, `G`, `T` without `B` are binary, as most tools read them).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(UnitError::Empty(input.to_string(), "1GiB"));
        }
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: input.to_string(),
                    unit: unit.trim().to_string(),
                    allowed: SIZE_UNITS,
                });
            }
        };
        scale(number, multiplier, input).map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    /// Prints the largest binary unit that divides the size exactly, so the
    /// output parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A span of time with millisecond resolution.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    pub const fn from_millis(millis: u64) -> Duration {
        Duration { millis }
    }

    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.millis)
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    /// Parses one or more `<number><unit>` terms: `7d`, `1h30m`, `250ms`,
    /// `1.5h`. A year is 365 days, a week 7 days.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut rest = input.trim();
        if rest.is_empty() {
            return Err(UnitError::Empty(input.to_string(), "7d"));
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| UnitError::Malformed(input.to_string()))?;
            let (number, after) = rest.split_at(number_end);
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_end);
            let multiplier: u64 = match unit.trim() {
                "ms" => 1,
                "s" => 1_000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                "y" => 365 * 86_400_000,
                other => {
                    return Err(UnitError::UnknownUnit {
                        input: input.to_string(),
                        unit: other.to_string(),
                        allowed: DURATION_UNITS,
                    });
                }
            };
            let term = scale(number, multiplier, input)?;
            total = total
                .checked_add(term)
                .ok_or_else(|| UnitError::Overflow(input.to_string()))?;
            rest = next.trim_start();
        }
        Ok(Duration::from_millis(total))
    }
}

impl fmt::Display for Duration {
    /// Prints the largest unit that divides the duration exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [
            ("d", 86_400_000u64),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if self.millis >= factor && self.millis.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.millis / factor);
            }
        }
        write!(f, "{}ms", self.millis)
    }
}

/// `number * multiplier`, where `number` may carry a decimal fraction; the
/// result is rounded down to a whole unit of the base.
fn scale(number: &str, multiplier: u64, input: &str) -> Result<u64, UnitError> {
    let malformed = || UnitError::Malformed(input.to_string());
    let overflow = || UnitError::Overflow(input.to_string());
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(malformed());
    }
    if fraction.contains('.') || fraction.len() > 9 {
        return Err(malformed());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| overflow())?
    };
    let mut value = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !fraction.is_empty() {
        let digits: u64 = fraction.parse().map_err(|_| malformed())?;
        let denominator = 10u64.pow(fraction.len() as u32);
        let part = (u128::from(digits) * u128::from(multiplier)) / u128::from(denominator);
        value = value
            .checked_add(u64::try_from(part).map_err(|_| overflow())?)
            .ok_or_else(overflow)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse() {
        let cases = [
            ("1024", 1024),
            ("16KiB", 16 * 1024),
            ("1GiB", 1 << 30),
            ("1.5 GiB", 3 << 29),
            ("500MB", 500_000_000),
            ("4k", 4096),
            ("7b", 7),
        ];
        for (input, expect) in cases {
            assert_eq!(input.parse::<ByteSize>(), Ok(ByteSize(expect)), "{input}");
        }
        assert!(matches!(
            "1XB".parse::<ByteSize>(),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!("".parse::<ByteSize>(), Err(UnitError::Empty(..))));
        assert!(matches!(
            "GiB".parse::<ByteSize>(),
            Err(UnitError::Malformed(_))
        ));
        assert!(matches!(
            "1.2.3GiB".parse::<ByteSize>(),
            Err(UnitError::Malformed(_))
        ));
        assert!(matches!(
            "99999999999TiB".parse::<ByteSize>(),
            Err(UnitError::Overflow(_))
        ));
    }

    #[test]
    fn durations_parse() {
        let cases = [
            ("250ms", 250),
            ("10s", 10_000),
            ("7d", 7 * 86_400_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("2w", 14 * 86_400_000),
            ("1y", 365 * 86_400_000),
        ];
        for (input, expect) in cases {
            assert_eq!(
                input.parse::<Duration>(),
                Ok(Duration::from_millis(expect)),
                "{input}"
            );
        }
        assert!(matches!(
            "10".parse::<Duration>(),
            Err(UnitError::Malformed(_))
        ));
        assert!(matches!(
            "10x".parse::<Duration>(),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(" ".parse::<Duration>(), Err(UnitError::Empty(..))));
    }

    proptest! {
        #[test]
        fn size_display_parses_back(bytes in any::<u32>()) {
            let size = ByteSize(u64::from(bytes));
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        #[test]
        fn duration_display_parses_back(millis in 0u64..1u64 << 50) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(duration.to_string().parse::<Duration>(), Ok(duration));
        }
    }
}

//! When a log forces appended bytes to stable storage: the setting a topic
//! carries from the controller down to its partition logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When appended bytes are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FlushPolicy {
    /// fsync before an append returns; concurrent appenders share one fsync
    /// (group commit). Nothing acknowledged is lost in a power failure.
    #[default]
    Always,
    /// fsync at most `interval_ms` after an append, on the next append or
    /// the log's `tick`. A power failure loses up to that window.
    Interval { interval_ms: u64 },
    /// Never fsync on the append path; the page cache writes back. A process
    /// crash loses nothing, a power failure loses what was not written back.
    Os,
}

impl FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FlushPolicy::Always),
            "os" => Ok(FlushPolicy::Os),
            _ => s
                .strip_prefix("interval=")
                .and_then(|millis| millis.parse().ok())
                .filter(|&interval_ms| interval_ms > 0)
                .map(|interval_ms| FlushPolicy::Interval { interval_ms })
                .ok_or_else(|| {
                    format!("unknown flush policy {s:?}; use always, interval=<milliseconds> or os")
                }),
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval { interval_ms } => write!(f, "interval={interval_ms}"),
            FlushPolicy::Os => f.write_str("os"),
        }
    }
}

impl TryFrom<String> for FlushPolicy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<FlushPolicy> for String {
    fn from(policy: FlushPolicy) -> String {
        policy.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policies_parse() {
        assert_eq!("always".parse(), Ok(FlushPolicy::Always));
        assert_eq!("os".parse(), Ok(FlushPolicy::Os));
        assert_eq!(
            "interval=250".parse(),
            Ok(FlushPolicy::Interval { interval_ms: 250 })
        );
        assert!("interval=0".parse::<FlushPolicy>().is_err());
        assert!("sometimes".parse::<FlushPolicy>().is_err());
        for policy in [
            FlushPolicy::Always,
            FlushPolicy::Os,
            FlushPolicy::Interval { interval_ms: 5 },
        ] {
            assert_eq!(policy.to_string().parse(), Ok(policy));
        }
    }
}

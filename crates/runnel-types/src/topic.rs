//! Topic names, validated with Kafka's rules so every topic can also be
//! served to Kafka clients and stored as a directory name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest topic name Kafka accepts; it leaves room for `-<partition>` in a
/// 255-byte file name.
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// A topic name made only of `[a-zA-Z0-9._-]`, 1 to 249 characters, and not
/// `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty; use 1 to {TOPIC_NAME_MAX_LEN} characters from [a-zA-Z0-9._-]")]
    Empty,
    #[error("topic name is {0} characters long; the limit is {TOPIC_NAME_MAX_LEN}")]
    TooLong(usize),
    #[error("topic name may not be '.' or '..'")]
    DotsOnly,
    #[error("topic name contains {0:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    InvalidCharacter(char),
}

impl TopicName {
    pub fn new(name: impl Into<String>) -> Result<TopicName, TopicNameError> {
        let name = name.into();
        if name.is_empty() {
            return Err(TopicNameError::Empty);
        }
        if name.len() > TOPIC_NAME_MAX_LEN {
            return Err(TopicNameError::TooLong(name.chars().count()));
        }
        if name == "." || name == ".." {
            return Err(TopicNameError::DotsOnly);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicNameError::InvalidCharacter(bad));
        }
        Ok(TopicName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TopicName {
    type Err = TopicNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicName::new(s)
    }
}

impl TryFrom<String> for TopicName {
    type Error = TopicNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        TopicName::new(name)
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, expect: Result<(), TopicNameError>) {
        assert_eq!(TopicName::new(name).map(|_| ()), expect, "{name:?}");
    }

    #[test]
    fn names_follow_kafka_rules() {
        check("orders", Ok(()));
        check("a.b_c-D9", Ok(()));
        check("...", Ok(()));
        check(&"x".repeat(249), Ok(()));
        check("", Err(TopicNameError::Empty));
        check(".", Err(TopicNameError::DotsOnly));
        check("..", Err(TopicNameError::DotsOnly));
        check(&"x".repeat(250), Err(TopicNameError::TooLong(250)));
        check("a/b", Err(TopicNameError::InvalidCharacter('/')));
        check("a b", Err(TopicNameError::InvalidCharacter(' ')));
        check("é", Err(TopicNameError::InvalidCharacter('é')));
    }
}

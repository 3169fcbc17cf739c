//! What a request does ([`Action`]) and what a rule says about it
//! ([`Effect`]), with the one implication rule between actions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;

/// An operation a request performs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Read,
    Write,
    Create,
    Delete,
    Describe,
    Admin,
}

impl Action {
    /// Every action, in declaration order (for tables, help text and tests).
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Write,
        Action::Create,
        Action::Delete,
        Action::Describe,
        Action::Admin,
    ];

    /// The lowercase name used in policies, the CLI and [`Denied`](crate::Denied) messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::Delete => "delete",
            Action::Describe => "describe",
            Action::Admin => "admin",
        }
    }

    /// Whether granting `self` grants `requested`. (Denying is narrower:
    /// see [`Rule::covers`](crate::Rule::covers).)
    ///
    /// `admin` covers every action. `read`, `write`, `create` and `delete`
    /// also cover `describe`, as in Kafka: a client that may use a topic
    /// must be able to look up its metadata to do so.
    pub fn covers(self, requested: Action) -> bool {
        self == requested
            || self == Action::Admin
            || (requested == Action::Describe
                && matches!(
                    self,
                    Action::Read | Action::Write | Action::Create | Action::Delete
                ))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| PolicyError::UnknownAction(crate::error::excerpt(text)))
    }
}

/// Whether a rule grants or forbids what it matches. Deny overrides allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_unknown_names_are_refused() {
        for action in Action::ALL {
            assert_eq!(action.to_string().parse::<Action>(), Ok(action));
        }
        let error = "Read".parse::<Action>().unwrap_err();
        assert_eq!(error, PolicyError::UnknownAction("Read".to_owned()));
        assert!(
            error
                .to_string()
                .contains("read, write, create, delete, describe, admin")
        );
    }

    #[test]
    fn coverage_table() {
        use Action::*;
        let implies_describe = [Read, Write, Create, Delete];
        for granted in Action::ALL {
            for requested in Action::ALL {
                let expected = granted == requested
                    || granted == Admin
                    || (requested == Describe && implies_describe.contains(&granted));
                assert_eq!(
                    granted.covers(requested),
                    expected,
                    "{granted} covers {requested}"
                );
            }
        }
        assert!(!Describe.covers(Read), "describe must not imply read");
        assert!(!Write.covers(Read), "write must not imply read");
        assert!(!Read.covers(Admin), "only admin covers admin");
    }
}

//! The errors of this crate: [`Denied`] for a refused request, and
//! [`PolicyError`] for a policy, pattern or name that cannot be accepted.

use thiserror::Error;

use crate::action::Action;
use crate::resource::Resource;

/// A request the policy does not allow. The text is what the client sees,
/// so it names who, what and on which resource, and nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("permission denied: {principal} may not {action} {resource}")]
pub struct Denied {
    pub principal: String,
    pub action: Action,
    pub resource: Resource,
}

/// Why a policy, a resource pattern or a name was refused. Every message
/// names the offending item (shortened if long) and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error(
        "unknown action {0:?}: use one of read, write, create, delete, describe, admin (lowercase)"
    )]
    UnknownAction(String),

    #[error(
        "invalid resource pattern {pattern:?}: {reason}; write topic:<glob>, group:<glob>, \
         smartmodule:<glob> or cluster, where only `*` is special in <glob>"
    )]
    InvalidPattern { pattern: String, reason: String },

    #[error(
        "invalid principal {name:?}: {reason}; a principal is 1 to 128 characters of \
         A-Z a-z 0-9 . _ @ -, or a node identity (sc, spu:<id>)"
    )]
    InvalidPrincipal { name: String, reason: String },

    #[error(
        "invalid user name {name:?}: {reason}; a user name is 1 to 64 characters of \
         A-Z a-z 0-9 . _ @ - and not the node name \"sc\""
    )]
    InvalidUserName { name: String, reason: String },

    #[error(
        "invalid role name {name:?}: {reason}; a role name is 1 to 64 characters of \
         A-Z a-z 0-9 . _ -"
    )]
    InvalidRoleName { name: String, reason: String },

    #[error("role {0:?} is defined more than once; merge its rules into one role")]
    DuplicateRole(String),

    #[error(
        "principal {principal:?} is bound to role {role:?}, which the policy does not define; \
         define the role or remove the binding"
    )]
    UnknownRole { principal: String, role: String },

    #[error("principal {principal:?} is bound to role {role:?} more than once; remove the repeats")]
    DuplicateBinding { principal: String, role: String },

    #[error(
        "rule {rule} of role {role:?} lists no {missing}; give it at least one or remove the rule"
    )]
    EmptyRule {
        role: String,
        /// The rule's position in the role, counting from 1 as a reader would.
        rule: usize,
        /// `"actions"` or `"resources"`.
        missing: &'static str,
    },

    #[error("too many {what}: the limit is {limit}; split or simplify the policy")]
    TooLarge { what: String, limit: usize },
}

/// At most this many characters of a user-supplied string are quoted back in
/// an error, so a huge input cannot produce a huge message.
const EXCERPT_CHARS: usize = 64;

/// `text`, cut to [`EXCERPT_CHARS`] characters with a trailing `…` if
/// longer: a name or value a peer sent, quoted in an error at a bounded
/// length.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_text_is_exact() {
        let denied = Denied {
            principal: "alice".to_owned(),
            action: Action::Write,
            resource: Resource::Topic("orders".to_owned()),
        };
        assert_eq!(
            denied.to_string(),
            "permission denied: alice may not write topic:orders"
        );
        let denied = Denied {
            principal: "bob".to_owned(),
            action: Action::Admin,
            resource: Resource::Cluster,
        };
        assert_eq!(
            denied.to_string(),
            "permission denied: bob may not admin cluster"
        );
    }

    #[test]
    fn excerpt_shortens_long_text_on_a_character_boundary() {
        assert_eq!(excerpt("short"), "short");
        let exact = "é".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "é".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&long), format!("{exact}…"));
    }
}

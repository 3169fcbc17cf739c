//! The shapes of principal, user and role names, and which principals are
//! the cluster's own nodes.
//!
//! Names are plain ASCII so they compare byte for byte: no Unicode case
//! folding or look-alike characters can make two different principals read
//! the same in a policy or a log line.

use crate::error::{PolicyError, excerpt};

/// The longest principal, in characters.
pub const MAX_PRINCIPAL_LEN: usize = 128;
/// The longest user name, in characters. Shorter than a principal so that a
/// user name always fits a certificate's common name (at most 64).
pub const MAX_USER_NAME_LEN: usize = 64;
/// The longest role name, in characters.
pub const MAX_ROLE_NAME_LEN: usize = 64;

/// The principal of the SC.
pub const SC_PRINCIPAL: &str = "sc";
/// The prefix of an SPU's principal; the SPU id follows.
const SPU_PRINCIPAL_PREFIX: &str = "spu:";

/// Checks a principal: the name a certificate carries (its CN, or a
/// configured SAN). Users who log in get certificates whose CN is their user
/// name; nodes are `sc` and `spu:<id>` (see [`is_node_identity`]).
pub fn validate_principal(name: &str) -> Result<(), PolicyError> {
    if is_node_identity(name) {
        return Ok(());
    }
    check_shape(name, MAX_PRINCIPAL_LEN, is_user_char).map_err(|reason| {
        PolicyError::InvalidPrincipal {
            name: excerpt(name),
            reason,
        }
    })
}

/// Checks a user name for `runnel login` and user management. It must not
/// be, or look like, a node identity: otherwise a user could obtain a
/// certificate that the cluster treats as one of its own nodes.
pub fn validate_user_name(name: &str) -> Result<(), PolicyError> {
    let invalid = |reason: String| PolicyError::InvalidUserName {
        name: excerpt(name),
        reason,
    };
    check_shape(name, MAX_USER_NAME_LEN, is_user_char).map_err(invalid)?;
    if name == SC_PRINCIPAL {
        return Err(invalid("it is the SC's node identity".to_owned()));
    }
    Ok(())
}

/// Whether `principal` names one of the cluster's nodes: exactly `sc`, or
/// an SPU's principal (see [`spu_id_of`]).
pub fn is_node_identity(principal: &str) -> bool {
    principal == SC_PRINCIPAL || spu_id_of(principal).is_some()
}

/// The principal of SPU `id`: `spu:<id>`, the name its certificate carries.
pub fn spu_principal(id: u32) -> String {
    format!("{SPU_PRINCIPAL_PREFIX}{id}")
}

/// The SPU id `principal` names, if it is `spu:` followed by the id as
/// canonical decimal `u32` (no sign, no leading zeros except `0` itself).
/// Only the canonical spelling counts, so each SPU has exactly one
/// principal.
pub fn spu_id_of(principal: &str) -> Option<u32> {
    let id = principal.strip_prefix(SPU_PRINCIPAL_PREFIX)?;
    let canonical =
        id.bytes().all(|byte| byte.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
    if canonical { id.parse().ok() } else { None }
}

/// Checks a role name.
pub fn validate_role_name(name: &str) -> Result<(), PolicyError> {
    check_shape(name, MAX_ROLE_NAME_LEN, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
    .map_err(|reason| PolicyError::InvalidRoleName {
        name: excerpt(name),
        reason,
    })
}

fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')
}

/// Checks that `name` is 1 to `max_len` characters, each accepted by
/// `allowed`; on failure says which rule it broke.
fn check_shape(name: &str, max_len: usize, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        return Err(format!("it contains {bad:?}"));
    }
    // Every accepted character is ASCII, so bytes count characters.
    if name.len() > max_len {
        return Err(format!("it is {} characters long", name.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_identities() {
        for yes in ["sc", "spu:0", "spu:1", "spu:5001", "spu:4294967295"] {
            assert!(is_node_identity(yes), "{yes}");
        }
        for no in [
            "",
            "SC",
            "sc ",
            "spu:",
            "spu:01",
            "spu:00",
            "spu:+1",
            "spu:-1",
            "spu:4294967296",
            "spu:1a",
            "spu: 1",
            "SPU:1",
            "spu1",
            "spu:1:2",
        ] {
            assert!(!is_node_identity(no), "{no}");
        }
    }

    #[test]
    fn spu_principals_round_trip() {
        for id in [0, 7, 5001, u32::MAX] {
            assert_eq!(spu_id_of(&spu_principal(id)), Some(id), "{id}");
        }
        assert_eq!(spu_principal(7), "spu:7");
        for no in ["sc", "spu:07", "spu:", "spu:-1", "alice", "spu:4294967296"] {
            assert_eq!(spu_id_of(no), None, "{no}");
        }
    }

    #[test]
    fn principals() {
        let longest = "p".repeat(MAX_PRINCIPAL_LEN);
        for ok in [
            "alice",
            "alice@example.com",
            "svc.orders_v2-eu",
            "sc",
            "spu:7",
            &longest,
        ] {
            assert_eq!(validate_principal(ok), Ok(()), "{ok}");
        }
        let too_long = "p".repeat(MAX_PRINCIPAL_LEN + 1);
        for (bad, reason) in [
            ("", "it is empty"),
            ("al ice", "it contains ' '"),
            ("spu:01", "it contains ':'"),
            ("alice:admin", "it contains ':'"),
            ("ålice", "it contains 'å'"),
            (too_long.as_str(), "it is 129 characters long"),
        ] {
            let error = validate_principal(bad).unwrap_err();
            assert!(
                matches!(&error, PolicyError::InvalidPrincipal { reason: r, .. } if r == reason),
                "{bad:?}: {error:?}"
            );
        }
    }

    #[test]
    fn user_names() {
        let longest = "u".repeat(MAX_USER_NAME_LEN);
        for ok in ["alice", "alice@example.com", "SC", "spu", "spu.1", &longest] {
            assert_eq!(validate_user_name(ok), Ok(()), "{ok}");
        }
        let too_long = "u".repeat(MAX_USER_NAME_LEN + 1);
        for (bad, reason) in [
            ("", "it is empty"),
            ("sc", "it is the SC's node identity"),
            ("spu:1", "it contains ':'"),
            ("spu:x", "it contains ':'"),
            ("a/b", "it contains '/'"),
            (too_long.as_str(), "it is 65 characters long"),
        ] {
            let error = validate_user_name(bad).unwrap_err();
            assert!(
                matches!(&error, PolicyError::InvalidUserName { reason: r, .. } if r == reason),
                "{bad:?}: {error:?}"
            );
        }
    }

    #[test]
    fn role_names() {
        let longest = "r".repeat(MAX_ROLE_NAME_LEN);
        for ok in ["producer", "ops.eu_2-read", &longest] {
            assert_eq!(validate_role_name(ok), Ok(()), "{ok}");
        }
        let too_long = "r".repeat(MAX_ROLE_NAME_LEN + 1);
        for (bad, reason) in [
            ("", "it is empty"),
            ("ops@eu", "it contains '@'"),
            ("a b", "it contains ' '"),
            (too_long.as_str(), "it is 65 characters long"),
        ] {
            let error = validate_role_name(bad).unwrap_err();
            assert!(
                matches!(&error, PolicyError::InvalidRoleName { reason: r, .. } if r == reason),
                "{bad:?}: {error:?}"
            );
        }
    }
}

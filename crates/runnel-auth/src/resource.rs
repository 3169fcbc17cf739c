//! What a request touches ([`Resource`]), what a rule names
//! ([`ResourcePattern`]), and the `*` glob that connects the two.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, excerpt};

/// The longest text form of a [`ResourcePattern`], in bytes. Patterns come
/// from operators, but a bound keeps matching cost predictable.
pub const MAX_PATTERN_LEN: usize = 255;

/// The kinds of resource a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    Topic,
    Group,
    Cluster,
    SmartModule,
}

impl ResourceKind {
    /// The prefix used in text forms: `topic`, `group`, `cluster`, `smartmodule`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Cluster => "cluster",
            ResourceKind::SmartModule => "smartmodule",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A concrete resource a request touches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic(String),
    Group(String),
    Cluster,
    SmartModule(String),
}

impl Resource {
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Topic(_) => ResourceKind::Topic,
            Resource::Group(_) => ResourceKind::Group,
            Resource::Cluster => ResourceKind::Cluster,
            Resource::SmartModule(_) => ResourceKind::SmartModule,
        }
    }

    /// The name, for every kind but the cluster, which has none.
    pub fn name(&self) -> Option<&str> {
        match self {
            Resource::Topic(name) | Resource::Group(name) | Resource::SmartModule(name) => {
                Some(name)
            }
            Resource::Cluster => None,
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}:{name}", self.kind()),
            None => f.write_str(self.kind().as_str()),
        }
    }
}

/// A resource pattern in a rule: `topic:<glob>`, `group:<glob>`,
/// `smartmodule:<glob>` or `cluster`. In `<glob>` only `*` is special (any
/// run of characters, including none); everything else is literal, so
/// `topic:a?b` names the topic `a?b`.
///
/// Invariant: `glob` is `None` exactly when `kind` is
/// [`ResourceKind::Cluster`], and otherwise non-empty, free of whitespace and
/// control characters, and short enough that the text form fits
/// [`MAX_PATTERN_LEN`]. Every constructor checks it, so a pattern that
/// exists is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourcePattern {
    kind: ResourceKind,
    glob: Option<String>,
}

impl ResourcePattern {
    /// The pattern matching only [`Resource::Cluster`].
    pub fn cluster() -> Self {
        ResourcePattern {
            kind: ResourceKind::Cluster,
            glob: None,
        }
    }

    /// A pattern for named resources of `kind` whose names match `glob`.
    pub fn named(kind: ResourceKind, glob: &str) -> Result<Self, PolicyError> {
        let text = format!("{kind}:{glob}");
        let invalid = |reason: &str| PolicyError::InvalidPattern {
            pattern: excerpt(&text),
            reason: reason.to_owned(),
        };
        if text.len() > MAX_PATTERN_LEN {
            return Err(PolicyError::TooLarge {
                what: format!("bytes in resource pattern {:?}", excerpt(&text)),
                limit: MAX_PATTERN_LEN,
            });
        }
        if kind == ResourceKind::Cluster {
            return Err(invalid("`cluster` takes no name; write just `cluster`"));
        }
        if glob.is_empty() {
            return Err(invalid(
                "the name pattern is empty; use `*` to match every name",
            ));
        }
        if glob.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the name pattern contains whitespace or a control character, which no name holds",
            ));
        }
        Ok(ResourcePattern {
            kind,
            glob: Some(glob.to_owned()),
        })
    }

    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The name glob; `None` for `cluster`.
    pub fn glob(&self) -> Option<&str> {
        self.glob.as_deref()
    }

    /// Whether `resource` is of this pattern's kind and its name matches the glob.
    pub fn matches(&self, resource: &Resource) -> bool {
        self.kind == resource.kind()
            && match (&self.glob, resource.name()) {
                (Some(glob), Some(name)) => glob_matches(glob, name),
                (None, None) => true,
                _ => false,
            }
    }

    /// Whether every resource `other` matches is also matched by `self`.
    ///
    /// Sound but not complete: `true` is always right, while a few exotic
    /// pairs of globs answer `false` although they are nested. The test
    /// reads `other`'s glob as a name in which each `*` is a literal
    /// character. A literal in `self` never equals `*`, so each of
    /// `other`'s stars is swallowed by one of `self`'s stars, and a star
    /// swallows whatever text the other star stands for.
    pub fn covers(&self, other: &ResourcePattern) -> bool {
        self.kind == other.kind
            && match (&self.glob, &other.glob) {
                (Some(outer), Some(inner)) => glob_matches(outer, inner),
                (None, None) => true,
                _ => false,
            }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.glob {
            Some(glob) => write!(f, "{}:{glob}", self.kind),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl FromStr for ResourcePattern {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_PATTERN_LEN {
            return Err(PolicyError::TooLarge {
                what: format!("bytes in resource pattern {:?}", excerpt(text)),
                limit: MAX_PATTERN_LEN,
            });
        }
        if text == ResourceKind::Cluster.as_str() {
            return Ok(ResourcePattern::cluster());
        }
        let invalid = |reason: String| PolicyError::InvalidPattern {
            pattern: excerpt(text),
            reason,
        };
        let Some((kind, glob)) = text.split_once(':') else {
            return Err(invalid("it has no `<kind>:` prefix".to_owned()));
        };
        let kind = match kind {
            "topic" => ResourceKind::Topic,
            "group" => ResourceKind::Group,
            "smartmodule" => ResourceKind::SmartModule,
            "cluster" => ResourceKind::Cluster,
            unknown => {
                return Err(invalid(format!(
                    "unknown resource kind {:?}",
                    excerpt(unknown)
                )));
            }
        };
        ResourcePattern::named(kind, glob)
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = PolicyError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<ResourcePattern> for String {
    fn from(pattern: ResourcePattern) -> Self {
        pattern.to_string()
    }
}

/// Whether `name` matches `glob`, where `*` matches any run of bytes and
/// every other byte matches itself.
///
/// Working on bytes is exact for UTF-8: a literal run of the glob is whole
/// characters, and a UTF-8 sequence can only match at a character boundary
/// of another, so no match splits a character.
///
/// The classic two-pointer matcher: on a mismatch it backtracks only to the
/// most recent `*`, letting it swallow one more byte. Earlier stars never
/// need revisiting, because whatever a later star must swallow it can swallow
/// in any position. So the cost is at most `glob.len() * name.len()` steps,
/// with no recursion, even for patterns like `a*a*a*a*b`.
pub(crate) fn glob_matches(glob: &str, name: &str) -> bool {
    let (glob, name) = (glob.as_bytes(), name.as_bytes());
    let (mut glob_at, mut name_at) = (0, 0);
    // The position just after the most recent `*` in the glob, and where in
    // the name the text that star swallows currently ends.
    let mut backtrack: Option<(usize, usize)> = None;
    while name_at < name.len() {
        match glob.get(glob_at) {
            Some(b'*') => {
                glob_at += 1;
                backtrack = Some((glob_at, name_at));
            }
            Some(&literal) if literal == name[name_at] => {
                glob_at += 1;
                name_at += 1;
            }
            _ => match backtrack {
                Some((after_star, swallowed_to)) => {
                    glob_at = after_star;
                    name_at = swallowed_to + 1;
                    backtrack = Some((after_star, name_at));
                }
                None => return false,
            },
        }
    }
    glob[glob_at..].iter().all(|&byte| byte == b'*')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "orders", true),
            ("**", "orders", true),
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("orders", "order", false),
            ("orders-*", "orders-", true),
            ("orders-*", "orders-eu", true),
            ("orders-*", "orders", false),
            ("*-internal", "orders-internal", true),
            ("*-internal", "orders-internal-2", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("a*a*b", "aaaaab", true),
            ("a*a*b", "ab", false),
            ("a?b", "a?b", true),
            ("a?b", "axb", false),
            ("a.b", "axb", false),
            ("[ab]", "a", false),
            ("[ab]", "[ab]", true),
            ("é*", "éa", true),
            ("*é", "aé", true),
            ("*", "é", true),
        ];
        for &(glob, name, expected) in cases {
            assert_eq!(glob_matches(glob, name), expected, "{glob:?} vs {name:?}");
        }
    }

    #[test]
    fn pathological_pattern_finishes() {
        let glob = "a*".repeat(60) + "b";
        let name = "a".repeat(10_000);
        assert!(!glob_matches(&glob, &name));
        assert!(glob_matches(&glob, &(name + "b")));
    }

    /// A direct transcription of the glob's meaning, exponential in the worst
    /// case, so only fed short strings.
    fn reference_matches(glob: &[u8], name: &[u8]) -> bool {
        match glob.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => {
                (0..=name.len()).any(|skip| reference_matches(rest, &name[skip..]))
            }
            Some((literal, rest)) => {
                name.first() == Some(literal) && reference_matches(rest, &name[1..])
            }
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_reference(glob in "[ab*]{0,8}", name in "[ab]{0,10}") {
            prop_assert_eq!(
                glob_matches(&glob, &name),
                reference_matches(glob.as_bytes(), name.as_bytes())
            );
        }

        #[test]
        fn covers_is_sound(outer in "[ab*]{1,5}", inner in "[ab*]{1,5}", name in "[ab]{0,8}") {
            let outer = ResourcePattern::named(ResourceKind::Topic, &outer).unwrap();
            let inner = ResourcePattern::named(ResourceKind::Topic, &inner).unwrap();
            let topic = Resource::Topic(name);
            if outer.covers(&inner) && inner.matches(&topic) {
                prop_assert!(outer.matches(&topic), "{outer} covers {inner} but not {topic}");
            }
        }
    }

    #[test]
    fn pattern_text_round_trips() {
        for text in [
            "topic:orders",
            "topic:orders-*",
            "topic:*",
            "group:g*",
            "smartmodule:filter",
            "cluster",
            "topic:a?b",
            "topic:a:b",
        ] {
            let pattern: ResourcePattern = text.parse().unwrap();
            assert_eq!(pattern.to_string(), text);
        }
        let pattern: ResourcePattern = "group:g*".parse().unwrap();
        assert_eq!(pattern.kind(), ResourceKind::Group);
        assert_eq!(pattern.glob(), Some("g*"));
        assert_eq!(ResourcePattern::cluster().glob(), None);
    }

    #[test]
    fn malformed_patterns_are_refused_with_the_reason() {
        let cases = [
            ("queue:x", "unknown resource kind \"queue\""),
            ("topic:", "the name pattern is empty"),
            ("orders", "no `<kind>:` prefix"),
            ("Topic:orders", "unknown resource kind \"Topic\""),
            ("cluster:main", "`cluster` takes no name"),
            ("topic:a b", "whitespace or a control character"),
            ("", "no `<kind>:` prefix"),
        ];
        for (text, reason) in cases {
            let error = text.parse::<ResourcePattern>().unwrap_err();
            assert!(
                matches!(&error, PolicyError::InvalidPattern { pattern, .. } if pattern == text),
                "{text:?}: {error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(reason), "{text:?}: {message}");
        }
    }

    #[test]
    fn pattern_length_is_bounded() {
        let longest = format!("topic:{}", "a".repeat(MAX_PATTERN_LEN - "topic:".len()));
        assert!(longest.parse::<ResourcePattern>().is_ok());
        let error = format!("{longest}a")
            .parse::<ResourcePattern>()
            .unwrap_err();
        assert!(
            matches!(
                error,
                PolicyError::TooLarge {
                    limit: MAX_PATTERN_LEN,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn patterns_match_only_their_own_kind() {
        let topic = |name: &str| Resource::Topic(name.to_owned());
        let all_topics: ResourcePattern = "topic:*".parse().unwrap();
        assert!(all_topics.matches(&topic("anything")));
        assert!(!all_topics.matches(&Resource::Group("anything".to_owned())));
        assert!(!all_topics.matches(&Resource::Cluster));
        assert!(ResourcePattern::cluster().matches(&Resource::Cluster));
        assert!(!ResourcePattern::cluster().matches(&topic("cluster")));
        let modules: ResourcePattern = "smartmodule:*".parse().unwrap();
        assert!(modules.matches(&Resource::SmartModule("m".to_owned())));
        assert!(!modules.matches(&topic("m")));
    }

    #[test]
    fn resource_display() {
        assert_eq!(
            Resource::Topic("orders".to_owned()).to_string(),
            "topic:orders"
        );
        assert_eq!(Resource::Group("g1".to_owned()).to_string(), "group:g1");
        assert_eq!(Resource::Cluster.to_string(), "cluster");
        assert_eq!(
            Resource::SmartModule("m".to_owned()).to_string(),
            "smartmodule:m"
        );
    }
}

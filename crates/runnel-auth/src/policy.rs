//! Rules, roles, bindings, and the decision: [`Policy::check`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::action::{Action, Effect};
use crate::error::{Denied, PolicyError};
use crate::names::{validate_principal, validate_role_name};
use crate::resource::{Resource, ResourceKind, ResourcePattern};

/// The most roles a policy may define.
pub const MAX_ROLES: usize = 1024;
/// The most rules a role may hold.
pub const MAX_RULES_PER_ROLE: usize = 64;
/// The most resource patterns a rule may list.
pub const MAX_PATTERNS_PER_RULE: usize = 64;
/// The most actions a rule may list (there are six; repeats are allowed but bounded).
pub const MAX_ACTIONS_PER_RULE: usize = 64;
/// The most bindings a policy may hold.
pub const MAX_BINDINGS: usize = 10_000;

/// One statement of a role: `effect` these `actions` on these `resources`.
///
/// Unknown fields are refused when parsing, so a misspelt `effect` cannot
/// silently turn a deny rule into an allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `allow` when absent, as most rules grant.
    #[serde(default = "allow")]
    pub effect: Effect,
    pub actions: Vec<Action>,
    pub resources: Vec<ResourcePattern>,
}

fn allow() -> Effect {
    Effect::Allow
}

impl Rule {
    /// Whether this rule speaks about `action`. An allow rule covers what
    /// its actions grant (see [`Action::covers`]). A deny rule covers only
    /// the actions it lists, or every action if it lists `admin`: denying
    /// `read` takes away reading, not the `describe` that another rule
    /// grants, since describe is implied by a grant, not part of reading.
    pub fn covers(&self, action: Action) -> bool {
        self.actions.iter().any(|&listed| match self.effect {
            Effect::Allow => listed.covers(action),
            Effect::Deny => listed == action || listed == Action::Admin,
        })
    }

    /// Whether one of this rule's patterns matches `resource`.
    pub fn applies_to(&self, resource: &Resource) -> bool {
        self.resources
            .iter()
            .any(|pattern| pattern.matches(resource))
    }
}

/// A named set of rules that bindings give to principals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// Gives `principal` every rule of the role named `role`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub principal: String,
    pub role: String,
}

/// The whole authorization state: roles and who holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

impl Policy {
    /// Checks names and references: role names valid and unique, every
    /// binding names an existing role and a valid principal, no duplicate
    /// bindings, every rule has at least one action and one resource, and
    /// every count within its `MAX_*` limit. Sizes are checked before
    /// anything is looked at in detail, so an oversized policy is refused
    /// cheaply. Resource patterns are valid by construction.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.roles.len() > MAX_ROLES {
            return Err(too_large("roles in the policy".to_owned(), MAX_ROLES));
        }
        if self.bindings.len() > MAX_BINDINGS {
            return Err(too_large("bindings in the policy".to_owned(), MAX_BINDINGS));
        }
        let mut role_names = HashSet::with_capacity(self.roles.len());
        for role in &self.roles {
            validate_role(role)?;
            if !role_names.insert(role.name.as_str()) {
                return Err(PolicyError::DuplicateRole(role.name.clone()));
            }
        }
        let mut bindings = HashSet::with_capacity(self.bindings.len());
        for binding in &self.bindings {
            validate_principal(&binding.principal)?;
            if !role_names.contains(binding.role.as_str()) {
                return Err(PolicyError::UnknownRole {
                    principal: binding.principal.clone(),
                    role: binding.role.clone(),
                });
            }
            if !bindings.insert(binding) {
                return Err(PolicyError::DuplicateBinding {
                    principal: binding.principal.clone(),
                    role: binding.role.clone(),
                });
            }
        }
        Ok(())
    }

    /// The decision for `principal` doing `action` on `resource`: allowed
    /// only if an allow rule bound to the principal covers it and no deny
    /// rule bound to the principal does. See the crate documentation.
    pub fn check(
        &self,
        principal: &str,
        action: Action,
        resource: &Resource,
    ) -> Result<(), Denied> {
        let mut allowed = false;
        for rule in self.rules_for(principal) {
            if rule.covers(action) && rule.applies_to(resource) {
                match rule.effect {
                    Effect::Deny => {
                        allowed = false;
                        break;
                    }
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                principal: principal.to_owned(),
                action,
                resource: resource.clone(),
            })
        }
    }

    /// Whether `principal` may do `action` on at least one topic, as far as
    /// the patterns alone tell: some allow rule covering `action` names a
    /// topic pattern that no single deny rule covering `action` entirely
    /// contains (see [`ResourcePattern::covers`]; a deny on `topic:*`
    /// contains every topic pattern).
    ///
    /// It may answer `true` when several deny patterns together leave
    /// nothing allowed; that is safe for its purpose (letting a producer get
    /// a producer id when it may write somewhere), because every produce is
    /// still checked per topic with [`Policy::check`].
    pub fn allows_on_any_topic(&self, principal: &str, action: Action) -> bool {
        let topic_patterns = |effect: Effect| {
            self.rules_for(principal)
                .filter(move |rule| rule.effect == effect && rule.covers(action))
                .flat_map(|rule| &rule.resources)
                .filter(|pattern| pattern.kind() == ResourceKind::Topic)
        };
        topic_patterns(Effect::Allow)
            .any(|allowed| !topic_patterns(Effect::Deny).any(|denied| denied.covers(allowed)))
    }

    /// Every rule of every role bound to `principal`. A binding to a role
    /// the policy does not define contributes nothing.
    fn rules_for<'a>(&'a self, principal: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.bindings
            .iter()
            .filter(move |binding| binding.principal == principal)
            .flat_map(|binding| self.roles.iter().filter(|role| role.name == binding.role))
            .flat_map(|role| &role.rules)
    }
}

fn validate_role(role: &Role) -> Result<(), PolicyError> {
    validate_role_name(&role.name)?;
    if role.rules.len() > MAX_RULES_PER_ROLE {
        return Err(too_large(
            format!("rules in role {:?}", role.name),
            MAX_RULES_PER_ROLE,
        ));
    }
    for (index, rule) in role.rules.iter().enumerate() {
        let position = index + 1;
        let empty = |missing| PolicyError::EmptyRule {
            role: role.name.clone(),
            rule: position,
            missing,
        };
        if rule.actions.is_empty() {
            return Err(empty("actions"));
        }
        if rule.resources.is_empty() {
            return Err(empty("resources"));
        }
        if rule.actions.len() > MAX_ACTIONS_PER_RULE {
            return Err(too_large(
                format!("actions in rule {position} of role {:?}", role.name),
                MAX_ACTIONS_PER_RULE,
            ));
        }
        if rule.resources.len() > MAX_PATTERNS_PER_RULE {
            return Err(too_large(
                format!("resources in rule {position} of role {:?}", role.name),
                MAX_PATTERNS_PER_RULE,
            ));
        }
    }
    Ok(())
}

fn too_large(what: String, limit: usize) -> PolicyError {
    PolicyError::TooLarge { what, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> ResourcePattern {
        text.parse().unwrap()
    }

    fn rule(effect: Effect, actions: &[Action], resources: &[&str]) -> Rule {
        Rule {
            effect,
            actions: actions.to_vec(),
            resources: resources.iter().map(|text| pattern(text)).collect(),
        }
    }

    fn role(name: &str, rules: Vec<Rule>) -> Role {
        Role {
            name: name.to_owned(),
            rules,
        }
    }

    fn bind(principal: &str, role: &str) -> Binding {
        Binding {
            principal: principal.to_owned(),
            role: role.to_owned(),
        }
    }

    /// `alice` holds one role with the given rules.
    fn alice_with(rules: Vec<Rule>) -> Policy {
        Policy {
            roles: vec![role("r", rules)],
            bindings: vec![bind("alice", "r")],
        }
    }

    fn topic(name: &str) -> Resource {
        Resource::Topic(name.to_owned())
    }

    /// The rule sets the matrix tries for one action and one pattern.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Rules {
        Allow,
        Deny,
        AllowAndDeny,
        None,
    }

    /// For each pattern: resources it must match and resources it must not.
    fn pattern_cases() -> Vec<(&'static str, Vec<Resource>, Vec<Resource>)> {
        vec![
            (
                "topic:orders",
                vec![topic("orders")],
                vec![
                    topic("orders-eu"),
                    topic("order"),
                    Resource::Group("orders".to_owned()),
                ],
            ),
            (
                "topic:orders-*",
                vec![topic("orders-"), topic("orders-eu")],
                vec![
                    topic("orders"),
                    topic("xorders-eu"),
                    Resource::Group("orders-eu".to_owned()),
                ],
            ),
            (
                "topic:*",
                vec![topic("orders"), topic("x")],
                vec![Resource::Group("orders".to_owned()), Resource::Cluster],
            ),
            (
                "group:g*",
                vec![
                    Resource::Group("g".to_owned()),
                    Resource::Group("g1".to_owned()),
                ],
                vec![Resource::Group("h1".to_owned()), topic("g1")],
            ),
            (
                "cluster",
                vec![Resource::Cluster],
                vec![topic("cluster"), Resource::Group("cluster".to_owned())],
            ),
            (
                "smartmodule:m",
                vec![Resource::SmartModule("m".to_owned())],
                vec![Resource::SmartModule("m2".to_owned()), topic("m")],
            ),
        ]
    }

    #[test]
    fn authorization_matrix() {
        for granted in Action::ALL {
            for (text, inside, outside) in pattern_cases() {
                for rules in [Rules::Allow, Rules::Deny, Rules::AllowAndDeny, Rules::None] {
                    let mut list = Vec::new();
                    if matches!(rules, Rules::Allow | Rules::AllowAndDeny) {
                        list.push(rule(Effect::Allow, &[granted], &[text]));
                    }
                    if matches!(rules, Rules::Deny | Rules::AllowAndDeny) {
                        list.push(rule(Effect::Deny, &[granted], &[text]));
                    }
                    let policy = alice_with(list);
                    for requested in Action::ALL {
                        for resource in &inside {
                            let denied = requested == granted || granted == Action::Admin;
                            let expected = match rules {
                                Rules::Allow => granted.covers(requested),
                                Rules::AllowAndDeny => granted.covers(requested) && !denied,
                                Rules::Deny | Rules::None => false,
                            };
                            assert_eq!(
                                policy.check("alice", requested, resource).is_ok(),
                                expected,
                                "{rules:?} {granted} on {text}: {requested} {resource}"
                            );
                        }
                        for resource in &outside {
                            assert!(
                                policy.check("alice", requested, resource).is_err(),
                                "{rules:?} {granted} on {text} must not reach {resource}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn deny_overrides_allow_across_roles_in_either_order() {
        let writer = role(
            "writer",
            vec![rule(Effect::Allow, &[Action::Write], &["topic:*"])],
        );
        let blocked = role(
            "blocked",
            vec![rule(Effect::Deny, &[Action::Write], &["topic:secret-*"])],
        );
        for bindings in [
            vec![bind("alice", "writer"), bind("alice", "blocked")],
            vec![bind("alice", "blocked"), bind("alice", "writer")],
        ] {
            let policy = Policy {
                roles: vec![writer.clone(), blocked.clone()],
                bindings,
            };
            assert_eq!(policy.validate(), Ok(()));
            assert!(
                policy
                    .check("alice", Action::Write, &topic("orders"))
                    .is_ok()
            );
            let denied = policy
                .check("alice", Action::Write, &topic("secret-keys"))
                .unwrap_err();
            assert_eq!(
                denied.to_string(),
                "permission denied: alice may not write topic:secret-keys"
            );
        }
    }

    #[test]
    fn other_principals_get_nothing() {
        let policy = alice_with(vec![rule(
            Effect::Allow,
            &[Action::Admin],
            &["topic:*", "cluster"],
        )]);
        for principal in ["bob", "Alice", "alice ", "", "sc", "spu:1"] {
            for action in Action::ALL {
                assert!(policy.check(principal, action, &topic("orders")).is_err());
                assert!(policy.check(principal, action, &Resource::Cluster).is_err());
            }
            assert!(!policy.allows_on_any_topic(principal, Action::Write));
        }
    }

    #[test]
    fn empty_policy_denies_everything() {
        let policy = Policy::default();
        assert_eq!(policy.validate(), Ok(()));
        assert_eq!(
            policy.check("alice", Action::Describe, &Resource::Cluster),
            Err(Denied {
                principal: "alice".to_owned(),
                action: Action::Describe,
                resource: Resource::Cluster,
            })
        );
    }

    #[test]
    fn admin_and_describe_implications() {
        let admin = alice_with(vec![rule(Effect::Allow, &[Action::Admin], &["topic:*"])]);
        for action in Action::ALL {
            assert!(
                admin.check("alice", action, &topic("t")).is_ok(),
                "admin covers {action}"
            );
        }

        let deny_admin = alice_with(vec![
            rule(Effect::Allow, &Action::ALL, &["topic:*"]),
            rule(Effect::Deny, &[Action::Admin], &["topic:*"]),
        ]);
        for action in Action::ALL {
            assert!(
                deny_admin.check("alice", action, &topic("t")).is_err(),
                "deny admin denies {action}"
            );
        }

        for granted in [Action::Read, Action::Write, Action::Create, Action::Delete] {
            let policy = alice_with(vec![rule(Effect::Allow, &[granted], &["topic:t"])]);
            assert!(
                policy.check("alice", Action::Describe, &topic("t")).is_ok(),
                "{granted}"
            );
        }

        let policy = alice_with(vec![rule(Effect::Allow, &[Action::Describe], &["topic:t"])]);
        for action in [
            Action::Read,
            Action::Write,
            Action::Create,
            Action::Delete,
            Action::Admin,
        ] {
            assert!(
                policy.check("alice", action, &topic("t")).is_err(),
                "describe grants no {action}"
            );
        }
    }

    #[test]
    fn deny_read_does_not_deny_granted_describe() {
        let policy = alice_with(vec![
            rule(Effect::Allow, &[Action::Describe], &["topic:*"]),
            rule(Effect::Deny, &[Action::Read], &["topic:*"]),
        ]);
        assert!(policy.check("alice", Action::Describe, &topic("t")).is_ok());
        assert!(policy.check("alice", Action::Read, &topic("t")).is_err());

        let policy = alice_with(vec![
            rule(Effect::Allow, &[Action::Read], &["topic:*"]),
            rule(Effect::Deny, &[Action::Read], &["topic:*"]),
        ]);
        assert!(policy.check("alice", Action::Describe, &topic("t")).is_ok());
        assert!(policy.check("alice", Action::Read, &topic("t")).is_err());

        let policy = alice_with(vec![
            rule(Effect::Allow, &[Action::Read], &["topic:*"]),
            rule(Effect::Deny, &[Action::Describe], &["topic:*"]),
        ]);
        assert!(
            policy
                .check("alice", Action::Describe, &topic("t"))
                .is_err()
        );
        assert!(policy.check("alice", Action::Read, &topic("t")).is_ok());
    }

    #[test]
    fn unknown_role_grants_nothing() {
        let policy = Policy {
            roles: vec![],
            bindings: vec![bind("alice", "ghost")],
        };
        assert!(policy.check("alice", Action::Read, &topic("t")).is_err());
        assert_eq!(
            policy.validate(),
            Err(PolicyError::UnknownRole {
                principal: "alice".to_owned(),
                role: "ghost".to_owned(),
            })
        );
    }

    #[test]
    fn allows_on_any_topic() {
        let write_orders = rule(Effect::Allow, &[Action::Write], &["topic:orders-*"]);
        let check =
            |rules: Vec<Rule>| alice_with(rules).allows_on_any_topic("alice", Action::Write);

        assert!(check(vec![write_orders.clone()]));
        assert!(!check(vec![]));
        assert!(!check(vec![rule(
            Effect::Allow,
            &[Action::Read],
            &["topic:*"]
        )]));
        assert!(!check(vec![rule(
            Effect::Allow,
            &[Action::Write],
            &["group:*", "cluster"]
        )]));
        assert!(check(vec![rule(
            Effect::Allow,
            &[Action::Admin],
            &["topic:x"]
        )]));
        for denied in ["topic:*", "topic:orders-*", "topic:or*"] {
            let deny = rule(Effect::Deny, &[Action::Write], &[denied]);
            assert!(!check(vec![write_orders.clone(), deny]), "deny {denied}");
        }
        for denied in ["topic:orders-internal", "group:*", "cluster"] {
            let deny = rule(Effect::Deny, &[Action::Write], &[denied]);
            assert!(check(vec![write_orders.clone(), deny]), "deny {denied}");
        }
        let deny_read = rule(Effect::Deny, &[Action::Read], &["topic:*"]);
        assert!(check(vec![write_orders.clone(), deny_read]));
        let deny_admin = rule(Effect::Deny, &[Action::Admin], &["topic:*"]);
        assert!(!check(vec![write_orders, deny_admin]));
    }

    fn valid_policy() -> Policy {
        Policy {
            roles: vec![
                role(
                    "producer",
                    vec![rule(Effect::Allow, &[Action::Write], &["topic:*"])],
                ),
                role(
                    "ops",
                    vec![rule(Effect::Allow, &[Action::Admin], &["cluster"])],
                ),
            ],
            bindings: vec![
                bind("alice", "producer"),
                bind("alice", "ops"),
                bind("spu:1", "ops"),
            ],
        }
    }

    #[test]
    fn validate_refuses_each_defect() {
        assert_eq!(valid_policy().validate(), Ok(()));
        type Edit = fn(&mut Policy);
        let cases: &[(Edit, &str)] = &[
            (
                |p| p.roles[0].name = "bad name".to_owned(),
                "invalid role name \"bad name\"",
            ),
            (
                |p| p.roles[1].name = "producer".to_owned(),
                "role \"producer\" is defined more than once",
            ),
            (
                |p| p.bindings[0].role = "nobody".to_owned(),
                "bound to role \"nobody\", which the policy does not define",
            ),
            (
                |p| p.bindings[0].principal = "a b".to_owned(),
                "invalid principal \"a b\"",
            ),
            (
                |p| p.bindings.push(bind("alice", "ops")),
                "\"alice\" is bound to role \"ops\" more than once",
            ),
            (
                |p| p.roles[1].rules[0].actions.clear(),
                "rule 1 of role \"ops\" lists no actions",
            ),
            (
                |p| p.roles[0].rules[0].resources.clear(),
                "rule 1 of role \"producer\" lists no resources",
            ),
            (
                |p| {
                    p.roles = (0..=MAX_ROLES)
                        .map(|i| role(&format!("r{i}"), vec![]))
                        .collect()
                },
                "too many roles in the policy: the limit is 1024",
            ),
            (
                |p| {
                    p.bindings = (0..=MAX_BINDINGS)
                        .map(|i| bind(&format!("u{i}"), "ops"))
                        .collect()
                },
                "too many bindings in the policy: the limit is 10000",
            ),
            (
                |p| p.roles[0].rules = vec![p.roles[0].rules[0].clone(); MAX_RULES_PER_ROLE + 1],
                "too many rules in role \"producer\": the limit is 64",
            ),
            (
                |p| p.roles[0].rules[0].actions = vec![Action::Read; MAX_ACTIONS_PER_RULE + 1],
                "too many actions in rule 1 of role \"producer\": the limit is 64",
            ),
            (
                |p| {
                    p.roles[0].rules[0].resources =
                        vec![ResourcePattern::cluster(); MAX_PATTERNS_PER_RULE + 1]
                },
                "too many resources in rule 1 of role \"producer\": the limit is 64",
            ),
        ];
        for (edit, expected) in cases {
            let mut policy = valid_policy();
            edit(&mut policy);
            let message = policy.validate().unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "expected {expected:?} in {message:?}"
            );
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let mut policy = valid_policy();
        policy.roles[0].rules = vec![policy.roles[0].rules[0].clone(); MAX_RULES_PER_ROLE];
        policy.roles[1].rules[0].resources =
            vec![ResourcePattern::cluster(); MAX_PATTERNS_PER_RULE];
        policy
            .roles
            .extend((policy.roles.len()..MAX_ROLES).map(|i| role(&format!("r{i}"), vec![])));
        policy
            .bindings
            .extend((policy.bindings.len()..MAX_BINDINGS).map(|i| bind(&format!("u{i}"), "ops")));
        assert_eq!(policy.roles.len(), MAX_ROLES);
        assert_eq!(policy.bindings.len(), MAX_BINDINGS);
        assert_eq!(policy.validate(), Ok(()));
    }
}

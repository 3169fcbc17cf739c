//! Parsing policies from YAML (as `runnel apply -f policy.yaml` will), round
//! trips, and the errors a malformed file gives.

use runnel_auth::{Action, Binding, Effect, Policy, Resource, ResourcePattern, Role, Rule};

const PRODUCER_POLICY: &str = r#"
roles:
  - name: producer
    rules:
      - actions: [write, describe]
        resources: ["topic:orders-*"]
      - effect: deny
        actions: [write]
        resources: ["topic:orders-internal"]
  - name: ops
    rules:
      - actions: [admin]
        resources: [cluster]
bindings:
  - principal: alice
    role: producer
"#;

fn pattern(text: &str) -> ResourcePattern {
    text.parse().unwrap()
}

fn parse(text: &str) -> Result<Policy, String> {
    serde_yaml_ng::from_str(text).map_err(|error| error.to_string())
}

#[test]
fn example_policy_parses_to_the_expected_value_and_round_trips() {
    let policy = parse(PRODUCER_POLICY).unwrap();
    let expected = Policy {
        roles: vec![
            Role {
                name: "producer".to_owned(),
                rules: vec![
                    Rule {
                        effect: Effect::Allow,
                        actions: vec![Action::Write, Action::Describe],
                        resources: vec![pattern("topic:orders-*")],
                    },
                    Rule {
                        effect: Effect::Deny,
                        actions: vec![Action::Write],
                        resources: vec![pattern("topic:orders-internal")],
                    },
                ],
            },
            Role {
                name: "ops".to_owned(),
                rules: vec![Rule {
                    effect: Effect::Allow,
                    actions: vec![Action::Admin],
                    resources: vec![ResourcePattern::cluster()],
                }],
            },
        ],
        bindings: vec![Binding {
            principal: "alice".to_owned(),
            role: "producer".to_owned(),
        }],
    };
    assert_eq!(policy, expected);
    assert_eq!(policy.validate(), Ok(()));

    let written = serde_yaml_ng::to_string(&policy).unwrap();
    assert!(written.contains("topic:orders-*"), "{written}");
    assert!(written.contains("effect: deny"), "{written}");
    assert_eq!(parse(&written).unwrap(), policy);
}

#[test]
fn example_policy_decides_as_written() {
    let policy = parse(PRODUCER_POLICY).unwrap();
    let topic = |name: &str| Resource::Topic(name.to_owned());
    assert!(
        policy
            .check("alice", Action::Write, &topic("orders-eu"))
            .is_ok()
    );
    assert!(
        policy
            .check("alice", Action::Describe, &topic("orders-internal"))
            .is_ok()
    );
    assert_eq!(
        policy
            .check("alice", Action::Write, &topic("orders-internal"))
            .unwrap_err()
            .to_string(),
        "permission denied: alice may not write topic:orders-internal"
    );
    assert!(
        policy
            .check("alice", Action::Read, &topic("orders-eu"))
            .is_err()
    );
    assert!(
        policy
            .check("alice", Action::Admin, &Resource::Cluster)
            .is_err()
    );
    assert!(policy.allows_on_any_topic("alice", Action::Write));
    assert!(!policy.allows_on_any_topic("alice", Action::Read));
    assert!(!policy.allows_on_any_topic("bob", Action::Write));
}

#[test]
fn empty_document_sections_default_to_nothing() {
    assert_eq!(parse("{}").unwrap(), Policy::default());
    assert_eq!(parse("roles: []").unwrap(), Policy::default());
}

/// A policy with one role `r` of one rule, bound to `alice`; `rule` is
/// the rule's YAML mapping, one field per line.
fn one_rule_policy(rule: &[&str]) -> String {
    let mut text = String::from("roles:\n  - name: r\n    rules:\n");
    for (index, field) in rule.iter().enumerate() {
        let lead = if index == 0 { "      - " } else { "        " };
        text.push_str(&format!("{lead}{field}\n"));
    }
    text.push_str("bindings:\n  - principal: alice\n    role: r\n");
    text
}

#[test]
fn malformed_files_are_refused_with_a_clear_error() {
    let with_resource = |resource: &str| {
        one_rule_policy(&["actions: [read]", &format!("resources: [\"{resource}\"]")])
    };
    let cases = [
        (with_resource("queue:x"), "unknown resource kind \"queue\""),
        (with_resource("topic:"), "the name pattern is empty"),
        (with_resource("cluster:x"), "`cluster` takes no name"),
        (
            one_rule_policy(&["actions: [reed]", "resources: [cluster]"]),
            "unknown variant `reed`",
        ),
        (
            one_rule_policy(&["efect: deny", "actions: [read]", "resources: [cluster]"]),
            "unknown field `efect`",
        ),
        ("binding: []\n".to_owned(), "unknown field `binding`"),
    ];
    for (text, expected) in cases {
        let message = parse(&text).unwrap_err();
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn only_star_is_special_in_a_glob() {
    let policy = parse(&one_rule_policy(&[
        "actions: [read]",
        "resources: [\"topic:a?b\"]",
    ]))
    .unwrap();
    assert_eq!(policy.validate(), Ok(()));
    let topic = |name: &str| Resource::Topic(name.to_owned());
    assert!(policy.check("alice", Action::Read, &topic("a?b")).is_ok());
    assert!(policy.check("alice", Action::Read, &topic("axb")).is_err());
}

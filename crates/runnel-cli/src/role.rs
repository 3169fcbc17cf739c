//! `runnel role …` and `runnel apply`: roles (rules granting or denying
//! actions on resource patterns) and the principals bound to them,
//! through the SC (admin only, on a TLS cluster).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};
use runnel_auth::{Action, Binding, Effect, Policy, ResourcePattern, Role, Rule};

use crate::server::parse_principal;
use crate::{CommandResult, Output};

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 16 << 20;

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create a role from allow and deny rules. Deny rules override allow
    /// rules; what no rule allows is denied.
    Create(CreateArgs),
    /// Give a principal (a user name, or a certificate's principal) a
    /// role, or take it away with --unbind.
    Bind {
        #[arg(value_parser = parse_role_name)]
        role: String,
        #[arg(value_parser = parse_principal)]
        principal: String,
        /// Remove the binding instead.
        #[arg(long)]
        unbind: bool,
    },
    /// List roles, their rules, and who holds them. `-O json` prints a
    /// policy that `runnel apply -f` accepts.
    List {
        #[arg(short = 'O', long = "output", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("rules").required(true).multiple(true).args(["allow", "deny"])))]
pub struct CreateArgs {
    #[arg(value_parser = parse_role_name)]
    name: String,
    /// Allow ACTIONS (comma-separated: read, write, create, delete,
    /// describe, admin) on PATTERN (topic:<glob>, group:<glob>,
    /// smartmodule:<glob> or cluster; `*` matches any run of characters),
    /// as `write,describe=topic:orders-*`. Repeatable.
    #[arg(long, value_name = "ACTIONS=PATTERN", value_parser = parse_allow)]
    allow: Vec<Rule>,
    /// Deny ACTIONS on PATTERN, written as for --allow. Repeatable.
    #[arg(long, value_name = "ACTIONS=PATTERN", value_parser = parse_deny)]
    deny: Vec<Rule>,
    /// Replace the role if it exists, instead of failing.
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A policy file (YAML): `roles:` (each with `name` and `rules` of
    /// `effect`, `actions`, `resources`) and `bindings:` (each with
    /// `principal` and `role`). It replaces the cluster's whole policy.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
}

fn parse_role_name(text: &str) -> Result<String, String> {
    runnel_auth::validate_role_name(text)
        .map(|()| text.to_string())
        .map_err(|error| error.to_string())
}

fn parse_allow(text: &str) -> Result<Rule, String> {
    parse_rule(Effect::Allow, text)
}

fn parse_deny(text: &str) -> Result<Rule, String> {
    parse_rule(Effect::Deny, text)
}

/// `ACTIONS=PATTERN`, as `write,describe=topic:orders-*`.
fn parse_rule(effect: Effect, text: &str) -> Result<Rule, String> {
    let Some((actions, pattern)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} is not ACTIONS=PATTERN; write it as write,describe=topic:orders-*"
        ));
    };
    if actions.is_empty() {
        return Err(format!(
            "{text:?} lists no action before '='; list some of read, write, create, delete, \
             describe, admin"
        ));
    }
    let actions = actions
        .split(',')
        .map(str::parse::<Action>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| error.to_string())?;
    let pattern: ResourcePattern = pattern.parse().map_err(|error| format!("{error}"))?;
    Ok(Rule {
        effect,
        actions,
        resources: vec![pattern],
    })
}

pub async fn run(profile: Option<String>, command: RoleCommand) -> CommandResult {
    match command {
        RoleCommand::Create(args) => {
            let role = Role {
                name: args.name,
                rules: args.allow.into_iter().chain(args.deny).collect(),
            };
            let policy = Policy {
                roles: vec![role.clone()],
                bindings: Vec::new(),
            };
            policy.validate()?;
            let admin = crate::admin::admin(profile).await?;
            let name = role.name.clone();
            admin.create_role(role, args.replace).await?;
            let verb = if args.replace { "set" } else { "created" };
            println!(
                "role '{name}' {verb}; give it to someone with `runnel role bind {name} PRINCIPAL`"
            );
        }
        RoleCommand::Bind {
            role,
            principal,
            unbind,
        } => {
            let admin = crate::admin::admin(profile).await?;
            let binding = Binding {
                principal: principal.clone(),
                role: role.clone(),
            };
            admin.bind_role(binding, unbind).await?;
            if unbind {
                println!("'{principal}' no longer holds role '{role}'");
            } else {
                println!("'{principal}' holds role '{role}'");
            }
        }
        RoleCommand::List { output } => {
            let admin = crate::admin::admin(profile).await?;
            print_policy(&admin.list_roles().await?, output)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn apply(profile: Option<String>, args: ApplyArgs) -> CommandResult {
    let policy = read_policy(&args.file)?;
    let admin = crate::admin::admin(profile).await?;
    let applied = admin.apply_policy(policy.clone()).await?;
    println!(
        "applied {}: {} roles, {} bindings; roles and bindings not in it were removed",
        args.file.display(),
        applied.roles,
        applied.bindings
    );
    for role in &policy.roles {
        println!("role {}: {} rules", role.name, role.rules.len());
    }
    for binding in &policy.bindings {
        println!("binding {} -> {}", binding.principal, binding.role);
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads, parses and validates a policy file; errors name the file.
fn read_policy(path: &Path) -> Result<Policy, String> {
    let named = |reason: String| format!("{}: {reason}", path.display());
    let length = std::fs::metadata(path)
        .map_err(|error| named(format!("cannot read it: {error}")))?
        .len();
    if length > MAX_POLICY_BYTES {
        return Err(named(format!(
            "it is {length} bytes long; a policy file is at most {MAX_POLICY_BYTES} bytes"
        )));
    }
    let text =
        std::fs::read_to_string(path).map_err(|error| named(format!("cannot read it: {error}")))?;
    let policy: Policy = serde_yaml_ng::from_str(&text)
        .map_err(|error| named(format!("not a valid policy: {error}")))?;
    policy
        .validate()
        .map_err(|error| named(error.to_string()))?;
    Ok(policy)
}

fn print_policy(policy: &Policy, output: Output) -> Result<(), serde_json::Error> {
    if output == Output::Json {
        println!("{}", serde_json::to_string(policy)?);
        return Ok(());
    }
    if policy.roles.is_empty() {
        println!("no roles; create one with `runnel role create NAME --allow ACTIONS=PATTERN`");
        return Ok(());
    }
    let mut roles = crate::admin::table(["ROLE", "EFFECT", "ACTIONS", "RESOURCES"]);
    for role in &policy.roles {
        for rule in &role.rules {
            roles.add_row([
                role.name.clone(),
                rule.effect.to_string(),
                join(&rule.actions),
                join(&rule.resources),
            ]);
        }
    }
    println!("{roles}");
    println!();
    if policy.bindings.is_empty() {
        println!("no bindings; give a role with `runnel role bind ROLE PRINCIPAL`");
        return Ok(());
    }
    let mut bindings = crate::admin::table(["PRINCIPAL", "ROLE"]);
    for binding in &policy.bindings {
        bindings.add_row([binding.principal.clone(), binding.role.clone()]);
    }
    println!("{bindings}");
    Ok(())
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_actions_and_a_pattern() {
        let rule = parse_allow("write,describe=topic:orders-*").expect("valid");
        assert_eq!(rule.effect, Effect::Allow);
        assert_eq!(rule.actions, [Action::Write, Action::Describe]);
        assert_eq!(rule.resources, ["topic:orders-*".parse().expect("pattern")]);
        let rule = parse_deny("admin=cluster").expect("valid");
        assert_eq!(rule.effect, Effect::Deny);
        assert_eq!(rule.actions, [Action::Admin]);
        assert_eq!(rule.resources, [ResourcePattern::cluster()]);
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        for (text, expected) in [
            ("write", "is not ACTIONS=PATTERN"),
            ("=topic:a", "lists no action"),
            ("write,,read=topic:a", "unknown action"),
            ("Write=topic:a", "unknown action"),
            ("publish=topic:a", "unknown action"),
            ("write=", "invalid resource pattern"),
            ("write=orders", "invalid resource pattern"),
            ("write=queue:a", "invalid resource pattern"),
        ] {
            let error = parse_allow(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    fn write_policy(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, text).expect("write policy");
        (dir, path)
    }

    #[test]
    fn policy_files_parse_and_validate() {
        let (_dir, path) = write_policy(
            "roles:\n  - name: producers\n    rules:\n      - actions: [write]\n        \
             resources: [\"topic:orders-*\"]\n      - effect: deny\n        actions: [write]\n        \
             resources: [\"topic:orders-audit\"]\nbindings:\n  - principal: alice\n    role: producers\n",
        );
        let policy = read_policy(&path).expect("valid policy");
        assert_eq!(policy.roles.len(), 1);
        assert_eq!(policy.roles[0].rules[1].effect, Effect::Deny);
        assert_eq!(policy.bindings[0].principal, "alice");
    }

    #[test]
    fn bad_policy_files_are_named() {
        for (text, expected) in [
            ("roles: [", "not a valid policy"),
            (
                "roles:\n  - name: r\n    rules: []\n    colour: red\n",
                "not a valid policy",
            ),
            (
                "bindings:\n  - principal: alice\n    role: ghost\n",
                "which the policy does not define",
            ),
        ] {
            let (_dir, path) = write_policy(text);
            let error = read_policy(&path).expect_err(text);
            assert!(
                error.starts_with(&format!("{}: ", path.display())),
                "{error}"
            );
            assert!(error.contains(expected), "{text}: {error}");
        }
        let missing = read_policy(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
        assert!(
            missing.starts_with("/nonexistent/policy.yaml: cannot read it"),
            "{missing}"
        );
    }
}

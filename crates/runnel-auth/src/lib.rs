//! Runnel's authorization model and decision, as pure rules: no I/O, no
//! clock, no networking. The SC and every SPU hold a [`Policy`] and ask
//! [`Policy::check`] before serving a request; the CLI parses and
//! [validates](Policy::validate) policies. Kept apart from the servers so
//! the decision is the same everywhere and can be tested exhaustively.
//!
//! # Model
//!
//! - A **principal** is the name a client's certificate carries (its CN, or
//!   a configured SAN); users who log in get certificates whose CN is their
//!   user name. Nodes are `sc` and `spu:<id>` ([`is_node_identity`]).
//! - A **role** is a named list of **rules**. A rule has an **effect**
//!   (`allow`, the default, or `deny`), one or more **actions** (`read`,
//!   `write`, `create`, `delete`, `describe`, `admin`) and one or more
//!   **resource patterns**.
//! - A **binding** gives a principal a role. A principal may hold several.
//! - A resource pattern is `topic:<glob>`, `group:<glob>`,
//!   `smartmodule:<glob>` or `cluster`. In a glob only `*` is special: it
//!   matches any run of characters, including none; every other character
//!   is literal (`topic:a?b` names the topic `a?b`). `topic:*` is every
//!   topic. An empty glob, an unknown kind, and whitespace or control
//!   characters in a glob are refused.
//!
//! # Decision
//!
//! - An `allow` rule with action X **covers** a requested action A when
//!   X = A, or X = `admin` (admin covers every action), or A = `describe`
//!   and X is `read`, `write`, `create` or `delete` (as in Kafka, those
//!   imply describe). Nothing else is implied: `describe` grants no `read`.
//! - A `deny` rule with action X covers A when X = A or X = `admin`. The
//!   describe implication is part of *granting* an action, so denying
//!   `read` takes away reading but not a `describe` that some allow rule
//!   grants (including the one implied by `allow read`).
//! - A rule **applies** to a resource when one of its patterns matches it:
//!   same kind, and the glob matches the name. `cluster` matches only the
//!   cluster.
//! - **Deny by default**: a request is allowed only if some `allow` rule of
//!   a role bound to the principal covers the action and applies to the
//!   resource, **and** no `deny` rule of any role bound to the principal
//!   covers the action and applies to the resource. Deny overrides allow,
//!   whatever the order of roles, rules or bindings. So `deny admin` denies
//!   every action, while `deny read` does not take away a `describe`
//!   granted by `allow describe`.
//! - A binding to a role the policy does not define grants nothing
//!   ([`Policy::validate`] refuses such a policy anyway).
//! - A refused request yields [`Denied`], whose text is exactly
//!   `permission denied: <principal> may not <action> <resource>`, e.g.
//!   `permission denied: alice may not write topic:orders`.
//!
//! # Not decided here
//!
//! Superusers and node identities are **not** handled by this crate: the
//! callers (SC and SPU) let them through before asking [`Policy::check`],
//! which judges them like anyone else and, unless bound to roles, refuses
//! them. Whether authorization is enabled at all is likewise the caller's
//! choice.
//!
//! # Limits
//!
//! [`Policy::validate`] refuses more than [`MAX_ROLES`] roles,
//! [`MAX_RULES_PER_ROLE`] rules per role, [`MAX_ACTIONS_PER_RULE`] actions or
//! [`MAX_PATTERNS_PER_RULE`] patterns per rule, and [`MAX_BINDINGS`]
//! bindings; a pattern's text is at most [`MAX_PATTERN_LEN`] bytes (checked
//! when it is parsed). Glob matching takes at most
//! `glob length × name length` steps and never recurses.

mod action;
mod error;
mod names;
mod policy;
mod resource;

pub use action::{Action, Effect};
pub use error::{Denied, PolicyError, excerpt};
pub use names::{
    MAX_PRINCIPAL_LEN, MAX_ROLE_NAME_LEN, MAX_USER_NAME_LEN, SC_PRINCIPAL, is_node_identity,
    spu_id_of, spu_principal, validate_principal, validate_role_name, validate_user_name,
};
pub use policy::{
    Binding, MAX_ACTIONS_PER_RULE, MAX_BINDINGS, MAX_PATTERNS_PER_RULE, MAX_ROLES,
    MAX_RULES_PER_ROLE, Policy, Role, Rule,
};
pub use resource::{MAX_PATTERN_LEN, Resource, ResourceKind, ResourcePattern};

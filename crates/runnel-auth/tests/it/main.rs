//! Policies as operators write them: YAML in, decisions out, through the
//! public API only.

mod yaml;

//! Policy: parse the YAML ([`schema`]), then compile it ([`compile`]) into a
//! [`CompiledPolicy`]: globs built once, group precedence settled, allow-lists checked. The
//! same code serves `policy check`, `baseline`, `verify` and the daemon's reload, so a policy
//! that passes `policy check` is the policy that runs.

pub mod compile;
pub mod glob;
pub mod logs;
pub mod schema;

pub use compile::{
    load, parse_str, Access, AllowRule, CompareSet, CompiledPolicy, Group, MAX_POLICY_BYTES,
};
pub use schema::{AccessMode, Attr, Class, OnChange};

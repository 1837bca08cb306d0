//! Early warning from logs: sources declared in the policy (`logs:`), line parsers
//! ([`parse`]), Sigma rules through the `rsigma` crates ([`rules`]), the two conditions
//! Sigma lacks (`first_seen`, `hours`) with their learned state ([`state`]), and
//! [`room::LogRoom`], the seam that turns (source, line, position) into [`room::LogFinding`]s.
//!
//! Must not: open anything on a permission path, or block. `LogRoom` does no I/O of its
//! own apart from the optional learned-state database, so a daemon thread can drive it
//! with lines it read and positions it persists; `logs scan` drives it from files.

pub mod file;
pub mod follow;
pub mod mask;
pub mod parse;
pub mod positions;
pub mod prefilter;
pub mod room;
pub mod rules;
pub mod socket;
pub mod state;

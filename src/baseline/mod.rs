//! Baseline building blocks: [`walk`] the policy's paths, capture [`attrs`], [`hash`]
//! content, and [`diff`] a baseline entry against a live one.

pub mod attrs;
pub mod check;
pub mod credentials;
pub mod diff;
pub mod entry;
pub mod findings;
pub mod grant;
pub mod hash;
pub mod packed;
pub mod walk;

pub use entry::{Entry, FileType, Hashes, Problem, Xattr};

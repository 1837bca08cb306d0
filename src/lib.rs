//! kmsentry guards the files through which a host reaches its key management system.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod atomic;
pub mod baseline;
pub mod cli;
pub mod error;
pub mod exit;
pub mod fsroot;
pub mod policy;
pub mod report;
pub mod sanitize;
pub mod store;
pub mod users;

//! `kmsentry watch`: the daemon. fanotify groups, kernel audit, event loop.

pub mod access;
pub mod audit;
pub mod changes;
pub mod daemon;
pub mod detail;
pub mod fanotify;
pub mod identity;
pub mod instance;
pub mod paths;
pub mod reported;
pub mod signals;
pub mod status;
pub mod touch;

//! `kmsentry watch`: the daemon. fanotify groups, kernel audit, event loop.

pub mod audit;
pub mod daemon;
pub mod fanotify;
pub mod paths;
pub mod status;

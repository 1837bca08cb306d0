//! `kmsentry watch`: the daemon. fanotify groups, kernel audit, event loop.

pub mod audit;

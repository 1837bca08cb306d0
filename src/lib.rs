//! kmsentry guards the files through which a host reaches its key management system: KMS
//! client configs, client certificates and private keys, CA bundles, and the provider
//! binaries (PKCS#11 modules, EKM providers) that load those keys.
//!
//! # Data flow
//!
//! 1. **Policy** ([`policy`]): the YAML is parsed into a positioned mirror
//!    ([`policy::schema`]), then compiled ([`policy::compile`]) into a [`policy::CompiledPolicy`]:
//!    globs built once ([`policy::glob`]), group precedence settled (most specific pattern
//!    wins), allow-lists checked. Every error names file, line and column.
//! 2. **Walk** ([`baseline::walk`]): every policy path is opened through one [`fsroot::Root`]
//!    (`/` or `--root`) with `openat2(RESOLVE_IN_ROOT)`; each child is classified with
//!    `statx(AT_SYMLINK_NOFOLLOW)` relative to its parent's fd; symlinks are recorded, never
//!    followed; FIFOs and devices are recorded, never opened. Regular files are opened
//!    `O_NOFOLLOW`, checked against what `statx` saw, and hashed in one read pass
//!    ([`baseline::hash`]: BLAKE3 + SHA-256); xattrs and ACLs come from [`baseline::attrs`].
//!    Work spreads over both cores per directory chunk, and the two hashers run concurrently
//!    on large files.
//! 3. **Store** ([`store`]): SQLite with embedded, append-only migrations; `baseline init`
//!    builds a new database beside the old one and renames it into place only when complete.
//! 4. **Compare** ([`baseline::check`], [`baseline::diff`]): live entries stream from the
//!    walker into a pure per-entry comparison against the baseline; findings carry status,
//!    changed attributes and a severity from the group's class.
//! 5. **Report** ([`report`]): human text, JSON, JUnit, SARIF, and the stable
//!    `baseline export` manifest. Every name passes through [`sanitize`].
//! 6. **Alerts** ([`alert`]): the daemon's records, one canonical JSON line each, chained by
//!    BLAKE3 and signed at checkpoints, delivered to the JSONL file (fsync'd), stdout, syslog
//!    (over TLS to another machine through an on-disk queue) and journald; `log verify`
//!    ([`alert::verify`]) names every break, in the JSONL file or a receiver's RFC 5424 file.
//! 7. **Sandbox** ([`sandbox`]): `watch --seccomp` applies the systemd unit's restrictions in
//!    the daemon itself (capabilities, seccomp allow-list, no_new_privs, umask).
//! 8. **Watch** ([`watch`]): the daemon. Its inputs (fanotify permission and notification
//!    groups, kernel audit, signals) each turn kernel data into one event type; permission
//!    events are decided by the pure [`decide`] and answered before any I/O; file events go
//!    to one checker, which captures, compares (steps 2 and 4), alerts (step 6), restores
//!    ([`restore`]) and re-marks. A log room follows the policy's log sources
//!    ([`logs::follow`], [`logs::socket`]), judges each line ([`logs::room`]) and writes
//!    `log` alerts through the same alert thread. `src/watch/mod.rs` tells that flow module
//!    by module.
//!
//! [`cli`] is the only code that prints; [`error::Error`] maps every failure to the exit
//! status of [`exit::ExitCode`] (0 clean, 1 drift, 2 usage/policy, 3 integrity).
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod alert;
pub mod atomic;
pub mod baseline;
pub mod cli;
pub mod credential;
pub mod decide;
pub mod error;
pub mod exit;
pub mod fsroot;
pub mod logs;
pub mod pkg;
pub mod policy;
pub mod proc;
pub mod report;
pub mod restore;
pub mod sandbox;
pub mod sanitize;
pub mod store;
pub mod users;
pub mod watch;

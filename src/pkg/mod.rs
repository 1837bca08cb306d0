//! Who owns a file: the package managers' own records, read from the image's databases and
//! never by running the image's binaries (an offline image's `dpkg` may be the attacker's).
//!
//! - [`dpkg`] reads `/var/lib/dpkg` under a [`Root`](crate::fsroot::Root): `status` (installed
//!   packages, versions, conffiles with their MD5), `info/*.list` (the files each package
//!   installed), `info/*.md5sums` (the digest dpkg recorded for each), and `diversions`
//!   (a file moved aside for another package's). Merged-`/usr` aliases (`/bin` → `/usr/bin`)
//!   are resolved the way the image resolves them.
//! - [`version`] orders Debian versions (epochs, tildes, revisions) exactly as
//!   `dpkg --compare-versions` does.
//!
//! What this module must not do: trust the records as proof (root can rewrite
//! `info/*.md5sums`; a finding says which records it rests on), follow a symlink out of the
//! root, or stop on a malformed record (one bad stanza or line is counted and skipped).

pub mod dpkg;
pub mod version;

pub use dpkg::{Dpkg, Owner};

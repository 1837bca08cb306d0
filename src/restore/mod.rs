//! Put tampered files back from the trusted store: plan, then apply.
//!
//! - [`plan`](plan::plan_item) decides, per baselined path, what differs (the same
//!   [`crate::baseline::check::compare`] `verify` uses) and what will be done: recreate a removed
//!   entry, replace one whose content or type changed (a new inode built from the baseline and
//!   the store, the tampered one moved aside), or fix attributes in place. Pure.
//! - [`apply`] does it, race-safely: the parent is reached from the root one component at a
//!   time with `openat(O_NOFOLLOW | O_DIRECTORY)` and refused when any component is a symlink or
//!   is not the directory the plan saw; the new entry is built under a temp name in that
//!   directory (content streamed from the store and re-hashed on the way, owner, ACLs, xattrs
//!   incl. `security.capability` and the SELinux label, then mode, all on the fd), `fsync`ed,
//!   swapped in with `renameat2(RENAME_EXCHANGE)` (or `RENAME_NOREPLACE` when nothing is
//!   there), and the directory `fsync`ed. The displaced entry is never deleted: it goes to the
//!   [`Quarantine`] with a JSON record of its attributes and hashes.
//! - Every result is checked by inspecting the restored entry again; what still differs is an
//!   error, never a claimed success.
//!
//! Library API for the daemon: [`restore_entry`] restores one baselined entry with no CLI
//! involved and reports hashes before and after; it takes `&` references only and may run on
//! any thread. Must not: follow a symlink anywhere in a restored path, write outside the
//! directory it resolved, or put back bytes that did not verify against the baseline.

mod acl;
mod apply;
mod plan;
mod quarantine;
mod reach;
mod setattr;
mod walk;

pub use apply::{apply_all, apply_item, restore_entry, Hooks};
pub use plan::{plan_item, Action, Method, Planned, UNRESTORABLE};
pub use quarantine::Quarantine;
pub use reach::{inspect, open_dir_nofollow};
pub use walk::{plan, PlanOptions};

use crate::baseline::diff::Status;
use crate::baseline::{Entry, Hashes};
use crate::policy::{Attr, Class};

/// Why an item will not be (or could not be) restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The trusted copy is missing or corrupt (exit 3).
    #[error("{0}")]
    Integrity(String),
    /// Refused for safety: a symlink in the path, a parent swapped since the plan.
    #[error("refused: {0}")]
    Refused(String),
    /// Nothing to restore from, or a kind of entry restore cannot create.
    #[error("cannot restore: {0}")]
    Unsupported(String),
    /// A system call failed.
    #[error("{op}: {msg}")]
    Io { op: &'static str, msg: String },
    /// Applied, but the entry still differs from the baseline in these attributes.
    #[error("still differs after restore: {}", .0.join(", "))]
    Incomplete(Vec<&'static str>),
}

impl RestoreError {
    pub(crate) fn io(op: &'static str, e: impl Into<std::io::Error>) -> RestoreError {
        RestoreError::Io {
            op,
            msg: e.into().to_string(),
        }
    }

    /// Whether this is a store integrity failure (exit 3) rather than a per-file failure.
    pub fn is_integrity(&self) -> bool {
        matches!(self, RestoreError::Integrity(_))
    }
}

/// One path of a plan.
#[derive(Clone, Debug)]
pub struct PlanItem {
    pub path: Vec<u8>,
    pub group: String,
    pub class: Class,
    /// `removed` or `changed` (as `verify` would report it).
    pub status: Status,
    /// What differs (empty for removed).
    pub changes: Vec<Attr>,
    /// What will be done, or why not.
    pub planned: Result<Planned, RestoreError>,
    /// The baseline record to restore.
    pub base: Entry,
    /// The live record the plan saw (None when removed).
    pub live: Option<Entry>,
    /// (dev, ino) of the parent directory the plan saw; apply refuses another.
    pub parent: Option<(u64, u64)>,
    /// What "differs" means for this path (the group's `compare`, minus what the kernel
    /// sets); apply checks the result against it.
    pub compare: crate::policy::CompareSet,
}

/// Everything that differs, in path order (parents before children).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    /// Baselined paths in scope that were checked.
    pub checked: u64,
}

impl Plan {
    /// Whether any item is blocked by a store integrity failure.
    pub fn has_integrity_errors(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(&i.planned, Err(e) if e.is_integrity()))
    }
}

/// What one successful restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    pub path: Vec<u8>,
    /// How it was restored; None when nothing differed.
    pub method: Option<Method>,
    /// What differed.
    pub changes: Vec<Attr>,
    /// Content hashes of what was there before (None: absent or not a regular file).
    pub before: Option<Hashes>,
    /// Content hashes of what is there now (None: not a regular file).
    pub after: Option<Hashes>,
    /// Where the displaced entry (or its metadata record) went.
    pub quarantined: Option<std::path::PathBuf>,
}

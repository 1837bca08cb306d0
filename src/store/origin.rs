//! Where a baseline comes from, and whether it may judge the host at hand.
//!
//! Every run records the host name, the root it read (`/` or `--root R`) and, from schema
//! 0004 on, the host's `/etc/machine-id`; all of it is covered by the signature. Two kinds of
//! baseline follow:
//! - recorded from the live host (root `/`): it describes that one host. Checking another
//!   live host against it (a database copied from a sibling, validly signed with the fleet's
//!   key) would hide that host's own drift, so it is refused with exit 3 unless the operator
//!   says `--allow-other-host`;
//! - recorded under `--root` (a golden image built in CI): meant to verify any host or image,
//!   so it is never refused for its origin.
//!
//! Only checks against the live host (`Root::is_host`) are judged: reading another host's
//! disk under `--root` with that host's baseline is forensics, not a mix-up.
//! Identity: the machine ids when both sides have one (host names repeat across clones and
//! containers), else the host names.

use super::{Run, Store};
use crate::error::{Error, Result};
use crate::fsroot::Root;
use crate::sanitize::Name;

/// Who is checking: this host's name and machine id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    pub host: String,
    pub machine_id: Option<String>,
}

impl HostIdentity {
    /// This host, as `gethostname` and `/etc/machine-id` describe it.
    pub fn current() -> HostIdentity {
        HostIdentity {
            host: hostname(),
            machine_id: machine_id(),
        }
    }
}

/// This host's name (`unknown` when it has none that is UTF-8).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// This host's `/etc/machine-id` (32 lower-case hex digits), when present and well-formed.
pub fn machine_id() -> Option<String> {
    let text = std::fs::read_to_string("/etc/machine-id").ok()?;
    let id = text.trim();
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// Whether the run was recorded from the live host rather than an image under `--root`.
fn is_host_run(run: &Run) -> bool {
    run.root == b"/"
}

fn same_host(run: &Run, here: &HostIdentity) -> bool {
    match (&run.machine_id, &here.machine_id) {
        (Some(a), Some(b)) => a == b,
        _ => run.host == here.host,
    }
}

/// The first live-host run recorded somewhere other than `here`. Pure.
pub fn foreign_run<'a>(runs: &'a [Run], here: &HostIdentity) -> Option<&'a Run> {
    runs.iter().find(|r| is_host_run(r) && !same_host(r, here))
}

/// Refuse (exit 3) a baseline recorded from another live host when `target` is this host's
/// own `/`, unless `allow_other_host`. A baseline recorded under `--root` passes anywhere.
/// `watch` calls this too, before trusting the baseline.
pub fn check_origin(store: &Store, target: &Root, allow_other_host: bool) -> Result<()> {
    if !target.is_host() {
        return Ok(());
    }
    check_runs(
        store,
        &store.runs()?,
        &HostIdentity::current(),
        allow_other_host,
    )
}

/// [`check_origin`] with the runs and the local identity given (tests, the daemon's cache).
pub fn check_runs(
    store: &Store,
    runs: &[Run],
    here: &HostIdentity,
    allow_other_host: bool,
) -> Result<()> {
    let Some(run) = foreign_run(runs, here) else {
        return Ok(());
    };
    let db = store.path.as_os_str();
    let db = std::os::unix::ffi::OsStrExt::as_bytes(db);
    let ids = match (&run.machine_id, &here.machine_id) {
        (Some(a), Some(b)) => format!(" (machine-id {a}, this host's is {b})"),
        _ => String::new(),
    };
    let msg = format!(
        "{}: this baseline was recorded on host `{}`{ids} (run {} at {}), not on this host `{}`: a baseline of a live host only checks that host; pass --allow-other-host to compare anyway, or record golden images with --root",
        Name(db),
        Name(run.host.as_bytes()),
        run.id,
        run.started_at,
        Name(here.host.as_bytes()),
    );
    if allow_other_host {
        tracing::warn!("{msg} (allowed by --allow-other-host)");
        return Ok(());
    }
    Err(Error::Integrity(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::run;

    fn here(host: &str, mid: Option<&str>) -> HostIdentity {
        HostIdentity {
            host: host.into(),
            machine_id: mid.map(Into::into),
        }
    }

    #[test]
    fn live_host_runs_must_come_from_this_host_and_images_pass_anywhere() {
        let s = Store::open_in_memory().unwrap();
        let mut r = run(); // host "h", root "/"
        r.machine_id = Some("a".repeat(32));
        // Same machine id: passes even under another name (renamed host).
        check_runs(
            &s,
            &[r.clone()],
            &here("renamed", Some(&"a".repeat(32))),
            false,
        )
        .unwrap();
        // Another machine id: refused, with both ids named.
        let e = check_runs(&s, &[r.clone()], &here("h", Some(&"b".repeat(32))), false).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::ExitCode::Integrity);
        assert!(e.to_string().contains("recorded on host `h`"), "{e}");
        assert!(e.to_string().contains("--allow-other-host"), "{e}");
        check_runs(&s, &[r.clone()], &here("h", Some(&"b".repeat(32))), true).unwrap();
        // No machine id on one side: host names decide.
        r.machine_id = None;
        check_runs(&s, &[r.clone()], &here("h", Some(&"b".repeat(32))), false).unwrap();
        assert!(check_runs(&s, &[r.clone()], &here("other", None), false).is_err());
        // A golden image recorded under --root verifies anywhere.
        r.root = b"/mnt/image".to_vec();
        check_runs(&s, &[r], &here("other", None), false).unwrap();
    }
}

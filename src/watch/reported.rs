//! What the daemon last reported for each path that differs from the baseline, kept across
//! runs, so that the `reconciled` records of the next start can tell a change already
//! reported by an earlier run (`detail.already_reported: true`, with when) from one made
//! while no daemon watched (`false`).
//!
//! One file beside the baseline, `.NAME.reported` (0600, JSON lines `{"path", "state", "ts"}`,
//! `state` a BLAKE3 of the compared attributes or `"absent"`), rewritten atomically (temp +
//! fsync + rename) at most once a second while changes come and at a clean stop; a crash
//! loses at most the last second, whose changes are then reported as new (the safe side).
//! A missing or unreadable file means "not known": `already_reported` is then left out.

use crate::baseline::entry::Entry;
use crate::policy::{Attr, CompareSet};
use crate::sanitize::JsonName;
use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The state file beside `db`.
pub fn state_path(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(OsStrExt::as_bytes)
        .unwrap_or(b"baseline");
    let mut n = b".".to_vec();
    n.extend_from_slice(name);
    n.extend_from_slice(b".reported");
    let n = std::ffi::OsStr::from_bytes(&n);
    match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(n),
        _ => PathBuf::from(n),
    }
}

/// A path's reported state: the fingerprint of what was observed (`None`: absent) and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    pub state: Option<[u8; 32]>,
    pub ts: String,
}

/// BLAKE3 over the attributes `compare` names (what `diff` would look at), so two entries
/// with the same fingerprint show no change to that group.
pub fn fingerprint(e: &Entry, compare: CompareSet) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for a in compare.iter() {
        match a {
            Attr::Type => {
                field("type", e.ftype.as_str().as_bytes());
                field("rdev", format!("{:?}", e.rdev).as_bytes());
            }
            Attr::Content => field(
                "content",
                e.hashes.as_ref().map_or(&[][..], |x| &x.blake3[..]),
            ),
            Attr::Size => field("size", &e.size.to_le_bytes()),
            Attr::Mode => field("mode", &e.mode.to_le_bytes()),
            Attr::Owner => field("uid", &e.uid.to_le_bytes()),
            Attr::Group => field("gid", &e.gid.to_le_bytes()),
            Attr::Acl => {
                field("acl", e.acl_access.as_deref().unwrap_or("").as_bytes());
                field("dacl", e.acl_default.as_deref().unwrap_or("").as_bytes());
            }
            Attr::Xattr => {
                for x in &e.xattrs {
                    field("xn", &x.name);
                    field("xv", &x.value);
                }
            }
            Attr::LinkTarget => field("link", e.link_target.as_deref().unwrap_or(b"")),
            Attr::Mtime => field("mtime", &e.mtime_ns.to_le_bytes()),
            Attr::Ctime => field("ctime", &e.ctime_ns.to_le_bytes()),
            Attr::Inode => field("ino", &e.ino.to_le_bytes()),
            Attr::Nlink => field("nlink", &e.nlink.to_le_bytes()),
        }
    }
    *h.finalize().as_bytes()
}

/// The `reconciled` alert of finding `f`. `earlier`: `None` when it is not known what earlier
/// runs reported (no state file); `Some(None)` when nothing matching was; `Some(Some(r))` when
/// this very state was reported at `r.ts`.
pub fn reconciled_alert(
    f: &crate::baseline::check::Finding,
    earlier: Option<Option<&Reported>>,
    names: &mut crate::users::Names,
) -> crate::alert::Alert {
    use crate::alert::{Alert, Kind};
    use crate::baseline::diff::Status;
    let mut a = Alert::new(Kind::Reconciled, f.severity);
    a.path = Some(f.path.clone());
    a.group = Some(f.group.clone());
    a.class = Some(f.class);
    a.changes = f.changes.iter().map(|c| c.as_str()).collect();
    a.detail.insert("status".into(), f.status.as_str().into());
    if let Some(earlier) = earlier {
        a.detail
            .insert("already_reported".into(), earlier.is_some().into());
        if let Some(r) = earlier {
            a.detail.insert("reported_at".into(), r.ts.clone().into());
        }
    }
    let whole = matches!(f.status, Status::Added | Status::Removed);
    super::detail::describe(
        &mut a,
        f.base.as_deref(),
        f.live.as_deref(),
        (!whole).then_some(f.changes.as_slice()),
        names,
    );
    a
}

/// `reconciled` for a path an earlier run reported changed that is as baselined again.
pub fn back_as_baseline_alert(path: Vec<u8>, g: &crate::policy::Group) -> crate::alert::Alert {
    use crate::alert::{Alert, Kind};
    let mut a = Alert::new(Kind::Reconciled, crate::baseline::diff::Severity::Low);
    a.path = Some(path);
    a.group = Some(g.name.clone());
    a.class = Some(g.class);
    a.detail.insert("status".into(), "as_baseline".into());
    a.detail.insert("already_reported".into(), false.into());
    a.detail.insert(
        "message".into(),
        "an earlier run reported this path changed; it is back as baselined".into(),
    );
    a
}

/// Load the state left by the previous run. `None` when there is none or it is unreadable.
pub fn load(path: &Path) -> Option<HashMap<Vec<u8>, Reported>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "{}: {e}; reconciled changes cannot be told from reported ones",
                crate::sanitize::Name(path.as_os_str().as_bytes())
            );
            return None;
        }
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(p), Some(st), Some(ts)) =
            (v["path"].as_str(), v["state"].as_str(), v["ts"].as_str())
        else {
            continue;
        };
        let Ok(path) = crate::sanitize::unescape(p) else {
            continue;
        };
        let state = if st == "absent" {
            None
        } else {
            let mut b = [0u8; 32];
            if hex::decode_to_slice(st, &mut b).is_err() {
                continue;
            }
            Some(b)
        };
        out.insert(
            path,
            Reported {
                state,
                ts: ts.to_string(),
            },
        );
    }
    Some(out)
}

/// Write the state atomically.
pub fn save(path: &Path, state: &HashMap<Vec<u8>, Reported>) -> crate::error::Result<()> {
    let mut paths: Vec<&Vec<u8>> = state.keys().collect();
    paths.sort();
    let mut out = String::new();
    for p in paths {
        let r = &state[p];
        let v = serde_json::json!({
            "path": JsonName(p).text(),
            "state": r.state.map_or_else(|| "absent".to_string(), hex::encode),
            "ts": r.ts,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    crate::atomic::write_file(path, out.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_hostile_names() {
        let t = tempfile::tempdir().unwrap();
        let p = state_path(&t.path().join("b.db"));
        assert!(p.ends_with(".b.db.reported"));
        assert_eq!(load(&p), None);
        let mut m = HashMap::new();
        m.insert(
            b"/etc/kms/a\n\xff\\b".to_vec(),
            Reported {
                state: Some([7; 32]),
                ts: "2026-01-01T00:00:00.000000Z".into(),
            },
        );
        m.insert(
            b"/etc/kms/gone".to_vec(),
            Reported {
                state: None,
                ts: "2026-01-01T00:00:01.000000Z".into(),
            },
        );
        save(&p, &m).unwrap();
        assert_eq!(load(&p), Some(m));
    }
}

//! What to do for one path, from its baseline record, its live record and what differs.
//! Pure: no I/O, tested by tables.

use super::RestoreError;
use crate::baseline::{Entry, FileType};
use crate::policy::Attr;

/// How an entry is put back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Nothing is there: build it from the baseline and rename it into place.
    Recreate,
    /// Content, type or link target changed: build a new entry from the baseline, swap it in,
    /// move the tampered one to quarantine.
    Replace,
    /// Only attributes changed: set them on the existing entry (content verified unchanged).
    InPlace,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Recreate => "recreate",
            Method::Replace => "replace",
            Method::InPlace => "in_place",
        }
    }
}

/// One step, for showing the plan (DESIGN's `RestorePlan` actions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quarantine,
    Create,
    WriteContent,
    Relink,
    SetOwner,
    SetMode,
    SetAcl,
    SetXattrs,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Quarantine => "quarantine",
            Action::Create => "create",
            Action::WriteContent => "write_content",
            Action::Relink => "relink",
            Action::SetOwner => "set_owner",
            Action::SetMode => "set_mode",
            Action::SetAcl => "set_acl",
            Action::SetXattrs => "set_xattrs",
        }
    }
}

/// The decision for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub method: Method,
    pub actions: Vec<Action>,
    /// Whether the store's copy of the baseline content is needed.
    pub needs_object: bool,
}

/// Attributes restore cannot set (the kernel assigns them); they never block a restore and
/// are not checked after it.
pub const UNRESTORABLE: [Attr; 3] = [Attr::Ctime, Attr::Inode, Attr::Nlink];

/// Decide how to restore `base` given `live` (None: removed) and `changes` (what differs,
/// from [`crate::baseline::diff::diff`]). `has_object`: the store holds the baseline content.
pub fn plan_item(
    base: &Entry,
    live: Option<&Entry>,
    changes: &[Attr],
    has_object: bool,
) -> Result<Planned, RestoreError> {
    let type_changed = live.is_some_and(|l| l.ftype != base.ftype || l.rdev != base.rdev);
    let method = match live {
        None => Method::Recreate,
        Some(_) if type_changed => Method::Replace,
        Some(l) => match base.ftype {
            FileType::File if changes.contains(&Attr::Content) || changes.contains(&Attr::Size) => {
                Method::Replace
            }
            // The live content could not be read: nothing proves it is the baselined content.
            FileType::File if l.hashes.is_none() => {
                return Err(RestoreError::Unsupported(format!(
                    "the live file could not be read ({})",
                    l.problem
                        .as_ref()
                        .map_or_else(|| "no hash".to_string(), ToString::to_string)
                )))
            }
            FileType::Symlink if changes.contains(&Attr::LinkTarget) => Method::Replace,
            FileType::File | FileType::Dir | FileType::Symlink => Method::InPlace,
            // FIFOs and device nodes are recreated rather than opened.
            _ => Method::Replace,
        },
    };
    if changes.iter().all(|c| UNRESTORABLE.contains(c)) && live.is_some() {
        return Err(RestoreError::Unsupported(format!(
            "only {} differ, which the kernel sets",
            changes
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let builds = method != Method::InPlace;
    let needs_object = builds && base.ftype == FileType::File;
    if builds {
        match base.ftype {
            FileType::Socket | FileType::Unknown => {
                return Err(RestoreError::Unsupported(format!(
                    "a {} cannot be recreated",
                    base.ftype.as_str()
                )))
            }
            FileType::File if base.hashes.is_none() => {
                return Err(RestoreError::Unsupported(
                    "the baseline recorded no content hash for this file".into(),
                ))
            }
            FileType::File if !has_object => {
                return Err(RestoreError::Unsupported(
                    "no trusted copy in the store (the group has no `on_change: restore`; record one with `baseline init --store S`, or `--store-all`)".into(),
                ))
            }
            FileType::Symlink if base.link_target.is_none() => {
                return Err(RestoreError::Unsupported(
                    "the baseline recorded no link target".into(),
                ))
            }
            _ => {}
        }
    }
    let mut actions = Vec::new();
    if method == Method::Replace {
        actions.push(Action::Quarantine);
    }
    if builds {
        actions.push(Action::Create);
        match base.ftype {
            FileType::File => actions.push(Action::WriteContent),
            FileType::Symlink => actions.push(Action::Relink),
            _ => {}
        }
    }
    let set = |a: Attr| builds || changes.contains(&a);
    if set(Attr::Owner) || set(Attr::Group) {
        actions.push(Action::SetOwner);
    }
    if base.ftype != FileType::Symlink && set(Attr::Mode) {
        actions.push(Action::SetMode);
    }
    if (builds && (base.acl_access.is_some() || base.acl_default.is_some()))
        || (!builds && changes.contains(&Attr::Acl))
    {
        actions.push(Action::SetAcl);
    }
    if (builds && !base.xattrs.is_empty()) || (!builds && changes.contains(&Attr::Xattr)) {
        actions.push(Action::SetXattrs);
    }
    Ok(Planned {
        method,
        actions,
        needs_object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Hashes, Xattr};
    use crate::policy::Class;

    fn file() -> Entry {
        Entry {
            path: b"/etc/kms/k".to_vec(),
            ftype: FileType::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 3,
            hashes: Some(Hashes {
                blake3: [1; 32],
                sha256: Some([2; 32]),
            }),
            link_target: None,
            rdev: None,
            acl_access: None,
            acl_default: None,
            xattrs: vec![Xattr {
                name: b"security.capability".to_vec(),
                value: vec![1],
            }],
            dev: 1,
            ino: 2,
            nlink: 1,
            mtime_ns: 0,
            ctime_ns: 0,
            group: "g".into(),
            class: Class::PrivateKey,
            problem: None,
        }
    }

    fn names(p: &Planned) -> Vec<&'static str> {
        p.actions.iter().map(|a| a.as_str()).collect()
    }

    #[test]
    fn a_removed_file_is_recreated_with_every_attribute() {
        let p = plan_item(&file(), None, &[], true).unwrap();
        assert_eq!(p.method, Method::Recreate);
        assert!(p.needs_object);
        assert_eq!(
            names(&p),
            [
                "create",
                "write_content",
                "set_owner",
                "set_mode",
                "set_xattrs"
            ]
        );
    }

    #[test]
    fn content_change_replaces_and_quarantines_and_needs_the_store() {
        let mut live = file();
        live.hashes = Some(Hashes {
            blake3: [9; 32],
            sha256: Some([9; 32]),
        });
        let p = plan_item(&file(), Some(&live), &[Attr::Content], true).unwrap();
        assert_eq!(p.method, Method::Replace);
        assert_eq!(names(&p)[..3], ["quarantine", "create", "write_content"]);
        let e = plan_item(&file(), Some(&live), &[Attr::Content], false).unwrap_err();
        assert!(e.to_string().contains("no trusted copy"), "{e}");
        assert!(!e.is_integrity());
    }

    #[test]
    fn attribute_changes_are_fixed_in_place_without_the_store() {
        let mut live = file();
        live.mode = 0o644;
        let p = plan_item(&file(), Some(&live), &[Attr::Mode], false).unwrap();
        assert_eq!((p.method, names(&p)), (Method::InPlace, vec!["set_mode"]));
        assert!(!p.needs_object);
        let p = plan_item(&file(), Some(&live), &[Attr::Owner, Attr::Xattr], false).unwrap();
        assert_eq!(names(&p), ["set_owner", "set_xattrs"]);
        let p = plan_item(&file(), Some(&live), &[Attr::Acl], false).unwrap();
        assert_eq!(names(&p), ["set_acl"]);
    }

    #[test]
    fn type_changes_and_retargeted_links_are_replaced() {
        let mut link = file();
        link.ftype = FileType::Symlink;
        link.hashes = None;
        let p = plan_item(&file(), Some(&link), &[Attr::Type], true).unwrap();
        assert_eq!(p.method, Method::Replace);
        let mut base_link = link.clone();
        base_link.link_target = Some(b"ca.pem".to_vec());
        base_link.xattrs.clear();
        let mut live_link = base_link.clone();
        live_link.link_target = Some(b"/etc/shadow".to_vec());
        let p = plan_item(&base_link, Some(&live_link), &[Attr::LinkTarget], false).unwrap();
        assert_eq!(names(&p), ["quarantine", "create", "relink", "set_owner"]);
        assert!(!p.needs_object);
    }

    #[test]
    fn what_cannot_be_restored_says_why() {
        let mut sock = file();
        sock.ftype = FileType::Socket;
        sock.hashes = None;
        assert!(plan_item(&sock, None, &[], true)
            .unwrap_err()
            .to_string()
            .contains("socket cannot be recreated"));
        let mut unread = file();
        unread.hashes = None;
        unread.mode = 0o644;
        assert!(plan_item(&file(), Some(&unread), &[Attr::Mode], true)
            .unwrap_err()
            .to_string()
            .contains("could not be read"));
        assert!(plan_item(&file(), Some(&file()), &[Attr::Ctime], true)
            .unwrap_err()
            .to_string()
            .contains("which the kernel sets"));
    }
}

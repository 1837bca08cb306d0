//! Compare a baseline entry with a live one: which attributes differ, and how severe a
//! finding is. Pure: no I/O, no clock; tested by tables.

use super::entry::{Entry, FileType};
use crate::policy::{Attr, Class, CompareSet};

/// A finding's status, as DESIGN names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Added,
    Removed,
    Changed,
    /// A certificate whose content changed as a renewal (see `credential::rotation`).
    Rotated,
    /// Not drift but how things are: a posture check failed (`rule` says which).
    Posture,
}

impl Status {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Added => "added",
            Status::Removed => "removed",
            Status::Changed => "changed",
            Status::Rotated => "rotated",
            Status::Posture => "posture",
        }
    }
}

/// How much a finding matters, for triage and SARIF levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The attributes of `live` that differ from `base`, among those `compare` asks for, in
/// [`Attr::ALL`] order. Content is compared by BLAKE3; when either side could not be hashed
/// (its `problem` says why) content is not claimed to differ: the caller reports the problem.
pub fn diff(base: &Entry, live: &Entry, compare: CompareSet) -> Vec<Attr> {
    let mut out = Vec::new();
    for attr in compare.iter() {
        let differs = match attr {
            Attr::Type => base.ftype != live.ftype || base.rdev != live.rdev,
            Attr::Content => content_differs(base, live),
            Attr::Size => both_files(base, live) && base.size != live.size,
            Attr::Mode => base.mode != live.mode,
            Attr::Owner => base.uid != live.uid,
            Attr::Group => base.gid != live.gid,
            Attr::Acl => base.acl_access != live.acl_access || base.acl_default != live.acl_default,
            Attr::Xattr => base.xattrs != live.xattrs,
            Attr::LinkTarget => base.link_target != live.link_target,
            Attr::Mtime => base.mtime_ns != live.mtime_ns,
            Attr::Ctime => base.ctime_ns != live.ctime_ns,
            Attr::Inode => base.ino != live.ino || base.dev != live.dev,
            Attr::Nlink => base.nlink != live.nlink,
        };
        if differs {
            out.push(attr);
        }
    }
    // A size change is a content change the user should see named, even when only content
    // is compared.
    if compare.contains(Attr::Content)
        && !compare.contains(Attr::Size)
        && both_files(base, live)
        && base.size != live.size
    {
        let at = out
            .iter()
            .position(|a| *a > Attr::Size)
            .unwrap_or(out.len());
        out.insert(at, Attr::Size);
    }
    out
}

fn both_files(a: &Entry, b: &Entry) -> bool {
    a.ftype == FileType::File && b.ftype == FileType::File
}

fn content_differs(base: &Entry, live: &Entry) -> bool {
    if !both_files(base, live) {
        // A type change is reported as `type`; content of non-files is not hashed.
        return false;
    }
    match (&base.hashes, &live.hashes) {
        (Some(a), Some(b)) => a.blake3 != b.blake3,
        // The live file could not be read: its problem is reported, not a guess.
        (_, None) => false,
        // The baseline never captured content: it cannot vouch for what is there now.
        (None, Some(_)) => true,
    }
}

/// Severity by class and what happened: a private key's content, mode, owner or ACL change
/// is critical; a provider binary's content or capabilities too; a CA added to a trust store
/// is high; generic files are low to medium.
/// [`severity`] of a change from `base` to `live`, raised to at least high when, whatever
/// the class, a setuid/setgid bit was newly set or the entry became world-writable: that is
/// how privilege escalation and tampering start.
pub fn change_severity(class: Class, base: &Entry, live: &Entry, changes: &[Attr]) -> Severity {
    let gained = live.mode & !base.mode;
    let sev = severity(class, Status::Changed, changes);
    if changes.contains(&Attr::Mode) && gained & 0o6002 != 0 {
        sev.max(Severity::High)
    } else {
        sev
    }
}

pub fn severity(class: Class, status: Status, changes: &[Attr]) -> Severity {
    use Attr::*;
    use Severity::*;
    let worst = |f: &dyn Fn(Attr) -> Severity| changes.iter().map(|a| f(*a)).max().unwrap_or(Info);
    match (class, status) {
        // Set by the credential checks themselves.
        (_, Status::Rotated) => Low,
        (_, Status::Posture) => Medium,
        (Class::PrivateKey, Status::Removed) => Critical,
        (Class::PrivateKey, Status::Added) => High,
        (Class::PrivateKey, Status::Changed) => worst(&|a| match a {
            Content | Size | Type | LinkTarget | Mode | Owner | Group | Acl => Critical,
            Xattr => High,
            _ => Medium,
        }),
        (Class::ProviderBinary, Status::Removed | Status::Added) => High,
        (Class::ProviderBinary, Status::Changed) => worst(&|a| match a {
            Content | Size | Type | LinkTarget | Xattr | Mode | Owner => Critical,
            Group | Acl => High,
            _ => Medium,
        }),
        (Class::CaCert, Status::Added) => High,
        (Class::ClientCert | Class::CaCert, Status::Removed) => Medium,
        (Class::ClientCert, Status::Added) => Medium,
        (Class::ClientCert | Class::CaCert, Status::Changed) => worst(&|a| match a {
            Content | Size | Type | LinkTarget => High,
            Mode | Owner | Group | Acl | Xattr => Medium,
            _ => Low,
        }),
        (Class::KmsConfig, Status::Removed) => High,
        (Class::KmsConfig, Status::Added) => Medium,
        (Class::KmsConfig, Status::Changed) => worst(&|a| match a {
            Content | Size | Type | LinkTarget => High,
            Mode | Owner | Group | Acl | Xattr => Medium,
            _ => Low,
        }),
        (Class::Generic, Status::Added | Status::Removed) => Low,
        (Class::Generic, Status::Changed) => worst(&|a| match a {
            Content | Size | Type | LinkTarget | Mode | Owner => Medium,
            _ => Low,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{Hashes, Xattr};

    fn file() -> Entry {
        Entry {
            path: b"/etc/kms/k".to_vec(),
            ftype: FileType::File,
            mode: 0o600,
            uid: 0,
            gid: 0,
            size: 10,
            hashes: Some(Hashes {
                blake3: [1; 32],
                sha256: [1; 32],
            }),
            link_target: None,
            rdev: None,
            acl_access: None,
            acl_default: None,
            xattrs: vec![],
            dev: 1,
            ino: 2,
            nlink: 1,
            mtime_ns: 5,
            ctime_ns: 6,
            group: "g".into(),
            class: Class::PrivateKey,
            problem: None,
        }
    }

    fn d(f: impl Fn(&mut Entry), compare: CompareSet) -> Vec<&'static str> {
        let mut live = file();
        f(&mut live);
        diff(&file(), &live, compare)
            .iter()
            .map(|a| a.as_str())
            .collect()
    }

    #[test]
    fn each_attribute_is_detected_by_default() {
        let dflt = CompareSet::default_set();
        type Case = (&'static str, Box<dyn Fn(&mut Entry)>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("identical", Box::new(|_| {}), vec![]),
            (
                "content same size",
                Box::new(|e| e.hashes.as_mut().unwrap().blake3 = [9; 32]),
                vec!["content"],
            ),
            (
                "content and size",
                Box::new(|e| {
                    e.hashes.as_mut().unwrap().blake3 = [9; 32];
                    e.size = 11;
                }),
                vec!["content", "size"],
            ),
            ("mode", Box::new(|e| e.mode = 0o644), vec!["mode"]),
            ("owner", Box::new(|e| e.uid = 1000), vec!["owner"]),
            ("group", Box::new(|e| e.gid = 1000), vec!["group"]),
            (
                "acl",
                Box::new(|e| e.acl_access = Some("user:1:r--".into())),
                vec!["acl"],
            ),
            (
                "default acl",
                Box::new(|e| e.acl_default = Some("user::rwx".into())),
                vec!["acl"],
            ),
            (
                "xattr",
                Box::new(|e| {
                    e.xattrs.push(Xattr {
                        name: b"security.capability".to_vec(),
                        value: vec![1],
                    })
                }),
                vec!["xattr"],
            ),
            (
                "type",
                Box::new(|e| {
                    e.ftype = FileType::Symlink;
                    e.hashes = None;
                    e.link_target = Some(b"/x".to_vec());
                }),
                vec!["type", "link_target"],
            ),
            (
                "times and inode are not compared by default",
                Box::new(|e| {
                    e.mtime_ns = 1;
                    e.ctime_ns = 1;
                    e.ino = 9;
                    e.nlink = 2;
                }),
                vec![],
            ),
        ];
        for (name, f, want) in cases {
            assert_eq!(d(f, dflt), want, "{name}");
        }
    }

    #[test]
    fn volatile_attributes_are_compared_only_when_asked() {
        let all = CompareSet::from_attrs(Attr::ALL);
        assert_eq!(
            d(
                |e| {
                    e.mtime_ns = 1;
                    e.ctime_ns = 1;
                    e.ino = 9;
                    e.nlink = 2;
                },
                all
            ),
            vec!["mtime", "ctime", "inode", "nlink"]
        );
        let mode_only = CompareSet::from_attrs([Attr::Mode]);
        assert_eq!(
            d(
                |e| {
                    e.uid = 5;
                    e.mode = 0o666;
                },
                mode_only
            ),
            vec!["mode"]
        );
    }

    #[test]
    fn unreadable_live_content_is_not_claimed_changed_but_missing_baseline_content_is() {
        let dflt = CompareSet::default_set();
        assert_eq!(d(|e| e.hashes = None, dflt), Vec::<&str>::new());
        let mut base = file();
        base.hashes = None;
        assert_eq!(diff(&base, &file(), dflt), vec![Attr::Content]);
    }

    #[test]
    fn device_numbers_count_as_type() {
        let mut a = file();
        a.ftype = FileType::CharDevice;
        a.hashes = None;
        a.rdev = Some((1, 3));
        let mut b = a.clone();
        b.rdev = Some((1, 5));
        assert_eq!(diff(&a, &b, CompareSet::default_set()), vec![Attr::Type]);
    }

    #[test]
    fn severities_follow_class_and_change() {
        use Severity::*;
        assert_eq!(
            severity(Class::PrivateKey, Status::Changed, &[Attr::Mode]),
            Critical
        );
        assert_eq!(
            severity(Class::PrivateKey, Status::Changed, &[Attr::Mtime]),
            Medium
        );
        assert_eq!(severity(Class::PrivateKey, Status::Removed, &[]), Critical);
        assert_eq!(
            severity(Class::ProviderBinary, Status::Changed, &[Attr::Xattr]),
            Critical
        );
        assert_eq!(severity(Class::CaCert, Status::Added, &[]), High);
        assert_eq!(
            severity(Class::ClientCert, Status::Changed, &[Attr::Mode]),
            Medium
        );
        assert_eq!(
            severity(
                Class::KmsConfig,
                Status::Changed,
                &[Attr::Content, Attr::Mode]
            ),
            High
        );
        assert_eq!(
            severity(Class::Generic, Status::Changed, &[Attr::Xattr]),
            Low
        );
        assert_eq!(severity(Class::Generic, Status::Added, &[]), Low);
    }
}

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

/// [`severity`] of a change from `base` to `live`, raised, whatever the class, to what the
/// change grants (see [`grants`]): that is how privilege escalation and tampering start.
pub fn change_severity(class: Class, base: &Entry, live: &Entry, changes: &[Attr]) -> Severity {
    let sev = severity(class, Status::Changed, changes);
    grants(class, Some((base, changes)), live)
        .iter()
        .fold(sev, |s, g| s.max(g.severity))
}

/// [`severity`] of a new entry, raised, whatever the class, to what it grants: a new
/// setuid-root shell is as dangerous as a shell that became setuid-root.
pub fn added_severity(class: Class, live: &Entry) -> Severity {
    let sev = severity(class, Status::Added, &[]);
    grants(class, None, live)
        .iter()
        .fold(sev, |s, g| s.max(g.severity))
}

/// One thing a change gives someone: what, in words, and the least severity it deserves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub severity: Severity,
    pub what: String,
}

/// File capabilities that bypass file permissions, ownership or the kernel's own checks, or
/// hand out root: any of them on a binary lets its users read every key (`cap_dac_read_search`
/// on `openssl`) or become root. By `capability.h` number: chown, dac_override,
/// dac_read_search, fowner, setgid, setuid, setpcap, sys_module, sys_rawio, sys_ptrace,
/// sys_admin, setfcap, mac_override, mac_admin, bpf.
const ROOT_EQUIVALENT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 2)
    | (1 << 3)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 16)
    | (1 << 17)
    | (1 << 19)
    | (1 << 21)
    | (1 << 31)
    | (1 << 32)
    | (1 << 33)
    | (1 << 39);

/// The dynamic loader's preload list: every library named there is loaded into every
/// dynamically linked process, the KMS client's included.
pub const LD_SO_PRELOAD: &[u8] = b"/etc/ld.so.preload";

/// What `live` grants that its baseline did not, whatever the group's class (the escalation
/// table of `docs/policy.md`). `base` is the baseline entry and the attributes the policy
/// found changed; `None` for a new entry, which grants everything it has. Pure.
pub fn grants(class: Class, base: Option<(&Entry, &[Attr])>, live: &Entry) -> Vec<Grant> {
    let mut out = Vec::new();
    let changed = |a: Attr| base.is_none_or(|(_, c)| c.contains(&a));
    let before = base.map(|(b, _)| b);
    let mut grant = |severity: Severity, what: String| out.push(Grant { severity, what });
    if live.ftype == FileType::Symlink {
        // A symlink's own mode and xattrs grant nothing; where it points is its link target.
        if live.path == LD_SO_PRELOAD && (changed(Attr::LinkTarget) || changed(Attr::Type)) {
            grant(
                Severity::Critical,
                "/etc/ld.so.preload points somewhere new: every process loads what it names".into(),
            );
        }
        return out;
    }
    let file = live.ftype == FileType::File;
    let exec = file && live.mode & 0o111 != 0;
    let credential = matches!(
        class,
        Class::PrivateKey | Class::ClientCert | Class::CaCert | Class::ProviderBinary
    );
    if changed(Attr::Mode) {
        let gained = live.mode & !before.map_or(0, |b| b.mode);
        if gained & 0o4000 != 0 {
            if exec && live.uid == 0 {
                grant(
                    Severity::Critical,
                    "setuid root: anyone who runs it runs as root".into(),
                );
            } else {
                grant(Severity::High, format!("setuid: runs as uid {}", live.uid));
            }
        }
        if gained & 0o2000 != 0 {
            grant(
                Severity::High,
                format!("setgid: runs as (or creates files in) gid {}", live.gid),
            );
        }
        if gained & 0o002 != 0 && !(live.ftype == FileType::Dir && live.mode & 0o1000 != 0) {
            grant(
                Severity::High,
                "world-writable: anyone can change it".into(),
            );
        } else if gained & 0o020 != 0 && (exec || credential) {
            grant(
                Severity::High,
                format!(
                    "group-writable {}: members of gid {} can change it",
                    if credential { "credential" } else { "binary" },
                    live.gid
                ),
            );
        }
    }
    if changed(Attr::Xattr) {
        let cap = |e: &Entry| {
            e.xattrs
                .iter()
                .find(|x| x.name == b"security.capability")
                .map(|x| x.value.clone())
        };
        if let Some(v) = cap(live).filter(|v| before.and_then(cap).as_ref() != Some(v)) {
            let bits = super::attrs::capability_bits(&v);
            let old = before
                .and_then(cap)
                .and_then(|o| super::attrs::capability_bits(&o))
                .unwrap_or(0);
            let text = super::attrs::capability_text(&v).unwrap_or_else(|| "undecodable".into());
            match bits {
                Some(b) if b & !old == 0 => {}
                Some(b) if b & !old & ROOT_EQUIVALENT_CAPS != 0 => grant(
                    Severity::Critical,
                    format!("file capabilities {text}: its users bypass file permissions or become root"),
                ),
                _ => grant(Severity::High, format!("file capabilities {text}")),
            }
        }
    }
    if live.path == LD_SO_PRELOAD
        && file
        && live.size > 0
        && (changed(Attr::Content) || changed(Attr::Type))
    {
        grant(
            Severity::Critical,
            "/etc/ld.so.preload names libraries: every process loads them".into(),
        );
    }
    out
}

/// Severity by class and what happened: a private key's content, mode, owner or ACL change
/// is critical; a provider binary's content or capabilities too; a CA added to a trust store
/// is high; generic files are low to medium.
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
                sha256: Some([1; 32]),
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

    #[test]
    fn what_a_change_grants_raises_it_whatever_the_class() {
        use Severity::*;
        let base = file();
        let mut exe = file();
        exe.mode = 0o755;
        let caps = |bits: u32| Xattr {
            name: b"security.capability".to_vec(),
            value: [0x0200_0001u32, bits, 0, 0, 0]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect(),
        };
        let with = |f: &dyn Fn(&mut Entry)| {
            let mut e = exe.clone();
            f(&mut e);
            e
        };
        let cases: Vec<(Entry, Severity)> = vec![
            (exe.clone(), Low),
            (with(&|e| e.mode = 0o4755), Critical),
            (with(&|e| (e.mode, e.uid) = (0o4755, 1000)), High),
            (with(&|e| e.mode = 0o2755), High),
            (with(&|e| e.mode = 0o775), High),
            (with(&|e| e.mode = 0o757), High),
            (with(&|e| e.xattrs = vec![caps(1 << 2)]), Critical),
            (with(&|e| e.xattrs = vec![caps(1 << 10)]), High),
            (
                with(&|e| {
                    e.path = LD_SO_PRELOAD.to_vec();
                    e.mode = 0o644;
                }),
                Critical,
            ),
        ];
        for (live, want) in cases {
            assert_eq!(
                added_severity(Class::Generic, &live),
                want,
                "added {:o} {:?}",
                live.mode,
                live.xattrs
            );
        }
        // Changed: only what the policy compared and what is new counts.
        let mut was = exe.clone();
        was.xattrs = vec![caps(1 << 10)];
        let mut now = was.clone();
        now.xattrs = vec![caps((1 << 10) | (1 << 1))];
        assert_eq!(
            change_severity(Class::Generic, &was, &now, &[Attr::Xattr]),
            Critical
        );
        now.xattrs = vec![];
        assert_eq!(
            change_severity(Class::Generic, &was, &now, &[Attr::Xattr]),
            Low,
            "dropping a capability grants nothing"
        );
        let mut suid = base.clone();
        suid.mode = 0o4600;
        assert_eq!(
            change_severity(Class::Generic, &base, &suid, &[Attr::Owner]),
            Medium,
            "a mode the policy does not compare is not judged"
        );
        // A sticky world-writable directory (/tmp) is not a grant.
        let mut d = base.clone();
        d.ftype = FileType::Dir;
        d.hashes = None;
        d.mode = 0o1777;
        assert_eq!(added_severity(Class::Generic, &d), Low);
    }
}

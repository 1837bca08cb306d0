//! The pure permission decision: (event, process identity, compiled policy group, trusted
//! executables) → [`Verdict`]. No I/O here, so every branch is unit-tested; the daemon's
//! permission thread calls it and answers the kernel with the result before any logging or alert I/O.

use crate::baseline::diff::Severity;
use crate::policy::schema::AccessMode;
use crate::policy::{Class, Group};
use crate::proc::{ExeId, Identity};
use std::collections::{HashMap, HashSet};

/// What the kernel asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenKind {
    /// `FAN_OPEN_PERM` (or a plain `FAN_OPEN` in audit mode).
    Open,
    /// `FAN_OPEN_EXEC_PERM`: opened for execution.
    Exec,
}

/// The trusted identity of one allowed executable path, taken when the policy was loaded:
/// the inode identities that were hashed, and the hash they had (or the policy's
/// `exe_hash`). A binary replaced at the same path has a new identity, and is trusted only
/// if its content hashes to the same value.
#[derive(Clone, Debug, Default)]
pub struct TrustedExe {
    pub ids: Vec<ExeId>,
    pub blake3: Option<[u8; 32]>,
}

/// Everything `decide` consults besides the event and the group: the trusted executables
/// and the uid sets of each allow rule (user names resolved when the policy was loaded).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub exes: HashMap<Vec<u8>, TrustedExe>,
    /// `(group name, rule index)` → allowed effective uids; absent = any user.
    pub uids: HashMap<(String, usize), HashSet<u32>>,
}

/// Why an open was denied or audited; the alert's `rule` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// Stable id: `not-allowed`, `exe-replaced`, `user-not-allowed`, `parent-not-allowed`.
    pub rule: &'static str,
    /// One sentence for a human.
    pub message: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allow; when `alert` is set (audit mode, a process outside the allow-list) raise an
    /// `access` alert with outcome `success`.
    Allow { alert: Option<(Severity, Reason)> },
    /// Deny with `EPERM` and raise an `access` alert with outcome `denied`.
    Deny { severity: Severity, reason: Reason },
    /// An allow rule matches except that the executable's inode is not one that was hashed:
    /// hash it (off the permission thread) and decide again with `exe_hash`.
    NeedExeHash,
}

/// Decide one open. `exe_hash` is the BLAKE3 of the opener's executable when it is known
/// (a cache hit, or the second call after [`Verdict::NeedExeHash`]).
pub fn decide(
    self_pid: u32,
    kind: OpenKind,
    group: &Group,
    who: &Identity,
    trust: &Trust,
    exe_hash: Option<[u8; 32]>,
) -> Verdict {
    if who.info.pid == self_pid {
        return Verdict::Allow { alert: None };
    }
    let mode = group.access.mode;
    if mode == AccessMode::Off {
        return Verdict::Allow { alert: None };
    }
    let exe = who.info.exe.as_deref().unwrap_or(b"");
    let mut nearest: Option<Reason> = None;
    let mut need_hash = false;
    for (i, rule) in group.access.allow.iter().enumerate() {
        if rule.exe != exe {
            continue;
        }
        if let Some(set) = trust.uids.get(&(group.name.clone(), i)) {
            if !set.contains(&who.info.euid) {
                nearest.get_or_insert(Reason {
                    rule: "user-not-allowed",
                    message: format!(
                        "{} is allowed, but not for uid {}",
                        crate::sanitize::Name(exe),
                        who.info.euid
                    ),
                });
                continue;
            }
        }
        if let Some(parent) = &rule.parent_exe {
            if who.parent_exe.as_deref() != Some(parent.as_slice()) {
                nearest.get_or_insert(Reason {
                    rule: "parent-not-allowed",
                    message: format!(
                        "{} is allowed only when started by {}",
                        crate::sanitize::Name(exe),
                        crate::sanitize::Name(parent)
                    ),
                });
                continue;
            }
        }
        let trusted = trust.exes.get(&rule.exe);
        let want = rule.exe_hash.or(trusted.and_then(|t| t.blake3));
        let known_inode = match (trusted, who.exe_id) {
            (Some(t), Some(id)) => t.ids.contains(&id),
            _ => false,
        };
        if known_inode && (rule.exe_hash.is_none() || trusted.and_then(|t| t.blake3) == want) {
            return Verdict::Allow { alert: None };
        }
        match (exe_hash, want) {
            (Some(have), Some(want)) if have == want => return Verdict::Allow { alert: None },
            (Some(_), _) | (None, None) => {
                nearest = Some(Reason {
                    rule: "exe-replaced",
                    message: format!(
                        "{} is not the binary the allow-list trusts (its content hash differs)",
                        crate::sanitize::Name(exe)
                    ),
                });
            }
            (None, Some(_)) => need_hash = true,
        }
    }
    if need_hash {
        return Verdict::NeedExeHash;
    }
    let reason = nearest.unwrap_or_else(|| if exe.is_empty() {
        Reason {
            rule: "unidentified",
            message: "the process could not be identified (it exited before its executable could be read, or has none)".into(),
        }
    } else { Reason {
        rule: "not-allowed",
        message: format!(
            "{} is not in the group's allow-list",
            crate::sanitize::Name(exe)
        ),
    }});
    let severity = access_severity(group.class, kind);
    match mode {
        AccessMode::Enforce => Verdict::Deny { severity, reason },
        _ => Verdict::Allow {
            alert: Some((severity, reason)),
        },
    }
}

/// How bad an open outside the allow-list is, by what it opened.
pub fn access_severity(class: Class, kind: OpenKind) -> Severity {
    match (class, kind) {
        (Class::PrivateKey, _) => Severity::High,
        (Class::ProviderBinary, OpenKind::Exec) => Severity::High,
        (Class::KmsConfig | Class::ClientCert | Class::ProviderBinary, _) => Severity::Medium,
        _ => Severity::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::ProcessInfo;

    fn group(mode: &str, allow: &str) -> Group {
        let y = format!(
            "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/k]\n    access:\n      mode: {mode}\n      allow:\n{allow}"
        );
        let p = crate::policy::parse_str(&y, b"t.yaml").unwrap();
        p.groups[0].clone()
    }

    fn id(n: u64) -> ExeId {
        ExeId {
            dev: 1,
            ino: n,
            mtime_ns: 5,
            ctime_ns: 6,
            size: 7,
        }
    }

    fn who(pid: u32, exe: &str, euid: u32, exe_id: u64) -> Identity {
        Identity {
            info: ProcessInfo {
                pid,
                exe: Some(exe.as_bytes().to_vec()),
                uid: euid,
                euid,
                ..ProcessInfo::default()
            },
            exe_id: Some(id(exe_id)),
            parent_exe: Some(b"/usr/lib/systemd/systemd".to_vec()),
        }
    }

    fn trust(exe: &str, ino: u64, h: u8) -> Trust {
        let mut t = Trust::default();
        t.exes.insert(
            exe.as_bytes().to_vec(),
            TrustedExe {
                ids: vec![id(ino)],
                blake3: Some([h; 32]),
            },
        );
        t
    }

    const AGENT: &str = "        - exe: /usr/sbin/kms-agent\n";

    #[test]
    fn allowed_exe_with_trusted_inode_is_allowed() {
        let g = group("enforce", AGENT);
        let t = trust("/usr/sbin/kms-agent", 10, 1);
        let w = who(50, "/usr/sbin/kms-agent", 0, 10);
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, None),
            Verdict::Allow { alert: None }
        );
    }

    #[test]
    fn other_exe_is_denied_in_enforce_and_audited_in_audit() {
        let t = trust("/usr/sbin/kms-agent", 10, 1);
        let w = who(50, "/usr/bin/cat", 0, 99);
        match decide(1, OpenKind::Open, &group("enforce", AGENT), &w, &t, None) {
            Verdict::Deny { severity, reason } => {
                assert_eq!(severity, Severity::High);
                assert_eq!(reason.rule, "not-allowed");
                assert!(reason.message.contains("/usr/bin/cat"));
            }
            v => panic!("{v:?}"),
        }
        match decide(1, OpenKind::Open, &group("audit", AGENT), &w, &t, None) {
            Verdict::Allow {
                alert: Some((_, r)),
            } => assert_eq!(r.rule, "not-allowed"),
            v => panic!("{v:?}"),
        }
        let mut off = group("audit", AGENT);
        off.access.mode = AccessMode::Off;
        assert_eq!(
            decide(1, OpenKind::Open, &off, &w, &t, None),
            Verdict::Allow { alert: None }
        );
    }

    #[test]
    fn own_pid_is_always_allowed() {
        let t = Trust::default();
        let w = who(7, "/usr/bin/cat", 0, 99);
        assert_eq!(
            decide(7, OpenKind::Open, &group("enforce", AGENT), &w, &t, None),
            Verdict::Allow { alert: None }
        );
    }

    #[test]
    fn replaced_binary_needs_a_hash_then_is_judged_by_it() {
        let g = group("enforce", AGENT);
        let t = trust("/usr/sbin/kms-agent", 10, 1);
        let w = who(50, "/usr/sbin/kms-agent", 0, 11);
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, None),
            Verdict::NeedExeHash
        );
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, Some([1; 32])),
            Verdict::Allow { alert: None }
        );
        match decide(1, OpenKind::Open, &g, &w, &t, Some([2; 32])) {
            Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "exe-replaced"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn missing_allowed_binary_at_load_is_never_trusted() {
        let g = group("enforce", AGENT);
        let mut t = Trust::default();
        t.exes
            .insert(b"/usr/sbin/kms-agent".to_vec(), TrustedExe::default());
        let w = who(50, "/usr/sbin/kms-agent", 0, 10);
        assert!(matches!(
            decide(1, OpenKind::Open, &g, &w, &t, Some([3; 32])),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn policy_exe_hash_overrides_file() {
        let h = hex::encode([4u8; 32]);
        let g = group(
            "enforce",
            &format!("        - exe: /usr/sbin/kms-agent\n          exe_hash: {h}\n"),
        );
        // The file at load time hashed to [1;32]: not what the policy pins.
        let t = trust("/usr/sbin/kms-agent", 10, 1);
        let w = who(50, "/usr/sbin/kms-agent", 0, 10);
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, None),
            Verdict::NeedExeHash
        );
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, Some([4; 32])),
            Verdict::Allow { alert: None }
        );
    }

    #[test]
    fn users_and_parent_are_checked() {
        let g = group(
            "enforce",
            "        - exe: /usr/sbin/kms-agent\n          uids: [0]\n          parent_exe: /usr/lib/systemd/systemd\n",
        );
        let mut t = trust("/usr/sbin/kms-agent", 10, 1);
        t.uids.insert(("keys".into(), 0), HashSet::from([0]));
        assert_eq!(
            decide(
                1,
                OpenKind::Open,
                &g,
                &who(50, "/usr/sbin/kms-agent", 0, 10),
                &t,
                None
            ),
            Verdict::Allow { alert: None }
        );
        match decide(
            1,
            OpenKind::Open,
            &g,
            &who(50, "/usr/sbin/kms-agent", 1000, 10),
            &t,
            None,
        ) {
            Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "user-not-allowed"),
            v => panic!("{v:?}"),
        }
        let mut w = who(50, "/usr/sbin/kms-agent", 0, 10);
        w.parent_exe = Some(b"/bin/sh".to_vec());
        match decide(1, OpenKind::Open, &g, &w, &t, None) {
            Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "parent-not-allowed"),
            v => panic!("{v:?}"),
        }
    }
}

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
    /// Stable id: `not-allowed`, `deny-all`, `audit-all`, `unidentified`, `exe-replaced`,
    /// `user-not-allowed`, `parent-not-allowed`, `args-not-allowed`, `unusual-parent`.
    pub rule: &'static str,
    /// One sentence for a human.
    pub message: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allow; when `alert` is set (audit mode, a process outside the allow-list; or an allowed
    /// process under an unusual parent) raise an `access` alert with outcome `success`.
    Allow { alert: Option<(Severity, Reason)> },
    /// Deny with `EPERM` and raise an `access` alert with outcome `denied`.
    Deny { severity: Severity, reason: Reason },
    /// An allow rule matches except that the executable's inode is not one that was hashed:
    /// hash it (off the permission thread) and decide again with `exe_hash`.
    NeedExeHash,
}

fn names(list: &[Vec<u8>]) -> String {
    list.iter()
        .map(|p| crate::sanitize::Name(p).to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    let severity = access_severity(group.class, kind);
    let exe = who.info.exe.as_deref().unwrap_or(b"");
    let mut nearest: Option<Reason> = None;
    let mut need_hash = false;
    let mut allowed_with_alert: Option<Reason> = None;
    for (i, rule) in group.access.allow.iter().enumerate() {
        if rule.exe != exe {
            continue;
        }
        if let Some(set) = trust.uids.get(&(group.name.clone(), i)) {
            match who.info.euid {
                Some(euid) if set.contains(&euid) => {}
                Some(euid) => {
                    nearest.get_or_insert(Reason {
                        rule: "user-not-allowed",
                        message: format!(
                            "{} is allowed, but not for uid {euid}",
                            crate::sanitize::Name(exe)
                        ),
                    });
                    continue;
                }
                None => {
                    nearest.get_or_insert(Reason {
                        rule: "user-not-allowed",
                        message: format!(
                            "{} is allowed for some users only, and this process's user could not be read",
                            crate::sanitize::Name(exe)
                        ),
                    });
                    continue;
                }
            }
        }
        let parent = who.parent_exe.as_deref();
        if !rule.parent_exe.is_empty()
            && !parent.is_some_and(|p| rule.parent_exe.iter().any(|a| a == p))
        {
            nearest.get_or_insert(Reason {
                rule: "parent-not-allowed",
                message: format!(
                    "{} is allowed only when started by {} (its parent is {})",
                    crate::sanitize::Name(exe),
                    names(&rule.parent_exe),
                    parent.map_or_else(
                        || "unknown".into(),
                        |p| crate::sanitize::Name(p).to_string()
                    )
                ),
            });
            continue;
        }
        if let Some(pat) = &rule.args {
            if !who.args.as_deref().is_some_and(|a| pat.matches(a)) {
                nearest.get_or_insert(Reason {
                    rule: "args-not-allowed",
                    message: format!(
                        "{} is allowed only with the arguments {:?}",
                        crate::sanitize::Name(exe),
                        pat.text
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
        let is_trusted =
            if known_inode && (rule.exe_hash.is_none() || trusted.and_then(|t| t.blake3) == want) {
                true
            } else {
                match (exe_hash, want) {
                    (Some(have), Some(want)) if have == want => true,
                    (Some(_), _) | (None, None) => {
                        nearest = Some(Reason {
                            rule: "exe-replaced",
                            message: format!(
                            "{} is not the binary the allow-list trusts (its content hash differs)",
                            crate::sanitize::Name(exe)
                        ),
                        });
                        false
                    }
                    (None, Some(_)) => {
                        need_hash = true;
                        false
                    }
                }
            };
        if !is_trusted {
            continue;
        }
        let usual = rule.usual_parent_exe.is_empty()
            || parent.is_some_and(|p| rule.usual_parent_exe.iter().any(|u| u == p));
        if usual {
            return Verdict::Allow { alert: None };
        }
        allowed_with_alert.get_or_insert(Reason {
            rule: "unusual-parent",
            message: format!(
                "{} is allowed, but was started by {} rather than by {}",
                crate::sanitize::Name(exe),
                parent.map_or_else(
                    || "an unknown parent".into(),
                    |p| crate::sanitize::Name(p).to_string()
                ),
                names(&rule.usual_parent_exe)
            ),
        });
    }
    if need_hash {
        return Verdict::NeedExeHash;
    }
    if let Some(reason) = allowed_with_alert {
        return Verdict::Allow {
            alert: Some((severity, reason)),
        };
    }
    let reason = nearest.unwrap_or_else(|| {
        if group.access.allow.is_empty() {
            match mode {
                AccessMode::Enforce => Reason {
                    rule: "deny-all",
                    message: "the group has no allow-list: every open is denied".into(),
                },
                _ => Reason {
                    rule: "audit-all",
                    message: "the group has no allow-list: every open is reported".into(),
                },
            }
        } else if exe.is_empty() {
            Reason {
                rule: "unidentified",
                message: "the process's executable could not be read (it exited, or it is a kernel thread)".into(),
            }
        } else {
            Reason {
                rule: "not-allowed",
                message: format!(
                    "{} is not in the group's allow-list",
                    crate::sanitize::Name(exe)
                ),
            }
        }
    });
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
    use crate::proc::{ProcessInfo, Source};

    fn group(mode: &str, allow: &str) -> Group {
        let list = if allow.is_empty() { " []\n" } else { "\n" };
        let y = format!(
            "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/k]\n    access:\n      mode: {mode}\n      allow:{list}{allow}"
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
                exe: Some(exe.as_bytes().to_vec()),
                uid: Some(euid),
                euid: Some(euid),
                ..ProcessInfo::pid_only(pid, Source::Blocked)
            },
            exe_id: Some(id(exe_id)),
            parent_exe: Some(b"/usr/lib/systemd/systemd".to_vec()),
            args: None,
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

    #[test]
    fn a_group_without_an_allow_list_says_so_rather_than_not_allowed() {
        let t = Trust::default();
        let w = who(50, "/usr/bin/cat", 0, 99);
        match decide(1, OpenKind::Open, &group("audit", ""), &w, &t, None) {
            Verdict::Allow {
                alert: Some((_, r)),
            } => assert_eq!(r.rule, "audit-all"),
            v => panic!("{v:?}"),
        }
        match decide(1, OpenKind::Open, &group("enforce", ""), &w, &t, None) {
            Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "deny-all"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_unknown_user_never_matches_a_user_constrained_rule() {
        let g = group(
            "enforce",
            "        - exe: /usr/sbin/kms-agent\n          uids: [0]\n",
        );
        let mut t = trust("/usr/sbin/kms-agent", 10, 1);
        t.uids.insert(("keys".into(), 0), HashSet::from([0]));
        let mut w = who(50, "/usr/sbin/kms-agent", 0, 10);
        w.info.uid = None;
        w.info.euid = None;
        match decide(1, OpenKind::Open, &g, &w, &t, None) {
            Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "user-not-allowed"),
            v => panic!("{v:?}"),
        }
    }

    fn args(v: &[&str]) -> Option<Vec<Vec<u8>>> {
        Some(v.iter().map(|a| a.as_bytes().to_vec()).collect())
    }

    #[test]
    fn argument_patterns_constrain_an_allowed_tool() {
        let g = group(
            "enforce",
            "        - exe: /usr/bin/openssl\n          args: [pkey, -in, /k/*.key, -noout, \"**\"]\n",
        );
        let t = trust("/usr/bin/openssl", 10, 1);
        let mut w = who(50, "/usr/bin/openssl", 0, 10);
        for (a, ok) in [
            (&["pkey", "-in", "/k/client.key", "-noout"][..], true),
            (
                &["pkey", "-in", "/k/client.key", "-noout", "-text"][..],
                true,
            ),
            (
                &["pkey", "-in", "/k/client.key", "-out", "/tmp/x"][..],
                false,
            ),
            (&["pkey", "-in", "/k/client.key"][..], false),
            (&["pkey", "-in", "/etc/other", "-noout"][..], false),
        ] {
            w.args = args(a);
            let v = decide(1, OpenKind::Open, &g, &w, &t, None);
            if ok {
                assert_eq!(v, Verdict::Allow { alert: None }, "{a:?}");
            } else {
                match v {
                    Verdict::Deny { reason, .. } => assert_eq!(reason.rule, "args-not-allowed"),
                    v => panic!("{a:?}: {v:?}"),
                }
            }
        }
        // Unreadable arguments never match.
        w.args = None;
        assert!(matches!(
            decide(1, OpenKind::Open, &g, &w, &t, None),
            Verdict::Deny { .. }
        ));
        // Without `**`, the count must be exact.
        let exact = group(
            "enforce",
            "        - exe: /usr/bin/openssl\n          args: [version]\n",
        );
        w.args = args(&["version"]);
        assert_eq!(
            decide(1, OpenKind::Open, &exact, &w, &t, None),
            Verdict::Allow { alert: None }
        );
        w.args = args(&["version", "-a"]);
        assert!(matches!(
            decide(1, OpenKind::Open, &exact, &w, &t, None),
            Verdict::Deny { .. }
        ));
    }

    #[test]
    fn an_allowed_exe_under_an_unusual_parent_is_allowed_and_alerted() {
        let g = group(
            "enforce",
            "        - exe: /usr/sbin/kms-agent\n          usual_parent_exe: [/usr/lib/systemd/systemd]\n",
        );
        let t = trust("/usr/sbin/kms-agent", 10, 1);
        let mut w = who(50, "/usr/sbin/kms-agent", 0, 10);
        assert_eq!(
            decide(1, OpenKind::Open, &g, &w, &t, None),
            Verdict::Allow { alert: None }
        );
        w.parent_exe = Some(b"/usr/bin/bash".to_vec());
        match decide(1, OpenKind::Open, &g, &w, &t, None) {
            Verdict::Allow {
                alert: Some((sev, r)),
            } => {
                assert_eq!(r.rule, "unusual-parent");
                assert!(r.message.contains("/usr/bin/bash"), "{}", r.message);
                assert_eq!(sev, Severity::High);
            }
            v => panic!("{v:?}"),
        }
        // A second rule that allows it outright wins over the alert.
        let g2 = group(
            "enforce",
            "        - exe: /usr/sbin/kms-agent\n          usual_parent_exe: /usr/lib/systemd/systemd\n        - exe: /usr/sbin/kms-agent\n          parent_exe: [/usr/bin/bash, /usr/bin/dash]\n",
        );
        assert_eq!(
            decide(1, OpenKind::Open, &g2, &w, &t, None),
            Verdict::Allow { alert: None }
        );
    }
}

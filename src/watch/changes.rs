//! From one path's events and its capture to the alerts that report them: one alert per
//! namespace event (created, deleted, renamed), or one comparison of the state before and
//! after (modified, attrib, renamed over). [`touch::plan`](super::touch::plan) decides which
//! alerts; this module fills them in.
//!
//! No I/O apart from user and group names (through the caller's cache): everything it
//! needs is passed in, so its tests need no daemon.

use super::detail;
use super::touch::{self, Op, StepKind, Touch};
use crate::alert::{Alert, Kind, Outcome};
use crate::baseline::diff::{added_severity, change_severity, diff, severity, Status};
use crate::baseline::entry::Entry;
use crate::policy::{Attr, Group};
use crate::users::Names;

/// The state of one path as the checker sees it.
pub struct Observed<'a> {
    pub path: &'a [u8],
    pub group: &'a Group,
    /// The baseline's entry.
    pub base: Option<&'a Entry>,
    /// What was last observed (the baseline, unless it drifted since).
    pub prev: Option<&'a Entry>,
    /// The capture just made.
    pub live: Option<&'a Entry>,
}

fn is_content(a: &Attr) -> bool {
    matches!(
        a,
        Attr::Content | Attr::Size | Attr::Type | Attr::LinkTarget
    )
}

/// The alerts for `o` given the events in `t`.
pub fn alerts(o: &Observed<'_>, t: &Touch, names: &mut Names) -> Vec<Alert> {
    let g = o.group;
    let ops: Vec<Op> = t.ops.iter().map(|(op, _)| *op).collect();
    let vs_base: Vec<&'static str> = match (o.base, o.live) {
        (Some(b), Some(l)) => diff(b, l, g.compare).iter().map(|c| c.as_str()).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for step in touch::plan(o.prev.is_some(), o.live.is_some(), &ops) {
        let who = match step.op {
            Some(i) => t.ops.get(i).and_then(|(_, w)| w.clone()),
            None => t.who.clone(),
        };
        let mut a = match step.kind {
            StepKind::Compare => {
                let (Some(p), Some(l)) = (o.prev, o.live) else {
                    continue;
                };
                let changes = diff(p, l, g.compare);
                if changes.is_empty() {
                    continue;
                }
                let kind = if t.mask & libc::FAN_MOVED_TO != 0 {
                    Kind::Renamed // something was renamed over it (an atomic replace)
                } else if changes.iter().any(is_content) {
                    Kind::Modified
                } else {
                    Kind::Attrib
                };
                let mut a = Alert::new(kind, change_severity(g.class, p, l, &changes));
                if kind == Kind::Renamed {
                    a.detail.insert("direction".into(), "to".into());
                }
                a.changes = changes.iter().map(|c| c.as_str()).collect();
                detail::describe(&mut a, Some(p), Some(l), Some(&changes), names);
                if !ops.is_empty() {
                    a.detail.insert(
                        "events".into(),
                        ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().into(),
                    );
                }
                a.detail
                    .insert("vs_baseline".into(), vs_base.clone().into());
                a
            }
            StepKind::Created | StepKind::RenamedTo => {
                let mut a = Alert::new(
                    if step.kind == StepKind::Created {
                        Kind::Created
                    } else {
                        Kind::Renamed
                    },
                    o.live.map_or_else(
                        || severity(g.class, Status::Added, &[]),
                        |l| added_severity(g.class, l),
                    ),
                );
                if step.kind == StepKind::RenamedTo {
                    a.detail.insert("direction".into(), "to".into());
                }
                if step.with_live {
                    detail::describe(&mut a, None, o.live, None, names);
                    a.detail
                        .insert("vs_baseline".into(), vs_base.clone().into());
                } else {
                    a.detail.insert("captured".into(), false.into());
                    a.detail.insert(
                        "message".into(),
                        "gone again before it could be read: only its name and the process are known".into(),
                    );
                }
                a
            }
            StepKind::Deleted | StepKind::RenamedFrom => {
                let status = if o.base.is_some() {
                    Status::Removed
                } else {
                    Status::Added
                };
                let mut a = Alert::new(
                    if step.kind == StepKind::Deleted {
                        Kind::Deleted
                    } else {
                        Kind::Renamed
                    },
                    severity(g.class, status, &[]),
                );
                if step.kind == StepKind::RenamedFrom {
                    a.detail.insert("direction".into(), "from".into());
                }
                if step.with_prev {
                    detail::describe(&mut a, o.prev, None, None, names);
                }
                a
            }
        };
        a.path = Some(o.path.to_vec());
        a.group = Some(g.name.clone());
        a.class = Some(g.class);
        a.outcome = Some(Outcome::Success);
        a.process = who;
        out.push(a);
    }
    if t.ops_dropped > 0 {
        if let Some(last) = out.last_mut() {
            last.detail
                .insert("events_not_listed".into(), t.ops_dropped.into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::{ProcessInfo, Source};
    use std::time::Instant;

    fn policy() -> crate::policy::CompiledPolicy {
        crate::policy::parse_str(
            "version: 1\ngroups:\n  - name: conf\n    class: kms-config\n    paths: [/etc/kms]\n",
            b"t.yaml",
        )
        .unwrap()
    }

    fn entry(mode: u32) -> Entry {
        crate::watch::detail::tests::file(b"/etc/kms/a", mode)
    }

    fn names() -> Names {
        Names::for_root(&crate::fsroot::Root::open(std::path::Path::new("/")).unwrap())
    }

    #[test]
    fn a_file_created_and_deleted_before_its_check_gives_two_alerts_with_their_processes() {
        let p = policy();
        let g = &p.groups[0];
        let now = Instant::now();
        let mut t = Touch::new(1, now);
        let nobody = ProcessInfo {
            uid: Some(65534),
            ..ProcessInfo::pid_only(42, Source::Procfs)
        };
        t.add(now, libc::FAN_CREATE, Some(nobody.clone()));
        t.add(
            now,
            libc::FAN_DELETE,
            Some(ProcessInfo::pid_only(43, Source::Gone)),
        );
        let o = Observed {
            path: b"/etc/kms/x",
            group: g,
            base: None,
            prev: None,
            live: None,
        };
        let a = alerts(&o, &t, &mut names());
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].kind, a[1].kind), (Kind::Created, Kind::Deleted));
        assert_eq!(a[0].process, Some(nobody));
        assert_eq!(a[1].process.as_ref().map(|p| p.pid), Some(43));
        assert_eq!(a[0].detail["captured"], false);
    }

    #[test]
    fn a_chmod_is_an_attrib_alert_with_the_new_mode() {
        let p = policy();
        let g = &p.groups[0];
        let now = Instant::now();
        let mut t = Touch::new(1, now);
        t.add(now, libc::FAN_ATTRIB, None);
        let (b, l) = (entry(0o644), entry(0o666));
        let o = Observed {
            path: b"/etc/kms/a",
            group: g,
            base: Some(&b),
            prev: Some(&b),
            live: Some(&l),
        };
        let a = alerts(&o, &t, &mut names());
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, Kind::Attrib);
        assert_eq!(a[0].changes, ["mode"]);
        assert_eq!(a[0].detail["before"]["mode"], "0644");
        assert_eq!(a[0].detail["after"]["mode"], "0666");
        // Nothing changed: nothing to say.
        let o = Observed {
            live: Some(&b),
            ..o
        };
        assert!(alerts(&o, &t, &mut names()).is_empty());
    }
}

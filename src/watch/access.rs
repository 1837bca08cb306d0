//! The `access` alerts: an open the daemon decided on (denied, or allowed but reported), and
//! an open the kernel itself refused (from its audit records).
//!
//! Builders only: no I/O, except that a kernel denial's command line, cut by the kernel at
//! 128 bytes, is lengthened from `/proc` when that still shows the same program.

use super::audit::Denial;
use super::identity;
use crate::alert::{Alert, Kind, Outcome};
use crate::baseline::diff::Severity;
use crate::decide::{OpenKind, Reason};
use crate::policy::Group;
use crate::proc::Identity;

/// The `access` alert of one decision on an open of `path` by `who`.
pub fn access_alert(
    group: &Group,
    path: Vec<u8>,
    who: &Identity,
    outcome: Outcome,
    severity: Severity,
    reason: &Reason,
    kind: OpenKind,
) -> Alert {
    let mut a = Alert::new(Kind::Access, severity);
    a.path = Some(path);
    a.group = Some(group.name.clone());
    a.class = Some(group.class);
    a.outcome = Some(outcome);
    a.process = Some(who.info.clone());
    if let Some(p) = &who.parent_exe {
        a.detail.insert(
            "parent_exe".into(),
            crate::sanitize::JsonName(p).text().into_owned().into(),
        );
    }
    a.rule = Some(reason.rule.to_string());
    a.detail
        .insert("message".into(), reason.message.clone().into());
    a.detail.insert(
        "access".into(),
        match kind {
            OpenKind::Open => "open",
            OpenKind::Exec => "exec",
        }
        .into(),
    );
    a
}

/// The `access` alert (`outcome: failure`, `rule: kernel-denied`) of an open the kernel
/// refused. The identity is the audit record's own, from the refused call.
pub fn kernel_denial_alert(g: &Group, d: &Denial) -> Alert {
    let mut al = Alert::new(
        Kind::Access,
        crate::decide::access_severity(g.class, OpenKind::Open),
    );
    al.path = Some(d.path.clone());
    al.group = Some(g.name.clone());
    al.class = Some(g.class);
    al.outcome = Some(Outcome::Failure);
    let mut p = d.process.clone();
    identity::lengthen_title(&mut p);
    al.process = Some(p);
    al.rule = Some("kernel-denied".into());
    let errno = if d.errno == 1 { "EPERM" } else { "EACCES" };
    al.detail.insert("errno".into(), errno.into());
    al.detail.insert("syscall".into(), d.syscall.into());
    al.detail.insert("audit_serial".into(), d.serial.into());
    al.detail.insert(
        "message".into(),
        format!("the kernel refused {} ({errno})", d.syscall).into(),
    );
    al
}

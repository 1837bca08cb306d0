//! Joins the records of one audit event (same serial) into a [`Denial`].
//!
//! The kernel writes an event's records in order: `SYSCALL` first, then `CWD`, `PATH` (one per
//! name), `PROCTITLE`, and `EOE` last. Only a `SYSCALL` carrying our key, failing with
//! `EACCES`/`EPERM`, from a process other than ours opens an event here; every other serial
//! is dropped on sight, so the multicast stream of a busy host costs one parse per record and
//! no memory. `EOE` completes an event; since it can be missing (old kernels, a lost record),
//! an event is also completed `FLUSH_AFTER` after its `SYSCALL`. Pending events are bounded.
//!
//! No I/O: the clock is passed in, paths are resolved against a [`Resolver`] built by the
//! caller, so this is unit-tested on captured record text.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::netlink::{
    AUDIT_CWD, AUDIT_EOE, AUDIT_FANOTIFY, AUDIT_PATH, AUDIT_PROCTITLE, AUDIT_SYSCALL,
};
use super::record::{self, Record};
use super::rule::{self, is_under, EACCES, EPERM};
use super::{Denial, Target};
use crate::proc::{ProcessInfo, Source};

pub const FLUSH_AFTER: Duration = Duration::from_millis(500);
const MAX_PENDING: usize = 4096;
/// `proctitle` is at most 128 bytes from the kernel; this bounds what we keep regardless.
const MAX_CMDLINE: usize = 4096;
/// `MAX_PROCTITLE_AUDIT_LEN` in the kernel: the most of a command line a record carries.
pub const PROCTITLE_MAX: usize = 128;
const AT_FDCWD: u64 = 0xffff_ff9c;

/// One `PATH` record's facts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Item {
    name: Option<Vec<u8>>,
    dev_ino: Option<(Vec<u8>, u64)>,
    normal: bool,
}

#[derive(Clone, Debug)]
struct Pending {
    /// Logged under our rule's key (else under another rule's: only targets count).
    keyed: bool,
    ts: jiff::Timestamp,
    serial: u64,
    syscall: &'static str,
    errno: i32,
    dirfd: Option<u64>,
    process: ProcessInfo,
    cwd: Option<Vec<u8>>,
    items: Vec<Item>,
}

/// Maps what the kernel reports back to the targets.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    pub targets: Vec<Target>,
    /// `dev=MAJ:MIN` text (as audit writes it, lower-case hex) and inode of each file target
    /// that existed when the rules were installed.
    pub inodes: HashMap<(Vec<u8>, u64), Vec<u8>>,
    /// The installed rules are wider than the targets: keep only denials on a target.
    pub widened: bool,
}

impl Resolver {
    fn covers(&self, path: &[u8]) -> bool {
        self.targets.iter().any(|t| {
            if t.is_dir {
                is_under(path, &t.path)
            } else {
                t.path == path
            }
        })
    }
}

pub struct Correlator {
    key: Vec<u8>,
    own_pid: u32,
    pending: HashMap<u64, (Instant, Pending)>,
    order: VecDeque<u64>,
    /// Serials of system calls a fanotify listener denied (an `AUDIT_FANOTIFY` record with
    /// `resp=2`). Their `EPERM` is that listener's answer, which the listener reports itself:
    /// the daemon's own enforce denials would otherwise be alerted twice.
    fanotify_denied: VecDeque<u64>,
}

/// Serials of fanotify denials remembered (the `SYSCALL` record follows within the same
/// system call, so a short memory suffices).
const MAX_FANOTIFY_DENIED: usize = 1024;
/// `FAN_DENY`, as `resp=` of an `AUDIT_FANOTIFY` record.
const FAN_DENY: i64 = 2;

impl Correlator {
    pub fn new(key: &str, own_pid: u32) -> Correlator {
        Correlator {
            key: key.as_bytes().to_vec(),
            own_pid,
            pending: HashMap::new(),
            order: VecDeque::new(),
            fanotify_denied: VecDeque::new(),
        }
    }

    /// Feeds one record; returns a completed denial when this record ends an event.
    pub fn feed(&mut self, kind: u16, text: &[u8], now: Instant, r: &Resolver) -> Option<Denial> {
        if !matches!(
            kind,
            AUDIT_SYSCALL | AUDIT_CWD | AUDIT_PATH | AUDIT_PROCTITLE | AUDIT_EOE | AUDIT_FANOTIFY
        ) {
            return None;
        }
        let rec = record::parse(text)?;
        if kind == AUDIT_FANOTIFY {
            if rec.num("resp").is_some_and(|r| r & 3 == FAN_DENY) {
                // Logged during the system call, before its SYSCALL record; drop an event
                // already opened too, whatever the order.
                if self.pending.remove(&rec.serial).is_some() {
                    self.order.retain(|s| *s != rec.serial);
                }
                if self.fanotify_denied.len() >= MAX_FANOTIFY_DENIED {
                    self.fanotify_denied.pop_front();
                }
                self.fanotify_denied.push_back(rec.serial);
            }
            return None;
        }
        if kind == AUDIT_SYSCALL {
            if rec.num("exit") == Some(-i64::from(EPERM))
                && self.fanotify_denied.contains(&rec.serial)
            {
                return None;
            }
            let p = self.open_event(&rec)?;
            if self.pending.len() >= MAX_PENDING {
                if let Some(old) = self.order.pop_front() {
                    self.pending.remove(&old);
                }
            }
            self.order.push_back(rec.serial);
            self.pending.insert(rec.serial, (now, p));
            return None;
        }
        let (_, p) = self.pending.get_mut(&rec.serial)?;
        match kind {
            AUDIT_CWD => p.cwd = rec.bytes("cwd"),
            AUDIT_PATH => {
                if p.items.len() < 16 {
                    p.items.push(Item {
                        name: rec.bytes("name"),
                        dev_ino: rec
                            .word("dev")
                            .zip(rec.num("inode").and_then(|i| u64::try_from(i).ok()))
                            .map(|(d, i)| (d.to_ascii_lowercase(), i)),
                        normal: rec.word("nametype") == Some(b"NORMAL"),
                    });
                }
            }
            AUDIT_PROCTITLE => {
                if let Some(mut t) = rec.bytes("proctitle") {
                    // The kernel copies at most PROCTITLE_MAX bytes of the arguments and
                    // cannot say whether there were more: a title that long may be cut.
                    p.process.cmdline_truncated = t.len() >= PROCTITLE_MAX;
                    t.truncate(MAX_CMDLINE);
                    for b in &mut t {
                        if *b == 0 {
                            *b = b' ';
                        }
                    }
                    while t.last() == Some(&b' ') {
                        t.pop();
                    }
                    p.process.cmdline = (!t.is_empty()).then_some(t);
                }
            }
            _ => {
                let (_, p) = self.pending.remove(&rec.serial)?;
                self.order.retain(|s| *s != rec.serial);
                return finish(p, r);
            }
        }
        None
    }

    /// Completes events whose `EOE` has not come within [`FLUSH_AFTER`].
    pub fn expire(&mut self, now: Instant, r: &Resolver) -> Vec<Denial> {
        let mut out = Vec::new();
        while let Some(&serial) = self.order.front() {
            match self.pending.get(&serial) {
                Some((t, _)) if now.saturating_duration_since(*t) < FLUSH_AFTER => break,
                _ => {}
            }
            self.order.pop_front();
            if let Some((_, p)) = self.pending.remove(&serial) {
                out.extend(finish(p, r));
            }
        }
        out
    }

    /// When the oldest pending event must be flushed.
    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.order.front()?;
        self.pending.get(s).map(|(t, _)| *t + FLUSH_AFTER)
    }

    /// Forgets partial events (after records were lost).
    pub fn clear(&mut self) {
        self.pending.clear();
        self.order.clear();
    }

    fn open_event(&self, rec: &Record<'_>) -> Option<Pending> {
        if rec.word("success") != Some(b"no") {
            return None;
        }
        // The kernel stops at the first exit rule that matches and logs that rule's key, so
        // an administrator's earlier rule (a common hardening set logs every EACCES open with
        // `-k access`) takes our events. Those are accepted too, when the name resolves to a
        // target (checked in `finish`).
        let keyed = rec.bytes("key").is_some_and(|k| k == self.key);
        let errno = match rec.num("exit")? {
            e if e == -i64::from(EACCES) => EACCES,
            e if e == -i64::from(EPERM) => EPERM,
            _ => return None,
        };
        let id = |k: &str| rec.num(k).and_then(|v| u32::try_from(v).ok());
        let pid = id("pid")?;
        if pid == self.own_pid {
            return None;
        }
        let arch = rec.hex_num("arch")?;
        let nr = rec.num("syscall").and_then(|n| u64::try_from(n).ok())?;
        let syscall = match rule::syscall_name(arch, nr) {
            Some(name) => name,
            None if keyed => "unknown",
            None => return None,
        };
        let ts = jiff::Timestamp::new(rec.secs, (rec.millis as i32) * 1_000_000)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Some(Pending {
            keyed,
            ts,
            serial: rec.serial,
            syscall,
            errno,
            dirfd: matches!(syscall, "openat" | "openat2")
                .then(|| rec.hex_num("a0"))
                .flatten(),
            process: ProcessInfo {
                ppid: id("ppid"),
                exe: rec.bytes("exe"),
                comm: rec.bytes("comm"),
                uid: id("uid"),
                euid: id("euid"),
                auid: id("auid").filter(|&a| a != u32::MAX),
                ..ProcessInfo::pid_only(pid, Source::Audit)
            },
            cwd: None,
            items: Vec::new(),
        })
    }
}

/// Picks the refused name and makes it absolute. Order of trust: the inode matches a file
/// target (exact, whatever name or link was used); an absolute name; a name relative to the
/// working directory. A name relative to another directory fd is reported as given.
fn finish(p: Pending, r: &Resolver) -> Option<Denial> {
    let by_inode = p
        .items
        .iter()
        .find_map(|i| i.dev_ino.as_ref().and_then(|k| r.inodes.get(k)).cloned());
    let path = match by_inode {
        Some(path) => path,
        None => {
            let item = p
                .items
                .iter()
                .rev()
                .find(|i| i.normal && i.name.is_some())
                .or_else(|| p.items.iter().rev().find(|i| i.name.is_some()))?;
            let name = item.name.clone()?;
            if name.starts_with(b"/") {
                lexical_clean(&name)
            } else if let (Some(cwd), None | Some(AT_FDCWD)) = (&p.cwd, p.dirfd) {
                let mut j = cwd.clone();
                if !j.ends_with(b"/") {
                    j.push(b'/');
                }
                j.extend_from_slice(&name);
                lexical_clean(&j)
            } else {
                name
            }
        }
    };
    let accept = match (p.keyed, path.starts_with(b"/")) {
        // Our rule matched but the name is relative to a directory fd: report it as given.
        (true, false) => true,
        (true, true) => !r.widened || r.covers(&path),
        (false, absolute) => absolute && r.covers(&path),
    };
    if !accept {
        return None;
    }
    Some(Denial {
        ts: p.ts,
        serial: p.serial,
        path,
        syscall: p.syscall,
        errno: p.errno,
        process: p.process,
    })
}

/// Removes `.`, empty components and `..` (against the preceding component). Lexical only:
/// the kernel already matched the inode, this only makes the reported name readable.
fn lexical_clean(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for c in parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALL: &[u8] = b"audit(1700000000.250:77): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=7ffe a2=0 a3=0 items=1 ppid=100 pid=200 auid=1000 uid=65534 gid=65534 euid=65534 suid=65534 fsuid=65534 egid=65534 sgid=65534 fsgid=65534 tty=pts0 ses=3 comm=\"cat\" exe=\"/usr/bin/cat\" subj=unconfined key=\"kmsentry-1\"";
    const CWD: &[u8] = b"audit(1700000000.250:77): cwd=\"/etc/kms\"";
    const PATH: &[u8] = b"audit(1700000000.250:77): item=0 name=\"keys/../a.key\" inode=1234 dev=fd:01 mode=0100600 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0";
    const TITLE: &[u8] =
        b"audit(1700000000.250:77): proctitle=636174002F6574632F6B6D732F612E6B6579";
    const EOE: &[u8] = b"audit(1700000000.250:77): ";

    fn feed_all(c: &mut Correlator, r: &Resolver, recs: &[(u16, &[u8])]) -> Vec<Denial> {
        let now = Instant::now();
        recs.iter()
            .filter_map(|(k, t)| c.feed(*k, t, now, r))
            .collect()
    }

    #[test]
    fn joins_one_event() {
        let mut c = Correlator::new("kmsentry-1", 1);
        let r = Resolver::default();
        let d = feed_all(
            &mut c,
            &r,
            &[
                (AUDIT_SYSCALL, SYSCALL),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_PROCTITLE, TITLE),
                (AUDIT_EOE, EOE),
            ],
        );
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.path, b"/etc/kms/a.key");
        assert_eq!((d.serial, d.errno, d.syscall), (77, EACCES, "openat"));
        assert_eq!(d.ts.to_string(), "2023-11-14T22:13:20.25Z");
        let p = &d.process;
        assert_eq!(
            (p.pid, p.ppid, p.uid, p.euid, p.auid),
            (200, Some(100), Some(65534), Some(65534), Some(1000))
        );
        assert_eq!(p.exe.as_deref(), Some(&b"/usr/bin/cat"[..]));
        assert_eq!(p.comm.as_deref(), Some(&b"cat"[..]));
        assert_eq!(p.cmdline.as_deref(), Some(&b"cat /etc/kms/a.key"[..]));
        assert!(!p.cmdline_truncated);
        assert_eq!(p.source, Source::Audit);
        assert!(c.next_deadline().is_none());
    }

    /// Records of one refused `cat` as Linux 6.18 wrote them (from the kernel log).
    #[test]
    fn captured_linux_6_18_records() {
        let recs: [(u16, &[u8]); 5] = [
            (AUDIT_SYSCALL, b"audit(1795432833.809:901064): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c a1=7ffe4ab8c632 a2=0 a3=0 items=1 ppid=16540 pid=16541 auid=4294967295 uid=65534 gid=65534 euid=65534 suid=65534 fsuid=65534 egid=65534 sgid=65534 fsgid=65534 tty=(none) ses=4294967295 comm=\"cat\" exe=\"/usr/bin/cat\" key=\"kmsentry-16489\""),
            (AUDIT_CWD, b"audit(1795432833.809:901064): cwd=\"/\""),
            (AUDIT_PATH, b"audit(1795432833.809:901064): item=0 name=\"/tmp/kmsentry-audit-WSiM5R/watched.key\" inode=10035477 dev=fe:00 mode=0100600 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0"),
            (AUDIT_PROCTITLE, b"audit(1795432833.809:901064): proctitle=636174002F746D702F6B6D73656E7472792D61756469742D5753694D35522F776174636865642E6B6579"),
            (AUDIT_EOE, b"audit(1795432833.809:901064): \0"),
        ];
        let mut c = Correlator::new("kmsentry-16489", 16489);
        let d = feed_all(&mut c, &Resolver::default(), &recs);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, b"/tmp/kmsentry-audit-WSiM5R/watched.key");
        assert_eq!(d[0].process.auid, None);
        assert_eq!(
            d[0].process.cmdline.as_deref(),
            Some(&b"cat /tmp/kmsentry-audit-WSiM5R/watched.key"[..])
        );
        assert_eq!(d[0].ts.to_string(), "2026-11-23T11:20:33.809Z");
    }

    #[test]
    fn ignores_other_keys_off_target_successes_own_pid_and_other_errnos() {
        let r = Resolver {
            targets: vec![Target {
                path: b"/etc/kms/other.key".to_vec(),
                is_dir: false,
            }],
            ..Resolver::default()
        };
        let s = std::str::from_utf8(SYSCALL).unwrap();
        for (variant, own) in [
            (s.replace("kmsentry-1", "kmsentry-2"), 1),
            (s.replace("key=\"kmsentry-1\"", "key=(null)"), 1),
            (s.replace("success=no exit=-13", "success=yes exit=3"), 1),
            (s.replace("exit=-13", "exit=-2"), 1),
            (s.to_string(), 200),
        ] {
            let mut c = Correlator::new("kmsentry-1", own);
            let d = feed_all(
                &mut c,
                &r,
                &[
                    (AUDIT_SYSCALL, variant.as_bytes()),
                    (AUDIT_PATH, PATH),
                    (AUDIT_EOE, EOE),
                ],
            );
            assert!(d.is_empty(), "{variant}");
        }
    }

    #[test]
    fn events_under_another_rules_key_count_when_they_name_a_target() {
        let r = Resolver {
            targets: vec![Target {
                path: b"/etc/kms".to_vec(),
                is_dir: true,
            }],
            ..Resolver::default()
        };
        let s = std::str::from_utf8(SYSCALL)
            .unwrap()
            .replace("kmsentry-1", "access");
        let mut c = Correlator::new("kmsentry-1", 1);
        let d = feed_all(
            &mut c,
            &r,
            &[
                (AUDIT_SYSCALL, s.as_bytes()),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_EOE, EOE),
            ],
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, b"/etc/kms/a.key");
        // An unknown syscall under another key is not ours to report.
        let s = s.replace("syscall=257", "syscall=59");
        let d = feed_all(
            &mut c,
            &r,
            &[
                (AUDIT_SYSCALL, s.as_bytes()),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_EOE, EOE),
            ],
        );
        assert!(d.is_empty());
    }

    #[test]
    fn flushes_without_eoe_and_resolves_by_inode() {
        let mut c = Correlator::new("kmsentry-1", 1);
        let mut r = Resolver::default();
        r.inodes
            .insert((b"fd:01".to_vec(), 1234), b"/etc/kms/real.key".to_vec());
        let t0 = Instant::now();
        assert!(c.feed(AUDIT_SYSCALL, SYSCALL, t0, &r).is_none());
        assert!(c.feed(AUDIT_PATH, PATH, t0, &r).is_none());
        assert!(c.expire(t0 + Duration::from_millis(10), &r).is_empty());
        assert_eq!(c.next_deadline(), Some(t0 + FLUSH_AFTER));
        let d = c.expire(t0 + FLUSH_AFTER, &r);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, b"/etc/kms/real.key");
        assert_eq!(d[0].process.cmdline, None);
    }

    #[test]
    fn widened_rules_are_filtered_back_to_targets() {
        let mut c = Correlator::new("kmsentry-1", 1);
        let r = Resolver {
            targets: vec![Target {
                path: b"/etc/kms/b.key".to_vec(),
                is_dir: false,
            }],
            inodes: HashMap::new(),
            widened: true,
        };
        let d = feed_all(
            &mut c,
            &r,
            &[
                (AUDIT_SYSCALL, SYSCALL),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_EOE, EOE),
            ],
        );
        assert!(d.is_empty());
    }

    #[test]
    fn relative_to_a_dirfd_is_reported_as_given() {
        let s = std::str::from_utf8(SYSCALL)
            .unwrap()
            .replace("a0=ffffff9c", "a0=3");
        let mut c = Correlator::new("kmsentry-1", 1);
        let d = feed_all(
            &mut c,
            &Resolver::default(),
            &[
                (AUDIT_SYSCALL, s.as_bytes()),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_EOE, EOE),
            ],
        );
        assert_eq!(d[0].path, b"keys/../a.key");
    }

    #[test]
    fn an_eperm_that_a_fanotify_listener_answered_is_not_a_kernel_denial() {
        let s = std::str::from_utf8(SYSCALL)
            .unwrap()
            .replace("exit=-13", "exit=-1");
        let fan: &[u8] = b"audit(1700000000.250:77): resp=2 fan_type=0 fan_info=0 subj_uid=0 subj_gid=0 obj_uid=0 obj_gid=0";
        let allowed: &[u8] = b"audit(1700000000.250:77): resp=1 fan_type=0 fan_info=0";
        let r = Resolver::default();
        // FANOTIFY first (as the kernel logs it), or after the SYSCALL record: dropped either way.
        for order in [
            vec![(AUDIT_FANOTIFY, fan), (AUDIT_SYSCALL, s.as_bytes())],
            vec![(AUDIT_SYSCALL, s.as_bytes()), (AUDIT_FANOTIFY, fan)],
        ] {
            let mut c = Correlator::new("kmsentry-1", 1);
            let mut recs = order;
            recs.extend([(AUDIT_CWD, CWD), (AUDIT_PATH, PATH), (AUDIT_EOE, EOE)]);
            assert!(feed_all(&mut c, &r, &recs).is_empty());
            assert!(c.expire(Instant::now() + FLUSH_AFTER, &r).is_empty());
        }
        // An allow answer, or a denial with another serial, does not hide a kernel EPERM.
        let mut c = Correlator::new("kmsentry-1", 1);
        let other: &[u8] = b"audit(1700000000.250:78): resp=2 fan_type=0";
        let d = feed_all(
            &mut c,
            &r,
            &[
                (AUDIT_FANOTIFY, allowed),
                (AUDIT_FANOTIFY, other),
                (AUDIT_SYSCALL, s.as_bytes()),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_EOE, EOE),
            ],
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].errno, EPERM);
    }

    #[test]
    fn a_title_of_the_kernels_full_length_is_flagged_as_possibly_cut() {
        let title = format!(
            "audit(1700000000.250:77): proctitle={}",
            hex::encode_upper(vec![b'x'; PROCTITLE_MAX])
        );
        let mut c = Correlator::new("kmsentry-1", 1);
        let d = feed_all(
            &mut c,
            &Resolver::default(),
            &[
                (AUDIT_SYSCALL, SYSCALL),
                (AUDIT_CWD, CWD),
                (AUDIT_PATH, PATH),
                (AUDIT_PROCTITLE, title.as_bytes()),
                (AUDIT_EOE, EOE),
            ],
        );
        assert!(d[0].process.cmdline_truncated);
        assert_eq!(
            d[0].process.cmdline.as_ref().map(Vec::len),
            Some(PROCTITLE_MAX)
        );
    }

    #[test]
    fn pending_events_are_bounded() {
        let mut c = Correlator::new("kmsentry-1", 1);
        let r = Resolver::default();
        let s = std::str::from_utf8(SYSCALL).unwrap();
        let now = Instant::now();
        for i in 0..(MAX_PENDING as u64 + 10) {
            let t = s.replace(":77)", &format!(":{i})"));
            c.feed(AUDIT_SYSCALL, t.as_bytes(), now, &r);
        }
        assert_eq!(c.pending.len(), MAX_PENDING);
        assert_eq!(c.order.len(), MAX_PENDING);
    }

    #[test]
    fn cleans_names() {
        assert_eq!(lexical_clean(b"/a/./b//../c"), b"/a/c");
        assert_eq!(lexical_clean(b"/.."), b"/");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(
            recs in proptest::collection::vec(
                (1300u16..1330, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
                0..20,
            )
        ) {
            let mut c = Correlator::new("kmsentry-1", 1);
            let r = Resolver::default();
            let now = Instant::now();
            for (k, mut t) in recs {
                let mut full = b"audit(1.001:77): ".to_vec();
                full.append(&mut t);
                let _ = c.feed(k, &full, now, &r);
            }
            let _ = c.expire(now + FLUSH_AFTER, &r);
        }
    }
}

//! The two fanotify groups and the parser for FID-reporting events.
//!
//! The permission group (`FAN_CLASS_CONTENT`, `FAN_OPEN_PERM`/`FAN_OPEN_EXEC_PERM`) is
//! nix's: its events carry an fd and nothing else. It is created with `FAN_ENABLE_AUDIT` where
//! the kernel allows it, so each denial is answered `FAN_DENY | FAN_AUDIT`: the kernel then
//! logs an `AUDIT_FANOTIFY` record in the refused call's audit event, which tells the audit
//! reader that this `EPERM` was ours (one denial, one alert).
//!
//! The notification group reports `FAN_REPORT_DFID_NAME | FAN_REPORT_FID` and, where the
//! kernel has it (5.15+), `FAN_REPORT_PIDFD`: a pidfd of the process that caused the event,
//! so its `/proc` entry can be checked to still be that process (pids are reused). nix does
//! not parse these records; [`parse`] here does, with safe byte slicing. The `unsafe` code
//! is [`handle_of`] (`name_to_handle_at`, which no safe crate wraps) and taking ownership of
//! a pidfd the kernel installed in this process.

use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyEvent, FanotifyResponse, InitFlags, MarkFlags, MaskFlags,
    Response,
};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A kernel file handle (type + opaque bytes): how FID records name an inode.
pub type Handle = Vec<u8>;

/// The permission group and whether its answers may ask for an audit record.
pub struct PermGroup {
    pub fan: Fanotify,
    /// Created with `FAN_ENABLE_AUDIT`: denials are answered `FAN_DENY | FAN_AUDIT`.
    pub audit: bool,
}

/// The permission group; with `FAN_ENABLE_AUDIT` unless the kernel refuses it (before 4.15,
/// or without `CAP_AUDIT_WRITE`).
pub fn init_perm() -> nix::Result<PermGroup> {
    let flags = InitFlags::FAN_CLASS_CONTENT | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK;
    let ev = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
    let audit = InitFlags::from_bits_retain(libc::FAN_ENABLE_AUDIT);
    match Fanotify::init(flags | audit, ev) {
        Ok(fan) => Ok(PermGroup { fan, audit: true }),
        Err(nix::Error::EINVAL | nix::Error::EPERM) => Ok(PermGroup {
            fan: Fanotify::init(flags, ev)?,
            audit: false,
        }),
        Err(e) => Err(e),
    }
}

impl PermGroup {
    /// Answer one permission event. A denial asks the kernel for an audit record.
    pub fn respond(&self, ev: &FanotifyEvent, allow: bool) {
        let Some(fd) = ev.fd() else { return };
        let r = match (allow, self.audit) {
            (true, _) => Response::FAN_ALLOW,
            (false, false) => Response::FAN_DENY,
            (false, true) => Response::from_bits_retain(libc::FAN_DENY | libc::FAN_AUDIT),
        };
        if let Err(e) = self.fan.write_response(FanotifyResponse::new(fd, r)) {
            tracing::error!("answering a permission event: {e}");
        }
    }
}

/// The notification group: directory FID + name, the object's own FID, and a pidfd of the
/// process (when the kernel can; `false` in the second value when it cannot).
pub fn init_notify() -> nix::Result<(Fanotify, bool)> {
    let report = InitFlags::from_bits_retain(libc::FAN_REPORT_DFID_NAME | libc::FAN_REPORT_FID);
    let flags =
        InitFlags::FAN_CLASS_NOTIF | InitFlags::FAN_CLOEXEC | InitFlags::FAN_NONBLOCK | report;
    let ev = EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC;
    match Fanotify::init(flags | InitFlags::FAN_REPORT_PIDFD, ev) {
        Ok(f) => Ok((f, true)),
        Err(nix::Error::EINVAL) => Ok((Fanotify::init(flags, ev)?, false)),
        Err(e) => Err(e),
    }
}

/// Mark (or with `remove`, unmark) the inode behind `fd` (an `O_PATH` fd the caller
/// resolved race-free). Going through `/proc/self/fd/N` names exactly that inode; a
/// pathname could have been swapped since it was checked.
pub fn mark_fd(
    fan: &Fanotify,
    fd: BorrowedFd<'_>,
    mask: MaskFlags,
    remove: bool,
) -> nix::Result<()> {
    let op = if remove {
        MarkFlags::FAN_MARK_REMOVE
    } else {
        MarkFlags::FAN_MARK_ADD
    };
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    fan.mark(op, mask, rustix::fs::CWD, Some(path.as_str()))
}

/// The file handle of the inode behind `fd`, in the form FID records carry it
/// (`handle_type` as 4 native-endian bytes, then `f_handle`).
#[allow(unsafe_code)]
pub fn handle_of(fd: BorrowedFd<'_>) -> std::io::Result<Handle> {
    const MAX: usize = 128; // MAX_HANDLE_SZ
                            // `struct file_handle` is { u32 handle_bytes; i32 handle_type; u8 f_handle[] }. Use a
                            // u32-aligned buffer big enough for the header and the largest handle.
    let mut buf = [0u32; 2 + MAX / 4];
    buf[0] = MAX as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is 4-byte aligned and 8 + MAX bytes long, and its first field tells the
    // kernel it may write MAX bytes of f_handle, so the kernel writes only inside `buf`. The
    // path is a NUL-terminated empty string, valid for the call; with AT_EMPTY_PATH the call
    // looks at `fd` itself, which the borrow keeps open; `mount_id` is a valid out-pointer.
    let rc = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast::<libc::file_handle>(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let len = (buf[0] as usize).min(MAX);
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    // handle_type (bytes 4..8) then f_handle (8..8+len).
    Ok(bytes[4..8 + len].to_vec())
}

/// What the kernel said about the event's process besides its pid.
#[derive(Debug, Default)]
pub enum PidRef {
    /// No pidfd record (the group was created without `FAN_REPORT_PIDFD`).
    #[default]
    NotReported,
    /// A pidfd of the process, now owned here (closed on drop).
    Fd(OwnedFd),
    /// `FAN_NOPIDFD`: the process had already exited when the event was read, so the pid
    /// may already name another process.
    Exited,
    /// `FAN_EPIDFD`: the kernel could not create one.
    Failed,
    /// A pidfd number seen by [`parse`], which never takes ownership.
    Number(i32),
}

/// One parsed notification event.
#[derive(Debug, Default)]
pub struct Event {
    pub mask: u64,
    pub pid: i32,
    /// Parent directory handle and the entry's name (`FAN_EVENT_INFO_TYPE_DFID_NAME`).
    pub dir: Option<(Handle, Vec<u8>)>,
    /// The object's own handle (`FAN_EVENT_INFO_TYPE_FID`).
    pub fid: Option<Handle>,
    pub pidfd: PidRef,
}

/// Why a buffer could not be parsed (the kernel never produces these; a parser that
/// trusts lengths would read out of bounds on them).
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

const META_LEN: usize = 24;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parse a buffer returned by `read(2)` on the notification group, taking ownership of the
/// pidfds the kernel installed for its events. Stops at the first malformed event and
/// returns what came before it with the error.
pub fn parse_owned(buf: &[u8]) -> (Vec<Event>, Option<Malformed>) {
    parse_impl(buf, true)
}

/// [`parse_owned`] without taking ownership of pidfd numbers (tests, fuzzing).
pub fn parse(buf: &[u8]) -> (Vec<Event>, Option<Malformed>) {
    parse_impl(buf, false)
}

fn parse_impl(buf: &[u8], own: bool) -> (Vec<Event>, Option<Malformed>) {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        match parse_one(&buf[off..], own) {
            Ok((ev, len)) => {
                out.push(ev);
                off += len;
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

fn parse_one(b: &[u8], own: bool) -> Result<(Event, usize), Malformed> {
    let event_len = u32_at(b, 0).ok_or(Malformed("short metadata"))? as usize;
    let vers = *b.get(4).ok_or(Malformed("short metadata"))?;
    if vers != libc::FANOTIFY_METADATA_VERSION {
        return Err(Malformed("unknown fanotify metadata version"));
    }
    let meta_len = u16_at(b, 6).ok_or(Malformed("short metadata"))? as usize;
    if meta_len < META_LEN || event_len < meta_len || event_len > b.len() {
        return Err(Malformed("event length out of bounds"));
    }
    let mut ev = Event {
        mask: u64_at(b, 8).ok_or(Malformed("short metadata"))?,
        pid: i32_at(b, 20).ok_or(Malformed("short metadata"))?,
        ..Event::default()
    };
    let mut off = meta_len;
    while off < event_len {
        let rec = &b[off..event_len];
        let info_type = *rec.first().ok_or(Malformed("short info header"))?;
        let len = u16_at(rec, 2).ok_or(Malformed("short info header"))? as usize;
        if len < 4 || len > rec.len() {
            return Err(Malformed("info record length out of bounds"));
        }
        let body = &rec[4..len];
        match info_type {
            libc::FAN_EVENT_INFO_TYPE_FID => ev.fid = Some(parse_fid(body)?.0),
            libc::FAN_EVENT_INFO_TYPE_DFID_NAME => {
                let (h, rest) = parse_fid(body)?;
                let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
                ev.dir = Some((h, rest[..end].to_vec()));
            }
            libc::FAN_EVENT_INFO_TYPE_DFID => {
                let (h, _) = parse_fid(body)?;
                ev.dir = Some((h, Vec::new()));
            }
            libc::FAN_EVENT_INFO_TYPE_PIDFD => {
                let fd = i32_at(body, 0).ok_or(Malformed("short pidfd record"))?;
                ev.pidfd = pidref(fd, own);
            }
            _ => {} // error, rename records: not requested, skipped
        }
        off += len;
    }
    Ok((ev, event_len))
}

/// What a pidfd number the kernel wrote into an event becomes. Only [`parse_owned`] takes
/// ownership; [`parse`] (tests, fuzzing) keeps the number, so garbage input never closes
/// an fd of this process.
#[allow(unsafe_code)]
fn pidref(fd: i32, own: bool) -> PidRef {
    match fd {
        libc::FAN_NOPIDFD => PidRef::Exited,
        n if n < 0 => PidRef::Failed,
        n if !own => PidRef::Number(n),
        // SAFETY: with FAN_REPORT_PIDFD the kernel installs a new pidfd in this process for
        // each event it reports and writes its number here; nothing else knows that number,
        // so this is its only owner and it is closed exactly once (when the PidRef drops).
        // `parse_owned` is called once per buffer the kernel filled, so each number is taken
        // once.
        n => PidRef::Fd(unsafe { OwnedFd::from_raw_fd(n) }),
    }
}

/// `fsid` (8 bytes), then `struct file_handle`. Returns the handle and the bytes after it.
fn parse_fid(body: &[u8]) -> Result<(Handle, &[u8]), Malformed> {
    let hb = u32_at(body, 8).ok_or(Malformed("short file handle"))? as usize;
    let end = 16usize
        .checked_add(hb)
        .filter(|&e| e <= body.len())
        .ok_or(Malformed("file handle length out of bounds"))?;
    Ok((body[12..end].to_vec(), &body[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: u8, handle_type: i32, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0u8; 8]; // fsid
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&handle_type.to_ne_bytes());
        body.extend_from_slice(handle);
        if let Some(n) = name {
            body.extend_from_slice(n);
            body.push(0);
        }
        while !(body.len() + 4).is_multiple_of(4) {
            body.push(0);
        }
        let mut rec = vec![kind, 0];
        rec.extend_from_slice(&((body.len() + 4) as u16).to_ne_bytes());
        rec.extend_from_slice(&body);
        rec
    }

    fn event(mask: u64, pid: i32, infos: &[Vec<u8>]) -> Vec<u8> {
        let total = META_LEN + infos.iter().map(Vec::len).sum::<usize>();
        let mut b = Vec::new();
        b.extend_from_slice(&(total as u32).to_ne_bytes());
        b.push(libc::FANOTIFY_METADATA_VERSION);
        b.push(0);
        b.extend_from_slice(&(META_LEN as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&(-1i32).to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        for i in infos {
            b.extend_from_slice(i);
        }
        b
    }

    fn key(t: i32, h: &[u8]) -> Vec<u8> {
        let mut k = t.to_ne_bytes().to_vec();
        k.extend_from_slice(h);
        k
    }

    #[test]
    fn parses_dfid_name_and_fid_records() {
        let name = b"client\n\xffkey";
        let mut buf = event(
            libc::FAN_MODIFY,
            42,
            &[
                info(
                    libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                    1,
                    &[1, 2, 3, 4, 5, 6, 7, 8],
                    Some(name),
                ),
                info(libc::FAN_EVENT_INFO_TYPE_FID, 1, &[9; 8], None),
            ],
        );
        buf.extend(event(libc::FAN_Q_OVERFLOW, 0, &[]));
        let (evs, err) = parse(&buf);
        assert_eq!(err, None);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, libc::FAN_MODIFY);
        assert_eq!(evs[0].pid, 42);
        let (dir, n) = evs[0].dir.clone().unwrap();
        assert_eq!(dir, key(1, &[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(n, name);
        assert_eq!(evs[0].fid, Some(key(1, &[9; 8])));
        assert_eq!(evs[1].mask, libc::FAN_Q_OVERFLOW);
        assert_eq!(evs[1].dir, None);
    }

    #[test]
    fn rejects_lengths_that_lie() {
        let good = event(libc::FAN_ATTRIB, 1, &[info(1, 1, &[7; 8], None)]);
        // event_len beyond the buffer
        let mut b = good.clone();
        b[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(parse(&b).1.is_some());
        // info record length beyond the event
        let mut b = good.clone();
        b[META_LEN + 2..META_LEN + 4].copy_from_slice(&500u16.to_ne_bytes());
        assert!(parse(&b).1.is_some());
        // handle_bytes beyond the record
        let mut b = good.clone();
        b[META_LEN + 12..META_LEN + 16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse(&b).1.is_some());
        // metadata_len smaller than the struct
        let mut b = good.clone();
        b[6..8].copy_from_slice(&4u16.to_ne_bytes());
        assert!(parse(&b).1.is_some());
        // a zero-length info record would loop forever
        let mut b = good;
        b[META_LEN + 2..META_LEN + 4].copy_from_slice(&0u16.to_ne_bytes());
        assert!(parse(&b).1.is_some());
        // truncated buffers of every length never panic
        let full = event(
            libc::FAN_CREATE,
            3,
            &[info(
                libc::FAN_EVENT_INFO_TYPE_DFID_NAME,
                1,
                &[1; 8],
                Some(b"x"),
            )],
        );
        for n in 0..full.len() {
            let (evs, err) = parse(&full[..n]);
            assert!(evs.is_empty());
            assert_eq!(err.is_some(), n > 0);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn handle_of_matches_what_the_kernel_reports() {
        // Same inode → same handle; different inode → different handle.
        let t = tempfile::tempdir().unwrap();
        let a = std::fs::File::create(t.path().join("a")).unwrap();
        let b = std::fs::File::create(t.path().join("b")).unwrap();
        let a2 = std::fs::File::open(t.path().join("a")).unwrap();
        use std::os::fd::AsFd;
        let (ha, hb, ha2) = (
            handle_of(a.as_fd()).unwrap(),
            handle_of(b.as_fd()).unwrap(),
            handle_of(a2.as_fd()).unwrap(),
        );
        assert_eq!(ha, ha2);
        assert_ne!(ha, hb);
        assert!(ha.len() > 4);
    }
}

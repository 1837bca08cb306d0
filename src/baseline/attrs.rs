//! Extended attributes and POSIX ACLs: capture and display.
//!
//! ACLs are stored by the kernel as the xattrs `system.posix_acl_access` / `_default`; they
//! are decoded here into `getfacl`-style short text with numeric ids (stable across hosts and
//! images) and kept out of the generic xattr list. `security.capability` and
//! `security.selinux` are decoded for display only; comparisons use the raw bytes.
//!
//! Regular files and directories are read through their open fd (`f*xattr`); other entries
//! (symlinks, FIFOs, devices, which are never opened) through `l*xattr` on
//! `/proc/self/fd/<parent>/<name>`: the parent is pinned by its fd and the last component is
//! not followed, so no path is re-resolved from the root.

use super::entry::Xattr;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
/// The kernel's limit for one xattr value and for a name list.
const XATTR_MAX: usize = 64 * 1024;

/// The xattrs and ACLs of one entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub xattrs: Vec<Xattr>,
    pub acl_access: Option<String>,
    pub acl_default: Option<String>,
}

/// Where to read xattrs from.
pub enum Target<'a> {
    /// An fd opened on the entry itself.
    Fd(BorrowedFd<'a>),
    /// An entry that must not be opened: its parent directory fd and its name.
    Child(BorrowedFd<'a>, &'a CStr),
}

fn is_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NODATA
}

/// Read every xattr of `target`. A file system without xattr support yields an empty set.
pub fn capture(target: &Target<'_>, buf: &mut Vec<u8>) -> std::io::Result<Captured> {
    buf.resize(XATTR_MAX, 0);
    let proc_path;
    let names_len = match target {
        Target::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
        Target::Child(dir, name) => {
            proc_path = proc_child_path(*dir, name);
            rustix::fs::llistxattr(proc_path.as_slice(), &mut buf[..])
        }
    };
    let names_len = match names_len {
        Ok(n) => n,
        Err(e) if is_unsupported(e) => return Ok(Captured::default()),
        Err(e) => return Err(e.into()),
    };
    let names: Vec<Vec<u8>> = buf[..names_len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let mut out = Captured::default();
    let proc_path = match target {
        Target::Child(dir, name) => Some(proc_child_path(*dir, name)),
        Target::Fd(_) => None,
    };
    for name in names {
        let cname = match std::ffi::CString::new(name.clone()) {
            Ok(c) => c,
            Err(_) => continue,
        };
        let got = match (target, &proc_path) {
            (Target::Fd(fd), _) => rustix::fs::fgetxattr(fd, cname.as_c_str(), &mut buf[..]),
            (Target::Child(..), Some(p)) => {
                rustix::fs::lgetxattr(p.as_slice(), cname.as_c_str(), &mut buf[..])
            }
            (Target::Child(..), None) => continue,
        };
        let value = match got {
            Ok(n) => buf[..n].to_vec(),
            // Removed between list and get: it is simply not there any more.
            Err(e) if e == rustix::io::Errno::NODATA => continue,
            Err(e) => return Err(e.into()),
        };
        if name == ACL_ACCESS {
            out.acl_access = Some(acl_text(&value));
        } else if name == ACL_DEFAULT {
            out.acl_default = Some(acl_text(&value));
        } else {
            out.xattrs.push(Xattr { name, value });
        }
    }
    out.xattrs.sort();
    Ok(out)
}

fn proc_child_path(dir: BorrowedFd<'_>, name: &CStr) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_fd().as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    p
}

/// Decode a `system.posix_acl_*` value (version 2: a u32 header, then 8-byte entries of
/// tag u16, perm u16, id u32, little-endian) into `getfacl`-style text. Bytes that do not
/// parse are shown as hex rather than dropped, so a corrupt ACL still compares and shows.
pub fn acl_text(v: &[u8]) -> String {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let raw = || format!("raw:{}", hex::encode(v));
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) || v[..4] != [2, 0, 0, 0] {
        return raw();
    }
    let mut parts = Vec::new();
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let rwx = format!(
            "{}{}{}",
            if perm & 4 != 0 { 'r' } else { '-' },
            if perm & 2 != 0 { 'w' } else { '-' },
            if perm & 1 != 0 { 'x' } else { '-' }
        );
        parts.push(match tag {
            USER_OBJ => format!("user::{rwx}"),
            USER => format!("user:{id}:{rwx}"),
            GROUP_OBJ => format!("group::{rwx}"),
            GROUP => format!("group:{id}:{rwx}"),
            MASK => format!("mask::{rwx}"),
            OTHER => format!("other::{rwx}"),
            _ => return raw(),
        });
    }
    parts.join(",")
}

/// Linux capability names by bit number (`capability.h`).
const CAP_NAMES: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

/// Decode a `security.capability` value (VFS caps v2/v3) as `getcap` would print it:
/// `cap_net_bind_service,cap_net_raw=ep`. `None` when the bytes do not parse.
pub fn capability_text(v: &[u8]) -> Option<String> {
    let (effective, permitted, inheritable, rootid) = parse_caps(v)?;
    let names = |bits: u64| -> Vec<String> {
        (0..64)
            .filter(|b| bits & (1 << b) != 0)
            .map(|b| {
                CAP_NAMES
                    .get(b)
                    .map_or_else(|| format!("cap_{b}"), |n| (*n).to_string())
            })
            .collect()
    };
    let mut out = String::new();
    let both = permitted & inheritable;
    let groups: [(u64, &str); 3] = [
        (both, if effective { "eip" } else { "ip" }),
        (permitted & !both, if effective { "ep" } else { "p" }),
        (inheritable & !both, "i"),
    ];
    for (bits, flags) in groups {
        if bits != 0 {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{}={flags}", names(bits).join(","));
        }
    }
    if let Some(r) = rootid {
        let _ = write!(out, " [rootid={r}]");
    }
    Some(out)
}

/// The capability bits a `security.capability` value grants (permitted or inheritable), by
/// `capability.h` number. `None` when the bytes do not parse.
pub fn capability_bits(v: &[u8]) -> Option<u64> {
    parse_caps(v).map(|(_, p, i, _)| p | i)
}

/// (effective, permitted, inheritable, rootid) of a VFS caps v1/v2/v3 value.
fn parse_caps(v: &[u8]) -> Option<(bool, u64, u64, Option<u32>)> {
    let word = |i: usize| -> Option<u32> {
        let b = v.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let magic = word(0)?;
    let version = magic & 0xFF00_0000;
    let effective = magic & 1 != 0;
    let (permitted, inheritable, rootid) = match (version, v.len()) {
        (0x0100_0000, 12) => (u64::from(word(1)?), u64::from(word(2)?), None),
        (0x0200_0000, 20) => (
            u64::from(word(1)?) | (u64::from(word(3)?) << 32),
            u64::from(word(2)?) | (u64::from(word(4)?) << 32),
            None,
        ),
        (0x0300_0000, 24) => (
            u64::from(word(1)?) | (u64::from(word(3)?) << 32),
            u64::from(word(2)?) | (u64::from(word(4)?) << 32),
            Some(word(5)?),
        ),
        _ => return None,
    };
    Some((effective, permitted, inheritable, rootid))
}

/// A display form for an xattr value: decoded capability, printable text (SELinux labels,
/// `user.*` notes), or hex. Long values show their length and BLAKE3 instead.
pub fn value_text(name: &[u8], value: &[u8]) -> String {
    if name == b"security.capability" {
        if let Some(t) = capability_text(value) {
            return t;
        }
    }
    let trimmed = value.strip_suffix(&[0]).unwrap_or(value);
    if trimmed.len() > 256 {
        return format!(
            "len={} blake3={}",
            value.len(),
            blake3::hash(value).to_hex()
        );
    }
    match std::str::from_utf8(trimmed) {
        Ok(s) if s.chars().all(|c| !c.is_control()) && !s.contains('\\') => {
            format!("\"{s}\"")
        }
        _ => format!("0x{}", hex::encode(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_xattr_decodes_to_getfacl_text() {
        let mut v = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (8, 6, 50),
            (0x10, 6, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(
            acl_text(&v),
            "user::rw-,user:1000:r--,group::r--,group:50:rw-,mask::rw-,other::---"
        );
    }

    #[test]
    fn corrupt_acl_is_shown_raw_not_dropped() {
        assert_eq!(acl_text(&[1, 2, 3]), "raw:010203");
        assert_eq!(acl_text(&[3, 0, 0, 0]), "raw:03000000");
    }

    #[test]
    fn capabilities_decode_like_getcap() {
        // v2, effective, permitted = cap_net_bind_service (10) | cap_net_raw (13).
        let mut v = Vec::new();
        for w in [0x0200_0001u32, (1 << 10) | (1 << 13), 0, 0, 0] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(
            capability_text(&v).unwrap(),
            "cap_net_bind_service,cap_net_raw=ep"
        );
        // v3 with a rootid and a high-word capability (cap_bpf = 39).
        let mut v3 = Vec::new();
        for w in [0x0300_0000u32, 0, 0, 1 << (39 - 32), 0, 1000] {
            v3.extend_from_slice(&w.to_le_bytes());
        }
        assert_eq!(capability_text(&v3).unwrap(), "cap_bpf=p [rootid=1000]");
        assert_eq!(capability_text(&[1, 2]), None);
    }

    #[test]
    fn values_display_safely() {
        assert_eq!(
            value_text(b"security.selinux", b"system_u:object_r:cert_t:s0\0"),
            "\"system_u:object_r:cert_t:s0\""
        );
        assert_eq!(value_text(b"user.x", b"\x1b[31m"), "0x1b5b33316d");
        assert!(value_text(b"user.big", &[b'a'; 300]).starts_with("len=300 blake3="));
    }

    #[test]
    fn user_xattrs_are_captured_through_the_fd() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        if rustix::fs::fsetxattr(&f, "user.kms", b"v1", rustix::fs::XattrFlags::empty()).is_err() {
            eprintln!("skipped: file system without user xattrs");
            return;
        }
        let mut buf = Vec::new();
        let c = capture(&Target::Fd(f.as_fd()), &mut buf).unwrap();
        assert_eq!(
            c.xattrs,
            vec![Xattr {
                name: b"user.kms".to_vec(),
                value: b"v1".to_vec()
            }]
        );
    }
}

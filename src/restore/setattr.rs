//! Putting attributes back on an entry: owner, POSIX ACLs, xattrs (incl. file capabilities and
//! the SELinux label), then mode, on an open fd, or by name for what is never opened (symlinks,
//! devices, FIFOs). Must not: open an entry to set its attributes unless it is the fd the
//! restore built or verified.

use super::apply::proc_path;
use super::RestoreError;
use crate::baseline::attrs::{self, Target};
use crate::baseline::{Entry, FileType};
use crate::sanitize::Name;
use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;

const ACL_ACCESS: &CStr = c"system.posix_acl_access";
const ACL_DEFAULT: &CStr = c"system.posix_acl_default";

/// Owner, ACLs, xattrs, then mode (last: chown clears setuid bits) on an open entry.
pub(super) fn set_attrs_fd(
    fd: BorrowedFd<'_>,
    base: &Entry,
    chown: bool,
    acl: bool,
    xattrs: bool,
) -> Result<(), RestoreError> {
    if chown {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(base.uid)),
            Some(rustix::fs::Gid::from_raw(base.gid)),
        )
        .map_err(|e| RestoreError::io("set owner", e))?;
    }
    if acl {
        set_acl(fd, ACL_ACCESS, base.acl_access.as_deref())?;
        if base.ftype == FileType::Dir {
            set_acl(fd, ACL_DEFAULT, base.acl_default.as_deref())?;
        }
    }
    if xattrs {
        sync_xattrs(&Target::Fd(fd), base)?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(base.mode))
        .map_err(|e| RestoreError::io("set mode", e))
}

/// Owner and xattrs of an entry that is never opened (symlink, device, FIFO).
pub(super) fn set_attrs_child(
    dir: BorrowedFd<'_>,
    name: &CStr,
    base: &Entry,
    chown: bool,
    xattrs: bool,
) -> Result<(), RestoreError> {
    if chown {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(base.uid)),
            Some(rustix::fs::Gid::from_raw(base.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| RestoreError::io("set owner", e))?;
    }
    if xattrs {
        sync_xattrs(&Target::Child(dir, name), base)?;
    }
    Ok(())
}

fn set_acl(fd: BorrowedFd<'_>, name: &CStr, text: Option<&str>) -> Result<(), RestoreError> {
    match text {
        Some(t) => {
            let v = super::acl::encode(t).ok_or_else(|| {
                RestoreError::Unsupported(format!("the baseline ACL `{t}` does not parse"))
            })?;
            rustix::fs::fsetxattr(fd, name, &v, rustix::fs::XattrFlags::empty())
                .map_err(|e| RestoreError::io("set ACL", e))
        }
        None => match rustix::fs::fremovexattr(fd, name) {
            Ok(()) | Err(Errno::NODATA | Errno::OPNOTSUPP) => Ok(()),
            Err(e) => Err(RestoreError::io("remove ACL", e)),
        },
    }
}

/// Make the entry's xattrs (other than ACLs) exactly the baseline's: remove extras, set
/// what is missing or different.
fn sync_xattrs(target: &Target<'_>, base: &Entry) -> Result<(), RestoreError> {
    let now =
        attrs::capture(target, &mut Vec::new()).map_err(|e| RestoreError::io("read xattrs", e))?;
    let proc = match target {
        Target::Child(d, n) => Some(proc_path(*d, n)),
        Target::Fd(_) => None,
    };
    let set = |name: &CStr, value: &[u8]| -> rustix::io::Result<()> {
        match (target, &proc) {
            (Target::Fd(fd), _) => {
                rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
            }
            (_, Some(p)) => {
                rustix::fs::lsetxattr(p.as_slice(), name, value, rustix::fs::XattrFlags::empty())
            }
            _ => Err(Errno::INVAL),
        }
    };
    let remove = |name: &CStr| -> rustix::io::Result<()> {
        match (target, &proc) {
            (Target::Fd(fd), _) => rustix::fs::fremovexattr(fd, name),
            (_, Some(p)) => rustix::fs::lremovexattr(p.as_slice(), name),
            _ => Err(Errno::INVAL),
        }
    };
    let cname = |n: &[u8]| {
        CString::new(n).map_err(|_| RestoreError::Refused("a NUL byte in an xattr name".into()))
    };
    for x in &now.xattrs {
        if base.xattrs.iter().any(|b| b.name == x.name) {
            continue;
        }
        match remove(cname(&x.name)?.as_c_str()) {
            Ok(()) | Err(Errno::NODATA) => {}
            // The kernel labels every file on an SELinux system; a baseline taken without one
            // cannot ask for its removal.
            Err(_) if x.name == b"security.selinux" => {}
            Err(e) => {
                return Err(RestoreError::Io {
                    op: "remove xattr",
                    msg: format!("{}: {}", Name(&x.name), std::io::Error::from(e)),
                })
            }
        }
    }
    for x in &base.xattrs {
        if now
            .xattrs
            .iter()
            .any(|n| n.name == x.name && n.value == x.value)
        {
            continue;
        }
        set(cname(&x.name)?.as_c_str(), &x.value).map_err(|e| RestoreError::Io {
            op: "set xattr",
            msg: format!("{}: {}", Name(&x.name), std::io::Error::from(e)),
        })?;
    }
    Ok(())
}

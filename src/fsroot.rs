//! The one handle through which every policy path is opened: `/` on a live host, `--root R`
//! for an offline image. Paths are host-absolute (`/etc/kms/...`); they are resolved with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so an image's absolute symlink
//! (`/etc/ssl/certs -> /usr/share/...`) resolves inside the image, never on the host.
//!
//! Symlinks in the literal directories that lead to a policy path (merged-/usr `/lib ->
//! usr/lib`) are resolved inside the root; the named entry itself and everything beneath it
//! are never followed (the walker opens each child with `O_NOFOLLOW` relative to its parent).
//! Must not: join strings and `open` the result.

use crate::error::{Error, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An opened root directory.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Open `path` (`/` or an image root) as the resolution root.
    pub fn open(path: &Path) -> Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open root directory", path.as_os_str().as_bytes(), e.into()))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Where the root is on this host.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is the host's own `/`.
    pub fn is_host(&self) -> bool {
        self.path == Path::new("/")
    }

    /// The root directory's fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Open the directory that holds the host-absolute `path` (an `O_PATH` handle, resolved
    /// inside the root) and return it with the final component's name. For `/` itself the
    /// name is empty and the directory is the root.
    pub fn open_parent(&self, path: &[u8]) -> std::io::Result<(OwnedFd, CString)> {
        let (parent, name) = split_parent(path);
        let dir = self.resolve(parent, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC)?;
        let name =
            CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc_einval()))?;
        Ok((dir, name))
    }

    /// Resolve a host-absolute path inside the root with `flags` (symlinks followed, but
    /// never out of the root and never through `/proc` magic links).
    pub fn resolve(&self, path: &[u8], flags: OFlags) -> std::io::Result<OwnedFd> {
        let rel: &[u8] = match path.iter().position(|&b| b != b'/') {
            Some(i) => &path[i..],
            None => b".",
        };
        let rel = std::ffi::OsStr::from_bytes(rel);
        rustix::fs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(Into::into)
    }
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

/// `/a/b/c` → (`/a/b`, `c`); `/a` → (`/`, `a`); `/` → (`/`, ``).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = {
        let mut end = path.len();
        while end > 1 && path[end - 1] == b'/' {
            end -= 1;
        }
        &path[..end]
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        None => (b"/", trimmed),
        Some(0) => (b"/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_parent_handles_edges() {
        assert_eq!(split_parent(b"/a/b/c"), (&b"/a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"/a"), (&b"/"[..], &b"a"[..]));
        assert_eq!(split_parent(b"/"), (&b"/"[..], &b""[..]));
        assert_eq!(split_parent(b"/a/b/"), (&b"/a"[..], &b"b"[..]));
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc/real")).unwrap();
        std::fs::write(t.path().join("etc/real/f"), b"image").unwrap();
        // An absolute link inside the image: must resolve to <root>/etc/real, not /etc/real.
        std::os::unix::fs::symlink("/etc/real", t.path().join("etc/link")).unwrap();
        let root = Root::open(t.path()).unwrap();
        let fd = root
            .resolve(b"/etc/link/f", OFlags::RDONLY)
            .expect("resolves inside the root");
        let mut s = String::new();
        use std::io::Read;
        std::fs::File::from(fd).read_to_string(&mut s).unwrap();
        assert_eq!(s, "image");
        // `..` cannot climb out either.
        std::os::unix::fs::symlink("../../../../../../etc/passwd", t.path().join("etc/up"))
            .unwrap();
        assert!(root.resolve(b"/etc/up", OFlags::RDONLY).is_err());
    }
}

//! The record of one file system entry: every security attribute kmsentry baselines. Plain
//! data: produced by the walker, stored by `store`, compared by `diff`.

use crate::policy::Class;
use std::fmt;

/// The digests of a regular file's content, computed in one read pass: BLAKE3 always (every
/// comparison uses it), SHA-256 when the group's `hash:` asks for it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hashes {
    pub blake3: [u8; 32],
    pub sha256: Option<[u8; 32]>,
}

impl fmt::Debug for Hashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", hex::encode(self.blake3))
    }
}

/// What kind of entry, from `statx`'s mode (never from `d_type`, which may lie).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileType {
    /// From the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & 0o170000 {
            0o100000 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            _ => FileType::Unknown,
        }
    }

    /// The stored and printed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
            FileType::CharDevice => "char-device",
            FileType::BlockDevice => "block-device",
            FileType::Unknown => "unknown",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<FileType> {
        Some(match s {
            "file" => FileType::File,
            "dir" => FileType::Dir,
            "symlink" => FileType::Symlink,
            "fifo" => FileType::Fifo,
            "socket" => FileType::Socket,
            "char-device" => FileType::CharDevice,
            "block-device" => FileType::BlockDevice,
            "unknown" => FileType::Unknown,
            _ => return None,
        })
    }
}

/// One extended attribute (ACL xattrs are kept apart, decoded, in [`Entry::acl_access`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Why an entry's content could not be captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Opening or reading failed (the message says how).
    Unreadable(String),
    /// Size, mtime or ctime moved while the file was hashed, twice.
    Unstable,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable(m) => write!(f, "unreadable: {m}"),
            Problem::Unstable => f.write_str("unstable: the file changed while it was hashed"),
        }
    }
}

/// Everything recorded for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Host-absolute path bytes (as recorded, even when read under `--root`).
    pub path: Vec<u8>,
    pub ftype: FileType,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Regular files only, when they could be read.
    pub hashes: Option<Hashes>,
    /// Symlinks only: the target bytes, never followed.
    pub link_target: Option<Vec<u8>>,
    /// Devices only: (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// POSIX access ACL beyond the mode bits, as text (`user:1000:r--,...`).
    pub acl_access: Option<String>,
    /// Default ACL of a directory, as text.
    pub acl_default: Option<String>,
    /// Every other xattr, sorted by name.
    pub xattrs: Vec<Xattr>,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Owning policy group and its class.
    pub group: String,
    pub class: Class,
    /// Set when something could not be captured; the rest of the record is still valid.
    pub problem: Option<Problem>,
}

//! The JSONL alert file: one record per line, appended, fsync'd, rotated, and recovered after
//! a crash.
//!
//! Opened `O_APPEND | O_NOFOLLOW | O_CLOEXEC` (a symlink in its place is refused, so a
//! writable log directory cannot redirect alerts onto another file), created 0600, and must
//! be a regular file (opened `O_NONBLOCK` first so a FIFO planted there cannot hang us).
//! Each record is one `write(2)` of `line\n` followed by `fdatasync`: when [`JsonlFile::append`]
//! returns, the record is on disk.
//!
//! On open the file's tail says where the chain stands: the last line that parses as a record
//! gives `seq` and the hash to continue from. Lines after it (a crash mid-write leaves a
//! partial one) are *damage*: the next record written acknowledges them in
//! `detail.damaged_tail` = `{lines, bytes, blake3}` over the damaged bytes (lines joined by
//! `\n`, without the final newline), and a missing final newline is written first so the new
//! record starts on its own line. `log verify` accepts damage only when the record right after
//! it acknowledges exactly those bytes.
//!
//! Rotation: before a record would take the file past `max_bytes`, `F.(keep-1)` → `F.keep` …
//! `F` → `F.1`, and a new `F` is created (`O_EXCL`); the chain continues into it.

use crate::error::{Error, Result};
use crate::sanitize::Name;
use serde_json::{Map, Value};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How much of the file's end is read to find the last record (records are a few KiB).
const TAIL_WINDOW: u64 = 1 << 20;
/// More damaged lines than this at the end is not a crash: refuse to append to such a file.
const MAX_DAMAGED_LINES: u64 = 16;

/// Damaged lines at the end of the file, as the next record acknowledges them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    pub lines: u64,
    pub bytes: u64,
    /// Hex BLAKE3 of the damaged lines joined by `\n`.
    pub blake3: String,
}

impl Damage {
    /// Of the damaged lines (each without its newline).
    pub fn of(lines: &[&[u8]]) -> Damage {
        let joined = lines.join(&b'\n');
        Damage {
            lines: lines.len() as u64,
            bytes: joined.len() as u64,
            blake3: super::record::line_hash(&joined),
        }
    }

    /// The value written under `detail.damaged_tail`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("lines".into(), self.lines.into());
        m.insert("bytes".into(), self.bytes.into());
        m.insert("blake3".into(), self.blake3.clone().into());
        Value::Object(m)
    }

    /// Read `detail.damaged_tail` back.
    pub fn from_value(v: &Value) -> Option<Damage> {
        Some(Damage {
            lines: v.get("lines")?.as_u64()?,
            bytes: v.get("bytes")?.as_u64()?,
            blake3: v.get("blake3")?.as_str()?.to_string(),
        })
    }
}

/// Where the chain stands at the end of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// `seq` and line hash of the last record, if the file holds one.
    pub last: Option<(u64, String)>,
    /// Lines after it that are not records.
    pub damaged: Option<Damage>,
}

/// The open alert file.
#[derive(Debug)]
pub struct JsonlFile {
    path: PathBuf,
    /// `None` after a failed write: the next append re-reads the tail first.
    file: Option<File>,
    size: u64,
    /// The file does not end with a newline (a partial line): write one first.
    pending_newline: bool,
    max_bytes: Option<u64>,
    keep: usize,
}

fn pathname(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

fn open_file(path: &Path, create_new: bool) -> std::io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(flags.bits() as i32);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    let f = o.open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let fl = rustix::fs::fcntl_getfl(&f)?;
    rustix::fs::fcntl_setfl(&f, fl - rustix::fs::OFlags::NONBLOCK)?;
    Ok(f)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The path of rotated file `n` (`F.n`).
pub fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl JsonlFile {
    /// Open (creating 0600 if absent) and read where the chain stands.
    pub fn open(path: &Path, max_bytes: Option<u64>, keep: usize) -> Result<(JsonlFile, Tail)> {
        let mut j = JsonlFile {
            path: path.to_path_buf(),
            file: None,
            size: 0,
            pending_newline: false,
            max_bytes,
            keep,
        };
        let tail = j.reopen()?;
        Ok((j, tail))
    }

    /// Whether the last write failed (the next append re-reads the tail first).
    pub fn needs_recovery(&self) -> bool {
        self.file.is_none()
    }

    /// Force a re-read of the tail before the next append (tests simulate a failed write).
    #[cfg(test)]
    pub(crate) fn mark_for_recovery(&mut self) {
        self.file = None;
    }

    /// (Re)open the file and read its tail.
    pub fn reopen(&mut self) -> Result<Tail> {
        let name = pathname(&self.path);
        let f = open_file(&self.path, false).map_err(|e| Error::io("open alert log", &*name, e))?;
        let size = f
            .metadata()
            .map_err(|e| Error::io("stat alert log", &*name, e))?
            .len();
        if size == 0 {
            sync_dir(&self.path).map_err(|e| Error::io("sync directory of", &*name, e))?;
        }
        let tail = read_tail(&f, size).map_err(|why| {
            Error::Integrity(format!(
                "{}: {why}; move it aside to start a new log",
                Name(&name)
            ))
        })?;
        let last_byte = if size > 0 {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, size - 1)
                .map_err(|e| Error::io("read alert log", &*name, e))?;
            Some(b[0])
        } else {
            None
        };
        self.pending_newline = matches!(last_byte, Some(b) if b != b'\n');
        self.size = size;
        self.file = Some(f);
        Ok(tail)
    }

    /// Append one record line (without newline) and fsync. Rotates first when the line would
    /// take the file past `max_bytes`. On error the file is marked for recovery.
    pub fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.append_many(&[line])
    }

    /// Append several lines with one `write` and one `fdatasync` (rotation happens only
    /// between batches, so a batch may take the file past `max_bytes`).
    pub fn append_many(&mut self, lines: &[&[u8]]) -> std::io::Result<()> {
        let r = self.try_append(lines);
        if r.is_err() {
            self.file = None;
        }
        r
    }

    fn try_append(&mut self, lines: &[&[u8]]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 1);
        if self.pending_newline {
            buf.push(b'\n');
        }
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        if let Some(max) = self.max_bytes {
            // A partial last line is terminated (and acknowledged) in its own file first.
            if !self.pending_newline && self.size > 0 && self.size + buf.len() as u64 > max {
                self.rotate()?;
            }
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("alert log not open"))?;
        f.write_all(&buf)?;
        f.sync_data()?;
        self.size += buf.len() as u64;
        self.pending_newline = false;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let ignore_missing = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
        if self.keep == 0 {
            ignore_missing(std::fs::remove_file(&self.path))?;
        } else {
            for i in (1..self.keep).rev() {
                ignore_missing(std::fs::rename(
                    rotated(&self.path, i),
                    rotated(&self.path, i + 1),
                ))?;
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        let f = open_file(&self.path, true)?;
        sync_dir(&self.path)?;
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Find the last record in the file's last [`TAIL_WINDOW`] bytes.
fn read_tail(f: &File, size: u64) -> std::result::Result<Tail, String> {
    let window = size.min(TAIL_WINDOW);
    let mut buf = vec![0u8; window as usize];
    f.read_exact_at(&mut buf, size - window)
        .map_err(|e| format!("read alert log: {e}"))?;
    let whole = window == size;
    let mut text: &[u8] = &buf;
    if !whole {
        // The window starts mid-line: drop that fragment.
        match text.iter().position(|&b| b == b'\n') {
            Some(i) => text = &text[i + 1..],
            None => {
                return Err("no complete line in the last 1 MiB: not a kmsentry alert log".into())
            }
        }
    }
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.last() == Some(&b'\n') || text.is_empty() {
        lines.pop();
    }
    let mut damaged: Vec<&[u8]> = Vec::new();
    for line in lines.iter().rev() {
        if let Ok(p) = super::record::parse(line) {
            damaged.reverse();
            return Ok(Tail {
                last: Some((p.seq, super::record::line_hash(line))),
                damaged: (!damaged.is_empty()).then(|| Damage::of(&damaged)),
            });
        }
        damaged.push(line);
        if damaged.len() as u64 > MAX_DAMAGED_LINES {
            return Err(format!(
                "the last {MAX_DAMAGED_LINES} lines are not alert records: not a kmsentry alert log, or badly damaged"
            ));
        }
    }
    match (whole, damaged.len()) {
        (true, 0) => Ok(Tail::default()),
        // A crash while writing the first record of a new log.
        (true, 1) => Ok(Tail {
            last: None,
            damaged: Some(Damage::of(&damaged)),
        }),
        _ => Err("no alert record in it: not a kmsentry alert log".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> String {
        format!(
            r#"{{"seq":{seq},"kind":"started","prev":"{}"}}"#,
            super::super::record::ZERO_HASH
        )
    }

    #[test]
    fn creates_0600_appends_lines_and_refuses_symlinks_and_fifos() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let (mut j, tail) = JsonlFile::open(&p, None, 3).unwrap();
        assert_eq!(tail, Tail::default());
        j.append(rec(1).as_bytes()).unwrap();
        j.append(rec(2).as_bytes()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n{}\n", rec(1), rec(2))
        );
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (_, tail) = JsonlFile::open(&p, None, 3).unwrap();
        assert_eq!(
            tail.last,
            Some((2, super::super::record::line_hash(rec(2).as_bytes())))
        );

        let link = t.path().join("link.jsonl");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(JsonlFile::open(&link, None, 3).is_err());
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(JsonlFile::open(&fifo, None, 3).is_err());
    }

    #[test]
    fn a_partial_last_line_is_damage_to_acknowledge() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        std::fs::write(&p, format!("{}\n{{\"seq\":2,\"ki", rec(1))).unwrap();
        let (mut j, tail) = JsonlFile::open(&p, None, 3).unwrap();
        assert_eq!(tail.last.unwrap().0, 1);
        let d = tail.damaged.unwrap();
        assert_eq!(d, Damage::of(&[b"{\"seq\":2,\"ki"]));
        assert_eq!((d.lines, d.bytes), (1, 12));
        j.append(rec(2).as_bytes()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            format!("{}\n{{\"seq\":2,\"ki\n{}\n", rec(1), rec(2))
        );
    }

    #[test]
    fn a_file_that_is_not_an_alert_log_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        std::fs::write(&p, "root:x:0:0\nbin:x:1:1\n").unwrap();
        let e = JsonlFile::open(&p, None, 3).unwrap_err();
        assert!(e.to_string().contains("not a kmsentry alert log"), "{e}");
        // One partial line only: a crash during the very first write.
        std::fs::write(&p, "{\"seq\":1,").unwrap();
        let (_, tail) = JsonlFile::open(&p, None, 3).unwrap();
        assert_eq!(tail.last, None);
        assert_eq!(tail.damaged.unwrap().lines, 1);
    }

    #[test]
    fn rotation_shifts_files_and_keeps_keep() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a.jsonl");
        let line = rec(1);
        let (mut j, _) = JsonlFile::open(&p, Some(2 * (line.len() as u64 + 1)), 2).unwrap();
        for _ in 0..7 {
            j.append(line.as_bytes()).unwrap();
        }
        // 7 lines, 2 per file: F has 1, F.1 2, F.2 2, and F.3 never exists (keep = 2).
        let count = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(count(&p), 1);
        assert_eq!(count(&rotated(&p, 1)), 2);
        assert_eq!(count(&rotated(&p, 2)), 2);
        assert!(!rotated(&p, 3).exists());
    }
}

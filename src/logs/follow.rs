//! Following one file source (a glob) while the daemon runs: which files it covers now,
//! where each was read up to, and what happened to them (rotated, truncated, deleted,
//! replaced by something that is not a regular file).
//!
//! A followed file is known by its (dev, inode), never by its name: a rotated `app.log.1`
//! that the glob also matches is the same file and is not read twice. Each [`Follower::poll`]:
//! 1. looks at every followed file's name (`lstat`): the same inode is "at its name"; another
//!    inode, nothing, a symlink or a FIFO there means the file left its name (rename
//!    rotation or deletion) or was replaced, and the glob is expanded again at once;
//! 2. reads, files that left their name first (so a rotated file is finished before the
//!    new one is begun), each from its last offset to its end; a size below the offset
//!    means it was truncated in place (copytruncate, `> file`): reading starts again at 0;
//! 3. closes a file that left its name once it has been drained and [`GRACE`] has passed
//!    (a writer may still append to its old file until it reopens), judging a last line
//!    without `\n` then;
//! 4. every [`EXPAND_EVERY`] (or at once after step 1 saw a change) expands the glob: a new
//!    regular file is opened and read from 0 (from its end on the very first start of a
//!    source that was never followed, so the daemon does not replay a host's history;
//!    `logs scan` is for that).
//!
//! Opens are `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` after an `lstat` that showed a regular
//! file, and `fstat` must show the inode `lstat` saw: a symlink, FIFO or device is never
//! opened, and is reported once per name. `.gz` files are skipped unless the glob names
//! `.gz` (they are rotated copies, not logs being written). Lines longer than
//! [`MAX_LINE_BYTES`] are skipped without being held whole, and counted.
//! Must not: block (every read is of a regular file, bounded per poll), or lose an offset
//! (the caller persists [`Follower::positions`]).

use super::file::MAX_LINE_BYTES;
use super::positions::{FilePos, FP_BYTES};
use crate::policy::glob::Pattern;
use crate::sanitize::Name;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A file that left its name is kept open (and read) this long before it is closed.
pub const GRACE: Duration = Duration::from_secs(2);
/// The glob is expanded again this often (and at once when a followed name changes).
pub const EXPAND_EVERY: Duration = Duration::from_secs(1);
/// At most this much is read from one file per poll, so one busy file cannot starve the rest.
const READ_BUDGET: u64 = 8 << 20;

/// What a poll hands its caller.
pub enum Seen<'a> {
    /// A complete line (without `\n`) starting at `offset` of `file`.
    Line {
        file: &'a [u8],
        /// (dev, inode) of the file.
        id: (u64, u64),
        offset: u64,
        line: &'a [u8],
        mtime: i64,
    },
    /// A line longer than [`MAX_LINE_BYTES`] (skipped).
    Oversized,
}

/// Something the operator should hear about a followed name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub path: Vec<u8>,
    pub what: NoticeKind,
}

/// What happened to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// A new file began to be followed.
    Opened,
    /// The followed file left its name (rename rotation, or replaced by a new file).
    Rotated,
    /// Truncated in place (copytruncate): read again from the start.
    Truncated,
    /// The name is gone and nothing replaced it.
    Deleted,
    /// A symlink where a log is expected: never followed.
    Symlink,
    /// A FIFO, socket or device where a log is expected: never opened.
    NotRegular,
    /// A stored position whose file was not found again (rotated away and compressed or
    /// deleted while the daemon was down): lines after the offset were not read.
    Lost,
    /// Opening or reading failed (permissions, I/O).
    Unreadable,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Opened => "opened",
            NoticeKind::Rotated => "rotated",
            NoticeKind::Truncated => "truncated",
            NoticeKind::Deleted => "deleted",
            NoticeKind::Symlink => "symlink",
            NoticeKind::NotRegular => "not_regular",
            NoticeKind::Lost => "lost",
            NoticeKind::Unreadable => "unreadable",
        }
    }

    /// Whether this is a sign of tampering or loss rather than routine rotation.
    pub fn is_alarm(self) -> bool {
        matches!(
            self,
            NoticeKind::Symlink | NoticeKind::NotRegular | NoticeKind::Lost | NoticeKind::Deleted
        )
    }
}

struct Followed {
    file: File,
    dev: u64,
    ino: u64,
    path: Vec<u8>,
    /// Next byte to read.
    read_pos: u64,
    /// Bytes of a line not yet ended by `\n` (start at `read_pos - partial.len()`).
    partial: Vec<u8>,
    /// Inside an oversized line: drop bytes up to the next `\n`.
    skipping: bool,
    skip_start: u64,
    fp_len: u32,
    fp: [u8; 32],
    /// When it was first seen away from its name.
    gone_since: Option<Instant>,
    mtime: i64,
}

impl Followed {
    /// Start of the first byte not yet judged.
    fn done(&self) -> u64 {
        if self.skipping {
            self.skip_start
        } else {
            self.read_pos - self.partial.len() as u64
        }
    }
}

/// One file source's followed files.
pub struct Follower {
    glob: String,
    pattern: Pattern,
    want_gz: bool,
    files: Vec<Followed>,
    last_expand: Option<Instant>,
    /// Start new files at their end (a source never followed before, at its first expansion).
    start_at_end: bool,
    /// Names reported as not followable, so each is reported once while it stays so.
    refused: Vec<(Vec<u8>, NoticeKind)>,
    pub notices: Vec<Notice>,
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn fingerprint(f: &File, len: u64) -> Option<(u32, [u8; 32])> {
    let len = len.min(FP_BYTES as u64) as usize;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(got);
    Some((got as u32, *blake3::hash(&buf).as_bytes()))
}

/// Open `path` if, and only if, it is a regular file, without following a symlink.
fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), NoticeKind> {
    let m = std::fs::symlink_metadata(path).map_err(|_| NoticeKind::Deleted)?;
    classify(&m)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                NoticeKind::Symlink
            } else {
                NoticeKind::Unreadable
            }
        })?;
    let fm = f.metadata().map_err(|_| NoticeKind::Unreadable)?;
    if !fm.is_file() || (fm.dev(), fm.ino()) != (m.dev(), m.ino()) {
        // Swapped between the lstat and the open.
        return Err(NoticeKind::NotRegular);
    }
    Ok((f, fm))
}

fn classify(m: &std::fs::Metadata) -> Result<(), NoticeKind> {
    let t = m.file_type();
    if t.is_file() {
        Ok(())
    } else if t.is_symlink() {
        Err(NoticeKind::Symlink)
    } else {
        // FIFO, socket, device, directory: never opened.
        Err(NoticeKind::NotRegular)
    }
}

impl Follower {
    /// A follower of `glob`. `stored`: the positions saved by the last run (empty for a
    /// source never followed); `known`: whether the source was ever followed.
    pub fn new(glob: &str, stored: &[FilePos], known: bool) -> crate::error::Result<Follower> {
        Self::resuming(glob, stored, known, &std::collections::HashMap::new())
    }

    /// [`Follower::new`], also skipping, in each resumed file, every line up to and including
    /// the last one the alert log already holds an alert for (`alerted`: (dev, inode) → that
    /// line's offset): the alert was written, its position not yet saved (a crash between).
    pub fn resuming(
        glob: &str,
        stored: &[FilePos],
        known: bool,
        alerted: &std::collections::HashMap<(u64, u64), u64>,
    ) -> crate::error::Result<Follower> {
        let pattern = Pattern::new(glob)
            .map_err(|e| crate::error::Error::Usage(format!("{glob}: {}", e.0)))?;
        let mut f = Follower {
            glob: glob.to_string(),
            pattern,
            want_gz: glob.ends_with(".gz"),
            files: Vec::new(),
            last_expand: None,
            start_at_end: !known,
            refused: Vec::new(),
            notices: Vec::new(),
        };
        f.resume(stored);
        for file in &mut f.files {
            if let Some(&at) = alerted.get(&(file.dev, file.ino)) {
                if at >= file.read_pos {
                    if let Some(end) = line_end(&file.file, at) {
                        file.read_pos = end;
                    }
                }
            }
        }
        // The first expansion now, before the daemon says `started`: a line appended after
        // that is read even on a source's very first start.
        f.expand(Instant::now());
        Ok(f)
    }

    fn notice(&mut self, path: &[u8], what: NoticeKind) {
        self.notices.push(Notice {
            path: path.to_vec(),
            what,
        });
    }

    fn is_followed(&self, dev: u64, ino: u64) -> bool {
        self.files.iter().any(|f| (f.dev, f.ino) == (dev, ino))
    }

    /// The glob's matches now (regular files and what must be reported), sorted.
    fn matches(&self) -> Vec<PathBuf> {
        super::file::expand(&self.glob)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| self.want_gz || !bytes(p).ends_with(b".gz"))
            .collect()
    }

    /// Find last run's files again: by (dev, inode) with the same first bytes, else (a
    /// copytruncate while down) by the first bytes alone, among the glob's matches and the
    /// other files beside where each was last seen.
    fn resume(&mut self, stored: &[FilePos]) {
        let mut candidates: Vec<PathBuf> = self.matches();
        let mut dirs: Vec<PathBuf> = stored
            .iter()
            .filter_map(|s| Path::new(std::ffi::OsStr::from_bytes(&s.path)).parent())
            .map(Path::to_path_buf)
            .collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if !bytes(&p).ends_with(b".gz") && !candidates.contains(&p) {
                        candidates.push(p);
                    }
                }
            }
        }
        let mut stats: Vec<(PathBuf, std::fs::Metadata)> = candidates
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::symlink_metadata(&p).ok()?;
                m.is_file().then_some((p, m))
            })
            .collect();
        stats.sort_by_key(|(p, m)| (m.mtime(), p.clone()));
        for s in stored {
            let by_inode = stats
                .iter()
                .find(|(_, m)| (m.dev(), m.ino()) == (s.dev, s.ino));
            let mut resumed = false;
            if let Some((p, _)) = by_inode {
                if let Ok((f, fm)) = open_regular(p) {
                    let same = fingerprint(&f, u64::from(s.fp_len))
                        .is_some_and(|(n, h)| n == s.fp_len && h == s.fp);
                    if same && fm.size() >= s.offset {
                        self.push(f, &fm, bytes(p), s.offset);
                        resumed = true;
                    }
                }
            }
            if resumed {
                continue;
            }
            // Not where it was: a copy with the same beginning (copytruncate) holds the rest.
            for (p, m) in &stats {
                if m.size() < s.offset || self.is_followed(m.dev(), m.ino()) {
                    continue;
                }
                let Ok((f, fm)) = open_regular(p) else {
                    continue;
                };
                if fingerprint(&f, u64::from(s.fp_len))
                    .is_some_and(|(n, h)| n == s.fp_len && h == s.fp)
                {
                    self.push(f, &fm, bytes(p), s.offset);
                    resumed = true;
                    break;
                }
            }
            if !resumed && s.offset > 0 {
                self.notice(&s.path, NoticeKind::Lost);
            }
        }
        // Whatever is not at a name the glob matches is finished first, then closed.
        let names: Vec<Vec<u8>> = self.matches().iter().map(|p| bytes(p).to_vec()).collect();
        let now = Instant::now();
        for f in &mut self.files {
            if !names.contains(&f.path) {
                f.gone_since = Some(now);
            }
        }
    }

    fn push(&mut self, file: File, m: &std::fs::Metadata, path: &[u8], offset: u64) {
        let (fp_len, fp) = fingerprint(&file, m.size()).unwrap_or((0, [0; 32]));
        self.files.push(Followed {
            file,
            dev: m.dev(),
            ino: m.ino(),
            path: path.to_vec(),
            read_pos: offset,
            partial: Vec::new(),
            skipping: false,
            skip_start: 0,
            fp_len,
            fp,
            gone_since: None,
            mtime: m.mtime(),
        });
    }

    /// Number of files followed now.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// (name, offset judged up to) of each followed file.
    pub fn files(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.files.iter().map(|f| (f.path.as_slice(), f.done()))
    }

    /// Where each followed file was judged up to, for [`super::positions::Positions::save`].
    pub fn positions(&mut self) -> Vec<FilePos> {
        for f in &mut self.files {
            if (f.fp_len as usize) < FP_BYTES {
                if let Some((n, h)) = fingerprint(&f.file, f.read_pos.max(FP_BYTES as u64)) {
                    (f.fp_len, f.fp) = (n, h);
                }
            }
        }
        self.files
            .iter()
            .map(|f| FilePos {
                dev: f.dev,
                ino: f.ino,
                fp_len: f.fp_len,
                fp: f.fp,
                offset: f.done(),
                path: f.path.clone(),
            })
            .collect()
    }

    /// Look at the names, read what was appended, expand the glob when due. Calls `seen` for
    /// every complete line, in file order, files that left their name first.
    pub fn poll(&mut self, seen: &mut dyn FnMut(Seen<'_>)) {
        let now = Instant::now();
        let mut changed = false;
        // 1. Names.
        let mut notices = Vec::new();
        for f in &mut self.files {
            let p = Path::new(std::ffi::OsStr::from_bytes(&f.path));
            let here = match std::fs::symlink_metadata(p) {
                // At its name, and a name the glob covers (a file found again after a
                // restart beside the glob is finished first, then closed).
                Ok(m) if m.is_file() && (m.dev(), m.ino()) == (f.dev, f.ino) => {
                    self.pattern.matches(&f.path) || f.gone_since.is_none()
                }
                Ok(m) => {
                    if f.gone_since.is_none() {
                        let what = match classify(&m) {
                            Ok(()) => NoticeKind::Rotated,
                            Err(k) => k,
                        };
                        notices.push((f.path.clone(), what));
                    }
                    false
                }
                Err(_) => {
                    if f.gone_since.is_none() {
                        notices.push((f.path.clone(), NoticeKind::Rotated));
                    }
                    false
                }
            };
            if here {
                f.gone_since = None;
            } else if f.gone_since.is_none() {
                f.gone_since = Some(now);
                changed = true;
            }
        }
        for (p, k) in notices {
            self.notice(&p, k);
        }
        // A rotated file's new name (or its successor) is looked for before reading, so
        // the old file is finished first and the new one read right after it.
        if changed
            || self
                .last_expand
                .is_none_or(|t| now.duration_since(t) >= EXPAND_EVERY)
        {
            self.expand(now);
        }
        // 2. Read: files away from their name first, then by name.
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        order.sort_by_key(|&i| {
            let f = &self.files[i];
            (f.gone_since.is_none(), f.mtime, f.path.clone())
        });
        let mut truncated = Vec::new();
        for i in order {
            let f = &mut self.files[i];
            if let Some(t) = read_new(f, seen) {
                truncated.push(t);
            }
        }
        for p in truncated {
            self.notice(&p, NoticeKind::Truncated);
        }
        // 3. Close drained files that left their name long enough ago.
        let mut i = 0;
        while i < self.files.len() {
            let f = &mut self.files[i];
            let drained = f.file.metadata().map_or(true, |m| m.size() <= f.read_pos);
            if drained && f.gone_since.is_some_and(|t| now.duration_since(t) >= GRACE) {
                if !f.partial.is_empty() && !f.skipping {
                    let start = f.read_pos - f.partial.len() as u64;
                    seen(Seen::Line {
                        file: &f.path,
                        id: (f.dev, f.ino),
                        offset: start,
                        line: &f.partial,
                        mtime: f.mtime,
                    });
                }
                let gone = self.files.remove(i);
                // Still at no name the glob matches: it is gone for good.
                if std::fs::symlink_metadata(Path::new(std::ffi::OsStr::from_bytes(&gone.path)))
                    .is_err()
                {
                    self.notice(&gone.path, NoticeKind::Deleted);
                }
                continue;
            }
            i += 1;
        }
    }

    fn expand(&mut self, now: Instant) {
        let first = self.last_expand.is_none();
        self.last_expand = Some(now);
        let mut still_refused = Vec::new();
        for p in self.matches() {
            let name = bytes(&p).to_vec();
            let m = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if let Err(k) = classify(&m) {
                if !self.refused.iter().any(|(n, r)| *n == name && *r == k) {
                    self.notice(&name, k);
                }
                still_refused.push((name, k));
                continue;
            }
            if let Some(f) = self
                .files
                .iter_mut()
                .find(|f| (f.dev, f.ino) == (m.dev(), m.ino()))
            {
                // A followed file under a new name (a rotation the glob also matches).
                if f.path != name && f.gone_since.is_some() {
                    f.path = name;
                    f.gone_since = None;
                }
                continue;
            }
            match open_regular(&p) {
                Ok((f, fm)) => {
                    let start = if first && self.start_at_end {
                        fm.size()
                    } else {
                        0
                    };
                    self.push(f, &fm, &name, start);
                    self.notice(&name, NoticeKind::Opened);
                }
                Err(k) => {
                    if !self.refused.iter().any(|(n, r)| *n == name && *r == k) {
                        self.notice(&name, k);
                    }
                    still_refused.push((name, k));
                }
            }
        }
        self.refused = still_refused;
        // From now on every file that appears is new: read it from its start.
        self.start_at_end = false;
    }
}

/// The offset just past the `\n` that ends the line starting at `at`, if it is complete.
fn line_end(f: &File, at: u64) -> Option<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut pos = at;
    loop {
        let n = f.read_at(&mut buf, pos).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(j) = buf[..n].iter().position(|&c| c == b'\n') {
            return Some(pos + j as u64 + 1);
        }
        pos += n as u64;
        if pos - at > (MAX_LINE_BYTES as u64) * 8 {
            return None;
        }
    }
}

/// Read what was appended to `f` (at most [`READ_BUDGET`]), handing complete lines to
/// `seen`. Returns the name when the file was found truncated.
fn read_new(f: &mut Followed, seen: &mut dyn FnMut(Seen<'_>)) -> Option<Vec<u8>> {
    let m = f.file.metadata().ok()?;
    let mut truncated = None;
    if m.size() < f.read_pos {
        // Truncated in place: what was written since is at the start now.
        f.read_pos = 0;
        f.partial.clear();
        f.skipping = false;
        f.fp_len = 0;
        truncated = Some(f.path.clone());
    }
    f.mtime = m.mtime();
    let mut buf = vec![0u8; 64 << 10];
    let mut budget = READ_BUDGET;
    while budget > 0 {
        let n = match f.file.read_at(&mut buf, f.read_pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading log {}: {e}", Name(&f.path));
                break;
            }
        };
        budget = budget.saturating_sub(n as u64);
        let chunk = &buf[..n];
        let base = f.read_pos;
        let mut i = 0;
        while i < n {
            let rest = &chunk[i..];
            match rest.iter().position(|&c| c == b'\n') {
                Some(j) => {
                    let end = base + (i + j + 1) as u64;
                    if f.skipping {
                        f.skipping = false;
                    } else if f.partial.is_empty() {
                        if j <= MAX_LINE_BYTES {
                            seen(Seen::Line {
                                file: &f.path,
                                id: (f.dev, f.ino),
                                offset: base + i as u64,
                                line: &rest[..j],
                                mtime: f.mtime,
                            });
                        } else {
                            seen(Seen::Oversized);
                        }
                    } else if f.partial.len() + j <= MAX_LINE_BYTES {
                        f.partial.extend_from_slice(&rest[..j]);
                        let start = base + i as u64 - (f.partial.len() - j) as u64;
                        seen(Seen::Line {
                            file: &f.path,
                            id: (f.dev, f.ino),
                            offset: start,
                            line: &f.partial,
                            mtime: f.mtime,
                        });
                    } else {
                        seen(Seen::Oversized);
                    }
                    f.partial.clear();
                    f.read_pos = end;
                    i += j + 1;
                }
                None => {
                    if !f.skipping {
                        if f.partial.len() + rest.len() > MAX_LINE_BYTES {
                            f.skip_start = base + i as u64 - f.partial.len() as u64;
                            f.skipping = true;
                            f.partial.clear();
                            seen(Seen::Oversized);
                        } else {
                            f.partial.extend_from_slice(rest);
                        }
                    }
                    f.read_pos = base + n as u64;
                    i = n;
                }
            }
        }
    }
    truncated
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(f: &mut Follower) -> Vec<(String, u64)> {
        let mut v = Vec::new();
        f.poll(&mut |s| match s {
            Seen::Line { line, offset, .. } => {
                v.push((String::from_utf8(line.to_vec()).unwrap(), offset))
            }
            Seen::Oversized => v.push(("<oversized>".into(), 0)),
        });
        v
    }

    fn append(p: &Path, s: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .unwrap();
        f.write_all(s.as_bytes()).unwrap();
    }

    fn texts(v: &[(String, u64)]) -> Vec<&str> {
        v.iter().map(|(s, _)| s.as_str()).collect()
    }

    #[test]
    fn a_first_start_reads_from_the_end_then_every_appended_line_once() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "history\n");
        let glob = log.to_str().unwrap();
        let mut f = Follower::new(glob, &[], false).unwrap();
        assert!(lines(&mut f).is_empty(), "history is for `logs scan`");
        append(&log, "one\ntw");
        assert_eq!(lines(&mut f), vec![("one".to_string(), 8)]);
        append(&log, "o\n");
        assert_eq!(lines(&mut f), vec![("two".to_string(), 12)]);
        assert!(lines(&mut f).is_empty());
        assert_eq!(f.positions()[0].offset, 16);
    }

    #[test]
    fn rename_rotation_finishes_the_old_file_before_the_new_one() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "1\n");
        assert_eq!(texts(&lines(&mut f)), ["1"]);
        std::fs::rename(&log, t.path().join("a.log.1")).unwrap();
        append(&t.path().join("a.log.1"), "2\n");
        append(&log, "3\n");
        assert_eq!(texts(&lines(&mut f)), ["2", "3"]);
        assert!(f.notices.iter().any(|n| n.what == NoticeKind::Rotated));
        assert_eq!(f.len(), 2, "the old file is kept for the grace period");
    }

    #[test]
    fn a_deleted_log_is_drained_reported_and_closed_after_the_grace() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "1\n2");
        assert_eq!(texts(&lines(&mut f)), ["1"]);
        std::fs::remove_file(&log).unwrap();
        assert!(lines(&mut f).is_empty());
        assert_eq!(f.len(), 1, "kept open: a writer may still append");
        std::thread::sleep(GRACE + Duration::from_millis(50));
        // The last line without `\n` is judged when the file is closed.
        assert_eq!(texts(&lines(&mut f)), ["2"]);
        assert!(f.is_empty());
        assert!(f.notices.iter().any(|n| n.what == NoticeKind::Deleted));
    }

    #[test]
    fn copytruncate_is_read_again_from_the_start() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "first line\n");
        assert_eq!(texts(&lines(&mut f)), ["first line"]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "x\n");
        assert_eq!(lines(&mut f), vec![("x".to_string(), 0)]);
        assert!(f.notices.iter().any(|n| n.what == NoticeKind::Truncated));
    }

    #[test]
    fn a_restart_finds_the_rotated_file_by_inode_and_reads_the_rest_first() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "1\n");
        assert_eq!(texts(&lines(&mut f)), ["1"]);
        let saved = f.positions();
        drop(f);
        append(&log, "2\n");
        std::fs::rename(&log, t.path().join("a.log.1")).unwrap();
        append(&log, "3\n");
        let mut f = Follower::new(log.to_str().unwrap(), &saved, true).unwrap();
        assert_eq!(texts(&lines(&mut f)), ["2", "3"]);
        // A reused inode number with other content is not the saved file.
        let mut forged = saved.clone();
        forged[0].fp = [9; 32];
        let f2 = Follower::new(log.to_str().unwrap(), &forged, true).unwrap();
        assert!(f2.notices.iter().any(|n| n.what == NoticeKind::Lost));
    }

    #[test]
    fn lines_already_alerted_before_a_crash_are_not_read_again() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "1\n");
        assert_eq!(texts(&lines(&mut f)), ["1"]);
        let saved = f.positions();
        // After the save: lines 2 and 3 judged, 3's alert written, then a crash.
        append(&log, "2\n3\n4\n");
        let m = std::fs::metadata(&log).unwrap();
        let alerted = std::collections::HashMap::from([((m.dev(), m.ino()), 4u64)]);
        let mut f = Follower::resuming(log.to_str().unwrap(), &saved, true, &alerted).unwrap();
        assert_eq!(texts(&lines(&mut f)), ["4"]);
    }

    #[test]
    fn a_restart_after_copytruncate_reads_the_rest_from_the_copy() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        append(&log, "1\n");
        assert_eq!(texts(&lines(&mut f)), ["1"]);
        let saved = f.positions();
        drop(f);
        append(&log, "2\n");
        std::fs::copy(&log, t.path().join("a.log.1")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&log, "3\n");
        let mut f = Follower::new(log.to_str().unwrap(), &saved, true).unwrap();
        assert_eq!(texts(&lines(&mut f)), ["2", "3"]);
    }

    #[test]
    fn symlinks_and_fifos_are_reported_and_never_opened() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("secret");
        append(&target, "do not read\n");
        std::os::unix::fs::symlink(&target, t.path().join("a.log")).unwrap();
        nix::unistd::mkfifo(
            &t.path().join("b.log"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let glob = format!("{}/*.log", t.path().to_str().unwrap());
        let mut f = Follower::new(&glob, &[], true).unwrap();
        assert!(lines(&mut f).is_empty());
        assert!(f.is_empty());
        let kinds: Vec<NoticeKind> = f.notices.drain(..).map(|n| n.what).collect();
        assert!(kinds.contains(&NoticeKind::Symlink), "{kinds:?}");
        assert!(kinds.contains(&NoticeKind::NotRegular), "{kinds:?}");
        // Reported once while they stay so.
        f.expand(Instant::now());
        assert!(f.notices.is_empty());
    }

    #[test]
    fn an_oversized_line_is_counted_and_the_next_is_read() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("a.log");
        append(&log, "");
        let mut f = Follower::new(log.to_str().unwrap(), &[], true).unwrap();
        let big = "x".repeat(MAX_LINE_BYTES + 10);
        append(&log, &big);
        append(&log, &big);
        assert_eq!(texts(&lines(&mut f)), ["<oversized>"]);
        append(&log, "\nok\n");
        let got = lines(&mut f);
        assert_eq!(got, vec![("ok".to_string(), 2 * big.len() as u64 + 1)]);
    }
}

//! File sources for `logs scan`: expand a source's glob (rotated `.gz` files only when the
//! pattern or the command line names them), open regular files only (`O_NOFOLLOW` for
//! what a glob found; FIFOs and devices are never opened), and hand lines with their byte
//! offsets to a callback. A line longer than [`MAX_LINE_BYTES`] is counted and skipped,
//! never held whole in memory.

use crate::error::{Error, Result};
use crate::policy::glob::Pattern;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest line judged; longer ones are skipped and counted as oversized.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Files matching a source's `file:` glob, sorted; `.gz` only if the pattern ends in `.gz`.
pub fn expand(glob: &str) -> Result<Vec<PathBuf>> {
    let pat = Pattern::new(glob).map_err(|e| Error::Usage(format!("{glob}: {}", e.0)))?;
    let want_gz = glob.ends_with(".gz");
    let mut out = Vec::new();
    let base = PathBuf::from(std::ffi::OsStr::from_bytes(&pat.base()));
    let mut stack = vec![(base, 0u32)];
    while let Some((p, depth)) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let bytes = p.as_os_str().as_bytes();
        if !m.is_dir() {
            // A FIFO, device or symlink that matches is listed too, so `open` reports it
            // (never opening it) instead of it vanishing from the run without a word.
            if pat.matches(bytes) && (want_gz || !bytes.ends_with(b".gz")) {
                out.push(p);
            }
        } else if m.is_dir() && depth < 32 && pat.could_match_within(bytes) {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What reading one file saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub bytes: u64,
    pub lines: u64,
    pub oversized: u64,
}

/// Open `path` as a regular file: `follow` for a name the user gave, otherwise `O_NOFOLLOW`.
/// Returns the reader and the file's mtime (Unix seconds).
pub fn open(path: &Path, follow: bool) -> Result<(Box<dyn Read>, i64)> {
    let name = path.as_os_str().as_bytes().to_vec();
    let m = if follow {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| Error::io("stat log file", name.clone(), e))?;
    if !m.is_file() {
        return Err(Error::Usage(format!(
            "{}: not a regular file (a FIFO, device, directory or symlink is never read); expected a log file",
            crate::sanitize::Name(&name)
        )));
    }
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true).custom_flags(
        libc::O_NONBLOCK | libc::O_CLOEXEC | if follow { 0 } else { libc::O_NOFOLLOW },
    );
    let f = oo
        .open(path)
        .map_err(|e| Error::io("open log file", name.clone(), e))?;
    let fm = f
        .metadata()
        .map_err(|e| Error::io("stat log file", name.clone(), e))?;
    if (fm.dev(), fm.ino()) != (m.dev(), m.ino()) || !fm.is_file() {
        return Err(Error::Usage(format!(
            "{}: replaced while opened; expected a stable log file",
            crate::sanitize::Name(&name)
        )));
    }
    let mtime = fm.mtime();
    if name.ends_with(b".gz") {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(f)), mtime))
    } else {
        Ok((Box::new(f), mtime))
    }
}

/// Call `line(bytes, offset)` for each line (without its `\n`). Offsets are byte offsets in
/// the (decompressed) stream, i.e. where the line starts.
pub fn for_each_line(
    r: Box<dyn Read>,
    name: &[u8],
    mut line: impl FnMut(&[u8], u64),
) -> Result<ReadStats> {
    let mut br = std::io::BufReader::with_capacity(1 << 20, r);
    let mut st = ReadStats::default();
    let mut cur: Vec<u8> = Vec::new();
    let mut start = 0u64;
    let mut skipping = false;
    loop {
        let buf = match br.fill_buf() {
            Ok([]) => break,
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read log file", name.to_vec(), e)),
        };
        let n = buf.len();
        let mut i = 0;
        while i < n {
            let rest = &buf[i..];
            match memchr(rest) {
                Some(j) => {
                    if !skipping {
                        if cur.is_empty() {
                            if j <= MAX_LINE_BYTES {
                                line(&rest[..j], start);
                            } else {
                                st.oversized += 1;
                            }
                        } else if cur.len() + j <= MAX_LINE_BYTES {
                            cur.extend_from_slice(&rest[..j]);
                            line(&cur, start);
                        } else {
                            st.oversized += 1;
                        }
                    }
                    cur.clear();
                    skipping = false;
                    st.lines += 1;
                    start = st.bytes + (i + j + 1) as u64;
                    i += j + 1;
                }
                None => {
                    if !skipping {
                        if cur.len() + rest.len() > MAX_LINE_BYTES {
                            st.oversized += 1;
                            skipping = true;
                            cur.clear();
                        } else {
                            cur.extend_from_slice(rest);
                        }
                    }
                    i = n;
                }
            }
        }
        st.bytes += n as u64;
        br.consume(n);
    }
    if !cur.is_empty() && !skipping {
        // A last line without `\n` (a log being written) is still judged.
        line(&cur, start);
        st.lines += 1;
    }
    Ok(st)
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(data: &[u8]) -> (Vec<(Vec<u8>, u64)>, ReadStats) {
        let mut v = Vec::new();
        let st = for_each_line(
            Box::new(std::io::Cursor::new(data.to_vec())),
            b"t",
            |l, o| v.push((l.to_vec(), o)),
        )
        .unwrap();
        (v, st)
    }

    #[test]
    fn offsets_point_at_line_starts_and_a_last_partial_line_counts() {
        let (v, st) = lines(b"ab\n\ncd\nef");
        assert_eq!(
            v,
            vec![
                (b"ab".to_vec(), 0),
                (b"".to_vec(), 3),
                (b"cd".to_vec(), 4),
                (b"ef".to_vec(), 7)
            ]
        );
        assert_eq!(st.lines, 4);
    }

    #[test]
    fn a_huge_line_is_skipped_and_counted_and_the_next_is_read() {
        let mut d = vec![b'x'; 3 << 20];
        d.extend_from_slice(b"\nok\n");
        let (v, st) = lines(&d);
        assert_eq!(st.oversized, 1);
        assert_eq!(v, vec![(b"ok".to_vec(), (3 << 20) + 1)]);
    }

    #[test]
    fn fifos_are_never_opened_and_gz_is_ignored_unless_named() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("f.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open(&fifo, true).is_err());
        std::fs::write(t.path().join("a.log"), b"x\n").unwrap();
        std::fs::write(t.path().join("a.log.1.gz"), b"x").unwrap();
        let glob = format!("{}/a.log*", t.path().to_str().unwrap());
        let got = expand(&glob).unwrap();
        assert_eq!(got, vec![t.path().join("a.log")]);
        assert!(open(&fifo, false).is_err());
        let got = expand(&format!("{glob}.gz")).unwrap();
        assert_eq!(got, vec![t.path().join("a.log.1.gz")]);
    }
}

//! One read pass over an open regular file feeding BLAKE3 and, when asked, SHA-256.
//!
//! Reads with `read(2)` into one reusable buffer: no mmap, because a file truncated under a
//! mapping raises SIGBUS and an attacker who can write a watched file could crash the sensor.
//! A file whose size, mtime or ctime moved while it was read, or whose byte count disagrees
//! with its size, is read once more; if it moves again it is reported as unstable, never
//! recorded with a hash that matches no state the file was ever in.

use super::entry::Hashes;
use sha2::Digest;
use std::io::{Read, Seek, SeekFrom};

/// Read size: large enough to amortise syscalls, small enough to stay in L2 while both
/// hashers run over it.
pub const CHUNK: usize = 256 * 1024;

/// From this size on, one large file keeps every core busy instead of one: the two hashers
/// run concurrently over each chunk (`rayon::join`), and BLAKE3 alone splits each chunk over
/// the pool (`update_rayon`). Below it, a join costs more than it saves, and small files
/// already spread over the walker's threads.
pub const PARALLEL_FROM: u64 = 4 << 20;

/// Chunk size for the parallel path: the join overhead (~µs) vanishes next to 1 MiB of
/// SHA-256 (and BLAKE3's tree splits 1 MiB into many 1 KiB chunks).
const PAR_CHUNK: usize = 1 << 20;

/// The outcome of hashing a file.
#[derive(Debug)]
pub enum Hashed {
    /// Stable: the hashes, and the `fstat` of the file in the state that was hashed.
    Done(Hashes, Box<rustix::fs::Stat>),
    /// The file kept changing.
    Unstable,
}

/// What identifies a file version cheaply: checked before and after reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Stamp {
    /// The stamp of an `fstat` result.
    pub fn of(st: &rustix::fs::Stat) -> Stamp {
        Stamp {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
        }
    }
}

/// Which digests to compute: BLAKE3 always, SHA-256 when `sha256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub sha256: bool,
}

/// Hash `file`, which the caller opened and `fstat`ed as `before`. `buf` is reused across
/// calls (one per thread). A file of at most [`CHUNK`] bytes is read whole before it is
/// hashed: after `Done`, `buf[..size]` holds exactly the bytes the digests are of, so a
/// caller can inspect the content without reading the file again.
pub fn hash_file(
    file: &mut std::fs::File,
    before: Stamp,
    want: Want,
    buf: &mut Vec<u8>,
) -> std::io::Result<Hashed> {
    if buf.len() < CHUNK {
        buf.resize(CHUNK, 0);
    }
    let mut expected = before;
    for attempt in 0..2 {
        if attempt > 0 {
            file.seek(SeekFrom::Start(0))?;
        }
        // Read exactly the size `fstat` reported, never more: a writer appending forever
        // cannot keep us here, and any write while we read moves ctime (and usually size),
        // which the stamp comparison below catches. Not reading to EOF saves a syscall per
        // file; a short count (truncation) is caught by `read == size`.
        let mut limited = (&mut *file).take(expected.size);
        let (hashes, read) = if expected.size <= CHUNK as u64 {
            let n = fill(&mut limited, &mut buf[..expected.size as usize])?;
            (hash_slice(&buf[..n], want), n as u64)
        } else if expected.size >= PARALLEL_FROM {
            if buf.len() < PAR_CHUNK {
                buf.resize(PAR_CHUNK, 0);
            }
            hash_stream_parallel(&mut limited, want, &mut buf[..PAR_CHUNK])?
        } else {
            hash_stream(&mut limited, want, &mut buf[..CHUNK])?
        };
        let st = rustix::fs::fstat(&*file)?;
        let after = Stamp::of(&st);
        if after == expected && read == expected.size {
            return Ok(Hashed::Done(hashes, Box::new(st)));
        }
        expected = after;
    }
    Ok(Hashed::Unstable)
}

/// Hash everything `r` yields, returning the hashes and the byte count.
pub fn hash_stream(
    r: &mut impl Read,
    want: Want,
    buf: &mut [u8],
) -> std::io::Result<(Hashes, u64)> {
    let mut h = Pair::new(want);
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.b3.update(&buf[..n]);
        if let Some(sha) = &mut h.sha {
            sha.update(&buf[..n]);
        }
        h.total += n as u64;
    }
    Ok(h.finish())
}

/// The digests of bytes already in memory.
pub fn hash_slice(data: &[u8], want: Want) -> Hashes {
    Hashes {
        blake3: *blake3::hash(data).as_bytes(),
        sha256: want.sha256.then(|| sha2::Sha256::digest(data).into()),
    }
}

/// The hashers and the byte count, fed in step.
struct Pair {
    b3: blake3::Hasher,
    sha: Option<sha2::Sha256>,
    total: u64,
}

impl Pair {
    fn new(want: Want) -> Pair {
        Pair {
            b3: blake3::Hasher::new(),
            sha: want.sha256.then(sha2::Sha256::new),
            total: 0,
        }
    }

    fn finish(self) -> (Hashes, u64) {
        (
            Hashes {
                blake3: *self.b3.finalize().as_bytes(),
                sha256: self.sha.map(|s| s.finalize().into()),
            },
            self.total,
        )
    }
}

/// [`hash_stream`] using every core on each chunk: BLAKE3 and SHA-256 concurrently, or
/// BLAKE3's own tree split over the pool when it runs alone.
pub fn hash_stream_parallel(
    r: &mut impl Read,
    want: Want,
    buf: &mut [u8],
) -> std::io::Result<(Hashes, u64)> {
    let mut h = Pair::new(want);
    loop {
        let n = match fill(r, buf)? {
            0 => break,
            n => n,
        };
        let chunk = &buf[..n];
        match &mut h.sha {
            Some(sha) => {
                let b3 = &mut h.b3;
                rayon::join(|| b3.update(chunk), || sha.update(chunk));
            }
            None => {
                h.b3.update_rayon(chunk);
            }
        }
        h.total += n as u64;
    }
    Ok(h.finish())
}

/// Read until `buf` is full or EOF; returns the byte count (0 only at EOF).
fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The stamp of an open file.
pub fn stamp(file: &std::fs::File) -> std::io::Result<Stamp> {
    Ok(Stamp::of(&rustix::fs::fstat(file)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_for_both_hashes() {
        let both = Want { sha256: true };
        let (h, n) = hash_stream(&mut &b"abc"[..], both, &mut [0u8; 2]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hex::encode(h.sha256.unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(h.blake3),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn the_parallel_path_gives_the_same_hashes() {
        let data: Vec<u8> = (0..(3 * (1 << 20) + 12345))
            .map(|i: u32| (i % 251) as u8)
            .collect();
        for sha256 in [true, false] {
            let want = Want { sha256 };
            let (a, n1) = hash_stream(&mut &data[..], want, &mut [0u8; 4096]).unwrap();
            let (b, n2) =
                hash_stream_parallel(&mut &data[..], want, &mut vec![0u8; 1 << 20]).unwrap();
            assert_eq!((a, n1), (b, n2));
            assert_eq!(a.blake3, *blake3::hash(&data).as_bytes());
            assert_eq!(a.sha256.is_some(), sha256);
        }
    }

    #[test]
    fn a_stable_file_hashes_and_an_unexpected_size_is_retried() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let mut f = std::fs::File::open(&p).unwrap();
        let st = stamp(&f).unwrap();
        let mut buf = Vec::new();
        let Hashed::Done(h, _) = hash_file(&mut f, st, Want { sha256: true }, &mut buf).unwrap()
        else {
            panic!("stable file reported unstable")
        };
        assert_eq!(
            h.blake3,
            *blake3::hash(&vec![7u8; 3 * CHUNK + 5]).as_bytes()
        );
        // A stamp that disagrees with the file forces a re-read, which then agrees with the
        // fresh stamp: still a correct hash.
        let stale = Stamp { size: 1, ..st };
        let mut f = std::fs::File::open(&p).unwrap();
        let Hashed::Done(again, _) =
            hash_file(&mut f, stale, Want { sha256: true }, &mut buf).unwrap()
        else {
            panic!("re-read failed")
        };
        assert_eq!(again, h);
    }

    #[test]
    fn a_file_growing_while_hashed_is_unstable() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("grow");
        std::fs::write(&p, vec![1u8; 64 * 1024 * 1024]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut w = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                // Bounded in time and size (at most 5 s, ~200 MiB), whatever the reader does.
                for _ in 0..50_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    w.write_all(&[2u8; 4096]).unwrap();
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = std::fs::File::open(&p).unwrap();
        let st = stamp(&f).unwrap();
        let got = hash_file(&mut f, st, Want { sha256: false }, &mut Vec::new()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        assert!(matches!(got, Hashed::Unstable), "{got:?}");
    }
}

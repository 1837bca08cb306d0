//! The bounded on-disk queue between the alerter and an off-host syslog receiver.
//!
//! The alerter appends each record's wire frame ([`Queue::push`]: one `write` to an
//! append-only segment file, no network, no fsync) and returns; a sender thread takes frames
//! out ([`Queue::next_batch`]), writes them to the receiver, and confirms them
//! ([`Queue::confirm`]) once they can no longer be lost in flight. Only confirmed frames leave
//! the queue, so a receiver outage, a reconnect or a restart of the daemon loses nothing: on
//! every new connection sending starts again at the first unconfirmed frame
//! ([`Queue::rewind`]), and the receiver's copy may hold exact duplicates, which `log verify`
//! counts once.
//!
//! Layout under the queue directory (0700): `NNNNNNNNNNNNNNNNNNNN.seg` files of octet-counted
//! frames (`LEN SP MSG`, exactly the bytes sent), oldest first, and `head` (`SEGMENT OFFSET`,
//! written atomically) naming the first unconfirmed frame. A frame cut by a crash at the end of
//! the last segment is truncated away at open.
//!
//! Bounded: when the unconfirmed frames would exceed `max_bytes`, the queue first asks for one
//! `health` alert ([`Queue::take_health`]) and keeps everything until that alert has been
//! taken; only then does it drop whole segments, oldest first, counting what it drops. When it
//! has drained below half its bound again, a second `health` alert says how many records
//! (which `seq` range) were dropped.
//!
//! Must not: block the alerter on the network (the lock is held for a `write` or a read of
//! the page cache, never across a send); drop a frame before the alert saying so was taken.

use super::{Alert, Kind};
use crate::baseline::diff::Severity;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A position in the queue: segment id and frame index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    seg: u64,
    idx: usize,
}

#[derive(Debug)]
struct Frame {
    /// Offset just past the frame.
    end: u64,
    /// The record's `seq` (0 when unknown).
    seq: u64,
}

#[derive(Debug)]
struct Seg {
    id: u64,
    frames: Vec<Frame>,
}

impl Seg {
    fn start_of(&self, idx: usize) -> u64 {
        if idx == 0 {
            0
        } else {
            self.frames.get(idx - 1).map_or(0, |f| f.end)
        }
    }
    fn len(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.end)
    }
}

#[derive(Debug, Default)]
enum Full {
    #[default]
    No,
    /// Over the bound; the alert saying so waits to be taken. Nothing is dropped yet.
    Announcing,
    /// The alert was taken: the oldest segments may go.
    Dropping {
        dropped: u64,
        first_seq: Option<u64>,
        last_seq: Option<u64>,
    },
}

#[derive(Debug)]
struct Inner {
    segs: VecDeque<Seg>,
    tail: Option<File>,
    reader: Option<(u64, File)>,
    confirmed: Cursor,
    sent: Cursor,
    /// Bytes of unconfirmed frames.
    bytes: u64,
    full: Full,
    health: Vec<Alert>,
    stop: bool,
    /// When `head` was last written.
    head_written: Option<std::time::Instant>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    /// Named in alerts and messages (`syslog tls:HOST:PORT`).
    sink: String,
    max_bytes: u64,
    seg_max: u64,
    inner: Mutex<Inner>,
    wake: Condvar,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Parse the frames of one segment; returns them and the length of the valid prefix.
fn scan(data: &[u8]) -> (Vec<Frame>, u64) {
    let mut frames = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let rest = &data[at..];
        let Some(sp) = rest.iter().take(8).position(|&b| b == b' ') else {
            break;
        };
        let Some(n) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let Some(msg) = rest.get(sp + 1..sp + 1 + n) else {
            break;
        };
        at += sp + 1 + n;
        frames.push(Frame {
            end: at as u64,
            seq: frame_seq(msg),
        });
    }
    (frames, at as u64)
}

/// The `seq` in a frame's MSG (the JSON after the structured data), 0 when not found.
fn frame_seq(msg: &[u8]) -> u64 {
    let Ok(line) = super::rfc5424::parse(msg) else {
        return 0;
    };
    serde_json::from_slice::<serde_json::Value>(line.msg)
        .ok()
        .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        .unwrap_or(0)
}

impl Queue {
    /// Open (or create) the queue in `dir`, keeping what an earlier run left unconfirmed.
    pub fn open(dir: &Path, sink: &str, max_bytes: u64) -> std::io::Result<Queue> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut ids: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut segs = VecDeque::new();
        for id in ids {
            let p = seg_path(dir, id);
            let data = std::fs::read(&p)?;
            let (frames, valid) = scan(&data);
            if valid < data.len() as u64 {
                tracing::warn!(
                    "{sink}: queue segment {} ends with {} byte(s) of a cut frame (a crash mid-write); truncated",
                    crate::sanitize::Name(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())),
                    data.len() as u64 - valid
                );
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)?
                    .set_len(valid)?;
            }
            segs.push_back(Seg { id, frames });
        }
        let head = std::fs::read_to_string(dir.join("head"))
            .ok()
            .and_then(|s| {
                let (a, b) = s.trim().split_once(' ')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            });
        let first = segs.front().map_or(0, |s| s.id);
        let mut confirmed = Cursor { seg: first, idx: 0 };
        if let Some((seg, off)) = head {
            if let Some(s) = segs.iter().find(|s| s.id == seg) {
                let idx = if off == 0 {
                    Some(0)
                } else {
                    s.frames.iter().position(|f| f.end == off).map(|i| i + 1)
                };
                if let Some(idx) = idx {
                    confirmed = Cursor { seg, idx };
                }
            }
        }
        // Segments wholly before the head were confirmed: remove them.
        while segs.front().is_some_and(|s| s.id < confirmed.seg) {
            if let Some(s) = segs.pop_front() {
                let _ = std::fs::remove_file(seg_path(dir, s.id));
            }
        }
        let seg_max = (max_bytes / 8).clamp(4096, 4 << 20);
        let q = Queue {
            dir: dir.to_path_buf(),
            sink: sink.to_string(),
            max_bytes,
            seg_max,
            inner: Mutex::new(Inner {
                segs,
                tail: None,
                reader: None,
                confirmed,
                sent: confirmed,
                bytes: 0,
                full: Full::No,
                health: Vec::new(),
                stop: false,
                head_written: None,
            }),
            wake: Condvar::new(),
        };
        {
            let mut g = q.lock();
            g.bytes = Self::bytes_from(&g, confirmed);
        }
        Ok(q)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes_from(g: &Inner, c: Cursor) -> u64 {
        g.segs
            .iter()
            .filter(|s| s.id >= c.seg)
            .map(|s| {
                if s.id == c.seg {
                    s.len() - s.start_of(c.idx)
                } else {
                    s.len()
                }
            })
            .sum()
    }

    /// Unconfirmed records and their bytes.
    pub fn backlog(&self) -> (u64, u64) {
        let g = self.lock();
        let n = g
            .segs
            .iter()
            .filter(|s| s.id >= g.confirmed.seg)
            .map(|s| {
                if s.id == g.confirmed.seg {
                    s.frames.len().saturating_sub(g.confirmed.idx) as u64
                } else {
                    s.frames.len() as u64
                }
            })
            .sum();
        (n, g.bytes)
    }

    /// Append one frame (the record `seq`). Never waits on the network.
    pub fn push(&self, frame: &[u8], seq: u64) -> std::io::Result<()> {
        let mut g = self.lock();
        if g.tail.is_none() || g.segs.back().is_some_and(|s| s.len() >= self.seg_max) {
            // A new segment, or an empty one an earlier run left: append to it. A non-empty
            // segment of an earlier run is never appended to (it may end in a cut frame).
            let reuse = g.tail.is_none() && g.segs.back().is_some_and(|s| s.len() == 0);
            let id = match g.segs.back() {
                Some(s) if reuse => s.id,
                Some(s) => s.id + 1,
                None => 0,
            };
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(seg_path(&self.dir, id))?;
            g.tail = Some(f);
            if !reuse {
                g.segs.push_back(Seg {
                    id,
                    frames: Vec::new(),
                });
            }
        }
        if let Some(f) = g.tail.as_mut() {
            if let Err(e) = f.write_all(frame) {
                // The segment may now end in a cut frame: start a new one next time (the
                // cut is truncated at the next open).
                g.tail = None;
                if let Some(s) = g.segs.back() {
                    let id = s.id;
                    g.segs.push_back(Seg {
                        id: id + 1,
                        frames: Vec::new(),
                    });
                }
                return Err(e);
            }
        }
        if let Some(s) = g.segs.back_mut() {
            let end = s.len() + frame.len() as u64;
            s.frames.push(Frame { end, seq });
        }
        g.bytes += frame.len() as u64;
        if g.bytes > self.max_bytes {
            match g.full {
                Full::No => {
                    g.full = Full::Announcing;
                    let a = self.full_alert(&g);
                    g.health.push(a);
                }
                Full::Announcing => {}
                Full::Dropping { .. } => self.drop_oldest(&mut g),
            }
        }
        drop(g);
        self.wake.notify_all();
        Ok(())
    }

    fn full_alert(&self, g: &Inner) -> Alert {
        let mut a = Alert::new(Kind::Health, Severity::High);
        a.rule = Some("syslog-queue-full".into());
        let n: usize = g.segs.iter().map(|s| s.frames.len()).sum();
        a.detail.insert("sink".into(), self.sink.clone().into());
        a.detail.insert(
            "message".into(),
            format!(
                "the queue for {} is full ({} bytes of undelivered records, bound {}): the receiver is down or too slow; from now on the oldest undelivered records are dropped, oldest first",
                self.sink, g.bytes, self.max_bytes
            )
            .into(),
        );
        a.detail.insert("queue_bytes".into(), g.bytes.into());
        a.detail.insert("queue_records".into(), n.into());
        a.detail.insert("max_bytes".into(), self.max_bytes.into());
        a
    }

    /// Drop whole segments, oldest first, until the backlog fits (the tail segment stays).
    fn drop_oldest(&self, g: &mut Inner) {
        while g.bytes > self.max_bytes && g.segs.len() > 1 {
            let Some(s) = g.segs.pop_front() else { break };
            let from = if s.id == g.confirmed.seg {
                g.confirmed.idx
            } else {
                0
            };
            let gone = &s.frames[from.min(s.frames.len())..];
            g.bytes -= s.len() - s.start_of(from);
            if let Full::Dropping {
                dropped,
                first_seq,
                last_seq,
            } = &mut g.full
            {
                *dropped += gone.len() as u64;
                if let Some(f) = gone.iter().find(|f| f.seq != 0) {
                    first_seq.get_or_insert(f.seq);
                }
                if let Some(f) = gone.iter().rev().find(|f| f.seq != 0) {
                    *last_seq = Some(f.seq);
                }
            }
            let _ = std::fs::remove_file(seg_path(&self.dir, s.id));
            let next = Cursor {
                seg: g.segs.front().map_or(s.id + 1, |n| n.id),
                idx: 0,
            };
            if g.confirmed.seg <= s.id {
                g.confirmed = next;
            }
            if g.sent.seg <= s.id {
                g.sent = next;
            }
            if g.reader.as_ref().is_some_and(|(id, _)| *id == s.id) {
                g.reader = None;
            }
        }
        self.write_head(g);
    }

    /// Health alerts waiting to be written (the queue became full, or drained after
    /// dropping). Taking the "full" alert is what allows dropping to start.
    pub fn take_health(&self) -> Vec<Alert> {
        let mut g = self.lock();
        if matches!(g.full, Full::Announcing) {
            g.full = Full::Dropping {
                dropped: 0,
                first_seq: None,
                last_seq: None,
            };
        }
        std::mem::take(&mut g.health)
    }

    /// For the sender: an alert of its own (a refused certificate).
    pub fn post_health(&self, a: Alert) {
        self.lock().health.push(a);
    }

    /// Up to `max` bytes of whole frames from the first unsent one, and the cursor after
    /// them; waits up to `wait` for a frame when none is unsent. `None`: nothing to send.
    pub fn next_batch(&self, max: usize, wait: Duration) -> Option<(Vec<u8>, Cursor)> {
        let mut g = self.lock();
        if self.at_end(&g, g.sent) && !g.stop {
            g = self
                .wake
                .wait_timeout(g, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let mut c = self.normalize(&g, g.sent);
        let seg = g.segs.iter().find(|s| s.id == c.seg)?;
        if c.idx >= seg.frames.len() {
            return None;
        }
        let start = seg.start_of(c.idx);
        let mut end_idx = c.idx;
        while end_idx < seg.frames.len()
            && (end_idx == c.idx || seg.frames[end_idx].end - start <= max as u64)
        {
            end_idx += 1;
        }
        let end = seg.start_of(end_idx);
        let id = seg.id;
        let mut buf = vec![0u8; (end - start) as usize];
        if g.reader.as_ref().is_none_or(|(rid, _)| *rid != id) {
            let f = File::open(seg_path(&self.dir, id)).ok()?;
            g.reader = Some((id, f));
        }
        let (_, f) = g.reader.as_ref()?;
        f.read_exact_at(&mut buf, start).ok()?;
        c.idx = end_idx;
        Some((buf, self.normalize(&g, c)))
    }

    fn at_end(&self, g: &Inner, c: Cursor) -> bool {
        let c = self.normalize(g, c);
        g.segs
            .iter()
            .find(|s| s.id == c.seg)
            .is_none_or(|s| c.idx >= s.frames.len())
    }

    /// A cursor at the end of a segment that has a successor points at the successor.
    fn normalize(&self, g: &Inner, mut c: Cursor) -> Cursor {
        if let Some(front) = g.segs.front() {
            if c.seg < front.id {
                c = Cursor {
                    seg: front.id,
                    idx: 0,
                };
            }
        }
        loop {
            let Some(pos) = g.segs.iter().position(|s| s.id == c.seg) else {
                return c;
            };
            if c.idx < g.segs[pos].frames.len() {
                return c;
            }
            match g.segs.get(pos + 1) {
                Some(n) => c = Cursor { seg: n.id, idx: 0 },
                None => return c,
            }
        }
    }

    /// Frames up to `c` were written to the current connection.
    pub fn mark_sent(&self, c: Cursor) {
        let mut g = self.lock();
        if c > g.sent {
            g.sent = c;
        }
    }

    /// Nothing is waiting to be written to the current connection.
    pub fn all_sent(&self) -> bool {
        let g = self.lock();
        self.at_end(&g, g.sent)
    }

    /// A new connection: send again from the first unconfirmed frame.
    pub fn rewind(&self) {
        let mut g = self.lock();
        g.sent = g.confirmed;
    }

    /// Frames before `c` are confirmed: they leave the queue.
    pub fn confirm(&self, c: Cursor) {
        let mut g = self.lock();
        let c = self.normalize(&g, c);
        if c <= g.confirmed {
            return;
        }
        g.confirmed = c;
        g.bytes = Self::bytes_from(&g, c);
        let mut removed = Vec::new();
        while g.segs.len() > 1 && g.segs.front().is_some_and(|s| s.id < c.seg) {
            if let Some(s) = g.segs.pop_front() {
                removed.push(s.id);
            }
        }
        if g.bytes <= self.max_bytes / 2 {
            if let Full::Dropping {
                dropped,
                first_seq,
                last_seq,
            } = std::mem::take(&mut g.full)
            {
                if dropped > 0 {
                    let mut a = Alert::new(Kind::Health, Severity::High);
                    a.rule = Some("syslog-queue-dropped".into());
                    let range = match (first_seq, last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a}–{b})"),
                        _ => String::new(),
                    };
                    a.detail.insert("sink".into(), self.sink.clone().into());
                    a.detail.insert(
                        "message".into(),
                        format!(
                            "the queue for {} has drained; {dropped} record(s){range} were dropped while it was full and never reached the receiver (the local alert log has them)",
                            self.sink
                        )
                        .into(),
                    );
                    a.detail.insert("dropped".into(), dropped.into());
                    if let Some(s) = first_seq {
                        a.detail.insert("first_seq".into(), s.into());
                    }
                    if let Some(s) = last_seq {
                        a.detail.insert("last_seq".into(), s.into());
                    }
                    g.health.push(a);
                }
            }
        }
        // The head file is rewritten at most once a second (a crash in between only resends
        // a little more), and before the segments it moved past are removed; never under
        // the lock the alerter takes.
        let due = !removed.is_empty()
            || g.head_written
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        let head = due.then(|| self.head_of(&g));
        if due {
            g.head_written = Some(std::time::Instant::now());
        }
        drop(g);
        if let Some(h) = head {
            self.persist_head(h);
        }
        for id in removed {
            let _ = std::fs::remove_file(seg_path(&self.dir, id));
        }
    }

    /// The first unconfirmed frame as `(segment, offset)`.
    fn head_of(&self, g: &Inner) -> (u64, u64) {
        let c = self.normalize(g, g.confirmed);
        let off = g
            .segs
            .iter()
            .find(|s| s.id == c.seg)
            .map_or(0, |s| s.start_of(c.idx));
        (c.seg, off)
    }

    /// Persist the first unconfirmed frame (temp + rename; a crash before it only resends).
    fn persist_head(&self, (seg, off): (u64, u64)) {
        let tmp = self.dir.join("head.tmp");
        let ok = std::fs::write(&tmp, format!("{seg} {off}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("head")));
        if let Err(e) = ok {
            tracing::debug!("{}: could not save the queue head: {e}", self.sink);
        }
    }

    /// Persist the head now (after dropping segments, under the lock: rare).
    fn write_head(&self, g: &Inner) {
        self.persist_head(self.head_of(g));
    }

    /// Ask the sender to finish.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    pub fn stopping(&self) -> bool {
        self.lock().stop
    }

    /// Sleep up to `d`, waking early on a new frame or [`stop`](Self::stop).
    pub fn wait(&self, d: Duration) {
        let g = self.lock();
        if !g.stop {
            let _ = self.wake.wait_timeout(g, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Vec<u8> {
        let msg = format!(
            "<86>1 - h kmsentry 1 modified - {{\"seq\":{seq},\"pad\":\"{}\"}}",
            "x".repeat(100)
        );
        super::super::syslog::frame_octet_counted(&msg)
    }

    fn drain(q: &Queue) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some((data, c)) = q.next_batch(1 << 20, Duration::ZERO) {
            let (frames, _) = scan(&data);
            seqs.extend(frames.iter().map(|f| f.seq));
            q.mark_sent(c);
        }
        seqs
    }

    #[test]
    fn frames_come_out_in_order_and_survive_a_reopen_until_confirmed() {
        let t = tempfile::tempdir().unwrap();
        let q = Queue::open(t.path(), "syslog tls:x:1", 1 << 20).unwrap();
        for s in 1..=5 {
            q.push(&frame(s), s).unwrap();
        }
        assert_eq!(drain(&q), [1, 2, 3, 4, 5]);
        // Sent but not confirmed: a new connection sends them again.
        q.rewind();
        let (data, c) = q.next_batch(350, Duration::ZERO).unwrap();
        assert_eq!(scan(&data).0.len(), 2, "whole frames up to the byte limit");
        q.confirm(c);
        drop(q);
        let q = Queue::open(t.path(), "syslog tls:x:1", 1 << 20).unwrap();
        assert_eq!(q.backlog().0, 3);
        assert_eq!(drain(&q), [3, 4, 5]);
    }

    #[test]
    fn a_cut_frame_at_the_end_is_truncated_at_open() {
        let t = tempfile::tempdir().unwrap();
        let q = Queue::open(t.path(), "s", 1 << 20).unwrap();
        q.push(&frame(1), 1).unwrap();
        drop(q);
        let seg = seg_path(t.path(), 0);
        let mut data = std::fs::read(&seg).unwrap();
        data.extend_from_slice(&frame(2)[..20]);
        std::fs::write(&seg, &data).unwrap();
        let q = Queue::open(t.path(), "s", 1 << 20).unwrap();
        q.push(&frame(3), 3).unwrap();
        assert_eq!(drain(&q), [1, 3]);
    }

    #[test]
    fn a_full_queue_says_so_once_before_dropping_the_oldest() {
        let t = tempfile::tempdir().unwrap();
        let q = Queue::open(t.path(), "syslog tls:x:1", 8192).unwrap();
        let mut s = 0;
        while q.lock().health.is_empty() {
            s += 1;
            q.push(&frame(s), s).unwrap();
        }
        // More records while the alert waits: nothing is dropped yet, no second alert.
        for _ in 0..50 {
            s += 1;
            q.push(&frame(s), s).unwrap();
        }
        assert_eq!(
            q.backlog().0,
            s,
            "nothing dropped before the alert is taken"
        );
        let h = q.take_health();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].rule.as_deref(), Some("syslog-queue-full"));
        s += 1;
        q.push(&frame(s), s).unwrap();
        let (n, bytes) = q.backlog();
        assert!(bytes <= 8192 && n < s, "{n} records, {bytes} bytes");
        let seqs = drain(&q);
        assert_eq!(*seqs.last().unwrap(), s, "the newest are kept");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(q.take_health().is_empty());
        // Drained: one alert says what was dropped.
        let end = q.lock().sent;
        q.confirm(end);
        let h = q.take_health();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].rule.as_deref(), Some("syslog-queue-dropped"));
        assert_eq!(h[0].detail["first_seq"], 1);
        assert_eq!(
            h[0].detail["last_seq"].as_u64().unwrap() + 1,
            seqs[0],
            "the dropped range ends where the kept records start"
        );
    }
}

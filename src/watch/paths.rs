//! The daemon's set of watched paths, kept compact: a 100k-entry policy must fit a daemon of a
//! few tens of MiB. Path bytes live in one append-only arena; entries are (offset, length,
//! marks) sorted by path bytes; file handles map to arena spans by a 64-bit hash.

use std::collections::HashMap;

/// The fanotify masks placed on one path (notification group, permission group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Marks {
    /// fanotify mask bits all fit in 32 bits; 100k entries × 8 bytes saved.
    pub notify: u32,
    pub perm: u32,
}

/// A byte range in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

/// Watched paths and their marks, plus the file-handle index.
#[derive(Default)]
pub struct Watched {
    arena: Vec<u8>,
    /// Sorted by path bytes, unique.
    entries: Vec<(Span, Marks)>,
    /// FNV-1a 64 of a file handle → the path it was taken from.
    handles: HashMap<u64, Span>,
}

/// FNV-1a, 64 bits: handles are a few dozen bytes and the index needs no secret key (the
/// kernel chooses handle bytes, not an attacker). A collision (p ≈ 10⁻⁹ at 10⁵ entries)
/// would attribute an event to the other path, whose re-capture then finds no change.
pub fn handle_key(h: &[u8]) -> u64 {
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in h {
        x ^= u64::from(*b);
        x = x.wrapping_mul(0x0000_0100_0000_01b3);
    }
    x
}

impl Watched {
    /// Build from unsorted (path, marks) pairs; duplicate paths have their marks merged.
    pub fn build(mut items: Builder) -> Watched {
        let arena = std::mem::take(&mut items.arena);
        let mut entries = std::mem::take(&mut items.entries);
        entries.sort_unstable_by(|a, b| slice(&arena, a.0).cmp(slice(&arena, b.0)));
        // Merge duplicates and copy each unique path once into an exact-size arena.
        let mut out: Vec<(Span, Marks)> = Vec::with_capacity(entries.len());
        let mut last: Option<Span> = None;
        let mut bytes = 0usize;
        for (span, m) in &entries {
            match (last, out.last_mut()) {
                (Some(l), Some(prev)) if slice(&arena, l) == slice(&arena, *span) => {
                    prev.1.notify |= m.notify;
                    prev.1.perm |= m.perm;
                }
                _ => {
                    bytes += span.len as usize;
                    out.push((*span, *m));
                    last = Some(*span);
                }
            }
        }
        drop(entries);
        let mut compact = Vec::with_capacity(bytes);
        for e in &mut out {
            let old = e.0;
            if let Some(span) = push(&mut compact, slice(&arena, old)) {
                e.0 = span;
            }
        }
        drop(arena);
        out.shrink_to_fit();
        Watched {
            arena: compact,
            entries: out,
            handles: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, path: &[u8]) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(s, _)| slice(&self.arena, *s).cmp(path))
    }

    /// The `i`th entry in path order: its path, marks and span.
    pub fn at(&self, i: usize) -> Option<(&[u8], Marks, Span)> {
        self.entries
            .get(i)
            .map(|(s, m)| (slice(&self.arena, *s), *m, *s))
    }

    /// Index of `path`, if watched.
    pub fn index(&self, path: &[u8]) -> Option<usize> {
        self.find(path).ok()
    }

    pub fn marks(&self, path: &[u8]) -> Marks {
        self.find(path)
            .map(|i| self.entries[i].1)
            .unwrap_or_default()
    }

    /// Set `path`'s marks (adding the path if new). Returns its span.
    pub fn set(&mut self, path: &[u8], marks: Marks) -> Option<Span> {
        match self.find(path) {
            Ok(i) => {
                self.entries[i].1 = marks;
                Some(self.entries[i].0)
            }
            Err(i) => {
                let span = push(&mut self.arena, path)?;
                self.entries.insert(i, (span, marks));
                Some(span)
            }
        }
    }

    /// Forget `path` (its bytes stay in the arena until the next rebuild).
    /// Forget `path`; whether it was there.
    pub fn remove(&mut self, path: &[u8]) -> bool {
        match self.find(path) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Record that `handle` names `span`'s path.
    pub fn add_handle(&mut self, handle: &[u8], span: Span) {
        self.handles.insert(handle_key(handle), span);
    }

    /// The path a file handle was taken from.
    pub fn by_handle(&self, handle: &[u8]) -> Option<&[u8]> {
        self.handles
            .get(&handle_key(handle))
            .map(|s| slice(&self.arena, *s))
    }

    /// Every (path, marks), in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Marks)> {
        self.entries
            .iter()
            .map(|(s, m)| (slice(&self.arena, *s), *m))
    }

    /// Bytes held (for status).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<(Span, Marks)>()
            + self.handles.capacity() * (8 + std::mem::size_of::<Span>() + 1)
    }
}

/// Collects (path, marks) pairs into one arena.
#[derive(Default)]
pub struct Builder {
    arena: Vec<u8>,
    entries: Vec<(Span, Marks)>,
    last_dir: Option<Vec<u8>>,
}

impl Builder {
    pub fn add(&mut self, path: &[u8], marks: Marks) {
        if let Some(span) = push(&mut self.arena, path) {
            self.entries.push((span, marks));
        }
    }

    /// Add a directory's marks, skipping it when it was the last directory added (children
    /// of one directory arrive together, so most repeats are caught here).
    pub fn add_dir(&mut self, path: &[u8], marks: Marks) {
        if self.last_dir.as_deref() == Some(path) {
            return;
        }
        self.last_dir = Some(path.to_vec());
        self.add(path, marks);
    }
}

fn push(arena: &mut Vec<u8>, path: &[u8]) -> Option<Span> {
    let start = u32::try_from(arena.len()).ok()?;
    let len = u32::try_from(path.len()).ok()?;
    start.checked_add(len)?;
    arena.extend_from_slice(path);
    Some(Span { start, len })
}

fn slice(arena: &[u8], s: Span) -> &[u8] {
    arena
        .get(s.start as usize..(s.start as usize + s.len as usize))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u32) -> Marks {
        Marks { notify: n, perm: 0 }
    }

    #[test]
    fn builds_sorted_merges_duplicates_and_finds() {
        let mut b = Builder::default();
        b.add(b"/b", m(1));
        b.add(b"/a", m(2));
        b.add(b"/b", m(4));
        let mut w = Watched::build(b);
        assert_eq!(w.len(), 2);
        assert_eq!(w.marks(b"/b"), m(5));
        assert_eq!(w.marks(b"/c"), Marks::default());
        let span = w.set(b"/aa", m(8)).unwrap();
        let order: Vec<&[u8]> = w.iter().map(|(p, _)| p).collect();
        assert_eq!(order, vec![&b"/a"[..], b"/aa", b"/b"]);
        w.add_handle(&[1, 2, 3], span);
        assert_eq!(w.by_handle(&[1, 2, 3]), Some(&b"/aa"[..]));
        assert_eq!(w.by_handle(&[1, 2, 4]), None);
        w.remove(b"/a");
        assert_eq!(w.index(b"/a"), None);
        assert_eq!(w.index(b"/aa"), Some(0));
        // A handle keeps naming its path after other entries move.
        assert_eq!(w.by_handle(&[1, 2, 3]), Some(&b"/aa"[..]));
    }

    #[test]
    fn handle_keys_differ() {
        assert_ne!(handle_key(&[1, 0, 0, 0, 5]), handle_key(&[1, 0, 0, 0, 6]));
        assert_eq!(handle_key(b"x"), handle_key(b"x"));
    }
}

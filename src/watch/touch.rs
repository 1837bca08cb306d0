//! What happened to one path between two checks: the coalesced event masks, and the
//! namespace events (created, deleted, moved in, moved out) in the order the kernel reported
//! them, each with the process that caused it.
//!
//! The checker captures a path some milliseconds after its events; by then a short-lived
//! file may be gone again. The capture alone would then show "absent before, absent now"
//! and nothing would be reported; [`plan`] turns the recorded events into one alert each, so
//! a file created and deleted within 2 ms is reported as `created` and `deleted`, the
//! creation with what could be learnt (name, process) and the capture's attributes only
//! where they belong to the final state.
//!
//! Pure: no clock reads beyond what callers pass in, no I/O.

use crate::proc::ProcessInfo;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One namespace event on the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Created,
    MovedIn,
    Deleted,
    MovedOut,
}

impl Op {
    fn arrives(self) -> bool {
        matches!(self, Op::Created | Op::MovedIn)
    }

    /// Deleted or moved away.
    pub fn departs(self) -> bool {
        !self.arrives()
    }

    /// How the op is named in `detail.events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Created => "created",
            Op::MovedIn => "moved_in",
            Op::Deleted => "deleted",
            Op::MovedOut => "moved_out",
        }
    }
}

/// The namespace events one fanotify event carries. The kernel merges identical events of
/// one inode (same name, same process) into one mask, so a mask may hold an arrival and a
/// departure; for one inode an arrival must come first.
pub fn ops_of(mask: u64) -> impl Iterator<Item = Op> {
    [
        (libc::FAN_CREATE, Op::Created),
        (libc::FAN_MOVED_TO, Op::MovedIn),
        (libc::FAN_MOVED_FROM, Op::MovedOut),
        (libc::FAN_DELETE, Op::Deleted),
    ]
    .into_iter()
    .filter(move |(bit, _)| mask & bit != 0)
    .map(|(_, op)| op)
}

/// Most namespace events kept per path between two checks; more are counted, not kept.
pub const MAX_OPS: usize = 64;

/// The events of one path waiting to be checked.
#[derive(Debug)]
pub struct Touch {
    /// Arrival order among all pending paths: due paths are checked in this order, so
    /// deletions (and everything else) are reported in the order they happened.
    pub seq: u64,
    pub first: Instant,
    pub last: Instant,
    pub mask: u64,
    /// The last process seen changing the path.
    pub who: Option<ProcessInfo>,
    pub ops: Vec<(Op, Option<ProcessInfo>)>,
    /// Namespace events beyond [`MAX_OPS`].
    pub ops_dropped: u64,
}

impl Touch {
    pub fn new(seq: u64, now: Instant) -> Touch {
        Touch {
            seq,
            first: now,
            last: now,
            mask: 0,
            who: None,
            ops: Vec::new(),
            ops_dropped: 0,
        }
    }

    /// Add one event.
    pub fn add(&mut self, now: Instant, mask: u64, who: Option<ProcessInfo>) {
        self.last = now;
        self.mask |= mask;
        for op in ops_of(mask) {
            if self.ops.len() < MAX_OPS {
                self.ops.push((op, who.clone()));
            } else {
                self.ops_dropped += 1;
            }
        }
        if who.is_some() {
            self.who = who;
        }
    }
}

/// How long a reported departure waits for its namespace event.
const DEPARTURE_PAIRING: Duration = Duration::from_secs(5);

/// Departures reported before their namespace event came. A file's own `DELETE_SELF` (or
/// `MOVE_SELF`) can be checked, and the deletion reported from the capture, before the
/// directory's `DELETE` (or `MOVED_FROM`) of the same unlink arrives: that one is not a second
/// deletion.
#[derive(Debug, Default)]
pub struct Departures(HashMap<Vec<u8>, Instant>);

impl Departures {
    /// Before a check: when the path was already reported gone and `t` starts with a
    /// departure, that departure is the one already reported; drop it.
    pub fn pair(&mut self, path: &[u8], prev: bool, t: &mut Touch) {
        let fresh = self
            .0
            .get(path)
            .is_some_and(|at| at.elapsed() < DEPARTURE_PAIRING);
        if !prev && fresh && t.ops.first().is_some_and(|(o, _)| o.departs()) {
            self.0.remove(path);
            t.ops.remove(0);
        }
    }

    /// After a check: a departure reported from the capture alone (no namespace event among
    /// `t`'s) waits for its namespace event.
    pub fn note(&mut self, path: &[u8], prev: bool, live: bool, t: &Touch) {
        if prev && !live && !t.ops.iter().any(|(o, _)| o.departs()) {
            if self.0.len() > 4096 {
                self.0.retain(|_, at| at.elapsed() < DEPARTURE_PAIRING);
            }
            self.0.insert(path.to_vec(), Instant::now());
        }
    }
}

/// One alert the checker should write for a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The op this alert reports (`None`: derived from the capture alone).
    pub op: Option<usize>,
    pub kind: StepKind,
    /// This alert carries the state before (the last observation): the first departure.
    pub with_prev: bool,
    /// This alert carries the capture: the arrival that produced the live entry.
    pub with_live: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Created,
    /// Renamed onto the path (`direction: to`).
    RenamedTo,
    Deleted,
    /// Renamed away (`direction: from`).
    RenamedFrom,
    /// Present before and now: compare the two (modified, attrib, or renamed over).
    Compare,
}

/// The alerts for a path that existed (`prev`) or not before, and exists (`live`) or not now,
/// given its namespace events in order.
pub fn plan(prev: bool, live: bool, ops: &[Op]) -> Vec<Step> {
    let step = |op, kind, with_prev, with_live| Step {
        op,
        kind,
        with_prev,
        with_live,
    };
    if prev && live {
        // Replaced or changed in place: one comparison of the two states (its alert lists
        // the events in `detail.events`).
        return vec![step(None, StepKind::Compare, true, true)];
    }
    if ops.is_empty() {
        return match (prev, live) {
            (false, true) => vec![step(None, StepKind::Created, false, true)],
            (true, false) => vec![step(None, StepKind::Deleted, true, false)],
            _ => Vec::new(),
        };
    }
    let last_arrival = ops.iter().rposition(|o| o.arrives());
    let first_departure = ops.iter().position(|o| o.departs());
    let last_departure = ops.iter().rposition(|o| o.departs());
    let mut out = Vec::with_capacity(ops.len() + 1);
    for (i, op) in ops.iter().enumerate() {
        let s = match op {
            Op::Created | Op::MovedIn => {
                let final_arrival =
                    live && Some(i) == last_arrival && last_departure.is_none_or(|d| d < i);
                let kind = if *op == Op::Created {
                    StepKind::Created
                } else {
                    StepKind::RenamedTo
                };
                step(Some(i), kind, false, final_arrival)
            }
            Op::Deleted | Op::MovedOut => {
                let kind = if *op == Op::Deleted {
                    StepKind::Deleted
                } else {
                    StepKind::RenamedFrom
                };
                step(Some(i), kind, prev && Some(i) == first_departure, false)
            }
        };
        out.push(s);
    }
    // Present now, but the arrival that made it so is not (yet) among the events: report the
    // live entry as created, so the state the checker records is reported once.
    if live && !out.iter().any(|s| s.with_live) {
        out.push(step(None, StepKind::Created, false, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Op::*;
    use StepKind as K;

    fn kinds(v: &[Step]) -> Vec<(StepKind, bool, bool)> {
        v.iter()
            .map(|s| (s.kind, s.with_prev, s.with_live))
            .collect()
    }

    #[test]
    fn a_merged_mask_lists_arrival_before_departure() {
        let ops: Vec<Op> = ops_of(libc::FAN_CREATE | libc::FAN_DELETE).collect();
        assert_eq!(ops, [Created, Deleted]);
        let ops: Vec<Op> = ops_of(libc::FAN_MODIFY).collect();
        assert!(ops.is_empty());
    }

    #[test]
    fn a_file_gone_before_its_check_is_created_and_deleted() {
        assert_eq!(
            kinds(&plan(false, false, &[Created, Deleted])),
            [(K::Created, false, false), (K::Deleted, false, false)]
        );
        // Only its creation seen so far: the deletion comes as its own event later.
        assert_eq!(
            kinds(&plan(false, false, &[Created])),
            [(K::Created, false, false)]
        );
        // Nothing happened.
        assert!(plan(false, false, &[]).is_empty());
    }

    #[test]
    fn only_the_final_arrival_carries_the_capture() {
        assert_eq!(
            kinds(&plan(false, true, &[Created, Deleted, Created])),
            [
                (K::Created, false, false),
                (K::Deleted, false, false),
                (K::Created, false, true)
            ]
        );
        assert_eq!(kinds(&plan(false, true, &[])), [(K::Created, false, true)]);
        // The arrival not seen yet: still one alert carries the live state.
        assert_eq!(
            kinds(&plan(false, true, &[Deleted])),
            [(K::Deleted, false, false), (K::Created, false, true)]
        );
    }

    #[test]
    fn only_the_first_departure_carries_the_previous_state() {
        assert_eq!(
            kinds(&plan(true, false, &[Deleted, Created, MovedOut])),
            [
                (K::Deleted, true, false),
                (K::Created, false, false),
                (K::RenamedFrom, false, false)
            ]
        );
        assert_eq!(kinds(&plan(true, false, &[])), [(K::Deleted, true, false)]);
        assert_eq!(
            kinds(&plan(true, true, &[Deleted, Created])),
            [(K::Compare, true, true)]
        );
    }

    #[test]
    fn a_deletion_reported_from_delete_self_pairs_with_the_later_delete() {
        let now = Instant::now();
        let mut d = Departures::default();
        // DELETE_SELF checked first: no namespace op, reported from the capture.
        let mut first = Touch::new(1, now);
        first.add(now, libc::FAN_DELETE_SELF, None);
        d.note(b"/k", true, false, &first);
        // The directory's DELETE: the same unlink.
        let mut second = Touch::new(2, now);
        second.add(now, libc::FAN_DELETE, None);
        d.pair(b"/k", false, &mut second);
        assert!(second.ops.is_empty());
        // A later create + delete of the same name is its own pair.
        let mut third = Touch::new(3, now);
        third.add(now, libc::FAN_CREATE, None);
        third.add(now, libc::FAN_DELETE, None);
        d.pair(b"/k", false, &mut third);
        assert_eq!(third.ops.len(), 2);
    }

    #[test]
    fn touches_keep_every_event_in_order_up_to_a_bound() {
        let now = Instant::now();
        let mut t = Touch::new(1, now);
        t.add(now, libc::FAN_CREATE, None);
        t.add(now, libc::FAN_MODIFY, None);
        t.add(now, libc::FAN_DELETE, None);
        assert_eq!(
            t.ops.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [Created, Deleted]
        );
        for _ in 0..MAX_OPS {
            t.add(now, libc::FAN_CREATE, None);
        }
        assert_eq!(t.ops.len(), MAX_OPS);
        assert_eq!(t.ops_dropped, 2);
    }
}

//! Exit statuses shared by every command, and how two outcomes combine.
//!
//! 0 clean · 1 drift found · 2 usage or policy error · 3 baseline, store or I/O integrity
//! error. When outcomes meet, the most severe wins (drift plus an unreadable file exits 3).

/// A command's outcome as the process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitCode {
    /// Nothing to report.
    Clean = 0,
    /// Drift found between the baseline and the live state.
    Drift = 1,
    /// Bad command line or policy.
    Usage = 2,
    /// Missing, corrupt or tampered baseline or store, or an I/O error while checking.
    Integrity = 3,
}

impl ExitCode {
    /// The more severe of two outcomes.
    #[must_use]
    pub fn combine(self, other: ExitCode) -> ExitCode {
        self.max(other)
    }

    /// The numeric status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[cfg(test)]
mod tests {
    use super::ExitCode::*;

    #[test]
    fn most_severe_outcome_wins() {
        assert_eq!(Clean.combine(Drift), Drift);
        assert_eq!(Drift.combine(Integrity), Integrity);
        assert_eq!(Integrity.combine(Usage), Integrity);
        assert_eq!(Clean.combine(Clean), Clean);
        assert_eq!(Integrity.code(), 3);
    }
}

//! Debian version ordering (`[epoch:]upstream[-revision]`), as `dpkg --compare-versions`:
//! a maintained implementation (the `debversion` crate), wrapped so that an unparseable
//! version is an error the caller reports, never a silent "equal".

use std::cmp::Ordering;

/// A parsed Debian version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version(debversion::Version);

impl Version {
    /// Parse `s`; `None` when it is not a Debian version (empty, bad epoch, illegal bytes).
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        // dpkg's own rules, stricter than the crate's parser: a numeric epoch, an upstream
        // part that starts with a digit, and only the characters policy allows.
        let (epoch, rest) = match s.split_once(':') {
            Some((e, r)) => (Some(e), r),
            None => (None, s),
        };
        if epoch.is_some_and(|e| e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()))
            || !rest.bytes().next().is_some_and(|b| b.is_ascii_digit())
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".+~-:".contains(&b))
        {
            return None;
        }
        s.parse::<debversion::Version>().ok().map(Version)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Compare two version strings; `None` when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Version::parse(a)?.cmp(&Version::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs whose order trips naive comparisons; checked against dpkg itself in
    /// `tests/pkg.rs` where dpkg is installed.
    const TRICKY: &[(&str, &str, Ordering)] = &[
        ("1.0", "1.0", Ordering::Equal),
        ("1.0~rc1", "1.0", Ordering::Less),
        ("1.0~~", "1.0~", Ordering::Less),
        ("1:0.1", "2.0", Ordering::Greater),
        ("3.0.20-1", "3.0.22-1", Ordering::Less),
        ("3.0.9", "3.0.10", Ordering::Less),
        ("1.0-1", "1.0-1+deb12u1", Ordering::Less),
        ("1.0+b1", "1.0", Ordering::Greater),
        ("1.0a", "1.0", Ordering::Greater),
        ("1.0", "1.0.0", Ordering::Less),
        ("0:1.0", "1.0", Ordering::Equal),
    ];

    #[test]
    fn tricky_versions_order_as_dpkg_orders_them() {
        for (a, b, want) in TRICKY {
            assert_eq!(compare(a, b), Some(*want), "{a} vs {b}");
        }
    }

    #[test]
    fn garbage_is_not_a_version() {
        for bad in ["", "x:1.0", "1:", ":1.0", "1.0 beta", "é1", "-1", "abc"] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(compare("1.0", "a:b:c"), None);
    }
}

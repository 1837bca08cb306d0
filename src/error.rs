//! The crate's error type. Every variant knows its exit status; I/O variants carry the
//! operation and the path, policy variants `file:line:col`, integrity variants what failed.
//! `Display` says what failed and names go through [`crate::sanitize::Name`]; the cause sits
//! in `source()`, and `main` prints the chain joined by `: `.

use crate::exit::ExitCode;
use crate::sanitize::Name;
use std::fmt;

/// One problem in a policy file, with its position (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: Vec<u8>,
    pub line: u64,
    pub col: u64,
    pub msg: String,
}

impl fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", Name(&self.file), self.msg)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                Name(&self.file),
                self.line,
                self.col,
                self.msg
            )
        }
    }
}

/// All problems found in one policy (the parser collects every one it can).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyProblem>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Everything that stops a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a named path failed.
    #[error("{}: {op}", Name(.path))]
    Io {
        op: &'static str,
        path: Vec<u8>,
        #[source]
        source: std::io::Error,
    },
    /// The policy could not be read, parsed or compiled.
    #[error("{0}")]
    Policy(PolicyErrors),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The baseline database does not exist.
    #[error("{}: baseline database not found (create one with `kmsentry baseline init`)", Name(.path))]
    DbMissing { path: Vec<u8> },
    /// SQLite refused the database (corrupt, truncated, not a database, locked...).
    #[error("{}: baseline database: {what}{}", Name(.path), db_advice(.source))]
    Db {
        path: Vec<u8>,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The database opened but is not a kmsentry baseline this binary understands.
    #[error("{}: {what}", Name(.path))]
    DbSchema { path: Vec<u8>, what: String },
    /// Something that must verify did not.
    #[error("{0}")]
    Integrity(String),
}

impl Error {
    /// The exit status this error maps to.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Policy(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Io { .. }
            | Error::DbMissing { .. }
            | Error::Db { .. }
            | Error::DbSchema { .. }
            | Error::Integrity(_) => ExitCode::Integrity,
        }
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(op: &'static str, path: impl Into<Vec<u8>>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to do with a baseline that is corrupt or was edited: one wording for every place that
/// finds it (SQLite's own checks here, the seal in `store::seal`).
pub const BAD_BASELINE_ADVICE: &str = "do not trust its verdict; restore the baseline from a \
     known-good copy, or re-create it from a trusted state with `kmsentry baseline init --force`";

/// What a damaged database means and what to do, for the SQLite errors that say so.
fn db_advice(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => format!(
            " (the baseline is corrupt: a damaged disk or copy, or it was edited outside \
             kmsentry; {BAD_BASELINE_ADVICE})"
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_escaped_and_map_to_exit_codes() {
        let e = Error::io(
            "open",
            b"/etc/a\nb".to_vec(),
            std::io::Error::from_raw_os_error(13),
        );
        assert_eq!(e.to_string(), "/etc/a\\nb: open");
        assert_eq!(e.exit_code(), ExitCode::Integrity);

        let p = Error::Policy(PolicyErrors(vec![PolicyProblem {
            file: b"p.yaml".to_vec(),
            line: 3,
            col: 5,
            msg: "unknown key `pathz`, expected one of ...".into(),
        }]));
        assert_eq!(
            p.to_string(),
            "p.yaml:3:5: unknown key `pathz`, expected one of ..."
        );
        assert_eq!(p.exit_code(), ExitCode::Usage);

        let m = Error::DbMissing {
            path: b"/nope.db".to_vec(),
        };
        assert_eq!(m.exit_code(), ExitCode::Integrity);
        assert!(m
            .to_string()
            .starts_with("/nope.db: baseline database not found"));
    }
}

//! `kmsentry log verify F [F…] [--key PUB] [--stopped] [--host H] [--format human|json]`:
//! check an alert log's hash chain (and signed checkpoints), the daemon's JSONL file or what a
//! syslog receiver stored; every break is listed; exit 0 intact, 3 broken, 2 usage.

use super::emit;
use crate::alert::verify::{verify_files, Finding, Options, Place, Report};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::sanitize::{JsonName, Name};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The files of one chain, oldest first (e.g. `alerts.jsonl.2 alerts.jsonl.1 alerts.jsonl`):
    /// the daemon's JSONL log, or the RFC 5424 lines a syslog receiver stored (rsyslog's
    /// `RSYSLOG_SyslogProtocol23Format`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Check every checkpoint's signature with this ed25519 public key (`K.pub` from
    /// `key gen`); the log must hold at least one checkpoint, and a log ending with `stopped`
    /// must end with its checkpoint.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The daemon has stopped: require the log to end with `stopped` and its signed
    /// checkpoint, so any cut of its tail is found (needs --key).
    #[arg(long, requires = "key")]
    stopped: bool,
    /// In a receiver's file holding several hosts' records, check this host's chain (the
    /// syslog HOSTNAME); other lines are skipped.
    #[arg(long, value_name = "HOSTNAME")]
    host: Option<String>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Format {
    Human,
    Json,
}

pub(crate) fn verify(a: &VerifyArgs) -> Result<ExitCode> {
    let key = a
        .key
        .as_deref()
        .map(crate::store::signing::load_verifying_key)
        .transpose()?;
    let opts = Options {
        key,
        stopped: a.stopped,
        host: a.host.clone(),
    };
    let report = verify_files(&a.files, &opts)?;
    let out = match a.format {
        Format::Human => human(&report),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(&report)).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    emit(&None, out.as_bytes())?;
    Ok(if report.intact() {
        ExitCode::Clean
    } else {
        ExitCode::Integrity
    })
}

fn human(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let files: Vec<String> = r.files.iter().map(|f| Name(f).to_string()).collect();
    let seqs = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}–{b})"),
        _ => String::new(),
    };
    let host = r
        .host
        .as_ref()
        .map(|h| format!(" of host {}", Name(h.as_bytes())))
        .unwrap_or_default();
    for p in &r.problems {
        let _ = writeln!(s, "{p}");
    }
    if r.intact() {
        let _ = writeln!(
            s,
            "{}: intact: {} record(s){host}{seqs}{}",
            files.join(", "),
            r.records,
            r.head
                .as_ref()
                .map(|h| format!(", head {}", &h[..16]))
                .unwrap_or_default()
        );
    } else {
        let _ = writeln!(
            s,
            "{}: BROKEN: {} problem(s); {} of {} record(s){host} verified{seqs}",
            files.join(", "),
            r.problems.len(),
            r.verified,
            r.records
        );
    }
    if r.foreign > 0 {
        let _ = writeln!(
            s,
            "  skipped {} line(s) of other programs or hosts",
            r.foreign
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    if r.signatures_checked {
        match &r.last_checkpoint {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "  signed: {} checkpoint(s) verified with key {}; the last ({}) covers seq 1–{}",
                    r.checkpoints, c.key_id, c.at, c.covers_seq
                );
            }
            None => {
                let _ = writeln!(s, "  signed: no checkpoint");
            }
        }
        if r.intact() {
            match &r.uncovered {
                Some(u) => {
                    let _ = writeln!(
                        s,
                        "  not covered by any signature: {} record(s), seq {}–{} ({} to {}): a cut or rewrite of these would not show",
                        u.count, u.first_seq, u.last_seq, u.from, u.to
                    );
                }
                None => {
                    let _ = writeln!(s, "  every record is covered by a signature");
                }
            }
        }
    } else if r.checkpoints > 0 {
        let _ = writeln!(
            s,
            "  {} checkpoint(s) present; signatures not checked (give --key)",
            r.checkpoints
        );
    }
    s
}

fn place(p: &Place) -> Value {
    json!({"file": JsonName(&p.file).text(), "line": p.line})
}

fn finding(f: &Finding) -> Value {
    json!({"file": JsonName(&f.at.file).text(), "line": f.at.line, "why": f.what})
}

fn to_json(r: &Report) -> Value {
    json!({
        "intact": r.intact(),
        "files": r.files.iter().map(|f| JsonName(f).text().into_owned()).collect::<Vec<_>>(),
        "records": r.records,
        "verified": r.verified,
        "duplicates": r.duplicates,
        "foreign": r.foreign,
        "host": r.host,
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "head": r.head,
        "problem": r.problem().map(finding),
        "problems": r.problems.iter().map(finding).collect::<Vec<_>>(),
        "notes": r.notes.iter().map(finding).collect::<Vec<_>>(),
        "checkpoints": r.checkpoints,
        "signatures_checked": r.signatures_checked,
        "last_checkpoint": r.last_checkpoint.as_ref().map(|c| json!({
            "file": JsonName(&c.at.file).text(), "line": c.at.line,
            "seq": c.seq, "covers_seq": c.covers_seq, "key_id": c.key_id,
        })),
        "uncovered": r.uncovered.as_ref().map(|u| json!({
            "first_seq": u.first_seq, "last_seq": u.last_seq, "count": u.count,
            "from": place(&u.from), "to": place(&u.to),
        })),
    })
}

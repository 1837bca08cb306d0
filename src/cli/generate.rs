//! `kmsentry generate man DIR` and `kmsentry generate completions DIR`: manual pages (one
//! per command, `kmsentry-verify.1` …) and shell completions, both from the clap
//! definitions, so they never disagree with `--help`. The Debian package is built with them
//! (`scripts/build-deb.sh`).

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use clap::{Args, CommandFactory, Subcommand};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub(crate) enum GenerateCmd {
    /// Write one manual page per command (`kmsentry.1`, `kmsentry-verify.1`, …) into DIR.
    Man(OutArgs),
    /// Write completions for bash (`kmsentry.bash`), zsh (`_kmsentry`) and fish
    /// (`kmsentry.fish`) into DIR.
    Completions(OutArgs),
}

#[derive(Args, Debug)]
pub(crate) struct OutArgs {
    /// Output directory (created if missing).
    dir: PathBuf,
}

fn io<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, p.as_os_str().as_bytes(), e)
}

pub(crate) fn generate(cmd: &GenerateCmd) -> Result<ExitCode> {
    match cmd {
        GenerateCmd::Man(a) => man(&a.dir),
        GenerateCmd::Completions(a) => completions(&a.dir),
    }?;
    Ok(ExitCode::Clean)
}

/// What each command's exit status means (DESIGN's contract), by page name.
fn exit_status(page: &str) -> Vec<(&'static str, &'static str)> {
    let usage = (
        "2",
        "Usage or policy error: a bad flag, or a policy that does not parse or compile (the message names file, line and column).",
    );
    let integrity = (
        "3",
        "Baseline, store or I/O integrity error: a missing, corrupt, tampered or foreign baseline database (a missing database is 3, not 2), a baseline not signed by --verify-key, a file that could not be read or kept changing while hashed. When several apply, the highest wins.",
    );
    match page {
        "kmsentry-verify" => vec![
            ("0", "No drift at or above --fail-on (posture findings count only with --posture)."),
            ("1", "Drift found: an added, removed or changed entry at or above --fail-on (default: any)."),
            usage,
            integrity,
        ],
        "kmsentry-audit" => vec![
            ("0", "No posture finding at or above --fail-on (default medium)."),
            ("1", "Posture findings at or above --fail-on."),
            usage,
            integrity,
        ],
        "kmsentry-log-verify" => vec![
            ("0", "The chain is intact (and, with --key, every checkpoint verifies)."),
            ("2", "Usage error: a bad key file, --stopped without --key, a receiver's file with several hosts and no --host."),
            ("3", "The chain is broken (every break is listed), or a file could not be read."),
        ],
        "kmsentry-watch" => vec![
            ("0", "Stopped cleanly (SIGTERM or SIGINT): every pending permission event was answered and `stopped` written."),
            usage,
            ("3", "The baseline, store or alert log failed its integrity check at start, or a file the daemon needs could not be opened."),
        ],
        "kmsentry-restore" => vec![
            ("0", "Everything planned was restored (or nothing needed to be)."),
            ("1", "Something could not be restored, or with --dry-run something would be."),
            usage,
            ("3", "The baseline or the trusted store failed its integrity check; nothing was restored."),
        ],
        _ => vec![
            ("0", "Success, nothing found."),
            ("1", "Drift found."),
            usage,
            integrity,
        ],
    }
}

/// Escape text for a roff line: a leading `.` or `'` would be a request, `\` an escape.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn pages(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, out);
    }
}

fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut root = super::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut all = Vec::new();
    pages(&root, &mut all);
    let names: Vec<String> = all
        .iter()
        .map(|c| c.get_display_name().unwrap_or(c.get_name()).to_string())
        .collect();
    for (cmd, name) in all.into_iter().zip(&names) {
        let page = clap_mangen::Man::new(cmd)
            .title(name.to_uppercase())
            .source(format!("kmsentry {}", env!("CARGO_PKG_VERSION")))
            .manual("kmsentry manual");
        let mut buf = Vec::new();
        page.render(&mut buf)
            .map_err(|e| Error::io("render man page", name.as_bytes(), e))?;
        let mut extra = String::from(".SH \"EXIT STATUS\"\n");
        for (code, what) in exit_status(name) {
            extra.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff_text(what)));
        }
        let see: Vec<String> = names
            .iter()
            .filter(|n| {
                *n != name && (n.starts_with(name.as_str()) || name.starts_with(n.as_str()))
            })
            .map(|n| format!("\\fB{}\\fR(1)", roff_text(n)))
            .collect();
        extra.push_str(".SH \"SEE ALSO\"\n");
        let mut see = see;
        if name != "kmsentry" && !see.iter().any(|s| s == "\\fBkmsentry\\fR(1)") {
            see.insert(0, "\\fBkmsentry\\fR(1)".into());
        }
        see.push("\\fBsystemd.exec\\fR(5)".into());
        extra.push_str(&see.join(", "));
        extra.push_str(
            "\n.PP\nThe policy reference, the alert record format and the operator's guide are in /usr/share/doc/kmsentry.\n",
        );
        buf.extend_from_slice(extra.as_bytes());
        let path = dir.join(format!("{name}.1"));
        crate::atomic::write_file(&path, &buf, 0o644)?;
    }
    Ok(())
}

fn completions(dir: &Path) -> Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    for (shell, file) in [
        (Shell::Bash, "kmsentry.bash"),
        (Shell::Zsh, "_kmsentry"),
        (Shell::Fish, "kmsentry.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut super::Cli::command(), "kmsentry", &mut buf);
        let path = dir.join(file);
        crate::atomic::write_file(&path, &buf, 0o644)?;
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_page_and_verify_states_its_exit_codes() {
        let t = tempfile::tempdir().unwrap();
        man(t.path()).unwrap();
        for page in [
            "kmsentry.1",
            "kmsentry-verify.1",
            "kmsentry-baseline-init.1",
            "kmsentry-log-verify.1",
            "kmsentry-watch.1",
        ] {
            assert!(t.path().join(page).exists(), "{page}");
        }
        let v = std::fs::read_to_string(t.path().join("kmsentry-verify.1")).unwrap();
        assert!(v.contains(".SH \"EXIT STATUS\""), "{v}");
        assert!(v.contains("Drift found"), "{v}");
        assert!(v.contains("\\-\\-fail\\-on"), "{v}");
        assert!(!t.path().join("kmsentry-help.1").exists());
    }

    #[test]
    fn completions_know_the_subcommands() {
        let t = tempfile::tempdir().unwrap();
        completions(t.path()).unwrap();
        let b = std::fs::read_to_string(t.path().join("kmsentry.bash")).unwrap();
        assert!(b.contains("verify") && b.contains("baseline"));
        assert!(t.path().join("_kmsentry").exists());
        assert!(t.path().join("kmsentry.fish").exists());
    }
}

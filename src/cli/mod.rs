//! Command-line definitions (clap) and dispatch. The only code that prints; each command's
//! module turns library results into output and an [`ExitCode`].

mod audit;
mod baseline;
mod generate;
mod key;
mod log;
mod logs;
mod policy;
mod restore;
mod store;
mod suggest;
mod verify;
mod watch;

use crate::error::{Error, Result};
use crate::exit::ExitCode;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Default policy path.
pub const DEFAULT_POLICY: &str = "/etc/kmsentry/policy.yaml";
/// Default baseline database path.
pub const DEFAULT_DB: &str = "/var/lib/kmsentry/baseline.db";

#[derive(Parser, Debug)]
#[command(
    name = "kmsentry",
    version,
    about = "Guards the files a host uses to reach its KMS: keys, certificates, KMS client configs, PKCS#11 providers.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Colour in human output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Worker threads for walking and hashing (0 = one per CPU).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record, update and export the baseline.
    #[command(subcommand)]
    Baseline(BaselineCmd),
    /// Compare the live host (or an image under --root) with the baseline.
    Verify(verify::VerifyArgs),
    /// Judge the credential files and provider binaries the policy guards (no baseline needed):
    /// permissions, expiry, weak keys, key/certificate pairs, provider builds.
    Audit(audit::AuditArgs),
    /// Validate policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Manage the ed25519 keys that sign baselines.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Run the daemon in the foreground: fanotify allow/deny, modifications, kernel denials.
    Watch(Box<watch::WatchArgs>),
    /// Ask the running daemon how it is doing.
    Status(watch::StatusArgs),
    /// Check alert logs.
    #[command(subcommand)]
    Log(LogCmd),
    /// Judge log files with the policy's Sigma rules, `hours` and `first_seen`.
    #[command(subcommand)]
    Logs(LogsCmd),
    /// Validate Sigma rules.
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Put tampered files back from the trusted store (plan, show, apply).
    Restore(restore::RestoreArgs),
    /// Check and prune the trusted store.
    #[command(subcommand)]
    Store(StoreCmd),
    /// Write manual pages or shell completions (for packagers).
    #[command(subcommand)]
    Generate(generate::GenerateCmd),
}

#[derive(Subcommand, Debug)]
enum StoreCmd {
    /// Re-hash every object; a corrupt or unreadable one exits 3.
    Verify(store::VerifyArgs),
    /// Delete objects no given baseline references.
    Gc(store::GcArgs),
}

#[derive(Subcommand, Debug)]
enum LogCmd {
    /// Check an alert log's hash chain (and signed checkpoints), the daemon's JSONL file or a
    /// syslog receiver's RFC 5424 file; name every break.
    Verify(log::VerifyArgs),
}

#[derive(Subcommand, Debug)]
enum LogsCmd {
    /// Run the rules over log files (the sources' globs, or FILEs): exit 0 no match, 1
    /// matches, 2 rule or policy error.
    Scan(logs::ScanArgs),
}

#[derive(Subcommand, Debug)]
enum RulesCmd {
    /// Check Sigma rule files or directories (default: the policy's `rules:`); name file,
    /// line and what is wrong; exit 2 on a bad rule.
    Check(logs::CheckArgs),
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Create a signing key K (0600) and its public key K.pub.
    Gen(key::GenArgs),
}

#[derive(Subcommand, Debug)]
enum BaselineCmd {
    /// Walk the policy's paths and record every entry in a new baseline database.
    Init(baseline::InitArgs),
    /// Accept the current state (all, or the named paths) after review.
    Update(baseline::UpdateArgs),
    /// Print a stable, sorted manifest of the baseline (for review and for git).
    Export(baseline::ExportArgs),
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Validate a policy and print what it resolves to on this host (or under --root).
    Check(policy::CheckArgs),
    /// Print a policy for this host (or an image under --root) from what is installed.
    Suggest(suggest::SuggestArgs),
}

/// Options every command shares.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Common {
    pub quiet: bool,
    pub color: bool,
    pub threads: usize,
    /// stderr is a terminal (progress bars).
    pub tty: bool,
}

/// Parse `std::env::args` and run the command.
pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Clean
            };
            // Printing help to a closed pipe is not an error worth reporting.
            let _ = e.print();
            return Ok(code);
        }
    };
    init_logging(cli.quiet, cli.verbose);
    raise_fd_limit();
    let stdout_tty = std::io::stdout().is_terminal();
    let common = Common {
        quiet: cli.quiet,
        color: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => stdout_tty && std::env::var_os("NO_COLOR").is_none(),
        },
        threads: cli.threads,
        tty: std::io::stderr().is_terminal() && !cli.quiet,
    };
    match cli.cmd {
        Command::Baseline(BaselineCmd::Init(a)) => baseline::init(&a, common),
        Command::Baseline(BaselineCmd::Update(a)) => baseline::update(&a, common),
        Command::Baseline(BaselineCmd::Export(a)) => baseline::export(&a),
        Command::Verify(a) => verify::verify(&a, common),
        Command::Audit(a) => audit::audit(&a, common),
        Command::Policy(PolicyCmd::Suggest(a)) => suggest::suggest(&a),
        Command::Policy(PolicyCmd::Check(a)) => policy::check(&a, common),
        Command::Key(KeyCmd::Gen(a)) => key::gen(&a, common),
        Command::Watch(a) => watch::watch(&a, common),
        Command::Status(a) => watch::status(&a),
        Command::Log(LogCmd::Verify(a)) => log::verify(&a),
        Command::Logs(LogsCmd::Scan(a)) => logs::scan(&a),
        Command::Rules(RulesCmd::Check(a)) => logs::check(&a),
        Command::Restore(a) => restore::restore(&a, common),
        Command::Store(StoreCmd::Verify(a)) => store::verify(&a, common),
        Command::Store(StoreCmd::Gc(a)) => store::gc(&a, common),
        Command::Generate(g) => generate::generate(&g),
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KMSENTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kmsentry={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// The walker holds one fd per directory being read; lift the soft limit to the hard one so
/// a wide tree never runs out.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The root to read under: `--root R` or `/`.
pub(crate) fn root_path(root: &Option<PathBuf>) -> PathBuf {
    root.clone().unwrap_or_else(|| PathBuf::from("/"))
}

/// Open `--root R` (or `/`). A missing or non-directory `R` is a usage error (exit 2): the
/// command line names something that is not an image root.
pub(crate) fn open_root(root: &Option<PathBuf>) -> Result<crate::fsroot::Root> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(r) = root {
        let name = || crate::sanitize::Name(r.as_os_str().as_bytes()).to_string();
        match std::fs::metadata(r) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::Usage(format!(
                    "--root {}: not a directory (expected the directory an image is mounted or unpacked at)",
                    name()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Usage(format!(
                    "--root {}: no such directory (expected the directory an image is mounted or unpacked at)",
                    name()
                )))
            }
            _ => {}
        }
    }
    crate::fsroot::Root::open(&root_path(root))
}

/// Write `data` to `--output F` (atomically) or stdout. A closed stdout ends output quietly.
pub(crate) fn emit(output: &Option<PathBuf>, data: &[u8]) -> Result<()> {
    use std::io::Write;
    match output {
        Some(p) => crate::atomic::write_file(p, data, 0o644),
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(data).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Error::io("write", b"<stdout>".to_vec(), e))
                }
                _ => Ok(()),
            }
        }
    }
}

/// A progress spinner on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress(common: Common, what: &'static str) -> indicatif::ProgressBar {
    if !common.tty {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {prefix} {pos} entries ({per_sec}) {elapsed}",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what);
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

/// Now, RFC 3339 UTC with microseconds.
pub(crate) fn now() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

/// This host's name.
pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

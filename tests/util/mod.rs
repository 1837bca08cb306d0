//! Test environment for integration tests: a temp directory holding an image root, a policy
//! and a database; runs the real binary with a cleared environment so the host cannot leak in.
#![allow(dead_code)]

pub mod services;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Skip (loudly) unless root; under `CI=true` a missing root is a failure, never a skip.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix_is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but not root"
            );
            eprintln!("skipped: needs root");
            return;
        }
    };
}

pub fn nix_is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout))
    }
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("kmsentry-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        TestEnv { dir }
    }

    /// The image root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the image, given host-absolute (`/etc/kms/x`).
    pub fn at(&self, host_path: &str) -> PathBuf {
        self.root().join(host_path.trim_start_matches('/'))
    }

    pub fn write(&self, host_path: &str, data: &[u8]) -> PathBuf {
        let p = self.at(host_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn chmod(&self, host_path: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.at(host_path), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }

    pub fn policy(&self, yaml: &str) -> PathBuf {
        let p = self.dir.path().join("policy.yaml");
        std::fs::write(&p, yaml).unwrap();
        p
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("baseline.db")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Run kmsentry with `args`.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Run {
        self.run_cmd(Command::new(env!("CARGO_BIN_EXE_kmsentry")), args)
    }

    pub fn run_cmd<S: AsRef<OsStr>>(&self, mut cmd: Command, args: &[S]) -> Run {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(self.dir.path())
            .args(args);
        let out: Output = cmd.output().expect("run kmsentry");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout.clone()).unwrap_or_default(),
            stderr: String::from_utf8(out.stderr).unwrap_or_default(),
            raw_stdout: out.stdout,
        }
    }

    /// `kmsentry SUB... --policy P --db D --root R EXTRA...` with the env's files.
    pub fn cmd(&self, sub: &[&str], extra: &[&OsStr]) -> Run {
        let (policy, db, root) = (self.path("policy.yaml"), self.db(), self.root());
        let mut args: Vec<&OsStr> = sub.iter().map(OsStr::new).collect();
        args.extend([
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("--root"),
            root.as_os_str(),
        ]);
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `baseline init` over the image with the env's policy and db; asserts exit 0.
    pub fn init(&self) -> Run {
        let r = self.cmd(&["baseline", "init"], &[]);
        assert_eq!(r.code, 0, "init failed: {}", r.stderr);
        r
    }

    /// `verify --format FORMAT` over the image.
    pub fn verify(&self, format: &str) -> Run {
        self.cmd(&["verify"], &[OsStr::new("--format"), OsStr::new(format)])
    }

    pub fn export(&self) -> Run {
        let r = self.run(&[
            OsStr::new("baseline"),
            OsStr::new("export"),
            OsStr::new("--db"),
            self.db().as_os_str(),
        ]);
        assert_eq!(r.code, 0, "export failed: {}", r.stderr);
        r
    }
}

/// The findings of a JSON report as (path, status, changes) triples.
pub fn findings(v: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
                f["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub fn sh(cmd: &str, args: &[&OsStr]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed");
}

pub fn p(path: &Path) -> &OsStr {
    path.as_os_str()
}

/// Recompute the seal of `db` after an edit, as someone who can write the database and run
/// kmsentry's own code could: what only a signature (a key kept elsewhere) stands against.
pub fn reseal(db: &Path) {
    let mut s = kmsentry::store::Store::open(db, true).unwrap();
    s.seal(1, "now").unwrap();
}

/// `program` is an executable on `PATH`. Looked up, never run (`ssh-keygen -h` would start
/// generating a key and read a file name from stdin).
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

//! Every baseline carries a seal (a digest of all its rows): garbage pages, a truncated file
//! or a row edited with SQLite, in a baseline that is not signed, exit 3 for every command that
//! reads the baseline, and say what happened and what to do. A baseline from before seals is
//! refused until a full `baseline update` (or `init --force`) seals it.

mod daemon;
mod util;
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;
use util::*;

const POLICY: &str = "version: 1\ngroups:\n  - name: conf\n    class: kms-config\n    paths: [/etc/kms]\n    on_change: [alert, restore]\n";

/// A baseline of 400 small files (several pages of every table) with a trusted store.
fn sealed_env() -> TestEnv {
    let env = TestEnv::new();
    env.policy(POLICY);
    for i in 0..400 {
        env.write(
            &format!("/etc/kms/conf-{i:03}.yaml"),
            format!("endpoint: kms-{i}.example\nretries: {}\n", i % 7).as_bytes(),
        );
    }
    let store = env.path("store");
    let r = env.cmd(&["baseline", "init"], &[OsStr::new("--store"), p(&store)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    env
}

/// Every command that reads the baseline, each on `db` as it is now (a failed update leaves
/// it unchanged; the caller restores it between cases anyway).
fn reader_args(env: &TestEnv, db: &Path) -> Vec<(&'static str, Vec<std::ffi::OsString>)> {
    let (policy, root, store) = (env.path("policy.yaml"), env.root(), env.path("store"));
    let os =
        |v: &[&OsStr]| -> Vec<std::ffi::OsString> { v.iter().map(|s| s.to_os_string()).collect() };
    let base = |sub: &[&str]| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = sub.iter().map(|s| s.into()).collect();
        a.extend(os(&[OsStr::new("--db"), p(db)]));
        a
    };
    let with_policy = |sub: &[&str]| -> Vec<std::ffi::OsString> {
        let mut a = base(sub);
        a.extend(os(&[
            OsStr::new("--policy"),
            p(&policy),
            OsStr::new("--root"),
            p(&root),
        ]));
        a
    };
    let mut restore = with_policy(&["restore", "--dry-run"]);
    restore.extend(os(&[OsStr::new("--store"), p(&store)]));
    let mut gc = base(&["store", "gc", "--dry-run"]);
    gc.extend(os(&[OsStr::new("--store"), p(&store)]));
    vec![
        ("verify", with_policy(&["verify", "--format", "json"])),
        ("restore --dry-run", restore),
        ("baseline export", base(&["baseline", "export"])),
        ("baseline update", with_policy(&["baseline", "update"])),
        ("store gc", gc),
    ]
}

fn readers(env: &TestEnv, db: &Path) -> Vec<(&'static str, Run)> {
    reader_args(env, db)
        .into_iter()
        .map(|(name, args)| (name, env.run(&args)))
        .collect()
}

/// Every reader exits 3 on the damaged `db`, names it, and says what to do; nothing is
/// printed on stdout as if the baseline were fine.
fn assert_all_refuse(env: &TestEnv, case: &str, damaged: &[u8]) {
    for (cmd, args) in reader_args(env, &env.db()) {
        std::fs::write(env.db(), damaged).unwrap();
        let r = env.run(&args);
        assert_eq!(r.code, 3, "{case}: {cmd} exited {}: {}", r.code, r.stderr);
        assert!(
            r.stderr.contains("baseline.db"),
            "{case}: {cmd}: {}",
            r.stderr
        );
        if cmd == "baseline export" {
            assert!(r.stdout.is_empty(), "{case}: export printed {}", r.stdout);
        }
        // A failed read-only command changed nothing (a writer's open switches the journal
        // mode in the header before the rows are read).
        if cmd != "baseline update" {
            assert!(
                std::fs::read(env.db()).unwrap() == damaged,
                "{case}: {cmd} changed the database"
            );
        }
    }
}

/// Deterministic noise (no RNG dependency; different per offset).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn the_sealed_baseline_is_clean_for_every_reader() {
    let env = sealed_env();
    for (cmd, r) in readers(&env, &env.db()) {
        assert_eq!(r.code, 0, "{cmd}: {}{}", r.stdout, r.stderr);
    }
}

#[test]
fn garbage_pages_at_several_offsets_exit_3_for_every_reader() {
    let env = sealed_env();
    let good = std::fs::read(env.db()).unwrap();
    let len = good.len();
    assert!(
        len > 8 * 8192,
        "the baseline spans many pages ({len} bytes)"
    );
    // 4 KiB regions that hold something (half pages, so page headers, cell pointers and
    // cell contents are all hit), spread over the file from the header page to the last
    // page. A region that is all zero is space no row or structure uses (an empty table's
    // page, the gap between cell pointers and cells): garbage there changes nothing the
    // baseline records, and SQLite never reads it.
    let used: Vec<usize> = (0..len / 4096)
        .map(|i| i * 4096)
        .filter(|&o| good[o..o + 4096].iter().any(|&b| b != 0))
        .collect();
    assert!(used.len() >= 8, "{} used regions", used.len());
    let offsets: Vec<usize> = (0..8).map(|k| used[k * (used.len() - 1) / 7]).collect();
    for (i, off) in offsets.into_iter().enumerate() {
        let mut bad = good.clone();
        bad[off..off + 4096].copy_from_slice(&noise(i as u64 + 1, 4096));
        assert_all_refuse(&env, &format!("4 KiB of garbage at {off}"), &bad);
    }
}

#[test]
fn a_truncated_baseline_exits_3_for_every_reader() {
    let env = sealed_env();
    let good = std::fs::read(env.db()).unwrap();
    for keep in [good.len() / 2, good.len() - 8192, 100] {
        assert_all_refuse(&env, &format!("truncated to {keep}"), &good[..keep]);
    }
}

#[test]
fn a_row_edited_with_sqlite_exits_3_and_says_what_it_means() {
    let env = sealed_env();
    let good = std::fs::read(env.db()).unwrap();
    let edits = [
        // Make the baseline agree with a tampered file.
        "UPDATE entries SET mode = 438 WHERE path = CAST('/etc/kms/conf-007.yaml' AS BLOB)",
        "DELETE FROM entries WHERE path = CAST('/etc/kms/conf-100.yaml' AS BLOB)",
        "UPDATE runs SET root = CAST('/elsewhere' AS BLOB)",
        "DELETE FROM seal",
    ];
    for sql in edits {
        std::fs::write(env.db(), &good).unwrap();
        let c = rusqlite::Connection::open(env.db()).unwrap();
        c.execute_batch(sql).unwrap();
        drop(c);
        let edited = std::fs::read(env.db()).unwrap();
        assert_all_refuse(&env, sql, &edited);
        std::fs::write(env.db(), &edited).unwrap();
        let r = env.verify("json");
        assert!(r.stdout.is_empty(), "{sql}: {}", r.stdout);
        assert!(
            r.stderr.contains("edited outside kmsentry"),
            "{sql}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("baseline init --force"),
            "{sql}: {}",
            r.stderr
        );
    }
}

#[test]
fn update_keeps_verify_clean_and_one_edited_file_is_one_finding() {
    let env = sealed_env();
    env.write("/etc/kms/conf-001.yaml", b"endpoint: moved.example\n");
    env.write("/etc/kms/new.yaml", b"new: 1\n");
    assert_eq!(env.verify("json").code, 1);
    let r = env.cmd(&["baseline", "update"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.verify("json");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(findings(&r.json()).is_empty());
    // A partial update seals too.
    env.write("/etc/kms/conf-002.yaml", b"endpoint: again.example\n");
    let r = env.cmd(
        &["baseline", "update"],
        &[OsStr::new("/etc/kms/conf-002.yaml")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.verify("json").code, 0);
    env.write("/etc/kms/conf-003.yaml", b"endpoint: evil.example\n");
    let r = env.verify("json");
    assert_eq!(r.code, 1, "{}", r.stderr);
    let got = findings(&r.json());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "/etc/kms/conf-003.yaml");
    assert_eq!(got[0].1, "changed");
}

/// What a kmsentry from before seals wrote: schema version 4, no `seal` table.
fn make_legacy(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("DROP TABLE seal; PRAGMA user_version = 4;")
        .unwrap();
}

#[test]
fn a_baseline_from_before_seals_is_refused_until_a_full_update_seals_it() {
    let env = sealed_env();
    make_legacy(&env.db());
    let legacy = std::fs::read(env.db()).unwrap();
    let r = env.verify("json");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("before baselines carried a seal"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("baseline init --force"), "{}", r.stderr);
    assert!(r.stderr.contains("baseline update"), "{}", r.stderr);
    // A partial update would seal rows nobody checked: refused, nothing changed.
    let r = env.cmd(
        &["baseline", "update"],
        &[OsStr::new("/etc/kms/conf-001.yaml")],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("full `kmsentry baseline update`"),
        "{}",
        r.stderr
    );
    assert!(
        std::fs::read(env.db()).unwrap() == legacy,
        "a refused update changed the baseline"
    );
    // A full update re-records every entry and seals it; what it accepted is listed.
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.execute_batch(
        "UPDATE entries SET mode = 438 WHERE path = CAST('/etc/kms/conf-009.yaml' AS BLOB)",
    )
    .unwrap();
    drop(c);
    let r = env.cmd(&["baseline", "update"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("before baselines carried a seal"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("accepted changed /etc/kms/conf-009.yaml"),
        "{}",
        r.stderr
    );
    for (cmd, r) in readers(&env, &env.db()) {
        assert_eq!(r.code, 0, "{cmd}: {}{}", r.stdout, r.stderr);
    }
    // `init --force` is the other way out.
    make_legacy(&env.db());
    let r = env.cmd(&["baseline", "init"], &[OsStr::new("--force")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.verify("json").code, 0);
}

#[test]
fn watch_refuses_a_damaged_baseline_at_start_and_on_reload() {
    use daemon::Watch;
    let mut w = Watch::new();
    w.write("conf/kms.yaml", b"endpoint: x\n", 0o644);
    w.write("conf/other.yaml", b"endpoint: y\n", 0o644);
    w.policy(&format!(
        "version: 1\ngroups:\n  - name: conf\n    class: kms-config\n    paths: [{}]\n",
        w.s("conf")
    ));
    w.init();
    let good = std::fs::read(w.env.db()).unwrap();
    let c = rusqlite::Connection::open(w.env.db()).unwrap();
    c.execute_batch("UPDATE entries SET uid = 4242").unwrap();
    drop(c);
    // At start: exit 3 before any mark (bounded by `timeout`).
    let out = w.run_second(&["--run-for", "20"]);
    let stderr = String::from_utf8(out.stderr.clone()).unwrap_or_default();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("edited outside kmsentry"), "{stderr}");
    require_root!();
    // On reload: the running daemon keeps its checked baseline and reports the failure.
    std::fs::write(w.env.db(), &good).unwrap();
    w.start(&[]);
    let c = rusqlite::Connection::open(w.env.db()).unwrap();
    c.execute_batch("UPDATE entries SET uid = 4242").unwrap();
    drop(c);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(w.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let a = w
        .wait_for(Duration::from_secs(10), |a| {
            a["kind"] == "policy_reloaded" && a["outcome"] == "failure"
        })
        .expect("the failed reload is reported");
    assert!(
        a["detail"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("seal"),
        "{a}"
    );
    w.stop();
}

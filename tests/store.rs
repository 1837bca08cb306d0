//! The trusted store through the real binary: `baseline init/update --store`, `store verify`,
//! `store gc`.

mod util;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use util::*;

const POLICY: &str = "\
version: 1
groups:
  - name: keys
    class: private-key
    paths: [/etc/kms]
    on_change: [alert, restore]
  - name: other
    paths: [/etc/other]
";

fn objects(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(top) = std::fs::read_dir(store.join("objects")) else {
        return out;
    };
    for d in top {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn object_of(store: &Path, data: &[u8]) -> PathBuf {
    let id = blake3::hash(data).to_hex();
    store.join("objects").join(&id[..2]).join(&id[2..])
}

fn setup() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    env.policy(POLICY);
    env.write("/etc/kms/a.key", b"same");
    env.write("/etc/kms/b.key", b"same");
    env.write("/etc/kms/c.pem", b"cert");
    env.write("/etc/other/x", b"other");
    let store = env.path("store");
    (env, store)
}

fn store_cmd(env: &TestEnv, sub: &str, store: &Path, extra: &[&OsStr]) -> Run {
    let mut args = vec![
        OsStr::new("store"),
        OsStr::new(sub),
        OsStr::new("--store"),
        store.as_os_str(),
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

#[test]
fn init_keeps_private_deduplicated_copies_of_restoring_groups_only() {
    let (env, store) = setup();
    let r = env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--store"), store.as_os_str()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("2 objects written, 1 already present"),
        "{}",
        r.stderr
    );
    assert_eq!(
        objects(&store),
        vec![object_of(&store, b"cert"), object_of(&store, b"same")]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("objects")), 0o700);
    assert_eq!(mode(&object_of(&store, b"same")), 0o400);
    assert_eq!(std::fs::read(object_of(&store, b"cert")).unwrap(), b"cert");
    let r = store_cmd(&env, "verify", &store, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("2 objects (8 bytes) checked, 0 problems"),
        "{}",
        r.stderr
    );
}

#[test]
fn store_all_copies_every_group() {
    let (env, store) = setup();
    let r = env.cmd(
        &["baseline", "init"],
        &[
            OsStr::new("--store"),
            store.as_os_str(),
            OsStr::new("--store-all"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(objects(&store).len(), 3);
    // --store-all without --store is a usage error.
    let r = env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--store-all"), OsStr::new("--force")],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn verify_finds_a_corrupt_object_and_exits_3() {
    let (env, store) = setup();
    env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--store"), store.as_os_str()],
    );
    let obj = object_of(&store, b"cert");
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&obj, b"CERT").unwrap();
    let r = store_cmd(&env, "verify", &store, &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = blake3::hash(b"cert").to_hex();
    assert!(
        r.stderr.contains(&format!("object {id} is corrupt")),
        "{}",
        r.stderr
    );
    // A store anyone may write is refused outright.
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = store_cmd(&env, "verify", &store, &[]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("writable by group or others"),
        "{}",
        r.stderr
    );
    let r = store_cmd(&env, "verify", &env.path("nope"), &[]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("trusted store not found"), "{}", r.stderr);
}

#[test]
fn update_stores_new_content_and_gc_drops_what_no_baseline_references() {
    let (env, store) = setup();
    env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--store"), store.as_os_str()],
    );
    env.write("/etc/kms/c.pem", b"cert v2");
    let r = env.cmd(
        &["baseline", "update"],
        &[OsStr::new("--store"), store.as_os_str()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(object_of(&store, b"cert v2").exists());
    assert!(object_of(&store, b"cert").exists());
    let db = env.db();
    let r = store_cmd(
        &env,
        "gc",
        &store,
        &[OsStr::new("--db"), db.as_os_str(), OsStr::new("--dry-run")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(object_of(&store, b"cert").exists(), "dry run deleted");
    let r = store_cmd(&env, "gc", &store, &[OsStr::new("--db"), db.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("deleted {}", blake3::hash(b"cert").to_hex())),
        "{}",
        r.stdout
    );
    assert!(!object_of(&store, b"cert").exists());
    assert!(object_of(&store, b"cert v2").exists());
    assert!(object_of(&store, b"same").exists());
    // A baseline that cannot be read stops gc before it deletes anything.
    let r = store_cmd(
        &env,
        "gc",
        &store,
        &[OsStr::new("--db"), env.path("missing.db").as_os_str()],
    );
    assert_eq!(r.code, 3);
    assert_eq!(objects(&store).len(), 2);
}

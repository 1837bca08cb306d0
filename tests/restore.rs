//! `kmsentry restore` through the real binary (and the library for the race tests): every
//! attribute kind comes back, removed and type-changed entries are recreated, the tampered
//! version lands in quarantine, dry runs and corrupt stores change nothing, and a parent
//! swapped for a symlink is refused without writing anything outside.

mod util;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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
    class: generic
    paths: [/etc/other]
";

fn store_of(env: &TestEnv) -> PathBuf {
    env.path("store")
}

fn setup() -> TestEnv {
    let env = TestEnv::new();
    env.policy(POLICY);
    env.write("/etc/kms/client.key", b"placeholder key bytes\n");
    env.chmod("/etc/kms/client.key", 0o600);
    env.write(
        "/etc/kms/client.yaml",
        b"endpoint: https://kms.example:5696\n",
    );
    env.write("/etc/kms/ca.pem", b"placeholder ca bytes\n");
    std::os::unix::fs::symlink("ca.pem", env.at("/etc/kms/ca-link.pem")).unwrap();
    env.write("/etc/kms/sub/deep.pem", b"deep");
    env.write("/etc/other/notes.txt", b"notes");
    env
}

fn init_with_store(env: &TestEnv, extra: &[&OsStr]) {
    let store = store_of(env);
    let mut args = vec![OsStr::new("--store"), store.as_os_str()];
    args.extend_from_slice(extra);
    let r = env.cmd(&["baseline", "init"], &args);
    assert_eq!(r.code, 0, "init: {}", r.stderr);
}

fn restore(env: &TestEnv, extra: &[&str]) -> Run {
    let store = store_of(env);
    let mut args = vec![OsStr::new("--store"), store.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    env.cmd(&["restore"], &args)
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) -> bool {
    match rustix::fs::lsetxattr(p, name, value, rustix::fs::XattrFlags::empty()) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped part: {name} on this file system: {e}");
            false
        }
    }
}

/// `system.posix_acl_access` bytes: user::rw-, user:<uid>:r--, group::---, mask::r--, other::---.
fn acl_bytes(uid: u32) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0];
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, uid),
        (4, 0, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// `security.capability` v2: cap_net_bind_service (10) permitted + effective.
fn cap_bytes(bit: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for w in [0x0200_0001u32, 1 << bit, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v
}

/// Everything observable about a tree: path, type, mode, owner, size, link target, content
/// hash, xattrs; sorted.
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for ent in rd {
            let ent = ent.unwrap();
            let p = ent.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            use std::os::unix::fs::MetadataExt;
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let content = if m.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            } else {
                String::new()
            };
            let target = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            };
            let mut names = vec![0u8; 65536];
            let mut xs = Vec::new();
            if let Ok(n) = rustix::fs::llistxattr(&p, &mut names[..]) {
                for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                    let mut v = vec![0u8; 65536];
                    let k = rustix::fs::lgetxattr(&p, name, &mut v[..]).unwrap_or(0);
                    xs.push(format!("{}={}", hex::encode(name), hex::encode(&v[..k])));
                }
            }
            xs.sort();
            out.push(format!(
                "{} mode={:o} uid={} gid={} size={} link={} b3={} x={}",
                hex::encode(&rel),
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.size() },
                hex::encode(&target),
                content,
                xs.join(",")
            ));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn verify_clean(env: &TestEnv) {
    let r = env.verify("json");
    assert_eq!(r.code, 0, "after restore: {}{}", r.stdout, r.stderr);
}

#[test]
fn content_mode_and_symlink_target_come_back_and_the_tampered_file_is_quarantined() {
    let env = setup();
    init_with_store(&env, &[]);
    env.write("/etc/kms/client.yaml", b"endpoint: https://evil.example\n");
    env.chmod("/etc/kms/client.key", 0o644);
    std::fs::remove_file(env.at("/etc/kms/ca-link.pem")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", env.at("/etc/kms/ca-link.pem")).unwrap();
    assert_eq!(env.verify("json").code, 1);
    let r = restore(&env, &["--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["summary"]["restored"], 3, "{v}");
    assert_eq!(v["summary"]["failed"], 0);
    verify_clean(&env);
    assert_eq!(
        std::fs::read(env.at("/etc/kms/client.yaml")).unwrap(),
        b"endpoint: https://kms.example:5696\n"
    );
    // The tampered config is in quarantine with its record; quarantine is root-only.
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/kms/client.yaml")
        .unwrap();
    assert_eq!(item["changes"], serde_json::json!(["content", "size"]));
    assert_eq!(item["method"], "replace");
    assert_eq!(
        item["before_blake3"],
        blake3::hash(b"endpoint: https://evil.example\n")
            .to_hex()
            .as_str()
    );
    let q = PathBuf::from(item["quarantine"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&q).unwrap(),
        b"endpoint: https://evil.example\n"
    );
    let mut rec = q.clone().into_os_string();
    rec.push(".json");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
    assert_eq!(rec["path"], "/etc/kms/client.yaml");
    assert_eq!(rec["content"], "moved");
    use std::os::unix::fs::PermissionsExt;
    let qdir = q.parent().unwrap();
    assert_eq!(
        std::fs::metadata(qdir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let link_item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/kms/ca-link.pem")
        .unwrap();
    assert_eq!(link_item["changes"], serde_json::json!(["link_target"]));
    assert_eq!(
        std::fs::read_link(env.at("/etc/kms/ca-link.pem")).unwrap(),
        Path::new("ca.pem")
    );
    // Nothing left to do: a second run is a clean no-op.
    let again = restore(&env, &[]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    assert!(
        again.stdout.contains("0 of 7 baselined entries differ"),
        "{}",
        again.stdout
    );
}

#[test]
fn owner_group_acl_xattrs_and_capabilities_come_back() {
    require_root!();
    let env = setup();
    let key = env.at("/etc/kms/client.key");
    let bin = env.write("/etc/kms/provider.so", b"\x7fELF provider");
    let has_x = set_xattr(&key, "user.kms", b"v1");
    let has_acl = set_xattr(&key, "system.posix_acl_access", &acl_bytes(1000));
    let has_cap = set_xattr(&bin, "security.capability", &cap_bytes(10));
    init_with_store(&env, &[]);
    let before = listing(&env.root());
    std::os::unix::fs::lchown(&key, Some(1234), Some(4321)).unwrap();
    if has_x {
        set_xattr(&key, "user.kms", b"evil");
        set_xattr(&key, "user.added", b"x");
    }
    if has_acl {
        set_xattr(&key, "system.posix_acl_access", &acl_bytes(666));
    }
    if has_cap {
        // Widen the capability set of the provider binary.
        set_xattr(&bin, "security.capability", &cap_bytes(21));
    }
    let r = env.verify("json");
    assert_eq!(r.code, 1);
    let changes: Vec<_> = findings(&r.json())
        .into_iter()
        .map(|(p, _, c)| (p, c))
        .collect();
    assert!(
        changes.iter().any(|(p, c)| p == "/etc/kms/client.key"
            && c.contains(&"owner".to_string())
            && c.contains(&"group".to_string())),
        "{changes:?}"
    );
    let r = restore(&env, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    verify_clean(&env);
    assert_eq!(listing(&env.root()), before);
}

#[test]
fn a_removed_file_a_removed_directory_and_a_file_replaced_by_a_symlink_are_recreated() {
    let env = setup();
    init_with_store(&env, &[]);
    std::fs::remove_dir_all(env.at("/etc/kms/sub")).unwrap();
    std::fs::remove_file(env.at("/etc/kms/client.key")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", env.at("/etc/kms/client.key")).unwrap();
    std::fs::remove_file(env.at("/etc/kms/ca.pem")).unwrap();
    let r = restore(&env, &["--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    verify_clean(&env);
    assert_eq!(
        std::fs::read(env.at("/etc/kms/sub/deep.pem")).unwrap(),
        b"deep"
    );
    let m = std::fs::symlink_metadata(env.at("/etc/kms/client.key")).unwrap();
    assert!(m.is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    // The symlink that stood in the key's place is quarantined (as a symlink).
    let v = r.json();
    let item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == "/etc/kms/client.key")
        .unwrap();
    assert_eq!(
        item["changes"],
        serde_json::json!(["type", "mode", "link_target"])
    );
    let q = PathBuf::from(item["quarantine"].as_str().unwrap());
    assert_eq!(std::fs::read_link(q).unwrap(), Path::new("/etc/passwd"));
}

#[test]
fn a_file_replaced_by_a_directory_is_restored_and_the_directory_kept() {
    let env = setup();
    init_with_store(&env, &[]);
    std::fs::remove_file(env.at("/etc/kms/ca.pem")).unwrap();
    env.write("/etc/kms/ca.pem/inside", b"x");
    let r = restore(&env, &["/etc/kms/ca.pem"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    verify_clean(&env);
    assert!(
        r.stdout
            .contains("changed /etc/kms/ca.pem [type, mode] -> replace"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_dry_run_changes_nothing_and_prints_the_plan() {
    let env = setup();
    init_with_store(&env, &[]);
    env.write("/etc/kms/client.yaml", b"tampered");
    env.chmod("/etc/kms/client.key", 0o666);
    std::fs::remove_file(env.at("/etc/kms/ca.pem")).unwrap();
    let before = (listing(&env.root()), listing(&store_of(&env)));
    let r = restore(&env, &["--dry-run"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("dry run: nothing was changed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("changed /etc/kms/client.yaml [content, size] -> replace: quarantine, create, write_content"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("changed /etc/kms/client.key [mode] -> in_place: set_mode"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("removed /etc/kms/ca.pem -> recreate"),
        "{}",
        r.stdout
    );
    let j = restore(&env, &["--dry-run", "--format", "json"]);
    assert_eq!(j.code, 1);
    assert_eq!(j.json()["items"][0]["result"], "planned");
    assert_eq!(
        (listing(&env.root()), listing(&store_of(&env))),
        before,
        "a dry run wrote something"
    );
}

#[test]
fn a_corrupt_store_object_exits_3_and_writes_nothing() {
    let env = setup();
    init_with_store(&env, &[]);
    env.write("/etc/kms/client.yaml", b"tampered");
    env.chmod("/etc/kms/client.key", 0o666);
    // Corrupt the object holding the config's baselined content.
    let id = blake3::hash(b"endpoint: https://kms.example:5696\n").to_hex();
    let obj = store_of(&env).join("objects").join(&id[..2]).join(&id[2..]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&obj, b"endpoint: https://evil.example:5696\n").unwrap();
    let before = (listing(&env.root()), listing(&store_of(&env)));
    let r = restore(&env, &[]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("is corrupt"), "{}", r.stdout);
    assert!(r.stderr.contains("nothing was restored"), "{}", r.stderr);
    assert_eq!((listing(&env.root()), listing(&store_of(&env))), before);
    // A missing object is the same integrity error.
    std::fs::remove_file(&obj).unwrap();
    let r = restore(&env, &["/etc/kms/client.yaml"]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("is missing"), "{}", r.stdout);
}

#[test]
fn a_path_without_a_trusted_copy_exits_1_and_says_why() {
    let env = setup();
    init_with_store(&env, &[]);
    env.write("/etc/other/notes.txt", b"changed");
    env.write("/etc/kms/client.yaml", b"tampered");
    // The `other` group does not restore, so without paths only /etc/kms is in scope.
    let r = restore(&env, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = restore(&env, &["/etc/other"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("no trusted copy in the store"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("failed /etc/other/notes.txt"),
        "{}",
        r.stdout
    );
    let r = restore(&env, &["/etc/nowhere"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not in the baseline"), "{}", r.stderr);
    // With --store-all the other group's files are kept too.
    let env2 = setup();
    init_with_store(&env2, &[OsStr::new("--store-all")]);
    env2.write("/etc/other/notes.txt", b"changed");
    let r = restore(&env2, &["--all"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        std::fs::read(env2.at("/etc/other/notes.txt")).unwrap(),
        b"notes"
    );
}

#[test]
fn a_baselined_directory_replaced_by_a_symlink_is_rebuilt_without_following_it() {
    let env = setup();
    init_with_store(&env, &[]);
    // /etc/kms/sub becomes a symlink to a directory outside the guarded tree.
    std::fs::create_dir_all(env.at("/elsewhere")).unwrap();
    std::fs::remove_dir_all(env.at("/etc/kms/sub")).unwrap();
    std::os::unix::fs::symlink("/elsewhere", env.at("/etc/kms/sub")).unwrap();
    let r = restore(&env, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("changed /etc/kms/sub [type"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("removed /etc/kms/sub/deep.pem -> recreate"),
        "{}",
        r.stdout
    );
    verify_clean(&env);
    assert!(std::fs::symlink_metadata(env.at("/etc/kms/sub"))
        .unwrap()
        .is_dir());
    assert_eq!(std::fs::read_dir(env.at("/elsewhere")).unwrap().count(), 0);
}

#[test]
fn a_symlinked_ancestor_is_refused_and_nothing_is_written_through_it() {
    let env = setup();
    init_with_store(&env, &[]);
    // /etc (not baselined itself) becomes a symlink to a look-alike tree elsewhere.
    std::fs::rename(env.at("/etc"), env.at("/elsewhere")).unwrap();
    std::fs::write(env.at("/elsewhere/kms/client.yaml"), b"tampered").unwrap();
    std::os::unix::fs::symlink("/elsewhere", env.at("/etc")).unwrap();
    let before = listing(&env.root());
    let r = restore(&env, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("/etc is a symlink; restore never follows"),
        "{}",
        r.stdout
    );
    assert_eq!(listing(&env.root()), before, "wrote through the symlink");
}

mod race {
    use super::*;
    use kmsentry::fsroot::Root;
    use kmsentry::restore::{self, Hooks, PlanOptions, Quarantine, RestoreError};
    use kmsentry::store::objects::ObjectStore;
    use kmsentry::store::Store;

    /// A unique top-level directory name: if a bug ever followed the swapped link to the
    /// host's `/`, it would land here, where nothing of the host lives.
    fn unique_dir() -> String {
        format!("kmsentry-restore-race-{}", std::process::id())
    }

    fn env_for_race() -> (TestEnv, String) {
        let top = unique_dir();
        let env = TestEnv::new();
        env.policy(&format!(
            "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/{top}/kms]\n    on_change: [restore]\n"
        ));
        env.write(&format!("/{top}/kms/client.key"), b"good");
        init_with_store(&env, &[]);
        env.write(&format!("/{top}/kms/client.key"), b"evil");
        (env, top)
    }

    fn plan_for(env: &TestEnv) -> (Root, ObjectStore, restore::Plan) {
        let root = Root::open(&env.root()).unwrap();
        let policy = kmsentry::policy::load(&env.path("policy.yaml")).unwrap();
        let db = Store::open(&env.db(), false).unwrap();
        let objects = ObjectStore::open(&store_of(env)).unwrap();
        let plan = restore::plan(
            &root,
            &db.entries().unwrap(),
            Some(&objects),
            &policy,
            &[],
            PlanOptions::default(),
        )
        .unwrap();
        assert_eq!(plan.items.len(), 1, "{plan:?}");
        (root, objects, plan)
    }

    #[test]
    fn a_parent_swapped_for_a_symlink_to_slash_between_plan_and_apply_is_refused() {
        let (env, top) = env_for_race();
        let (root, objects, plan) = plan_for(&env);
        let kms = env.at(&format!("/{top}/kms"));
        std::fs::rename(&kms, env.at(&format!("/{top}/kms.moved"))).unwrap();
        std::os::unix::fs::symlink("/", &kms).unwrap();
        let q = Quarantine::new(&objects, "t1").unwrap();
        let e = restore::apply_item(&root, Some(&objects), &plan.items[0], &q, &Hooks::default())
            .unwrap_err();
        assert!(matches!(e, RestoreError::Refused(_)), "{e}");
        assert!(e.to_string().contains("is a symlink"), "{e}");
        assert!(
            !Path::new(&format!("/{top}")).exists(),
            "wrote to the host's /"
        );
        assert!(!root.path().join("client.key").exists());
        assert_eq!(
            std::fs::read(env.at(&format!("/{top}/kms.moved/client.key"))).unwrap(),
            b"evil"
        );
        assert!(!q.path().exists(), "nothing quarantined");
    }

    #[test]
    fn a_parent_swapped_after_it_was_opened_is_detected_and_nothing_is_written_outside() {
        let (env, top) = env_for_race();
        let (root, objects, plan) = plan_for(&env);
        let outside = env.path("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let kms = env.at(&format!("/{top}/kms"));
        let moved = env.at(&format!("/{top}/kms.moved"));
        let (k2, m2, o2) = (kms.clone(), moved.clone(), outside.clone());
        let hooks = Hooks {
            before_swap: Some(Box::new(move |_| {
                std::fs::rename(&k2, &m2).unwrap();
                std::os::unix::fs::symlink(&o2, &k2).unwrap();
            })),
        };
        let q = Quarantine::new(&objects, "t2").unwrap();
        let e = restore::apply_item(&root, Some(&objects), &plan.items[0], &q, &hooks).unwrap_err();
        assert!(matches!(e, RestoreError::Refused(_)), "{e}");
        assert!(e.to_string().contains("swapped during the restore"), "{e}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "wrote outside"
        );
        // The real directory (moved away) still holds the tampered file and no temp.
        let names: Vec<_> = std::fs::read_dir(&moved)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("client.key")]);
        assert_eq!(std::fs::read(moved.join("client.key")).unwrap(), b"evil");
        assert!(!Path::new(&format!("/{top}")).exists());
    }

    #[test]
    fn restore_entry_reports_hashes_before_and_after() {
        let (env, _top) = env_for_race();
        let (root, objects, plan) = plan_for(&env);
        let q = Quarantine::new(&objects, "t3").unwrap();
        let base = &plan.items[0].base;
        let r = restore::restore_entry(
            &root,
            &objects,
            base,
            kmsentry::policy::CompareSet::default_set(),
            &q,
        )
        .unwrap();
        assert_eq!(r.before.unwrap().blake3, *blake3::hash(b"evil").as_bytes());
        assert_eq!(r.after.unwrap().blake3, *blake3::hash(b"good").as_bytes());
        assert_eq!(r.method, Some(restore::Method::Replace));
        // Again: nothing differs.
        let r = restore::restore_entry(
            &root,
            &objects,
            base,
            kmsentry::policy::CompareSet::default_set(),
            &q,
        )
        .unwrap();
        assert_eq!(r.method, None);
    }
}

#[test]
fn restore_refuses_an_edited_signed_baseline() {
    let env = setup();
    let key = env.path("k");
    let r = env.run(&[
        OsStr::new("key"),
        OsStr::new("gen"),
        OsStr::new("--out"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0);
    init_with_store(&env, &[OsStr::new("--sign-key"), key.as_os_str()]);
    env.chmod("/etc/kms/client.key", 0o644);
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.execute_batch(
        "UPDATE entries SET mode = 420 WHERE path = CAST('/etc/kms/client.key' AS BLOB)",
    )
    .unwrap();
    drop(c);
    reseal(&env.db());
    let pubkey = format!("{}.pub", key.to_str().unwrap());
    let before = listing(&env.root());
    let r = restore(&env, &["--verify-key", &pubkey]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("changed after it was signed"),
        "{}",
        r.stderr
    );
    assert_eq!(listing(&env.root()), before);
}

#[test]
fn more_files_than_one_batch_and_rebuilt_directories_with_their_children_all_come_back() {
    // `restore` builds up to 256 entries, flushes, swaps them in and flushes again; entries
    // under a directory rebuilt in the same run wait for the next batch. 300 tampered files,
    // two removed directories (one inside the other) and a file in each: every one returns.
    let env = setup();
    for i in 0..300 {
        env.write(
            &format!("/etc/kms/many/d{}/f{i}.pem", i % 7),
            format!("file {i}\n").as_bytes(),
        );
    }
    env.write("/etc/kms/gone/a.pem", b"a");
    env.write("/etc/kms/gone/inner/b.pem", b"b");
    init_with_store(&env, &[]);
    for i in 0..300 {
        let p = format!("/etc/kms/many/d{}/f{i}.pem", i % 7);
        env.write(&p, b"tampered\n");
        env.chmod(&p, 0o666);
    }
    std::fs::remove_dir_all(env.at("/etc/kms/gone")).unwrap();
    let r = restore(&env, &["--format", "json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    verify_clean(&env);
    assert_eq!(
        std::fs::read(env.at("/etc/kms/gone/inner/b.pem")).unwrap(),
        b"b"
    );
    assert_eq!(
        std::fs::read(env.at("/etc/kms/many/d3/f3.pem")).unwrap(),
        b"file 3\n"
    );
}

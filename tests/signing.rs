//! Signed baselines: `key gen`, `--sign-key`, `--verify-key`; any tampering exits 3.

mod util;
use std::ffi::OsStr;
use util::*;

fn signed_env() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new();
    env.policy(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: [/etc/kms]\n",
    );
    env.write("/etc/kms/client.key", b"k1");
    env.write("/etc/kms/ca.pem", b"c1");
    let key = env.path("signing.key");
    let r = env.run(&[
        OsStr::new("key"),
        OsStr::new("gen"),
        OsStr::new("--out"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--sign-key"), key.as_os_str()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    (env, key)
}

fn verify_with(env: &TestEnv, pubkey: &std::path::Path) -> Run {
    env.cmd(
        &["verify"],
        &[
            OsStr::new("--format"),
            OsStr::new("json"),
            OsStr::new("--verify-key"),
            pubkey.as_os_str(),
        ],
    )
}

fn pub_of(key: &std::path::Path) -> std::path::PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

#[test]
fn a_signed_baseline_verifies_and_key_gen_refuses_to_overwrite() {
    let (env, key) = signed_env();
    assert_eq!(verify_with(&env, &pub_of(&key)).code, 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let r = env.run(&[
        OsStr::new("key"),
        OsStr::new("gen"),
        OsStr::new("--out"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("a key already exists"), "{}", r.stderr);
}

#[test]
fn a_row_edited_with_sqlite_exits_3() {
    let (env, key) = signed_env();
    // The attacker makes the baseline agree with a tampered key file.
    env.write("/etc/kms/client.key", b"ev");
    let h = blake3::hash(b"ev");
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.execute(
        "UPDATE entries SET blake3 = ?1 WHERE path = CAST('/etc/kms/client.key' AS BLOB)",
        [h.as_bytes().to_vec()],
    )
    .unwrap();
    drop(c);
    // Unsigned, the seal catches the edit...
    let r = env.verify("json");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("edited outside kmsentry"), "{}", r.stderr);
    // ...until the attacker also recomputes the seal: then the edit passes for clean content
    // without the key (that is what signing is for)...
    reseal(&env.db());
    assert_eq!(env.verify("json").code, 0);
    // ...with it, the baseline is refused.
    let r = verify_with(&env, &pub_of(&key));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("changed after it was signed"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_deleted_row_and_a_swapped_database_exit_3() {
    let (env, key) = signed_env();
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.execute(
        "DELETE FROM entries WHERE path = CAST('/etc/kms/ca.pem' AS BLOB)",
        [],
    )
    .unwrap();
    drop(c);
    assert_eq!(verify_with(&env, &pub_of(&key)).code, 3);
    // A database signed with another key (or not at all) is refused too.
    let (other, _) = signed_env();
    std::fs::copy(other.db(), env.db()).unwrap();
    let r = verify_with(&env, &pub_of(&key));
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("signed by another key"), "{}", r.stderr);
    let plain = TestEnv::new();
    plain.policy("version: 1\ngroups:\n  - name: keys\n    paths: [/etc/kms]\n");
    plain.write("/etc/kms/x", b"x");
    plain.init();
    let r = verify_with(&plain, &pub_of(&key));
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("not signed"), "{}", r.stderr);
}

#[test]
fn an_update_must_be_re_signed() {
    let (env, key) = signed_env();
    env.write("/etc/kms/ca.pem", b"c2");
    let r = env.cmd(&["baseline", "update"], &[]);
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.contains("invalidates the signature"),
        "{}",
        r.stderr
    );
    assert_eq!(verify_with(&env, &pub_of(&key)).code, 3);
    let r = env.cmd(
        &["baseline", "update"],
        &[OsStr::new("--sign-key"), key.as_os_str()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(verify_with(&env, &pub_of(&key)).code, 0);
}

#[test]
fn a_bad_key_file_is_a_usage_error_before_any_work() {
    let env = TestEnv::new();
    env.policy("version: 1\ngroups:\n  - name: keys\n    paths: [/etc/kms]\n");
    std::fs::write(env.path("bad.key"), "not a key").unwrap();
    let r = env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--sign-key"), env.path("bad.key").as_os_str()],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("bad.key: not an ed25519 private key"),
        "{}",
        r.stderr
    );
    assert!(!env.db().exists());
}

/// A baseline of the live host (no --root): the policy names the test tree by its real
/// absolute path.
fn live_host_env() -> (TestEnv, std::path::PathBuf) {
    let env = TestEnv::new();
    let dir = env.at("/etc/kms");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("client.key"), b"k1").unwrap();
    env.policy(&format!(
        "version: 1\ngroups:\n  - name: keys\n    class: private-key\n    paths: ['{}']\n",
        dir.to_str().unwrap()
    ));
    let key = env.path("signing.key");
    let r = env.run(&[
        OsStr::new("key"),
        OsStr::new("gen"),
        OsStr::new("--out"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (policy, db) = (env.path("policy.yaml"), env.db());
    let r = env.run(&[
        OsStr::new("baseline"),
        OsStr::new("init"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--db"),
        db.as_os_str(),
        OsStr::new("--sign-key"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    (env, key)
}

fn verify_live(env: &TestEnv, extra: &[&OsStr]) -> Run {
    let (policy, db) = (env.path("policy.yaml"), env.db());
    let mut args = vec![
        OsStr::new("verify"),
        OsStr::new("--policy"),
        policy.as_os_str(),
        OsStr::new("--db"),
        db.as_os_str(),
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// Make the database look recorded elsewhere, then sign it again with the same key: what a
/// fleet-wide key makes possible when a sibling host's baseline is copied over.
fn move_to_other_host(env: &TestEnv, key: &std::path::Path) {
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.execute_batch(&format!(
        "UPDATE runs SET host = 'elsewhere', machine_id = '{}'",
        "0".repeat(32)
    ))
    .unwrap();
    drop(c);
    let mut s = kmsentry::store::Store::open(&env.db(), true).unwrap();
    let k = kmsentry::store::signing::load_signing_key(key).unwrap();
    kmsentry::store::signing::sign(&mut s, 1, &k, "now").unwrap();
    s.seal(1, "now").unwrap();
}

#[test]
fn a_database_from_another_host_exits_3_even_when_validly_signed() {
    let (env, key) = live_host_env();
    let pubkey = pub_of(&key);
    assert_eq!(verify_live(&env, &[]).code, 0);
    move_to_other_host(&env, &key);
    let r = verify_live(&env, &[OsStr::new("--verify-key"), pubkey.as_os_str()]);
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("this baseline was recorded on host `elsewhere`"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--allow-other-host"), "{}", r.stderr);
    // Deliberate use: allowed, with a warning.
    let r = verify_live(
        &env,
        &[
            OsStr::new("--verify-key"),
            pubkey.as_os_str(),
            OsStr::new("--allow-other-host"),
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("allowed by --allow-other-host"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_golden_image_baseline_recorded_under_root_verifies_on_any_host() {
    let (env, key) = signed_env();
    move_to_other_host(&env, &key);
    let r = verify_with(&env, &pub_of(&key));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

/// A signed baseline that records credential facts: a self-signed certificate made with the
/// `openssl` CLI, in a `client-cert` group. `None` when `openssl` is missing outside CI.
fn signed_env_with_certificate() -> Option<(TestEnv, std::path::PathBuf)> {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but `openssl` is not on PATH"
        );
        eprintln!("skipped: this test needs the `openssl` CLI");
        return None;
    }
    let env = TestEnv::new();
    env.policy(
        "version: 1\ngroups:\n  - name: certs\n    class: client-cert\n    paths: [/etc/kms/certs]\n",
    );
    let dir = env.at("/etc/kms/certs");
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=client"])
        .args(["-days", "365", "-keyout"])
        .arg(env.path("client.key"))
        .arg("-out")
        .arg(dir.join("client.crt"))
        .env("OPENSSL_CONF", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = env.path("signing.key");
    let r = env.run(&[
        OsStr::new("key"),
        OsStr::new("gen"),
        OsStr::new("--out"),
        key.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = env.cmd(
        &["baseline", "init"],
        &[OsStr::new("--sign-key"), key.as_os_str()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    Some((env, key))
}

#[test]
fn an_edited_credential_fact_exits_3() {
    let Some((env, key)) = signed_env_with_certificate() else {
        return;
    };
    // Signed, the baseline verifies (a lone certificate has a KMS-CERT-NO-KEY posture
    // finding, so drift's 1 is the clean outcome here: not 3).
    let r = verify_with(&env, &pub_of(&key));
    assert!(r.code <= 1, "{}{}", r.stdout, r.stderr);
    // The attacker pushes the old certificate's expiry back, so that an older certificate
    // installed later looks like a renewal.
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let n = c
        .execute(
            "UPDATE credentials SET facts = json_set(facts, '$.certs[0].not_after', 0)",
            [],
        )
        .unwrap();
    assert_eq!(n, 1, "the baseline holds the certificate's facts");
    drop(c);
    reseal(&env.db());
    let r = verify_with(&env, &pub_of(&key));
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("changed after it was signed"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_edited_machine_id_exits_3() {
    let (env, key) = signed_env();
    let c = rusqlite::Connection::open(env.db()).unwrap();
    let n = c
        .execute(
            &format!("UPDATE runs SET machine_id = '{}'", "0".repeat(32)),
            [],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(c);
    reseal(&env.db());
    let r = verify_with(&env, &pub_of(&key));
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("changed after it was signed"),
        "{}",
        r.stderr
    );
}

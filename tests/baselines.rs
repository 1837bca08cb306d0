//! `baselines/`: the reviewed manifest of the test golden image. The image is built from
//! fixed content, modes, owners, ACLs and xattrs; `baseline init --root` with the shipped
//! golden-image policy, then `baseline export`, must equal `baselines/test-golden-image.txt`
//! byte for byte. `KMSENTRY_BLESS=1` rewrites the file (review the diff).

mod util;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use util::*;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/baselines/test-golden-image.txt"
);

/// The test golden image: what a KMS client image carries, plus the odd cases an export
/// must keep stable (a symlink, an ACL, xattrs, a hostile file name).
fn build_image(env: &TestEnv) {
    let files: &[(&str, &[u8], u32, u32, u32)] = &[
        ("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nkms:x:990:990::/var/lib/kms:/usr/sbin/nologin\n", 0o644, 0, 0),
        ("/etc/group", b"root:x:0:\nkms:x:990:\nssl-cert:x:991:kms\n", 0o644, 0, 0),
        ("/etc/kms-client/client.yaml", b"endpoint: https://kms.example:5696\ncert: /etc/kms-client/client.pem\nkey: /etc/kms-client/keys/client.key\n", 0o640, 0, 990),
        ("/etc/kms-client/client.pem", b"-----BEGIN CERTIFICATE-----\nMIIBfixture\n-----END CERTIFICATE-----\n", 0o644, 0, 0),
        ("/etc/kms-client/keys/client.key", b"-----BEGIN PRIVATE KEY-----\nMIIfixture\n-----END PRIVATE KEY-----\n", 0o600, 990, 990),
        ("/etc/ssl/certs/kms-ca.pem", b"-----BEGIN CERTIFICATE-----\nMIICAfixture\n-----END CERTIFICATE-----\n", 0o644, 0, 0),
        ("/usr/lib/x86_64-linux-gnu/pkcs11/libkms-pkcs11.so", b"\x7fELF fixture provider\n", 0o755, 0, 0),
        ("/opt/kms-agent/bin/kms-agent", b"#!/bin/sh\nexec true\n", 0o755, 0, 0),
    ];
    for (path, data, mode, uid, gid) in files {
        let p = env.write(path, data);
        std::os::unix::fs::chown(&p, Some(*uid), Some(*gid)).unwrap();
        env.chmod(path, *mode);
    }
    // Every directory's mode is set, so no umask can change the manifest.
    for (dir, mode) in [
        ("/etc", 0o755),
        ("/etc/ssl", 0o755),
        ("/opt", 0o755),
        ("/opt/kms-agent", 0o755),
        ("/opt/kms-agent/bin", 0o755),
        ("/usr", 0o755),
        ("/usr/lib", 0o755),
        ("/usr/lib/x86_64-linux-gnu", 0o755),
        ("/usr/lib/x86_64-linux-gnu/pkcs11", 0o755),
        ("/etc/kms-client", 0o750),
        ("/etc/kms-client/keys", 0o700),
        ("/etc/ssl/certs", 0o755),
    ] {
        env.chmod(dir, mode);
    }
    std::os::unix::fs::chown(env.at("/etc/kms-client/keys"), Some(990), Some(990)).unwrap();
    std::os::unix::fs::symlink(
        "/etc/ssl/certs/kms-ca.pem",
        env.at("/etc/ssl/certs/0a1b2c3d.0"),
    )
    .unwrap();
    // An ACL granting the agent's group read on the key, and xattrs.
    let key = env.at("/etc/kms-client/keys/client.key");
    sh(
        "setfacl",
        &["-m".as_ref(), "g:991:r".as_ref(), key.as_os_str()],
    );
    let agent = env.at("/opt/kms-agent/bin/kms-agent");
    sh(
        "setfattr",
        &[
            "-n".as_ref(),
            "user.origin".as_ref(),
            "-v".as_ref(),
            "image-build".as_ref(),
            agent.as_os_str(),
        ],
    );
    // A name with a newline and a byte that is not UTF-8.
    let odd = env
        .at("/etc/kms-client/")
        .join(std::ffi::OsStr::from_bytes(b"old\nkey\xff.bak"));
    std::fs::write(&odd, b"leftover\n").unwrap();
    std::os::unix::fs::chown(&odd, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&odd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

fn export(env: &TestEnv) -> Vec<u8> {
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/golden-image.yaml");
    let r = env.run(&[
        "baseline".as_ref(),
        "init".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        "--db".as_ref(),
        env.db().as_os_str(),
        "--root".as_ref(),
        env.root().as_os_str(),
    ]);
    assert_eq!(r.code, 0, "init: {}", r.stderr);
    let r = env.export();
    r.raw_stdout
}

#[test]
fn the_test_golden_images_export_equals_the_reviewed_manifest() {
    require_root!();
    for tool in ["setfacl", "setfattr"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but no {tool}"
            );
            eprintln!("skipped: needs {tool}");
            return;
        }
    }
    let env = TestEnv::new();
    build_image(&env);
    let got = export(&env);
    if std::env::var("KMSENTRY_BLESS").as_deref() == Ok("1") {
        std::fs::write(GOLDEN, &got).unwrap();
    }
    let want =
        std::fs::read(GOLDEN).expect("baselines/test-golden-image.txt (KMSENTRY_BLESS=1 makes it)");
    if got != want {
        let (g, w) = (
            String::from_utf8(got).unwrap_or_default(),
            String::from_utf8(want).unwrap_or_default(),
        );
        for (i, (a, b)) in g.lines().zip(w.lines()).enumerate() {
            assert_eq!(
                a,
                b,
                "line {} differs from baselines/test-golden-image.txt",
                i + 1
            );
        }
        panic!(
            "line counts differ: {} exported, {} in the manifest",
            g.lines().count(),
            w.lines().count()
        );
    }
    // A second build of the same image (new inodes, new times) exports the same bytes.
    let again = TestEnv::new();
    build_image(&again);
    assert_eq!(export(&again), want);
}

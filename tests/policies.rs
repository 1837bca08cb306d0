//! Every shipped policy passes `policy check`, both as text and resolved on this host.

mod util;
use util::*;

#[test]
fn every_shipped_policy_passes_policy_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let env = TestEnv::new();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        n += 1;
        // The golden-image policy covers all of /usr and /opt: resolving it on this host would
        // walk ~100k entries, so it is only validated; host policies are resolved too.
        let mut args = vec![
            std::ffi::OsStr::new("policy"),
            std::ffi::OsStr::new("check"),
            path.as_os_str(),
        ];
        if path.file_name().and_then(|n| n.to_str()) == Some("golden-image.yaml") {
            args.push(std::ffi::OsStr::new("--no-resolve"));
        }
        let r = env.run(&args);
        assert_eq!(r.code, 0, "{path:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("valid policy"), "{path:?}: {}", r.stdout);
    }
    assert!(n >= 3, "expected the shipped policies in {dir:?}");
}

/// Directories where KMS, HSM and EKM clients keep their credentials.
const KMS_CLIENT_DIRS: [&str; 12] = [
    "/etc/kms-client",
    "/etc/vault.d",
    "/etc/vault-agent.d",
    "/etc/openbao",
    "/opt/vault/tls",
    "/etc/kmip",
    "/etc/pykmip",
    "/etc/aws-kms-pkcs11",
    "/etc/ekm",
    "/etc/ekm.d",
    "/opt/cloudhsm/etc",
    "/usr/safenet/lunaclient/cert/client",
];

/// Credential file names as KMS clients lay them out.
const CREDENTIAL_NAMES: [&str; 12] = [
    "client.pem",
    "client.crt",
    "client.key",
    "client-key.pem",
    "client-cert.pem",
    "ca.pem",
    "certs/ca.pem",
    "certs/client.crt",
    "certs/client.pem",
    "keys/client.key",
    "keys/client.pem",
    "tls/sub/server.crt",
];

#[test]
fn every_shipped_policy_classes_kms_client_credentials_as_credentials() {
    use kmsentry::policy::Class;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut wrong = Vec::new();
    let mut judged = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let policy = kmsentry::policy::load(&path).unwrap();
        for d in KMS_CLIENT_DIRS {
            // A directory the policy does not guard at all is not its business.
            let guarded = ["config.conf", "certs/README", "agent.hcl"]
                .iter()
                .any(|n| policy.classify(format!("{d}/{n}").as_bytes()).is_some())
                || CREDENTIAL_NAMES
                    .iter()
                    .any(|n| policy.classify(format!("{d}/{n}").as_bytes()).is_some());
            if !guarded {
                continue;
            }
            for n in CREDENTIAL_NAMES {
                let p = format!("{d}/{n}");
                judged += 1;
                match policy.classify(p.as_bytes()) {
                    Some(g)
                        if matches!(
                            g.class,
                            Class::PrivateKey | Class::ClientCert | Class::CaCert
                        ) => {}
                    other => wrong.push(format!(
                        "{}: {p} -> {:?}",
                        kmsentry::sanitize::Name(std::os::unix::ffi::OsStrExt::as_bytes(
                            path.as_os_str()
                        )),
                        other.map(|g| (&g.name, g.class))
                    )),
                }
            }
        }
    }
    assert!(judged > 0);
    assert!(
        wrong.is_empty(),
        "credential files outside a credential class:\n{}",
        wrong.join("\n")
    );
}

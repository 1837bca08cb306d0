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

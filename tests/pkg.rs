//! The package-database reader against the real dpkg of this machine.

use kmsentry::fsroot::Root;
use kmsentry::pkg::{version, Dpkg};
use std::cmp::Ordering;
use std::path::Path;
use std::process::Command;

mod util;
use util::on_path;

/// dpkg is on every Debian machine this runs on; elsewhere (not under CI) the test skips.
fn need_dpkg() -> bool {
    if on_path("dpkg") {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "dpkg is missing under CI");
    false
}

#[test]
fn version_order_matches_dpkg_compare_versions() {
    if !need_dpkg() {
        return;
    }
    let versions = [
        "1.0",
        "1.0~rc1",
        "1.0~~",
        "1.0~",
        "1:0.1",
        "2.0",
        "3.0.20-1",
        "3.0.22-1",
        "3.0.9",
        "3.0.10",
        "1.0-1",
        "1.0-1+deb12u1",
        "1.0+b1",
        "1.0a",
        "1.0.0",
        "0:1.0",
        "1.0-1~bpo12+1",
        "2:1.0",
        "1.0-0",
        "1.0-a",
        "1.0-1.1",
        "10",
        "9.99",
        "1.2.3-4ubuntu5",
        "1.2.3-4",
        "3.0.20-1~deb12u1",
        "3.0.22-1~deb12u1",
    ];
    for a in versions {
        for b in versions {
            let dpkg = |op: &str| {
                Command::new("dpkg")
                    .args(["--compare-versions", a, op, b])
                    .status()
                    .unwrap()
                    .success()
            };
            let want = if dpkg("lt") {
                Ordering::Less
            } else if dpkg("eq") {
                Ordering::Equal
            } else {
                Ordering::Greater
            };
            assert_eq!(version::compare(a, b), Some(want), "{a} vs {b}");
        }
    }
}

#[test]
fn this_hosts_dpkg_database_names_owner_version_and_digest() {
    if !need_dpkg() {
        return;
    }
    let db = Dpkg::open(&Root::open(Path::new("/")).unwrap())
        .unwrap()
        .expect("a dpkg database");
    assert!(db.len() > 1000, "only {} owned paths", db.len());
    // dpkg itself: owner, version and MD5 as dpkg-query and md5sum say.
    let bin = if Path::new("/usr/bin/dpkg").exists() {
        "/usr/bin/dpkg"
    } else {
        "/bin/dpkg"
    };
    let o = db.owner(bin.as_bytes()).expect("dpkg owns its binary");
    assert_eq!(o.package, "dpkg");
    let v = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "dpkg"])
        .output()
        .unwrap();
    assert_eq!(o.version, String::from_utf8(v.stdout).unwrap());
    let sum = Command::new("md5sum").arg(bin).output().unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(o.md5.as_deref(), sum.split_whitespace().next());
    // A conffile of dpkg, and a path nobody owns.
    assert!(db
        .owner(b"/etc/dpkg/dpkg.cfg")
        .is_some_and(|c| c.conffile && c.package == "dpkg"));
    assert!(db.owner(b"/etc/kmsentry-no-such-file").is_none());
}

//! What an alert says about a file's state: `detail.before` and `detail.after` hold the
//! attributes that changed (mode, owner, group, ACL, xattrs, type, size, link target, and
//! any time the group compares), and the content hashes `blake3_before`/`blake3_after`.
//! A `created` alert's `after` (and a `deleted` one's `before`) holds the whole record.
//!
//! Never file content or key material: content only as its BLAKE3, and extended attributes
//! outside `security.*` and `system.*` (which hold labels, capabilities and ACLs) only as a
//! BLAKE3 of their value, since `user.*` and `trusted.*` may hold anything.
//! Owner and group names are resolved here, on the checker thread (NSS may be slow), never
//! on the permission thread.

use crate::alert::Alert;
use crate::baseline::entry::Entry;
use crate::policy::Attr;
use crate::sanitize::JsonName;
use crate::users::Names;
use serde_json::{Map, Value};

/// Longest xattr value shown as text; a longer one is shown as its hash.
const XATTR_SHOWN: usize = 256;

/// The attributes a whole-record `before`/`after` lists.
const WHOLE: [Attr; 8] = [
    Attr::Type,
    Attr::Size,
    Attr::Mode,
    Attr::Owner,
    Attr::Group,
    Attr::Acl,
    Attr::Xattr,
    Attr::LinkTarget,
];

fn text(b: &[u8]) -> Value {
    Value::String(JsonName(b).text().into_owned())
}

/// `e`'s attributes `which`, as an object.
pub fn attrs(e: &Entry, which: &[Attr], names: &mut Names) -> Map<String, Value> {
    let mut m = Map::new();
    for a in which {
        match a {
            Attr::Type => {
                m.insert("type".into(), e.ftype.as_str().into());
            }
            Attr::Size => {
                m.insert("size".into(), e.size.into());
            }
            Attr::Mode => {
                m.insert("mode".into(), format!("{:04o}", e.mode & 0o7777).into());
            }
            Attr::Owner => {
                m.insert("uid".into(), e.uid.into());
                if let Some(n) = names.user(e.uid) {
                    m.insert("user".into(), text(n.as_bytes()));
                }
            }
            Attr::Group => {
                m.insert("gid".into(), e.gid.into());
                if let Some(n) = names.group(e.gid) {
                    m.insert("group".into(), text(n.as_bytes()));
                }
            }
            Attr::Acl => {
                if let Some(acl) = &e.acl_access {
                    m.insert("acl".into(), text(acl.as_bytes()));
                }
                if let Some(acl) = &e.acl_default {
                    m.insert("default_acl".into(), text(acl.as_bytes()));
                }
            }
            Attr::Xattr => {
                let mut x = Map::new();
                for xa in &e.xattrs {
                    x.insert(
                        JsonName(&xa.name).text().into_owned(),
                        xattr_value(&xa.name, &xa.value),
                    );
                }
                m.insert("xattrs".into(), Value::Object(x));
            }
            Attr::LinkTarget => {
                if let Some(t) = &e.link_target {
                    m.insert("link_target".into(), text(t));
                }
            }
            Attr::Mtime => {
                m.insert("mtime_ns".into(), e.mtime_ns.into());
            }
            Attr::Ctime => {
                m.insert("ctime_ns".into(), e.ctime_ns.into());
            }
            Attr::Inode => {
                m.insert("inode".into(), e.ino.into());
            }
            Attr::Nlink => {
                m.insert("nlink".into(), e.nlink.into());
            }
            Attr::Content => {}
        }
    }
    m
}

/// An xattr value as an alert may show it.
fn xattr_value(name: &[u8], value: &[u8]) -> Value {
    let shown = (name.starts_with(b"security.") || name.starts_with(b"system."))
        && value.len() <= XATTR_SHOWN;
    if shown {
        // Labels end in a NUL; it says nothing.
        text(value.strip_suffix(&[0]).unwrap_or(value))
    } else {
        format!("blake3:{}", blake3::hash(value).to_hex()).into()
    }
}

/// Put the content hashes and the changed attributes of `before` → `after` into `a.detail`.
/// `changed` lists what differs; `None` for a whole record (creation or deletion).
pub fn describe(
    a: &mut Alert,
    before: Option<&Entry>,
    after: Option<&Entry>,
    changed: Option<&[Attr]>,
    names: &mut Names,
) {
    if let Some(h) = before.and_then(|e| e.hashes) {
        a.detail
            .insert("blake3_before".into(), hex::encode(h.blake3).into());
    }
    if let Some(h) = after.and_then(|e| e.hashes) {
        a.detail
            .insert("blake3_after".into(), hex::encode(h.blake3).into());
    }
    let which: &[Attr] = changed.unwrap_or(&WHOLE);
    if which.iter().all(|c| *c == Attr::Content) {
        return;
    }
    if let Some(b) = before {
        a.detail
            .insert("before".into(), Value::Object(attrs(b, which, names)));
    }
    if let Some(l) = after {
        a.detail
            .insert("after".into(), Value::Object(attrs(l, which, names)));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::Kind;
    use crate::baseline::diff::Severity;
    use crate::baseline::entry::{FileType, Xattr};

    /// A regular file of mode `mode` owned by root, without xattrs (the watch tests' fixture).
    pub(crate) fn file(path: &[u8], mode: u32) -> Entry {
        Entry {
            path: path.to_vec(),
            ftype: FileType::File,
            mode,
            uid: 0,
            gid: 0,
            size: 5,
            hashes: None,
            link_target: None,
            rdev: None,
            acl_access: None,
            acl_default: None,
            xattrs: Vec::new(),
            dev: 1,
            ino: 2,
            nlink: 1,
            mtime_ns: 3,
            ctime_ns: 4,
            group: "keys".into(),
            class: crate::policy::Class::PrivateKey,
            problem: None,
        }
    }

    fn entry() -> Entry {
        let mut e = file(b"/etc/kms/a.key", 0o600);
        e.xattrs = vec![
            Xattr {
                name: b"security.selinux".to_vec(),
                value: b"system_u:object_r:cert_t:s0\0".to_vec(),
            },
            Xattr {
                name: b"user.secret".to_vec(),
                value: b"hunter2".to_vec(),
            },
        ];
        e
    }

    #[test]
    fn attrib_alerts_say_the_new_mode_owner_and_xattrs() {
        let root = crate::fsroot::Root::open(std::path::Path::new("/")).unwrap();
        let mut names = Names::for_root(&root);
        let before = entry();
        let mut after = entry();
        after.mode = 0o4755;
        after.uid = 65534;
        after.xattrs[0].value = b"system_u:object_r:tmp_t:s0\0".to_vec();
        let mut a = Alert::new(Kind::Attrib, Severity::High);
        describe(
            &mut a,
            Some(&before),
            Some(&after),
            Some(&[Attr::Mode, Attr::Owner, Attr::Xattr]),
            &mut names,
        );
        let d = serde_json::Value::Object(a.detail);
        assert_eq!(d["before"]["mode"], "0600");
        assert_eq!(d["after"]["mode"], "4755");
        assert_eq!(d["before"]["uid"], 0);
        assert_eq!(d["after"]["uid"], 65534);
        assert_eq!(
            d["after"]["xattrs"]["security.selinux"],
            "system_u:object_r:tmp_t:s0"
        );
        // A user.* value is shown only as its hash.
        let shown = d["after"]["xattrs"]["user.secret"].as_str().unwrap();
        assert!(shown.starts_with("blake3:"));
        assert!(!d.to_string().contains("hunter2"));
        // Unchanged attributes are not listed.
        assert!(d["after"].get("gid").is_none());
    }

    #[test]
    fn a_created_file_lists_its_whole_record() {
        let root = crate::fsroot::Root::open(std::path::Path::new("/")).unwrap();
        let mut names = Names::for_root(&root);
        let mut a = Alert::new(Kind::Created, Severity::High);
        describe(&mut a, None, Some(&entry()), None, &mut names);
        let d = serde_json::Value::Object(a.detail);
        assert_eq!(d["after"]["type"], "file");
        assert_eq!(d["after"]["mode"], "0600");
        assert_eq!(d["after"]["size"], 5);
        assert!(d.get("before").is_none());
    }
}

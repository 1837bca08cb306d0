//! uid/gid → name, for display and for the baseline's `owner_name`/`group_name`.
//!
//! On the live host names come from NSS (so LDAP/SSSD users resolve); under `--root` they come
//! from the image's own `/etc/passwd` and `/etc/group`, read through the root handle, never
//! from the host. Lookups are cached; a failed lookup is `None`, never an error.

use crate::fsroot::Root;
use rustix::fs::OFlags;
use std::collections::HashMap;
use std::io::Read;

/// Name resolution for one root.
pub struct Names {
    image: Option<(HashMap<u32, String>, HashMap<u32, String>)>,
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl Names {
    /// Names for `root`: NSS for the host's `/`, the image's files otherwise.
    pub fn for_root(root: &Root) -> Names {
        let image = (!root.is_host()).then(|| {
            (
                parse_db(&read_small(root, b"/etc/passwd")),
                parse_db(&read_small(root, b"/etc/group")),
            )
        });
        Names {
            image,
            users: HashMap::new(),
            groups: HashMap::new(),
        }
    }

    /// The user name of `uid`, if known.
    pub fn user(&mut self, uid: u32) -> Option<String> {
        if let Some((u, _)) = &self.image {
            return u.get(&uid).cloned();
        }
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The group name of `gid`, if known.
    pub fn group(&mut self, gid: u32) -> Option<String> {
        if let Some((_, g)) = &self.image {
            return g.get(&gid).cloned();
        }
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            })
            .clone()
    }

    /// The uid of user `name`, if it exists in this root.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        match &self.image {
            Some((u, _)) => u.iter().find(|(_, n)| *n == name).map(|(id, _)| *id),
            None => nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw()),
        }
    }
}

impl Names {
    /// The gid of group `name`, if it exists in this root.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        match &self.image {
            Some((_, g)) => g.iter().find(|(_, n)| *n == name).map(|(id, _)| *id),
            None => nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .map(|g| g.gid.as_raw()),
        }
    }
}

fn read_small(root: &Root, path: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(fd) = root.resolve(path, OFlags::RDONLY) {
        let _ = std::fs::File::from(fd).take(16 << 20).read_to_end(&mut out);
    }
    out
}

/// `name:x:id:...` lines → id → name (first wins, as NSS files would).
fn parse_db(text: &[u8]) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut f = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let (Ok(name), Some(id)) = (
            std::str::from_utf8(name),
            std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if !name.is_empty() && !name.starts_with('#') {
            out.entry(id).or_insert_with(|| name.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_parsing_skips_garbage_and_keeps_the_first_name() {
        let m = parse_db(b"root:x:0:0:root:/root:/bin/bash\nbad line\nkms:x:998:998::/:/bin/false\ntoor:x:0:0::/:/bin/sh\n#c:x:5:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&998).map(String::as_str), Some("kms"));
        assert!(!m.contains_key(&5));
    }

    #[test]
    fn image_names_come_from_the_image() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "imgroot:x:0:0::/:/bin/sh\nkms:x:4242:4242::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(t.path().join("etc/group"), "wheel:x:0:\n").unwrap();
        let mut n = Names::for_root(&Root::open(t.path()).unwrap());
        assert_eq!(n.user(0).as_deref(), Some("imgroot"));
        assert_eq!(n.user(4242).as_deref(), Some("kms"));
        assert_eq!(n.group(0).as_deref(), Some("wheel"));
        assert_eq!(n.uid_of("kms"), Some(4242));
        assert_eq!(n.user(7), None);
    }
}

//! dpkg's database under a root: which installed package owns a path, at which version, and
//! the MD5 dpkg recorded for it. Read once per run into one path index; every file is read
//! through [`Root::resolve`] (inside the root, never through `/proc` magic links).

use crate::fsroot::Root;
use rustix::fs::OFlags;
use std::collections::HashMap;
use std::io::Read;

/// Where dpkg keeps its database, inside the root.
const ADMIN: &[u8] = b"/var/lib/dpkg";
/// A record file larger than this is refused (a real `status` is a few MiB).
const MAX_RECORD: u64 = 256 << 20;

/// The package that owns a path, as dpkg records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Package name (with `:arch` for a Multi-Arch: same package, as dpkg names it).
    pub package: String,
    pub version: String,
    /// dpkg's MD5 of the file (`info/PKG.md5sums`, or `Conffiles:` for a conffile), lower-case
    /// hex; `None` when dpkg recorded none (directories, some packages).
    pub md5: Option<String>,
    /// The path is one of the package's conffiles (an admin may change it legitimately).
    pub conffile: bool,
    /// The package's file was diverted here from this path (`dpkg-divert`).
    pub diverted_from: Option<Vec<u8>>,
}

/// dpkg's view of an image: the path index and what could not be read.
#[derive(Debug, Default)]
pub struct Dpkg {
    owners: HashMap<Vec<u8>, Owner>,
    /// Merged-`/usr` aliases present in the root: (`/bin/`, `/usr/bin/`).
    aliases: Vec<(Vec<u8>, Vec<u8>)>,
    /// Installed packages by name.
    pub packages: HashMap<String, String>,
    /// Records that were malformed or unreadable (skipped, counted).
    pub skipped: Vec<String>,
}

struct Stanza {
    package: String,
    arch: Option<String>,
    version: String,
    multi_arch_same: bool,
    conffiles: Vec<(Vec<u8>, String)>,
}

impl Dpkg {
    /// Read dpkg's database under `root`. `Ok(None)` when the root has no dpkg database.
    pub fn open(root: &Root) -> std::io::Result<Option<Dpkg>> {
        let status = match read(root, &join(ADMIN, b"/status")) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut db = Dpkg::default();
        for (a, b) in [
            (&b"/bin/"[..], &b"/usr/bin/"[..]),
            (b"/sbin/", b"/usr/sbin/"),
            (b"/lib/", b"/usr/lib/"),
            (b"/lib32/", b"/usr/lib32/"),
            (b"/lib64/", b"/usr/lib64/"),
            (b"/libx32/", b"/usr/libx32/"),
        ] {
            if is_usr_symlink(root, a) {
                db.aliases.push((a.to_vec(), b.to_vec()));
            }
        }
        for st in parse_status(&status, &mut db.skipped) {
            db.packages.insert(st.package.clone(), st.version.clone());
            db.load_package(root, &st);
        }
        if let Ok(d) = read(root, &join(ADMIN, b"/diversions")) {
            db.apply_diversions(&d);
        }
        Ok(Some(db))
    }

    /// The owner of the host-absolute `path` (as the image resolves merged-`/usr`).
    pub fn owner(&self, path: &[u8]) -> Option<&Owner> {
        self.owners.get(&self.canonical(path))
    }

    /// Number of owned paths.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// No owned paths.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    fn canonical(&self, path: &[u8]) -> Vec<u8> {
        for (a, b) in &self.aliases {
            if let Some(rest) = path.strip_prefix(a.as_slice()) {
                return [b.as_slice(), rest].concat();
            }
        }
        path.to_vec()
    }

    fn load_package(&mut self, root: &Root, st: &Stanza) {
        let name = match (&st.arch, st.multi_arch_same) {
            (Some(a), true) => format!("{}:{a}", st.package),
            _ => st.package.clone(),
        };
        // dpkg names the info files `PKG.list` or `PKG:ARCH.list`.
        let mut list = None;
        let mut stem = st.package.clone();
        for cand in [
            st.arch.as_ref().map(|a| format!("{}:{a}", st.package)),
            Some(st.package.clone()),
        ]
        .into_iter()
        .flatten()
        {
            let p = join(ADMIN, format!("/info/{cand}.list").as_bytes());
            if let Ok(l) = read(root, &p) {
                list = Some(l);
                stem = cand;
                break;
            }
        }
        let Some(list) = list else {
            self.skipped
                .push(format!("{name}: no info/{}.list", st.package));
            return;
        };
        let mut sums: HashMap<Vec<u8>, String> = HashMap::new();
        let p = join(ADMIN, format!("/info/{stem}.md5sums").as_bytes());
        if let Ok(m) = read(root, &p) {
            for line in m.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match parse_md5_line(line) {
                    Some((md5, rel)) => {
                        sums.insert(join(b"/", &rel), md5);
                    }
                    None => self
                        .skipped
                        .push(format!("{stem}.md5sums: a malformed line")),
                }
            }
        }
        for path in list.split(|&b| b == b'\n').filter(|l| l.starts_with(b"/")) {
            if path == b"/." {
                continue;
            }
            let key = self.canonical(path);
            let md5 = sums.get(path).cloned();
            self.owners.insert(
                key,
                Owner {
                    package: name.clone(),
                    version: st.version.clone(),
                    md5,
                    conffile: false,
                    diverted_from: None,
                },
            );
        }
        for (path, md5) in &st.conffiles {
            let key = self.canonical(path);
            let o = self.owners.entry(key).or_insert_with(|| Owner {
                package: name.clone(),
                version: st.version.clone(),
                md5: None,
                conffile: true,
                diverted_from: None,
            });
            o.conffile = true;
            if md5 != "newconffile" && md5 != "obsolete" {
                o.md5 = Some(md5.clone());
            }
        }
    }

    /// `diversions`: groups of three lines, `FROM`, `TO`, `HOLDER` (`:` for a local
    /// diversion). The package (not the holder) that ships `FROM` has its file at `TO`.
    fn apply_diversions(&mut self, d: &[u8]) {
        let lines: Vec<&[u8]> = d.split(|&b| b == b'\n').collect();
        for g in lines.chunks(3) {
            let [from, to, holder] = g else {
                if g.iter().any(|l| !l.is_empty()) {
                    self.skipped.push("diversions: a truncated record".into());
                }
                continue;
            };
            let (from, to) = (self.canonical(from), self.canonical(to));
            let Ok(holder) = std::str::from_utf8(holder) else {
                self.skipped
                    .push("diversions: a holder that is not UTF-8".into());
                continue;
            };
            if let Some(o) = self.owners.get(&from).cloned() {
                if o.package != holder && !o.package.starts_with(&format!("{holder}:")) {
                    self.owners.remove(&from);
                    let mut moved = o;
                    moved.diverted_from = Some(from.clone());
                    self.owners.insert(to, moved);
                }
            }
        }
    }
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = a.to_vec();
    if v.ends_with(b"/") && b.starts_with(b"/") {
        v.pop();
    }
    v.extend_from_slice(b);
    v
}

fn read(root: &Root, path: &[u8]) -> std::io::Result<Vec<u8>> {
    let fd = root.resolve(path, OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY)?;
    let f = std::fs::File::from(fd);
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(MAX_RECORD).read_to_end(&mut buf)?;
    Ok(buf)
}

/// `/bin` is a symlink to `usr/bin` (or `/usr/bin`) in the image: merged `/usr`.
fn is_usr_symlink(root: &Root, dir: &[u8]) -> bool {
    let name = dir.strip_suffix(b"/").unwrap_or(dir);
    let Ok((parent, cname)) = root.open_parent(name) else {
        return false;
    };
    match rustix::fs::readlinkat(&parent, cname.as_c_str(), Vec::new()) {
        Ok(t) => {
            let t = t.to_bytes();
            let t = t.strip_prefix(b"/").unwrap_or(t);
            t == [b"usr", name].concat().as_slice()
        }
        Err(_) => false,
    }
}

/// The stanzas of a control file: blocks separated by blank lines.
fn split_stanzas(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = s;
    std::iter::from_fn(move || {
        while rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 1);
        let (block, tail) = rest.split_at(end);
        rest = tail;
        Some(block)
    })
}

/// `d41d8cd98f00b204e9800998ecf8427e  usr/bin/x`.
fn parse_md5_line(line: &[u8]) -> Option<(String, Vec<u8>)> {
    let (hex, rest) = line.split_at_checked(32)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let rel = rest.strip_prefix(b"  ")?;
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        return None;
    }
    Some((
        std::str::from_utf8(hex).ok()?.to_ascii_lowercase(),
        rel.to_vec(),
    ))
}

/// The installed packages of `status` (RFC 822-style stanzas); a stanza that is not
/// `install ok installed` (or `hold ok installed`) is skipped, a malformed one counted.
fn parse_status(s: &[u8], skipped: &mut Vec<String>) -> Vec<Stanza> {
    let mut out = Vec::new();
    for raw in split_stanzas(s) {
        let Ok(block) = std::str::from_utf8(raw) else {
            skipped.push("status: a stanza that is not UTF-8".into());
            continue;
        };
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in block.lines() {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = fields.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        if fields.is_empty() {
            continue;
        }
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
        let (Some(package), Some(status)) = (get("package"), get("status")) else {
            skipped.push("status: a stanza without Package or Status".into());
            continue;
        };
        if !status.ends_with("ok installed") {
            continue;
        }
        let Some(version) = get("version") else {
            skipped.push(format!("status: {package} has no Version"));
            continue;
        };
        let conffiles = get("conffiles")
            .map(|c| {
                c.lines()
                    .filter_map(|l| {
                        let mut it = l.split_whitespace();
                        let p = it.next()?;
                        let md5 = it.next()?;
                        p.starts_with('/')
                            .then(|| (p.as_bytes().to_vec(), md5.to_ascii_lowercase()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Stanza {
            package: package.to_string(),
            arch: get("architecture")
                .filter(|a| *a != "all")
                .map(str::to_string),
            version: version.to_string(),
            multi_arch_same: get("multi-arch") == Some("same"),
            conffiles,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        let info = d.join("var/lib/dpkg/info");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::create_dir_all(d.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", d.join("bin")).unwrap();
        std::fs::write(
            d.join("var/lib/dpkg/status"),
            "Package: openssl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0.20-1~deb12u1\nConffiles:\n /etc/ssl/openssl.cnf 0123456789abcdef0123456789abcdef\n\n\
Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 3.0.20-1~deb12u1\n\n\
Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
Package: broken\nVersion: 1\n",
        )
        .unwrap();
        std::fs::write(
            info.join("openssl.list"),
            "/.\n/usr\n/usr/bin\n/usr/bin/openssl\n/bin/c_rehash\n/etc/ssl/openssl.cnf\n",
        )
        .unwrap();
        std::fs::write(
            info.join("openssl.md5sums"),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  usr/bin/openssl\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  bin/c_rehash\nnot a line\n",
        )
        .unwrap();
        std::fs::write(
            info.join("libssl3:amd64.list"),
            "/usr/lib/x86_64-linux-gnu/libssl.so.3\n",
        )
        .unwrap();
        std::fs::write(
            d.join("var/lib/dpkg/diversions"),
            "/usr/bin/openssl\n/usr/bin/openssl.distrib\nlocal-wrapper\n",
        )
        .unwrap();
        let root = Root::open(d).unwrap();
        (t, root)
    }

    #[test]
    fn owners_versions_digests_conffiles_aliases_and_diversions() {
        let (_t, root) = image();
        let db = Dpkg::open(&root).unwrap().unwrap();
        // merged /usr: dpkg says /bin/c_rehash, the image has it at /usr/bin/c_rehash
        let o = db.owner(b"/usr/bin/c_rehash").unwrap();
        assert_eq!(o.package, "openssl");
        assert_eq!(o.md5.as_deref(), Some("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"));
        assert_eq!(db.owner(b"/bin/c_rehash"), Some(o));
        // conffile with dpkg's digest
        let c = db.owner(b"/etc/ssl/openssl.cnf").unwrap();
        assert!(c.conffile);
        assert_eq!(c.md5.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        // diverted: the package's file now lives at .distrib; the path itself is not owned
        assert_eq!(db.owner(b"/usr/bin/openssl"), None);
        let d = db.owner(b"/usr/bin/openssl.distrib").unwrap();
        assert_eq!(d.diverted_from.as_deref(), Some(&b"/usr/bin/openssl"[..]));
        assert_eq!(d.md5.as_deref(), Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        // Multi-Arch: same is named with its architecture
        let l = db.owner(b"/usr/lib/x86_64-linux-gnu/libssl.so.3").unwrap();
        assert_eq!(l.package, "libssl3:amd64");
        assert_eq!(l.version, "3.0.20-1~deb12u1");
        // not installed, malformed: not owners, counted
        assert!(!db.packages.contains_key("gone"));
        assert!(
            db.skipped.iter().any(|s| s.contains("malformed")),
            "{:?}",
            db.skipped
        );
        assert!(
            db.skipped.iter().any(|s| s.contains("without")),
            "{:?}",
            db.skipped
        );
        assert_eq!(db.owner(b"/usr/bin/nothing"), None);
    }

    #[test]
    fn no_database_is_none_not_an_error() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        assert!(Dpkg::open(&root).unwrap().is_none());
    }
}

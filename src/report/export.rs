//! The `baseline export` manifest: one line per entry, sorted by raw path bytes, holding what
//! `verify` compares by default and nothing volatile (no times, inode, device, root or run
//! time), so two builds of the same image export the same text. Fields are space-separated;
//! names and values are escaped with `ExportName` (spaces as `\x20`), so a line splits
//! unambiguously and `sanitize::unescape` recovers the bytes.

use crate::baseline::attrs;
use crate::baseline::entry::Entry;
use crate::sanitize::ExportName;
use std::fmt::Write as _;

/// One manifest line (without the newline).
pub fn export_line(e: &Entry) -> String {
    let mut s = format!(
        "{} type={} mode={:04o} uid={} gid={}",
        ExportName(&e.path),
        e.ftype.as_str(),
        e.mode,
        e.uid,
        e.gid
    );
    if let Some((ma, mi)) = e.rdev {
        let _ = write!(s, " rdev={ma}:{mi}");
    }
    if e.ftype == crate::baseline::FileType::File {
        let _ = write!(s, " size={}", e.size);
        match &e.hashes {
            Some(h) => {
                let _ = write!(s, " blake3={}", hex::encode(h.blake3));
                if let Some(sha) = &h.sha256 {
                    let _ = write!(s, " sha256={}", hex::encode(sha));
                }
            }
            None => s.push_str(" content=unknown"),
        }
    }
    if let Some(t) = &e.link_target {
        let _ = write!(s, " target={}", ExportName(t));
    }
    if let Some(a) = &e.acl_access {
        let _ = write!(s, " acl={}", ExportName(a.as_bytes()));
    }
    if let Some(a) = &e.acl_default {
        let _ = write!(s, " default_acl={}", ExportName(a.as_bytes()));
    }
    for x in &e.xattrs {
        let _ = write!(
            s,
            " xattr:{}={}",
            ExportName(&x.name),
            ExportName(attrs::value_text(&x.name, &x.value).as_bytes())
        );
    }
    let _ = write!(
        s,
        " group={} class={}",
        ExportName(e.group.as_bytes()),
        e.class.as_str()
    );
    if let Some(p) = &e.problem {
        let _ = write!(s, " problem={}", ExportName(p.to_string().as_bytes()));
    }
    s
}

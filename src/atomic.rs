//! The one helper that writes files kmsentry creates (reports via `--output`, later restores
//! and store objects): a temp file in the same directory (0600 unless told otherwise), write,
//! `fsync`, `rename` over the destination, `fsync` the directory. The temp is removed on any
//! error, so a reader sees the old file or the new one, never half of one.

use crate::error::{Error, Result};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Atomically replace `dest` with `data`, created with permission bits `mode`.
pub fn write_file(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let name = dest.as_os_str().as_bytes();
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = dest
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: names no file", crate::sanitize::Name(name))))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".kmsentry-tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", name, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_atomically_with_the_requested_mode_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("out.json");
        std::fs::write(&p, b"old").unwrap();
        write_file(&p, b"new", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let e = write_file(Path::new("/nonexistent-dir/x/out.json"), b"x", 0o600).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent-dir/x/out.json: write"),
            "{e}"
        );
    }
}

//! `kmsentry key gen --out K`: an ed25519 signing key (PKCS#8 PEM, 0600) and `K.pub`.

use super::Common;
use crate::error::{Error, Result};
use crate::exit::ExitCode;
use crate::sanitize::Name;
use crate::store::signing;
use clap::Args;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct GenArgs {
    /// Where to write the private key; the public key goes to the same path plus `.pub`.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing key (baselines signed with the old key will no longer verify).
    #[arg(long)]
    force: bool,
}

pub(crate) fn gen(a: &GenArgs, common: Common) -> Result<ExitCode> {
    let name = a.out.as_os_str().as_bytes();
    if !a.force && std::fs::symlink_metadata(&a.out).is_ok() {
        return Err(Error::Usage(format!(
            "{}: a key already exists; pass --force to replace it",
            Name(name)
        )));
    }
    let key = signing::generate()?;
    let pub_path = signing::write_keypair(&key, &a.out)?;
    if !common.quiet {
        eprintln!(
            "kmsentry: wrote signing key {} (0600) and public key {} (id {})",
            Name(name),
            Name(pub_path.as_os_str().as_bytes()),
            signing::key_id(key.verifying_key().as_bytes())
        );
    }
    Ok(ExitCode::Clean)
}

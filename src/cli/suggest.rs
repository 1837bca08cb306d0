//! `kmsentry policy suggest`: read what is installed on this host (or an image under `--root`)
//! and print a policy for it, one group per source with a comment saying where it came from.
//!
//! Sources: OpenSSL configuration (and the engine/provider modules it loads), p11-kit module
//! files (and the PKCS#11 modules they name, with their build-id and SONAME as `expect:`),
//! GnuTLS configuration, NSS databases, the system CA bundle and private-key directory, and
//! KMS client configuration files (KMIP, Vault, HSM clients), whose certificate, key and
//! module paths are read out and classified by inspecting the files they name. Every file is
//! read through the root handle; nothing is followed out of the root. Read-only.

use crate::credential::{self, elf, record, CredKind};
use crate::error::Result;
use crate::exit::ExitCode;
use crate::fsroot::Root;
use crate::policy::Class;
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct SuggestArgs {
    /// Read the installed configuration under this directory, e.g. a mounted image.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Write the policy to this file (atomically) instead of stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
}

/// Config files read at most this large.
const CONFIG_MAX: u64 = 1 << 20;

const OPENSSL_CONFIGS: &[&str] = &[
    "/etc/ssl/openssl.cnf",
    "/usr/lib/ssl/openssl.cnf",
    "/etc/pki/tls/openssl.cnf",
];
const P11KIT_DIRS: &[&str] = &[
    "/etc/pkcs11/modules",
    "/usr/share/p11-kit/modules",
    "/usr/local/share/p11-kit/modules",
];
/// Where p11-kit looks for a module named without a directory.
const PKCS11_MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
];
const GNUTLS_CONFIGS: &[&str] = &["/etc/gnutls/config", "/etc/gnutls/pkcs11.conf"];
const NSS_DBS: &[&str] = &["/etc/pki/nssdb"];
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];
const PRIVATE_DIRS: &[&str] = &["/etc/ssl/private", "/etc/pki/tls/private"];
/// KMS client configuration: files, or directories whose files (one level) are configs.
const KMS_CONFIGS: &[&str] = &[
    "/etc/pykmip",
    "/etc/kmip",
    "/etc/vault.d",
    "/etc/vault-agent.d",
    "/etc/kms",
    "/etc/kms-client",
    "/etc/luna",
    "/etc/Chrystoki.conf",
    "/etc/fortanix",
    "/etc/thales",
    "/etc/softhsm/softhsm2.conf",
    "/etc/softhsm2.conf",
];

/// One group being built.
struct Suggested {
    class: Class,
    paths: Vec<String>,
    sources: Vec<String>,
    expect: Option<elf::ElfFacts>,
}

struct Builder<'a> {
    root: &'a Root,
    groups: BTreeMap<String, Suggested>,
    order: Vec<String>,
}

impl Builder<'_> {
    fn add(&mut self, group: &str, class: Class, path: &str, source: &str) {
        if !self.order.iter().any(|g| g == group) {
            self.order.push(group.to_string());
        }
        let g = self
            .groups
            .entry(group.to_string())
            .or_insert_with(|| Suggested {
                class,
                paths: Vec::new(),
                sources: Vec::new(),
                expect: None,
            });
        if !g.paths.iter().any(|p| p == path) {
            g.paths.push(path.to_string());
        }
        if !g.sources.iter().any(|s| s == source) {
            g.sources.push(source.to_string());
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.root
            .resolve(path.as_bytes(), rustix::fs::OFlags::PATH)
            .is_ok()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        record::read_file(self.root, path.as_bytes(), CONFIG_MAX)
            .ok()
            .map(|b| b.to_vec())
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let Ok(fd) = self.root.resolve(
            dir.as_bytes(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        ) else {
            return Vec::new();
        };
        let Ok(mut d) = rustix::fs::Dir::read_from(&fd) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(Ok(ent)) = d.next() {
            let name = ent.file_name().to_bytes();
            if name.starts_with(b".") || out.len() >= 1000 {
                continue;
            }
            if let Ok(n) = std::str::from_utf8(name) {
                out.push(format!("{}/{n}", dir.trim_end_matches('/')));
            }
        }
        out.sort();
        out
    }

    /// A PKCS#11 or engine module: its own provider-binary group, with the build it is now.
    fn module(&mut self, path: &str, source: &str) {
        let resolved = if path.starts_with('/') {
            Some(path.to_string())
        } else {
            PKCS11_MODULE_DIRS
                .iter()
                .map(|d| format!("{d}/{path}"))
                .find(|p| self.exists(p))
        };
        let Some(p) = resolved.filter(|p| self.exists(p)) else {
            return;
        };
        let base = p.rsplit('/').next().unwrap_or("module");
        let stem: String = base
            .split(".so")
            .next()
            .unwrap_or(base)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = format!("provider-{}", stem.trim_start_matches("lib"));
        self.add(&name, Class::ProviderBinary, &p, source);
        let facts = record::read_file(self.root, p.as_bytes(), 256 << 20)
            .ok()
            .and_then(|b| elf::elf_facts(&b).ok());
        if let (Some(g), Some(f)) = (self.groups.get_mut(&name), facts) {
            g.expect = Some(f);
        }
    }

    /// A credential path a configuration names: classified by what the file holds.
    fn credential(&mut self, path: &str, source: &str, hint_ca: bool) {
        if path.ends_with(".so") || path.contains(".so.") {
            self.module(path, source);
            return;
        }
        let Some(bytes) = record::read_file(self.root, path.as_bytes(), CONFIG_MAX).ok() else {
            return;
        };
        let facts = credential::inspect(&bytes);
        let class = match (facts.kind(), &facts) {
            (CredKind::PrivateKey | CredKind::Mixed, _) => Class::PrivateKey,
            (CredKind::CertificateBundle, _) => Class::CaCert,
            (CredKind::Certificate, credential::Facts::Certs(c))
                if hint_ca || c.first().and_then(|c| c.is_ca) == Some(true) =>
            {
                Class::CaCert
            }
            (CredKind::Certificate, _) => Class::ClientCert,
            _ if hint_ca => Class::CaCert,
            _ => return,
        };
        let group = match class {
            Class::PrivateKey => "kms-client-keys",
            Class::CaCert => "kms-ca",
            _ => "kms-client-certs",
        };
        self.add(group, class, path, source);
    }
}

/// Absolute paths in a config line, with the key they follow (`certfile = /x` → `certfile`).
fn paths_in(line: &str) -> Vec<(String, String)> {
    let line = line.trim();
    if line.starts_with('#') || line.starts_with(';') || line.starts_with("//") {
        return Vec::new();
    }
    let key = line
        .split(|c: char| c == '=' || c == ':' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_ascii_lowercase();
    line.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '=' | ',' | '[' | ']'))
        .filter(|t| t.starts_with('/') && t.len() > 1 && !t.contains("://"))
        .map(|t| (key.clone(), t.trim_end_matches([';', ')']).to_string()))
        .collect()
}

fn is_credential_path(p: &str) -> bool {
    const EXT: &[&str] = &[".pem", ".crt", ".cer", ".key", ".der", ".so"];
    EXT.iter().any(|e| p.ends_with(e)) || p.contains(".so.")
}

pub(crate) fn suggest(a: &SuggestArgs) -> Result<ExitCode> {
    let root = super::open_root(&a.root)?;
    let mut b = Builder {
        root: &root,
        groups: BTreeMap::new(),
        order: Vec::new(),
    };
    for cnf in OPENSSL_CONFIGS {
        let Some(text) = b.read(cnf) else { continue };
        let src = format!("OpenSSL configuration {cnf}");
        b.add("openssl-config", Class::KmsConfig, cnf, &src);
        for line in lossy(&text).lines() {
            for (key, p) in paths_in(line) {
                match key.as_str() {
                    "dynamic_path" | "module_path" | "module" | "pkcs11-module-path" => {
                        b.module(&p, &src)
                    }
                    ".include" => b.add("openssl-config", Class::KmsConfig, &p, &src),
                    _ if is_credential_path(&p) => b.credential(&p, &src, key.contains("ca")),
                    _ => {}
                }
            }
        }
    }
    for dir in P11KIT_DIRS {
        for file in b.list(dir).into_iter().filter(|f| f.ends_with(".module")) {
            let src = format!("p11-kit module file {file}");
            b.add("p11-kit-modules", Class::KmsConfig, &file, &src);
            let Some(text) = b.read(&file) else { continue };
            for line in lossy(&text).lines() {
                if let Some(rest) = line.trim().strip_prefix("module:") {
                    b.module(rest.trim(), &src);
                }
            }
        }
    }
    for cnf in GNUTLS_CONFIGS {
        if b.exists(cnf) {
            b.add(
                "gnutls-config",
                Class::KmsConfig,
                cnf,
                &format!("GnuTLS configuration {cnf}"),
            );
        }
    }
    for db in NSS_DBS {
        for f in [
            "cert9.db",
            "key4.db",
            "pkcs11.txt",
            "cert8.db",
            "key3.db",
            "secmod.db",
        ] {
            let p = format!("{db}/{f}");
            if b.exists(&p) {
                let class = if f.starts_with("key") {
                    Class::PrivateKey
                } else {
                    Class::Generic
                };
                let group = if f.starts_with("key") {
                    "nss-keys"
                } else {
                    "nss-db"
                };
                b.add(group, class, &p, &format!("NSS database {db}"));
            }
        }
    }
    for bundle in CA_BUNDLES {
        if b.exists(bundle) {
            b.add(
                "system-ca-bundle",
                Class::CaCert,
                bundle,
                &format!("system trust store {bundle}"),
            );
        }
    }
    for dir in PRIVATE_DIRS {
        if b.exists(dir) {
            b.add(
                "tls-private-keys",
                Class::PrivateKey,
                dir,
                &format!("TLS private key directory {dir}"),
            );
        }
    }
    for place in KMS_CONFIGS {
        let files = match b.list(place) {
            v if !v.is_empty() => v,
            _ if b.exists(place) => vec![place.to_string()],
            _ => continue,
        };
        for file in files {
            let Some(text) = b.read(&file) else { continue };
            let src = format!("KMS client configuration {file}");
            if is_credential_path(&file) {
                b.credential(&file, &src, false);
                continue;
            }
            b.add("kms-client-config", Class::KmsConfig, &file, &src);
            for line in lossy(&text).lines() {
                for (key, p) in paths_in(line) {
                    if key.contains("lib") || key.contains("module") || p.ends_with(".so") {
                        b.module(&p, &src);
                    } else if is_credential_path(&p) || key.contains("cert") || key.contains("key")
                    {
                        b.credential(&p, &src, key.contains("ca"));
                    }
                }
            }
        }
    }
    let out = render(&b, &super::hostname(), a.root.is_some());
    super::emit(&a.output, out.as_bytes())?;
    Ok(ExitCode::Clean)
}

/// Text for parsing configuration lines (invalid UTF-8 becomes U+FFFD, so such paths are
/// never taken for real ones).
fn lossy(b: &[u8]) -> String {
    b.utf8_chunks()
        .map(|c| c.valid())
        .collect::<Vec<_>>()
        .join("\u{fffd}")
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn render(b: &Builder<'_>, host: &str, image: bool) -> String {
    let mut y = String::new();
    y.push_str(&format!(
        "# kmsentry policy suggested by `kmsentry policy suggest` for {} on {}.\n# Review it: add access allow-lists, tighten paths, then `kmsentry policy check`.\nversion: 1\nexpiry_warning_days: {}\ngroups:\n",
        if image { "an image" } else { "host" },
        if image { "(--root)".to_string() } else { host.to_string() },
        crate::policy::compile::DEFAULT_EXPIRY_WARNING_DAYS
    ));
    if b.order.is_empty() {
        y.push_str("  # nothing found: no OpenSSL, p11-kit, GnuTLS, NSS or KMS client configuration\n  - name: kms-client-config\n    class: kms-config\n    paths: [/etc/kms]\n");
        return y;
    }
    for name in &b.order {
        let Some(g) = b.groups.get(name) else {
            continue;
        };
        for s in &g.sources {
            y.push_str(&format!("  # from: {}\n", s.replace('\n', " ")));
        }
        y.push_str(&format!(
            "  - name: {name}\n    class: {}\n    paths:\n",
            g.class.as_str()
        ));
        for p in &g.paths {
            y.push_str(&format!("      - {}\n", q(p)));
        }
        if let Some(e) = &g.expect {
            if e.build_id.is_some() || e.soname.is_some() {
                y.push_str("    expect:   # the build installed now\n");
                if let Some(id) = &e.build_id {
                    y.push_str(&format!("      build_id: {}\n", q(id)));
                }
                if let Some(s) = &e.soname {
                    y.push_str(&format!("      soname: {}\n", q(s)));
                }
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_yield_keyed_absolute_paths() {
        assert_eq!(
            paths_in("certfile = /etc/kmip/client.pem"),
            vec![("certfile".into(), "/etc/kmip/client.pem".into())]
        );
        assert_eq!(
            paths_in("  tls_key_file = \"/etc/vault.d/k.key\""),
            vec![("tls_key_file".into(), "/etc/vault.d/k.key".into())]
        );
        assert!(paths_in("# certfile = /x.pem").is_empty());
        assert!(paths_in("url = https://kms.example/x").is_empty());
    }
}

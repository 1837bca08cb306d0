//! Posture: what an auditor flags about the credential files and provider binaries a policy
//! guards, independent of any baseline. Private keys open to group or others or owned by the
//! wrong user; certificates expired, not yet valid or expiring; weak keys and signatures;
//! certificates without their key and keys without a certificate; CA files that are not CAs;
//! provider binaries writable by non-root, setuid, or not the build the policy expects.
//!
//! Pure: (entries, their credential records and ELF facts, the policy, the time, the allowed
//! owners) → findings. No clock, no I/O; the CLI gathers the inputs. Each check has a stable
//! rule id (`KMS-…`) used in JSON, SARIF, JUnit and XCCDF output.

use super::elf::ElfFacts;
use super::{CredRecord, SpkiSha256};
use crate::baseline::diff::Severity;
use crate::baseline::{Entry, FileType};
use crate::policy::{Class, CompiledPolicy};
use std::collections::HashSet;

/// One posture check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    KeyPerm,
    KeyOwner,
    CertExpired,
    CertNotYetValid,
    CertExpiring,
    WeakKey,
    WeakSignature,
    CertNoKey,
    KeyNoCert,
    CaNotCa,
    Unparseable,
    ProviderWritable,
    ProviderSetuid,
    ProviderVersion,
    /// Not a posture check: the rule of a `rotated` finding (a certificate renewal).
    CertRotated,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 15] = [
        Rule::KeyPerm,
        Rule::KeyOwner,
        Rule::CertExpired,
        Rule::CertNotYetValid,
        Rule::CertExpiring,
        Rule::WeakKey,
        Rule::WeakSignature,
        Rule::CertNoKey,
        Rule::KeyNoCert,
        Rule::CaNotCa,
        Rule::Unparseable,
        Rule::ProviderWritable,
        Rule::ProviderSetuid,
        Rule::ProviderVersion,
        Rule::CertRotated,
    ];

    /// The stable id.
    pub fn id(self) -> &'static str {
        match self {
            Rule::KeyPerm => "KMS-KEY-PERM",
            Rule::KeyOwner => "KMS-KEY-OWNER",
            Rule::CertExpired => "KMS-CERT-EXPIRED",
            Rule::CertNotYetValid => "KMS-CERT-NOT-YET-VALID",
            Rule::CertExpiring => "KMS-CERT-EXPIRING",
            Rule::WeakKey => "KMS-WEAK-KEY",
            Rule::WeakSignature => "KMS-WEAK-SIGNATURE",
            Rule::CertNoKey => "KMS-CERT-NO-KEY",
            Rule::KeyNoCert => "KMS-KEY-NO-CERT",
            Rule::CaNotCa => "KMS-CA-NOT-CA",
            Rule::Unparseable => "KMS-CRED-UNPARSEABLE",
            Rule::ProviderWritable => "KMS-PROVIDER-WRITABLE",
            Rule::ProviderSetuid => "KMS-PROVIDER-SETUID",
            Rule::ProviderVersion => "KMS-PROVIDER-VERSION",
            Rule::CertRotated => "KMS-CERT-ROTATED",
        }
    }

    /// The rule for an id.
    pub fn parse(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    /// A short title.
    pub fn title(self) -> &'static str {
        match self {
            Rule::KeyPerm => "Private key readable or writable by group or others",
            Rule::KeyOwner => "Private key not owned by root or an allowed service user",
            Rule::CertExpired => "Certificate expired",
            Rule::CertNotYetValid => "Certificate not yet valid",
            Rule::CertExpiring => "Certificate expiring soon",
            Rule::WeakKey => "Weak key",
            Rule::WeakSignature => "Certificate signed with SHA-1 or MD5",
            Rule::CertNoKey => "Client certificate without its private key",
            Rule::KeyNoCert => "Private key without a certificate",
            Rule::CaNotCa => "CA file holds a certificate that is not a CA",
            Rule::Unparseable => "Credential file does not parse",
            Rule::ProviderWritable => "Provider binary writable by non-root",
            Rule::ProviderSetuid => "Provider binary is setuid or setgid",
            Rule::ProviderVersion => "Provider binary is not the expected build",
            Rule::CertRotated => "Certificate renewed (rotation)",
        }
    }

    /// What the check means and how to fix what it finds.
    pub fn help(self) -> &'static str {
        match self {
            Rule::KeyPerm => "A private key whose mode or POSIX ACL lets its group or others read or write it can be copied or replaced by any local account in that set. Fix: chmod 0600 (or 0400) and remove ACL entries for other users and groups.",
            Rule::KeyOwner => "A private key must be owned by root or by a user the group's access allow-list names (the KMS client's service user). Fix: chown it to that user.",
            Rule::CertExpired => "The certificate's notAfter is in the past: TLS to the KMS will fail. Fix: renew it and install the new certificate (then `kmsentry baseline update --accept-rotations`).",
            Rule::CertNotYetValid => "The certificate's notBefore is in the future: a clock problem or a certificate installed early. Fix: check the host clock, or install the certificate when it becomes valid.",
            Rule::CertExpiring => "The certificate expires within the policy's expiry_warning_days (default 30). Fix: renew it before it expires.",
            Rule::WeakKey => "RSA or DSA keys under 2048 bits and EC keys under 256 bits are below current minimums (NIST SP 800-131A). Fix: generate a new key of adequate size and reissue its certificate.",
            Rule::WeakSignature => "A certificate signed with SHA-1 or MD5 can be forged by collision. Self-signed roots are exempt (their own signature is not relied on). Fix: reissue it with SHA-256 or better.",
            Rule::CertNoKey => "No private key among the policy's files has this client certificate's public key (SPKI SHA-256): a renewal installed without its key, or a key replaced without its certificate. Fix: install the matching pair.",
            Rule::KeyNoCert => "No certificate among the policy's files carries this private key's public key: a stale key left behind after a rotation, or a certificate missing. Fix: remove the stale key or install its certificate.",
            Rule::CaNotCa => "A file in a ca-cert group holds a certificate whose basicConstraints say it is not a CA (or a non-self-signed certificate without basicConstraints): it cannot anchor a chain, and trusting it is a misconfiguration. Fix: put the issuing CA's certificate there.",
            Rule::Unparseable => "A file in a credential group claims to be a certificate or key (PEM label or DER shape) but does not parse: damaged, truncated, or replaced. Fix: restore it from a trusted copy.",
            Rule::ProviderWritable => "A provider binary (PKCS#11 module, EKM provider) that a non-root user can write lets that user run code inside every process that loads it, next to the keys. Fix: chown root, chmod go-w, remove write ACL entries.",
            Rule::ProviderSetuid => "A setuid or setgid provider binary is a privilege-escalation path. Fix: chmod ug-s.",
            Rule::ProviderVersion => "The provider binary's ELF build-id or SONAME differs from the group's `expect:` in the policy: not the build that was qualified. Fix: install the expected build, or update the policy after review.",
            Rule::CertRotated => "The certificate's content changed, but as a renewal: same subject and issuer, validly signed by an issuer certificate on this host, later validity, and its key pair still matches. Accept with `kmsentry baseline update --accept-rotations`.",
        }
    }
}

/// One posture finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posture {
    pub path: Vec<u8>,
    pub group: String,
    pub class: Class,
    pub rule: Rule,
    pub severity: Severity,
    pub message: String,
}

/// One file to judge: its entry, its credential record (if it holds credentials), and, for
/// provider binaries the policy sets expectations on, its ELF facts or why they are missing.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub entry: &'a Entry,
    pub record: Option<&'a CredRecord>,
    pub elf: Option<&'a Result<ElfFacts, String>>,
}

/// Everything besides the files.
pub struct Context<'a> {
    pub policy: &'a CompiledPolicy,
    /// Unix seconds.
    pub now: i64,
    /// The uids allowed to own a private key of a group, besides root.
    pub owners: &'a dyn Fn(&str) -> Vec<u32>,
    /// The gid of Debian's `ssl-cert` group in this root: its members read the keys of
    /// `/etc/ssl/private` by design (the snakeoil key is `0640 root:ssl-cert`).
    pub tls_key_gid: Option<u32>,
}

const DAY: i64 = 86_400;

/// Judge every subject; findings in subject order, then rule order.
pub fn assess(subjects: &[Subject<'_>], ctx: &Context<'_>) -> Vec<Posture> {
    let mut key_spkis: HashSet<SpkiSha256> = HashSet::new();
    let mut cert_spkis: HashSet<SpkiSha256> = HashSet::new();
    let mut opaque_keys = 0usize;
    for s in subjects {
        let Some(r) = s.record else { continue };
        for k in &r.keys {
            match k.spki_sha256 {
                Some(x) => {
                    key_spkis.insert(x);
                }
                None => opaque_keys += 1,
            }
        }
        for c in &r.certs {
            cert_spkis.insert(c.spki_sha256);
        }
    }
    let guards_client_certs = ctx
        .policy
        .groups
        .iter()
        .any(|g| g.class == Class::ClientCert);
    let mut out = Vec::new();
    let mut stale: std::collections::BTreeMap<(Vec<u8>, Rule), Stale> = Default::default();
    for s in subjects {
        let e = s.entry;
        let mut push = |rule: Rule, severity: Severity, message: String| {
            out.push(Posture {
                path: e.path.clone(),
                group: e.group.clone(),
                class: e.class,
                rule,
                severity,
                message,
            });
        };
        // Judged as a key: a file that holds one, or claims to (a damaged key). A file of a
        // private-key group that holds no recognisable key (a README, a PKCS#12 or NSS file)
        // is left to drift detection.
        let holds_key = s.record.is_some_and(|r| {
            !r.keys.is_empty() || (r.unparseable.is_some() && r.kind == super::CredKind::PrivateKey)
        });
        if e.ftype == FileType::File && holds_key {
            key_access(e, s.record, ctx, &mut push);
        }
        if e.class == Class::ProviderBinary && e.ftype == FileType::File {
            provider(e, s.elf, ctx, &mut push);
        }
        let Some(r) = s.record else { continue };
        if let Some(reason) = &r.unparseable {
            // A generic file was only sniffed because of its name: one that does not parse
            // is reported only when its PEM armour names a certificate or a private key (a
            // damaged credential); DER-looking bytes or broken framing without a credential
            // label are not a credential, and saying so for every `*.pem` of a tree is noise.
            if e.class == Class::Generic && !r.armour_claims_credential() {
                continue;
            }
            push(
                Rule::Unparseable,
                Severity::Medium,
                format!("does not parse as a {}: {reason}", r.kind_str()),
            );
            continue;
        }
        // A distribution's trust store, or a CA bundle a generic group holds (certifi's
        // `cacert.pem` vendored into a Python tree): stale anchors are one finding per bundle.
        let distribution = distribution_bundle(&e.path);
        let is_distribution = distribution.is_some();
        let bundle = distribution
            .or_else(|| (e.class == Class::Generic && r.certs.len() > 1).then(|| e.path.clone()));
        certs(
            e,
            r,
            ctx,
            &key_spkis,
            opaque_keys,
            &mut push,
            &mut |rule, name| {
                if let Some(b) = &bundle {
                    let agg = stale.entry((b.clone(), rule)).or_insert_with(|| Stale {
                        group: e.group.clone(),
                        class: e.class,
                        distribution: is_distribution,
                        names: Vec::new(),
                    });
                    // A store of one file per anchor names the file too.
                    agg.names.push(if *b == e.path {
                        name
                    } else {
                        let file = e.path.rsplit(|&c| c == b'/').next().unwrap_or(&e.path);
                        format!("{} ({name})", crate::sanitize::Name(file))
                    });
                    true
                } else {
                    false
                }
            },
        );
        for k in &r.keys {
            if let Some(w) = k.key.as_ref().and_then(|a| a.weakness()) {
                push(Rule::WeakKey, Severity::High, format!("private key: {w}"));
            }
            if e.class == Class::PrivateKey && guards_client_certs {
                if let Some(spki) = k.spki_sha256 {
                    if !cert_spkis.contains(&spki) {
                        push(
                            Rule::KeyNoCert,
                            Severity::Low,
                            format!("no certificate among the policy's files has this key's public key (SPKI SHA-256 {spki})"),
                        );
                    }
                }
            }
        }
    }
    for ((path, rule), agg) in stale {
        out.push(stale_bundle(path, rule, agg));
    }
    name_pairs(subjects, &mut out);
    // Credentials that a generic group finds inside installed software (/usr) are vendor
    // data: test fixtures, vendored CA bundles, documentation examples. Everyone who has the
    // package has them, so they are not this host's secrets nor its trust decisions.
    for p in &mut out {
        if p.class == Class::Generic && p.path.starts_with(b"/usr/") && p.severity > Severity::Low {
            p.severity = Severity::Low;
            p.message
                .push_str(" (shipped with installed software under /usr: vendor data, not this host's own credential)");
        }
    }
    out
}

/// Anchors of one distribution trust bundle that fail a date check.
struct Stale {
    group: String,
    class: Class,
    /// A distribution's trust store (rather than a bundle shipped inside some software).
    distribution: bool,
    names: Vec<String>,
}

/// The distribution trust bundle that `path` is part of: the bundle file itself
/// (`/etc/ssl/certs/ca-certificates.crt`, RHEL's extracted bundles), or the directory of a
/// trust store kept as one file per anchor (`/usr/share/ca-certificates/mozilla`, the regular
/// files of `/etc/ssl/certs`). `None` for anything else: a KMS client's own CA file is judged
/// certificate by certificate.
fn distribution_bundle(path: &[u8]) -> Option<Vec<u8>> {
    const FILES: [&[u8]; 6] = [
        b"/etc/ssl/certs/ca-certificates.crt",
        b"/etc/pki/tls/certs/ca-bundle.crt",
        b"/etc/pki/tls/certs/ca-bundle.trust.crt",
        b"/etc/pki/tls/cert.pem",
        b"/etc/ssl/cert.pem",
        b"/etc/ssl/ca-bundle.pem",
    ];
    if FILES.contains(&path) || path.starts_with(b"/etc/pki/ca-trust/extracted/") {
        return Some(path.to_vec());
    }
    let parent = &path[..path.iter().rposition(|&b| b == b'/')?];
    if parent == b"/etc/ssl/certs" {
        return Some(parent.to_vec());
    }
    for store in [
        &b"/usr/share/ca-certificates/"[..],
        b"/usr/share/pki/ca-trust-source/",
    ] {
        if let Some(rest) = path.strip_prefix(store) {
            // One bundle per source (`mozilla`, `anchors`...), or the store itself.
            return Some(match rest.iter().position(|&b| b == b'/') {
                Some(i) => [store, &rest[..i]].concat(),
                None => store[..store.len() - 1].to_vec(),
            });
        }
    }
    None
}

/// One low finding for a bundle's stale anchors, with their count and names.
fn stale_bundle(path: Vec<u8>, rule: Rule, agg: Stale) -> Posture {
    let n = agg.names.len();
    let what = match rule {
        Rule::CertExpired => "expired",
        Rule::CertNotYetValid => "not yet valid",
        _ => "expiring",
    };
    Posture {
        path,
        group: agg.group,
        class: agg.class,
        rule,
        severity: Severity::Low,
        message: format!(
            "{n} {what} trust anchor{} in this {}: a stale bundle, not an attack ({}): {}",
            if n == 1 { "" } else { "s" },
            if agg.distribution {
                "distribution trust bundle"
            } else {
                "trust bundle"
            },
            if agg.distribution {
                "the distribution's ca-certificates update drops them; run update-ca-certificates after it"
            } else {
                "an update of the software that ships the bundle drops them"
            },
            agg.names.join("; ")
        ),
    }
}

/// Certificates and keys paired by name in one directory (`x.crt`/`x.key`, `x.pem`/`x.key`,
/// `x-cert.pem`/`x-key.pem`) that hold different public keys, in any class: a key replaced
/// without its certificate or the other way round. Reported on the certificate as
/// `KMS-CERT-NO-KEY`, unless that rule already fired for it.
fn name_pairs(subjects: &[Subject<'_>], out: &mut Vec<Posture>) {
    use std::collections::HashMap;
    let keys: HashMap<&[u8], Vec<SpkiSha256>> = subjects
        .iter()
        .filter_map(|s| {
            let r = s.record?;
            if !r.certs.is_empty() || r.unparseable.is_some() {
                return None;
            }
            let spkis: Vec<SpkiSha256> = r.keys.iter().filter_map(|k| k.spki_sha256).collect();
            (!spkis.is_empty()).then_some((s.entry.path.as_slice(), spkis))
        })
        .collect();
    if keys.is_empty() {
        return;
    }
    for s in subjects {
        let Some(r) = s.record else { continue };
        let Some(leaf) = r.certs.first() else {
            continue;
        };
        if !r.keys.is_empty() || r.unparseable.is_some() {
            continue;
        }
        let e = s.entry;
        if out
            .iter()
            .any(|p| p.path == e.path && p.rule == Rule::CertNoKey)
        {
            continue;
        }
        for key_path in paired_key_names(&e.path) {
            let Some(spkis) = keys.get(key_path.as_slice()) else {
                continue;
            };
            if !spkis.contains(&leaf.spki_sha256) {
                out.push(Posture {
                    path: e.path.clone(),
                    group: e.group.clone(),
                    class: e.class,
                    rule: Rule::CertNoKey,
                    severity: Severity::Medium,
                    message: format!(
                        "its name pairs it with {}, which holds a different public key (certificate SPKI SHA-256 {}, key {})",
                        crate::sanitize::Name(&key_path),
                        leaf.spki_sha256,
                        spkis[0]
                    ),
                });
            }
            break;
        }
    }
}

/// The key file names a certificate at `path` is paired with, most specific first.
fn paired_key_names(path: &[u8]) -> Vec<Vec<u8>> {
    let cut = path.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    let (dir, name) = path.split_at(cut);
    let lower = name.to_ascii_lowercase();
    let mut out = Vec::new();
    for ext in [&b".pem"[..], b".crt", b".cer"] {
        if lower.len() <= ext.len() || !lower.ends_with(ext) {
            continue;
        }
        let stem = &name[..name.len() - ext.len()];
        let lstem = &lower[..stem.len()];
        for sep in [&b"-"[..], b"_", b"."] {
            for word in [&b"cert"[..], b"crt", b"certificate"] {
                let suffix = [sep, word].concat();
                if lstem.len() > suffix.len() && lstem.ends_with(&suffix) {
                    let base = &stem[..stem.len() - suffix.len()];
                    out.push([dir, base, sep, b"key.pem"].concat());
                    out.push([dir, base, sep, b"key"].concat());
                    out.push([dir, base, b".key"].concat());
                }
            }
        }
        out.push([dir, stem, b".key"].concat());
    }
    out
}

fn key_access(
    e: &Entry,
    record: Option<&CredRecord>,
    ctx: &Context<'_>,
    push: &mut dyn FnMut(Rule, Severity, String),
) {
    let encrypted =
        record.is_some_and(|r| !r.keys.is_empty() && r.keys.iter().all(|k| k.encrypted));
    let allowed = (ctx.owners)(&e.group);
    let others = e.mode & 0o007;
    let group = e.mode & 0o070;
    if others != 0 || group != 0 {
        let who = match (group != 0, others != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        // Debian's convention: keys of /etc/ssl/private are 0640 root:ssl-cert, read by the
        // TLS services in that group. Read-only for that group there is by design.
        let tls_group = others == 0
            && group == 0o040
            && Some(e.gid) == ctx.tls_key_gid
            && e.path.starts_with(b"/etc/ssl/private/");
        let sev = match (others != 0, encrypted) {
            _ if tls_group => Severity::Low,
            (true, false) => Severity::Critical,
            (false, false) | (true, true) => Severity::High,
            (false, true) => Severity::Medium,
        };
        push(
            Rule::KeyPerm,
            sev,
            format!(
                "private key{} has mode {:04o}: {who} can {}{}",
                if encrypted { " (encrypted)" } else { "" },
                e.mode,
                rw(e.mode & 0o077),
                if tls_group {
                    " (group ssl-cert: Debian's design for TLS services' keys)"
                } else {
                    ""
                }
            ),
        );
    }
    for (kind, id, perm) in acl_named(e.acl_access.as_deref()) {
        if perm.contains(['r', 'w']) && !(kind == "user" && allowed.contains(&id)) {
            push(
                Rule::KeyPerm,
                if encrypted {
                    Severity::Medium
                } else {
                    Severity::High
                },
                format!("private key's ACL grants {kind} {id} `{perm}`"),
            );
        }
    }
    if e.uid != 0 && !allowed.contains(&e.uid) {
        push(
            Rule::KeyOwner,
            Severity::High,
            format!(
                "private key is owned by uid {}, not root or a user the group `{}` allows",
                e.uid, e.group
            ),
        );
    }
}

fn provider(
    e: &Entry,
    elf: Option<&Result<ElfFacts, String>>,
    ctx: &Context<'_>,
    push: &mut dyn FnMut(Rule, Severity, String),
) {
    if e.uid != 0 {
        push(
            Rule::ProviderWritable,
            Severity::Critical,
            format!("owned by uid {}, who can rewrite it", e.uid),
        );
    }
    if e.mode & 0o022 != 0 {
        push(
            Rule::ProviderWritable,
            Severity::Critical,
            format!(
                "mode {:04o}: writable by {}",
                e.mode,
                if e.mode & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                }
            ),
        );
    }
    for (kind, id, perm) in acl_named(e.acl_access.as_deref()) {
        if perm.contains('w') && !(kind == "user" && id == 0) {
            push(
                Rule::ProviderWritable,
                Severity::Critical,
                format!("ACL grants {kind} {id} `{perm}`"),
            );
        }
    }
    if e.mode & 0o6000 != 0 {
        push(
            Rule::ProviderSetuid,
            Severity::Critical,
            format!(
                "mode {:04o} has the {} bit",
                e.mode,
                if e.mode & 0o4000 != 0 {
                    "setuid"
                } else {
                    "setgid"
                }
            ),
        );
    }
    let Some(expect) = ctx.policy.group(&e.group).and_then(|g| g.expect.as_ref()) else {
        return;
    };
    match elf {
        None => {}
        Some(Err(why)) => push(
            Rule::ProviderVersion,
            Severity::High,
            format!("the policy expects a build, but the file's build cannot be read: {why}"),
        ),
        Some(Ok(f)) => {
            let mut diffs = Vec::new();
            if let Some(want) = &expect.build_id {
                let have = f.build_id.as_deref().unwrap_or("none");
                if !have.eq_ignore_ascii_case(want) {
                    diffs.push(format!("build-id {have}, expected {want}"));
                }
            }
            if let Some(want) = &expect.soname {
                let have = f.soname.as_deref().unwrap_or("none");
                if have != want {
                    diffs.push(format!("SONAME {have}, expected {want}"));
                }
            }
            if !diffs.is_empty() {
                push(Rule::ProviderVersion, Severity::High, diffs.join("; "));
            }
        }
    }
}

fn certs(
    e: &Entry,
    r: &CredRecord,
    ctx: &Context<'_>,
    key_spkis: &HashSet<SpkiSha256>,
    opaque_keys: usize,
    push: &mut dyn FnMut(Rule, Severity, String),
    stale: &mut dyn FnMut(Rule, String) -> bool,
) {
    let warn_secs = i64::from(ctx.policy.expiry_warning_days) * DAY;
    let many = r.certs.len() > 1;
    for (i, c) in r.certs.iter().enumerate() {
        let which = if many {
            format!("certificate {} ({})", i + 1, c.subject)
        } else {
            format!("certificate ({})", c.subject)
        };
        // A trust anchor of a distribution bundle out of its dates is collected, per bundle.
        let anchor = c.is_ca == Some(true) || c.self_signed;
        let date_rule = if c.not_after < ctx.now {
            Some(Rule::CertExpired)
        } else if c.not_before > ctx.now {
            Some(Rule::CertNotYetValid)
        } else if c.not_after - ctx.now <= warn_secs {
            Some(Rule::CertExpiring)
        } else {
            None
        };
        let collected = match date_rule {
            Some(rule) if anchor => stale(
                rule,
                format!(
                    "{}, {}",
                    c.subject,
                    match rule {
                        Rule::CertNotYetValid => format!("from {}", date(c.not_before)),
                        _ => format!("until {}", date(c.not_after)),
                    }
                ),
            ),
            _ => false,
        };
        // The host's own client certificate expiring cuts it off from its KMS.
        let own = e.class == Class::ClientCert;
        match date_rule {
            _ if collected => {}
            Some(Rule::CertExpired) => {
                push(
                    Rule::CertExpired,
                    Severity::High,
                    format!(
                        "{which} expired {} ({} days ago)",
                        date(c.not_after),
                        (ctx.now - c.not_after) / DAY
                    ),
                );
            }
            Some(Rule::CertNotYetValid) => {
                push(
                    Rule::CertNotYetValid,
                    Severity::Medium,
                    format!("{which} is not valid before {}", date(c.not_before)),
                );
            }
            Some(_) => {
                let days = (c.not_after - ctx.now) / DAY;
                push(
                    Rule::CertExpiring,
                    if own {
                        Severity::High
                    } else if days < 7 {
                        Severity::Medium
                    } else {
                        Severity::Low
                    },
                    format!(
                        "{which} expires {} (in {days} days; warning window {} days)",
                        date(c.not_after),
                        ctx.policy.expiry_warning_days
                    ),
                );
            }
            None => {}
        }
        if let Some(w) = c.key.weakness() {
            push(Rule::WeakKey, Severity::High, format!("{which}: {w}"));
        }
        if c.sha1_or_md5_signature && !c.self_signed {
            push(
                Rule::WeakSignature,
                Severity::Medium,
                format!("{which} is signed with {}", c.signature_algorithm),
            );
        }
        if e.class == Class::CaCert {
            let not_ca = match c.is_ca {
                Some(false) => Some("basicConstraints cA is false"),
                None if !c.self_signed => Some("no basicConstraints and not self-signed"),
                _ => None,
            };
            if let Some(why) = not_ca {
                // A self-signed leaf (Debian's snakeoil certificate in /etc/ssl/certs) anchors
                // only itself; anything else here cannot anchor a chain at all.
                let (sev, note) = if c.self_signed {
                    (Severity::Low, "; self-signed, it can vouch only for itself")
                } else {
                    (Severity::Medium, "")
                };
                push(
                    Rule::CaNotCa,
                    sev,
                    format!("{which} is not a CA: {why}{note}"),
                );
            }
        }
    }
    // The leaf is the first certificate of a client-cert file.
    if e.class == Class::ClientCert {
        if let Some(leaf) = r.certs.first() {
            if !key_spkis.contains(&leaf.spki_sha256) {
                let (sev, note) = if opaque_keys > 0 {
                    (
                        Severity::Low,
                        format!(" ({opaque_keys} encrypted keys could not be compared)"),
                    )
                } else {
                    (Severity::Medium, String::new())
                };
                push(
                    Rule::CertNoKey,
                    sev,
                    format!("no private key among the policy's files matches this certificate's public key (SPKI SHA-256 {}){note}", leaf.spki_sha256),
                );
            }
        }
    }
}

/// Named ACL entries (`user:ID:perm`, `group:ID:perm`) from `acl_text` output.
fn acl_named(acl: Option<&str>) -> Vec<(&str, u32, &str)> {
    let Some(text) = acl else { return Vec::new() };
    text.split(',')
        .filter_map(|part| {
            let mut it = part.splitn(3, ':');
            let (kind, id, perm) = (it.next()?, it.next()?, it.next()?);
            if !matches!(kind, "user" | "group") || id.is_empty() {
                return None;
            }
            Some((kind, id.parse().ok()?, perm))
        })
        .collect()
}

fn rw(bits: u32) -> &'static str {
    let r = bits & 0o044 != 0;
    let w = bits & 0o022 != 0;
    match (r, w) {
        (true, true) => "read and write it",
        (true, false) => "read it",
        (false, true) => "write it",
        _ => "execute it",
    }
}

/// Unix seconds as an RFC 3339 date-time (UTC).
pub fn date(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| format!("@{secs}"), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_parse_back() {
        let ids: HashSet<&str> = Rule::ALL.iter().map(|r| r.id()).collect();
        assert_eq!(ids.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.id()), Some(r));
            assert!(!r.help().is_empty() && !r.title().is_empty());
        }
    }

    #[test]
    fn distribution_bundles_are_files_or_per_anchor_stores() {
        let b = |p: &str| distribution_bundle(p.as_bytes()).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(
            b("/etc/ssl/certs/ca-certificates.crt").as_deref(),
            Some("/etc/ssl/certs/ca-certificates.crt")
        );
        assert_eq!(
            b("/usr/share/ca-certificates/mozilla/X.crt").as_deref(),
            Some("/usr/share/ca-certificates/mozilla")
        );
        assert_eq!(
            b("/etc/ssl/certs/local.pem").as_deref(),
            Some("/etc/ssl/certs")
        );
        assert_eq!(
            b("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem").as_deref(),
            Some("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
        );
        assert_eq!(b("/etc/kms-client/certs/ca.pem"), None);
        assert_eq!(b("/etc/ssl/certs/java/cacerts"), None);
    }

    #[test]
    fn certificates_pair_with_keys_by_name() {
        let names = |p: &str| -> Vec<String> {
            paired_key_names(p.as_bytes())
                .into_iter()
                .map(|b| String::from_utf8(b).unwrap())
                .collect()
        };
        assert_eq!(names("/etc/x/tls.crt"), vec!["/etc/x/tls.key"]);
        assert_eq!(names("/etc/x/pair.pem"), vec!["/etc/x/pair.key"]);
        assert!(names("/etc/x/client-cert.pem").contains(&"/etc/x/client-key.pem".to_string()));
        assert!(names("/etc/x/client_cert.pem").contains(&"/etc/x/client_key.pem".to_string()));
        assert!(names("/etc/x/cert.pem") == vec!["/etc/x/cert.key"]);
        assert!(names("/etc/x/README").is_empty());
    }

    #[test]
    fn named_acl_entries_are_read() {
        assert_eq!(
            acl_named(Some(
                "user::rw-,user:1000:r--,group::---,group:50:rw-,mask::rw-,other::---"
            )),
            vec![("user", 1000, "r--"), ("group", 50, "rw-")]
        );
        assert!(acl_named(Some("raw:00")).is_empty());
        assert!(acl_named(None).is_empty());
    }
}

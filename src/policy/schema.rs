//! The serde mirror of the policy YAML, with positions. It holds what the user typed; nothing
//! here touches the file system. Unknown keys are errors (`deny_unknown_fields`), and every
//! value a later check may complain about is `Spanned` so the complaint can name line and
//! column.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The whole policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: Spanned<u32>,
    /// Certificates expiring within this many days are posture findings (default 30).
    #[serde(default)]
    pub expiry_warning_days: Option<Spanned<u32>>,
    pub groups: Spanned<Vec<RawGroup>>,
    /// Log sources for early warning (see `policy::logs`).
    #[serde(default)]
    pub logs: Option<Spanned<Vec<super::logs::RawLogSource>>>,
    /// Sigma rule files or directories.
    #[serde(default)]
    pub rules: Option<Spanned<Vec<Spanned<String>>>>,
}

/// One `groups:` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Spanned<String>,
    #[serde(default)]
    pub class: Option<Spanned<Class>>,
    pub paths: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    #[serde(default)]
    pub compare: Option<Spanned<Vec<Spanned<Attr>>>>,
    /// The content digests to record (`[blake3]` when absent).
    #[serde(default)]
    pub hash: Option<Spanned<Vec<Spanned<Digest>>>>,
    #[serde(default)]
    pub access: Option<Spanned<RawAccess>>,
    #[serde(default)]
    pub on_change: Option<Vec<Spanned<OnChange>>>,
    /// provider-binary groups: the build every file of the group must be.
    #[serde(default)]
    pub expect: Option<Spanned<RawExpect>>,
}

/// `expect:` block of a provider-binary group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    #[serde(default)]
    pub build_id: Option<Spanned<String>>,
    #[serde(default)]
    pub soname: Option<Spanned<String>>,
}

/// What kind of credential material a group holds; drives severity and later checks.
#[derive(
    Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    PrivateKey,
    ClientCert,
    CaCert,
    KmsConfig,
    ProviderBinary,
    Generic,
}

impl Class {
    /// The policy spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::PrivateKey => "private-key",
            Class::ClientCert => "client-cert",
            Class::CaCert => "ca-cert",
            Class::KmsConfig => "kms-config",
            Class::ProviderBinary => "provider-binary",
            Class::Generic => "generic",
        }
    }

    /// Parse the policy spelling (used when reading the database).
    pub fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "private-key" => Class::PrivateKey,
            "client-cert" => Class::ClientCert,
            "ca-cert" => Class::CaCert,
            "kms-config" => Class::KmsConfig,
            "provider-binary" => Class::ProviderBinary,
            "generic" => Class::Generic,
            _ => return None,
        })
    }
}

/// A content digest a group may record (`hash:`). BLAKE3 is what every comparison uses;
/// SHA-256 is recorded beside it where another tool's digests (a vendor's, a package's,
/// AIDE's) are to be matched.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Digest {
    Blake3,
    Sha256,
}

/// One comparable attribute, as named in `compare:` and in a finding's `changes`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Attr {
    Type,
    Content,
    Size,
    Mode,
    Owner,
    Group,
    Acl,
    Xattr,
    LinkTarget,
    Mtime,
    Ctime,
    Inode,
    Nlink,
}

impl Attr {
    /// Every attribute, in the order findings list them.
    pub const ALL: [Attr; 13] = [
        Attr::Type,
        Attr::Content,
        Attr::Size,
        Attr::Mode,
        Attr::Owner,
        Attr::Group,
        Attr::Acl,
        Attr::Xattr,
        Attr::LinkTarget,
        Attr::Mtime,
        Attr::Ctime,
        Attr::Inode,
        Attr::Nlink,
    ];

    /// What `compare:` means when a group does not say.
    pub const DEFAULT_COMPARE: [Attr; 8] = [
        Attr::Content,
        Attr::Mode,
        Attr::Owner,
        Attr::Group,
        Attr::Acl,
        Attr::Xattr,
        Attr::LinkTarget,
        Attr::Type,
    ];

    /// The DESIGN spelling used in `changes` and in `compare:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attr::Type => "type",
            Attr::Content => "content",
            Attr::Size => "size",
            Attr::Mode => "mode",
            Attr::Owner => "owner",
            Attr::Group => "group",
            Attr::Acl => "acl",
            Attr::Xattr => "xattr",
            Attr::LinkTarget => "link_target",
            Attr::Mtime => "mtime",
            Attr::Ctime => "ctime",
            Attr::Inode => "inode",
            Attr::Nlink => "nlink",
        }
    }
}

/// `access:` block: parsed and validated now, enforced by the daemon.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub mode: Spanned<AccessMode>,
    #[serde(default)]
    pub allow: Vec<Spanned<RawAllow>>,
}

/// What the daemon does with an open by a process outside the allow-list.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Deny the open and alert.
    Enforce,
    /// Allow the open and alert.
    Audit,
    /// Do not watch opens.
    Off,
}

impl AccessMode {
    /// The policy spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Enforce => "enforce",
            AccessMode::Audit => "audit",
            AccessMode::Off => "off",
        }
    }
}

/// One allow rule: every field given must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    pub exe: Spanned<String>,
    #[serde(default)]
    pub exe_hash: Option<Spanned<String>>,
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    #[serde(default)]
    pub uids: Vec<Spanned<u32>>,
    /// The parent's executable must be this one (or one of these).
    #[serde(default)]
    pub parent_exe: Option<Spanned<OneOrMany>>,
    /// Allowed from any parent, but an open by a process whose parent is not one of these is
    /// alerted (outcome `success`, rule `unusual-parent`).
    #[serde(default)]
    pub usual_parent_exe: Option<Spanned<OneOrMany>>,
    /// Patterns for the arguments after `argv[0]`, one per argument (`*` any run of bytes,
    /// `?` one byte, `\` escapes); a last `"**"` matches any further arguments.
    #[serde(default)]
    pub args: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A single path or a list of paths.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn values(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// What happens when a watched entry changes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnChange {
    Alert,
    Restore,
}

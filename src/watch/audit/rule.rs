//! Kernel audit rules: which rules kmsentry installs for a set of targets (pure planning,
//! including the fall-back to directory rules when there are too many targets) and the
//! `struct audit_rule_data` wire format, encoded and decoded with safe byte-buffer code.
//!
//! Layout (`<linux/audit.h>`, host byte order): `flags, action, field_count` (u32 each),
//! `mask[64]`, `fields[64]`, `values[64]`, `fieldflags[64]`, `buflen`, then `buf`: the string
//! values (path, dir, key) back to back, in field order, each one's length in its `values[i]`.

use super::Target;

pub const AUDIT_FILTER_EXIT: u32 = 0x04;
pub const AUDIT_ALWAYS: u32 = 2;
pub const AUDIT_EQUAL: u32 = 0x4000_0000;

pub const AUDIT_ARCH: u32 = 11;
pub const AUDIT_EXIT: u32 = 103;
pub const AUDIT_WATCH: u32 = 105;
pub const AUDIT_DIR: u32 = 107;
pub const AUDIT_FILTERKEY: u32 = 210;

const BITMASK_WORDS: usize = 64;
const MAX_FIELDS: usize = 64;
/// Bytes before `buf`: 3 + 64 + 3 * 64 + 1 words.
pub const FIXED_LEN: usize = (3 + BITMASK_WORDS + 3 * MAX_FIELDS + 1) * 4;

/// Most rules one instance installs. The kernel has no fixed limit, but every exit rule is
/// walked on every open by every process, so the list stays short; with two architectures
/// and two errnos that is 64 targets before directories are merged.
pub const MAX_RULES: usize = 256;

pub const EACCES: i32 = 13;
pub const EPERM: i32 = 1;

/// One system-call ABI: its audit arch value and the numbers of the calls we watch.
#[derive(Clone, Copy, Debug)]
pub struct Abi {
    pub arch: u32,
    pub syscalls: &'static [(u32, &'static str)],
}

#[cfg(target_arch = "x86_64")]
const NATIVE: Abi = Abi {
    arch: 0xC000_003E, // AUDIT_ARCH_X86_64
    syscalls: &[
        (2, "open"),
        (257, "openat"),
        (437, "openat2"),
        (85, "creat"),
        (76, "truncate"),
    ],
};
#[cfg(target_arch = "x86_64")]
const COMPAT: Option<Abi> = Some(Abi {
    arch: 0x4000_0003, // AUDIT_ARCH_I386
    syscalls: &[
        (5, "open"),
        (295, "openat"),
        (437, "openat2"),
        (8, "creat"),
        (92, "truncate"),
    ],
});

#[cfg(target_arch = "aarch64")]
const NATIVE: Abi = Abi {
    arch: 0xC000_00B7, // AUDIT_ARCH_AARCH64
    syscalls: &[(56, "openat"), (437, "openat2"), (45, "truncate")],
};
#[cfg(target_arch = "aarch64")]
const COMPAT: Option<Abi> = None;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("kernel audit rules: add this architecture's AUDIT_ARCH value and syscall numbers");

/// The ABIs to install rules for: the native one, plus the 32-bit one when the kernel runs
/// 32-bit programs (x86-64 with IA32 emulation exposes `/proc/sys/abi/vsyscall32`).
pub fn abis() -> Vec<Abi> {
    let mut v = vec![NATIVE];
    if let Some(c) = COMPAT {
        if std::path::Path::new("/proc/sys/abi/vsyscall32").exists() {
            v.push(c);
        }
    }
    v
}

/// The name of syscall `nr` under audit arch `arch`, if it is one we watch.
pub fn syscall_name(arch: u64, nr: u64) -> Option<&'static str> {
    std::iter::once(NATIVE)
        .chain(COMPAT)
        .filter(|a| u64::from(a.arch) == arch)
        .flat_map(|a| a.syscalls.iter())
        .find(|(n, _)| u64::from(*n) == nr)
        .map(|(_, name)| *name)
}

/// One rule before encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub abi_arch: u32,
    pub syscalls: Vec<u32>,
    pub errno: i32,
    pub target: Target,
    pub key: String,
}

impl Rule {
    /// `struct audit_rule_data` for this rule. Field order is evaluation order in the kernel,
    /// which stops at the first mismatch: `arch` and `exit` are integer compares that reject
    /// every successful open before the inode or tree match runs.
    pub fn encode(&self) -> Vec<u8> {
        let mut mask = [0u32; BITMASK_WORDS];
        for &nr in &self.syscalls {
            if let Some(w) = mask.get_mut((nr / 32) as usize) {
                *w |= 1 << (nr % 32);
            }
        }
        let (path_field, path) = if self.target.is_dir {
            (AUDIT_DIR, &self.target.path)
        } else {
            (AUDIT_WATCH, &self.target.path)
        };
        let fields: [(u32, u32, &[u8]); 4] = [
            (AUDIT_ARCH, self.abi_arch, &[]),
            (AUDIT_EXIT, (-self.errno) as u32, &[]),
            (path_field, 0, path),
            (AUDIT_FILTERKEY, 0, self.key.as_bytes()),
        ];
        let mut buf = Vec::new();
        let mut f = [0u32; MAX_FIELDS];
        let mut vals = [0u32; MAX_FIELDS];
        let mut flags = [0u32; MAX_FIELDS];
        for (i, (field, num, s)) in fields.iter().enumerate() {
            f[i] = *field;
            flags[i] = AUDIT_EQUAL;
            vals[i] = if is_string_field(*field) {
                buf.extend_from_slice(s);
                s.len() as u32
            } else {
                *num
            };
        }
        let mut out = Vec::with_capacity(FIXED_LEN + buf.len());
        for w in [AUDIT_FILTER_EXIT, AUDIT_ALWAYS, fields.len() as u32] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        for w in mask.iter().chain(&f).chain(&vals).chain(&flags) {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(&(buf.len() as u32).to_ne_bytes());
        out.extend_from_slice(&buf);
        out
    }
}

/// Fields whose value is a string in `buf` (SELinux labels, watch, dir, key, exe).
fn is_string_field(field: u32) -> bool {
    matches!(field, 13..=17 | 19..=23 | AUDIT_WATCH | AUDIT_DIR | AUDIT_FILTERKEY | 112)
}

/// What an installed rule (from `AUDIT_LIST_RULES`) is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSummary {
    /// The filter key (`key=`), if any. Several keys are joined by `\x01` in the kernel.
    pub key: Option<Vec<u8>>,
    /// `path=` or `dir=`, if any.
    pub path: Option<Vec<u8>>,
}

/// Reads the key and path out of an encoded `audit_rule_data`; `None` when it is truncated
/// or inconsistent.
pub fn decode(data: &[u8]) -> Option<RuleSummary> {
    let word = |i: usize| -> Option<u32> {
        let b = data.get(i * 4..i * 4 + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = word(2)? as usize;
    if count > MAX_FIELDS {
        return None;
    }
    let fields_at = 3 + BITMASK_WORDS;
    let values_at = fields_at + MAX_FIELDS;
    let buflen = word(3 + BITMASK_WORDS + 3 * MAX_FIELDS)? as usize;
    let buf = data.get(FIXED_LEN..FIXED_LEN.checked_add(buflen)?)?;
    let mut at = 0usize;
    let mut out = RuleSummary::default();
    for i in 0..count {
        let field = word(fields_at + i)?;
        if !is_string_field(field) {
            continue;
        }
        let len = word(values_at + i)? as usize;
        let s = buf.get(at..at.checked_add(len)?)?;
        at += len;
        match field {
            AUDIT_FILTERKEY => out.key = Some(s.to_vec()),
            AUDIT_WATCH | AUDIT_DIR => out.path = Some(s.to_vec()),
            _ => {}
        }
    }
    Some(out)
}

/// Plans the targets rules are installed for, so that `targets × per_target ≤ max_rules`.
/// Duplicates and targets under a directory target go first; while still too many, the
/// deepest targets are replaced by their parent directories (as `dir=` targets), one level
/// at a time. Returns the plan and whether it had to widen anything (then events must be
/// filtered back to the real targets in user space).
pub fn plan(targets: &[Target], per_target: usize, max_rules: usize) -> (Vec<Target>, bool) {
    let cap = (max_rules / per_target.max(1)).max(1);
    let mut set = normalize(targets.to_vec());
    let mut widened = false;
    while set.len() > cap {
        let Some(deepest) = set.iter().map(|t| depth(&t.path)).max() else {
            break;
        };
        if deepest == 0 {
            break;
        }
        set = normalize(
            set.into_iter()
                .map(|t| {
                    if depth(&t.path) == deepest {
                        Target {
                            path: parent(&t.path).to_vec(),
                            is_dir: true,
                        }
                    } else {
                        t
                    }
                })
                .collect(),
        );
        widened = true;
    }
    (set, widened)
}

fn depth(p: &[u8]) -> usize {
    p.split(|&b| b == b'/').filter(|c| !c.is_empty()).count()
}

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &p[..i],
    }
}

/// Whether `path` is `dir` or beneath it.
pub fn is_under(path: &[u8], dir: &[u8]) -> bool {
    if dir == b"/" {
        return path.starts_with(b"/");
    }
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// Sorted, deduplicated, without targets covered by a directory target. Trailing slashes
/// go (the kernel refuses `path=` ending in `/`).
fn normalize(mut v: Vec<Target>) -> Vec<Target> {
    for t in &mut v {
        while t.path.len() > 1 && t.path.ends_with(b"/") {
            t.path.pop();
        }
    }
    v.sort_by(|a, b| a.path.cmp(&b.path).then(b.is_dir.cmp(&a.is_dir)));
    v.dedup_by(|b, a| a.path == b.path);
    let dirs: Vec<Vec<u8>> = v
        .iter()
        .filter(|t| t.is_dir)
        .map(|t| t.path.clone())
        .collect();
    v.retain(|t| {
        !dirs
            .iter()
            .any(|d| is_under(&t.path, d) && !(t.is_dir && t.path == *d))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> Target {
        Target {
            path: p.into(),
            is_dir: false,
        }
    }
    fn dir(p: &str) -> Target {
        Target {
            path: p.into(),
            is_dir: true,
        }
    }

    #[test]
    fn encodes_and_decodes_a_rule() {
        let r = Rule {
            abi_arch: 0xC000_003E,
            syscalls: vec![2, 257, 437],
            errno: EACCES,
            target: file("/etc/kms/a.key"),
            key: "kmsentry-7".into(),
        };
        let b = r.encode();
        assert_eq!(
            b.len(),
            FIXED_LEN + "/etc/kms/a.key".len() + "kmsentry-7".len()
        );
        let word = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), AUDIT_FILTER_EXIT);
        assert_eq!(word(2), 4);
        assert_eq!(word(3), 1 << 2);
        assert_eq!(word(3 + 257 / 32), 1 << (257 % 32));
        assert_eq!(word(3 + 64 + 64 + 1), (-13i32) as u32, "exit value");
        let s = decode(&b).unwrap();
        assert_eq!(s.key.unwrap(), b"kmsentry-7");
        assert_eq!(s.path.unwrap(), b"/etc/kms/a.key");
        assert_eq!(decode(&b[..b.len() - 1]), None);
        assert_eq!(decode(&b[..100]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn plan_dedups_and_drops_covered_targets() {
        let (p, w) = plan(
            &[
                file("/etc/kms/a"),
                dir("/etc/kms/"),
                file("/etc/kms/a"),
                file("/etc/other"),
                dir("/etc/kms/sub"),
            ],
            4,
            256,
        );
        assert_eq!(p, vec![dir("/etc/kms"), file("/etc/other")]);
        assert!(!w);
    }

    #[test]
    fn plan_widens_the_deepest_targets_to_their_parents() {
        let mut t: Vec<Target> = (0..100).map(|i| file(&format!("/etc/kms/k{i}"))).collect();
        t.push(file("/opt/p11/lib.so"));
        t.push(file("/x"));
        let (p, w) = plan(&t, 4, 256);
        assert!(w);
        assert_eq!(p, vec![dir("/etc/kms"), dir("/opt/p11"), file("/x")]);
        let (p, _) = plan(&t, 4, 4);
        assert_eq!(p, vec![dir("/")]);
    }

    #[test]
    fn under() {
        assert!(is_under(b"/etc/kms/a", b"/etc/kms"));
        assert!(is_under(b"/etc/kms", b"/etc/kms"));
        assert!(!is_under(b"/etc/kmsx", b"/etc/kms"));
        assert!(is_under(b"/a", b"/"));
    }

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name(u64::from(NATIVE.arch), 437), Some("openat2"));
        assert_eq!(syscall_name(0, 2), None);
    }
}

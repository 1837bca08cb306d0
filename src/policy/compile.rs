//! From [`RawPolicy`] to [`CompiledPolicy`]: every check that needs no system call. Collects
//! every problem it finds (not only the first), each with file, line and column.
//! Pure apart from [`load`], which reads the file.

use super::glob::{split, Pattern};
use super::schema::{AccessMode, Attr, Class, Digest, OnChange, RawGroup, RawPolicy};
use crate::error::{Error, PolicyErrors, PolicyProblem, Result};
use serde_saphyr::{Location, Spanned};
use std::collections::HashSet;

/// A policy file larger than this is refused (policies are a few KiB).
pub const MAX_POLICY_BYTES: u64 = 4 << 20;

/// The set of attributes a group compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CompareSet(u16);

impl CompareSet {
    /// The DESIGN default: content, mode, owner, group, acl, xattr, link_target, type.
    pub fn default_set() -> CompareSet {
        CompareSet::from_attrs(Attr::DEFAULT_COMPARE)
    }

    /// A set of the given attributes.
    pub fn from_attrs(attrs: impl IntoIterator<Item = Attr>) -> CompareSet {
        CompareSet(attrs.into_iter().fold(0, |acc, a| acc | (1 << a as u16)))
    }

    /// Whether `attr` is compared.
    pub fn contains(self, attr: Attr) -> bool {
        self.0 & (1 << attr as u16) != 0
    }

    /// The attributes, in [`Attr::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Attr> {
        Attr::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// One allow rule of an `access:` block: every field given must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    pub exe: Vec<u8>,
    pub exe_hash: Option<[u8; 32]>,
    pub users: Vec<String>,
    pub uids: Vec<u32>,
    /// The parent's executable must be one of these (empty: any parent).
    pub parent_exe: Vec<Vec<u8>>,
    /// Any parent is allowed, but one not listed here raises an `unusual-parent` alert
    /// (empty: no such alert).
    pub usual_parent_exe: Vec<Vec<u8>>,
    /// The arguments after `argv[0]` must match these (`None`: any arguments).
    pub args: Option<ArgsPattern>,
}

/// Patterns for a command line's arguments after `argv[0]`: one per argument, `*` any run of
/// bytes (`/` included), `?` one byte, `\` makes the next character literal; a last
/// pattern `**` matches any number of further arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgsPattern {
    pub args: Vec<Vec<ArgTok>>,
    pub rest: bool,
    /// As written, for messages.
    pub text: Vec<String>,
}

/// One token of an argument pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgTok {
    Byte(u8),
    One,
    Any,
}

impl ArgsPattern {
    /// Parse the patterns as written in the policy.
    pub fn new(pats: &[String]) -> ArgsPattern {
        let rest = pats.last().is_some_and(|p| p == "**");
        let fixed = if rest { &pats[..pats.len() - 1] } else { pats };
        let args = fixed
            .iter()
            .map(|p| {
                let mut toks = Vec::new();
                let mut it = p.bytes();
                while let Some(b) = it.next() {
                    toks.push(match b {
                        b'*' => ArgTok::Any,
                        b'?' => ArgTok::One,
                        b'\\' => ArgTok::Byte(it.next().unwrap_or(b'\\')),
                        b => ArgTok::Byte(b),
                    });
                }
                toks
            })
            .collect();
        ArgsPattern {
            args,
            rest,
            text: pats.to_vec(),
        }
    }

    /// Whether `args` (after `argv[0]`) match.
    pub fn matches(&self, args: &[Vec<u8>]) -> bool {
        let n = self.args.len();
        if args.len() < n || (!self.rest && args.len() != n) {
            return false;
        }
        self.args.iter().zip(args).all(|(p, a)| arg_matches(p, a))
    }
}

fn arg_matches(p: &[ArgTok], s: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point (the last `*`): linear in practice,
    // never exponential on a hostile argument.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(ArgTok::Any) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(ArgTok::One) => {
                pi += 1;
                si += 1;
            }
            Some(ArgTok::Byte(b)) if *b == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == ArgTok::Any)
}

/// A group's `access:` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub mode: AccessMode,
    pub allow: Vec<AllowRule>,
}

/// The build a provider binary must be: ELF GNU build-id (lower-case hex) and/or SONAME.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub build_id: Option<String>,
    pub soname: Option<String>,
}

/// Default for `expiry_warning_days`.
pub const DEFAULT_EXPIRY_WARNING_DAYS: u32 = 30;

/// A compiled group.
#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub class: Class,
    pub patterns: Vec<Pattern>,
    pub excludes: Vec<Pattern>,
    pub compare: CompareSet,
    /// `hash:` lists `sha256`: record SHA-256 beside BLAKE3 for this group's files.
    pub sha256: bool,
    pub access: Access,
    pub on_change: Vec<OnChange>,
    /// provider-binary groups: the build each file must be (`expect:`).
    pub expect: Option<Expect>,
    /// Position in the file, for precedence ties.
    pub order: usize,
}

impl Group {
    /// The specificity with which this group claims `comps`, if it does: the longest literal
    /// prefix among its matching patterns. Excluded paths are not claimed.
    fn claim(&self, comps: &[&[u8]]) -> Option<usize> {
        let best = self
            .patterns
            .iter()
            .filter(|p| p.matches_comps(comps))
            .map(Pattern::literal_prefix_len)
            .max()?;
        if self.excludes.iter().any(|e| e.matches_comps(comps)) {
            return None;
        }
        Some(best)
    }
}

/// A parsed, checked policy, ready for the walker and the daemon.
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    /// Where it came from (for messages).
    pub file: Vec<u8>,
    /// The text as read, kept in each run record.
    pub text: String,
    /// BLAKE3 of the text, hex.
    pub digest: String,
    pub groups: Vec<Group>,
    /// Certificates expiring within this many days are posture findings.
    pub expiry_warning_days: u32,
    /// `logs:` sources, in file order.
    pub logs: Vec<super::logs::LogSource>,
    /// `rules:` files or directories, in file order.
    pub rules: Vec<String>,
}

impl CompiledPolicy {
    /// The group that owns `path`: the one whose matching pattern is most specific (longest
    /// literal prefix; on a tie, the first in the file). `None` when no group covers it.
    pub fn classify(&self, path: &[u8]) -> Option<&Group> {
        let comps: Vec<&[u8]> = split(path).collect();
        self.classify_comps(&comps)
    }

    /// [`CompiledPolicy::classify`] on a path already split into components.
    pub fn classify_comps(&self, comps: &[&[u8]]) -> Option<&Group> {
        let mut best: Option<(usize, &Group)> = None;
        for g in &self.groups {
            if let Some(score) = g.claim(comps) {
                // Strictly greater keeps the first group on a tie.
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, g));
                }
            }
        }
        best.map(|(_, g)| g)
    }

    /// Every group that would claim `path` without precedence (for overlap reports).
    pub fn claimants(&self, path: &[u8]) -> Vec<&Group> {
        let comps: Vec<&[u8]> = split(path).collect();
        self.groups
            .iter()
            .filter(|g| g.claim(&comps).is_some())
            .collect()
    }

    /// Whether the walk must descend into `dir`: some pattern could match at or below it.
    /// Excludes prune too: an excluded directory is skipped unless a pattern of another group
    /// could still claim something beneath it.
    pub fn could_match_within_comps(&self, dir: &[&[u8]]) -> bool {
        self.groups.iter().any(|g| {
            g.patterns.iter().any(|p| p.could_match_within_comps(dir))
                && !g
                    .excludes
                    .iter()
                    .any(|e| e.is_subtree_exclude() && e.matches_comps(dir))
        })
    }

    /// Where walks start: the literal prefixes of all patterns, without those that lie
    /// beneath another (the outer walk reaches them), sorted.
    pub fn bases(&self) -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = self
            .groups
            .iter()
            .flat_map(|g| g.patterns.iter().map(Pattern::base))
            .collect();
        all.sort();
        all.dedup();
        let mut out: Vec<Vec<u8>> = Vec::new();
        for b in all {
            let covered = out.iter().any(|o| is_within(&b, o));
            if !covered {
                out.push(b);
            }
        }
        out
    }

    /// Static lints `policy check` prints as warnings.
    pub fn lints(&self) -> Vec<String> {
        let mut w = Vec::new();
        for g in &self.groups {
            if g.access.mode == AccessMode::Enforce && g.access.allow.is_empty() {
                w.push(format!(
                    "group `{}`: access mode is enforce with an empty allow-list: every open by any process will be denied",
                    g.name
                ));
            }
            for p in &g.patterns {
                if p.base() == b"/" {
                    w.push(format!(
                        "group `{}`: pattern `{}` starts with a wildcard right under `/`: the walk covers the whole file system",
                        g.name,
                        p.as_str()
                    ));
                }
            }
            if g.class == Class::PrivateKey && !g.compare.contains(Attr::Mode) {
                w.push(format!(
                    "group `{}`: a private-key group that does not compare `mode` will miss a key becoming readable by others",
                    g.name
                ));
            }
            if g.on_change.contains(&OnChange::Restore) && !g.compare.contains(Attr::Content) {
                w.push(format!(
                    "group `{}`: on_change restore without comparing `content` cannot notice content tampering",
                    g.name
                ));
            }
        }
        // Static overlaps, one line per group pair: only where a plain path (a file or a whole
        // subtree) of one group lies inside another group's reach, which is certain to
        // overlap. Wildcard-vs-wildcard overlaps are reported from the resolved walk instead,
        // with real counts, since comparing literal prefixes flags many that never meet.
        for (i, a) in self.groups.iter().enumerate() {
            for b in self.groups.iter().skip(i + 1) {
                let hit = a
                    .patterns
                    .iter()
                    .flat_map(|pa| b.patterns.iter().map(move |pb| (pa, pb)))
                    .find(|(pa, pb)| {
                        (pa.is_plain()
                            && pb.could_match_within(&pa.base())
                            && pb.matches(&pa.base()))
                            || (pb.is_plain()
                                && pa.could_match_within(&pb.base())
                                && pa.matches(&pb.base()))
                            || (pa.is_plain()
                                && pb.is_plain()
                                && (is_within(&pa.base(), &pb.base())
                                    || is_within(&pb.base(), &pa.base())))
                    });
                if let Some((pa, pb)) = hit {
                    w.push(format!(
                        "groups `{}` and `{}` overlap (`{}` and `{}`); a path covered by both belongs to the more specific pattern",
                        a.name,
                        b.name,
                        pa.as_str(),
                        pb.as_str()
                    ));
                }
            }
        }
        w
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

impl Pattern {
    /// An exclude that removes a whole directory (it cannot match the directory yet want a
    /// descendant): everything ending in `/**` or plain.
    fn is_subtree_exclude(&self) -> bool {
        self.is_plain() || self.as_str().ends_with("/**")
    }
}

/// `path` equals `dir` or lies beneath it (component-wise).
pub fn is_within(path: &[u8], dir: &[u8]) -> bool {
    let mut p = split(path);
    split(dir).all(|d| p.next() == Some(d))
}

/// Read and compile the policy at `file`.
pub fn load(file: &std::path::Path) -> Result<CompiledPolicy> {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    let name = file.as_os_str().as_bytes().to_vec();
    let whole = |msg: String| {
        Error::Policy(PolicyErrors(vec![PolicyProblem {
            file: name.clone(),
            line: 0,
            col: 0,
            msg,
        }]))
    };
    let f = std::fs::File::open(file).map_err(|e| whole(format!("cannot read policy: {e}")))?;
    let mut buf = Vec::new();
    f.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| whole(format!("cannot read policy: {e}")))?;
    if buf.len() as u64 > MAX_POLICY_BYTES {
        return Err(whole(format!(
            "policy is larger than {MAX_POLICY_BYTES} bytes; expected a YAML policy file"
        )));
    }
    let text = String::from_utf8(buf).map_err(|e| {
        whole(format!(
            "policy is not UTF-8 (invalid byte at offset {}); expected a YAML text file",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse_str(&text, &name)
}

/// Parse and compile policy `text`; `file` names it in messages.
pub fn parse_str(text: &str, file: &[u8]) -> Result<CompiledPolicy> {
    let problem = |loc: Option<&Location>, msg: String| PolicyProblem {
        file: file.to_vec(),
        line: loc.map_or(0, |l| l.line()),
        col: loc.map_or(0, |l| l.column()),
        msg,
    };
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(Error::Policy(PolicyErrors(vec![problem(
            None,
            "policy is empty; expected a mapping with `version: 1` and `groups:`".into(),
        )])));
    }
    let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| {
        let loc = e.location();
        Error::Policy(PolicyErrors(vec![problem(loc.as_ref(), yaml_message(&e))]))
    })?;
    let mut problems = Vec::new();
    let at = |s: &Location| Some(*s);

    if raw.version.value != 1 {
        problems.push(problem(
            at(&raw.version.referenced).as_ref(),
            format!(
                "unsupported policy version {}; expected `version: 1`",
                raw.version.value
            ),
        ));
    }
    if raw.groups.value.is_empty() {
        problems.push(problem(
            at(&raw.groups.referenced).as_ref(),
            "`groups` is empty; expected at least one group".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut groups = Vec::new();
    for (order, g) in raw.groups.value.iter().enumerate() {
        if let Some(group) = compile_group(g, order, &mut names, &mut |l, m| {
            problems.push(problem(Some(l), m))
        }) {
            groups.push(group);
        }
    }
    let expiry_warning_days = match &raw.expiry_warning_days {
        None => DEFAULT_EXPIRY_WARNING_DAYS,
        Some(d) if d.value > 3650 => {
            problems.push(problem(
                at(&d.referenced).as_ref(),
                format!(
                    "expiry_warning_days {} is over ten years; expected a number of days such as 30",
                    d.value
                ),
            ));
            DEFAULT_EXPIRY_WARNING_DAYS
        }
        Some(d) => d.value,
    };
    let logs = raw.logs.as_ref().map_or_else(Vec::new, |l| {
        super::logs::compile_logs(&l.value, &mut |l, m| problems.push(problem(Some(l), m)))
    });
    let mut rules = Vec::new();
    for r in raw.rules.iter().flat_map(|r| &r.value) {
        if r.value.starts_with('/') {
            rules.push(r.value.clone());
        } else {
            problems.push(problem(
                at(&r.referenced).as_ref(),
                format!(
                    "rule path `{}` is not absolute; expected a Sigma rule file or directory",
                    r.value
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Policy(PolicyErrors(problems)));
    }
    Ok(CompiledPolicy {
        logs,
        rules,
        file: file.to_vec(),
        text: text.to_string(),
        digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
        groups,
        expiry_warning_days,
    })
}

fn compile_group(
    g: &RawGroup,
    order: usize,
    names: &mut HashSet<String>,
    report: &mut dyn FnMut(&Location, String),
) -> Option<Group> {
    let mut ok = true;
    let mut fail = |l: &Location, m: String| {
        ok = false;
        report(l, m);
    };
    let name = g.name.value.clone();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        fail(
            &g.name.referenced,
            format!("group name `{name}` is invalid; expected letters, digits, `-`, `_` or `.`"),
        );
    } else if !names.insert(name.clone()) {
        fail(
            &g.name.referenced,
            format!("duplicate group name `{name}`; expected each group name once"),
        );
    }
    if g.paths.value.is_empty() {
        fail(
            &g.paths.referenced,
            "`paths` is empty; expected at least one absolute path".into(),
        );
    }
    let mut patterns = Vec::new();
    for p in &g.paths.value {
        match Pattern::new(&p.value) {
            Ok(pat) => patterns.push(pat),
            Err(e) => fail(&p.referenced, e.0),
        }
    }
    let mut excludes = Vec::new();
    for p in &g.exclude {
        match Pattern::new_exclude(&p.value) {
            Ok(pat) => excludes.push(pat),
            Err(e) => fail(&p.referenced, e.0),
        }
    }
    let compare = match &g.compare {
        None => CompareSet::default_set(),
        Some(list) if list.value.is_empty() => {
            fail(
                &list.referenced,
                "`compare` is empty; expected attributes to compare, or omit it for the default"
                    .into(),
            );
            CompareSet::default_set()
        }
        Some(list) => CompareSet::from_attrs(list.value.iter().map(|a| a.value)),
    };
    let sha256 = match &g.hash {
        None => false,
        Some(list) => {
            let has = |d| list.value.iter().any(|x| x.value == d);
            if !has(Digest::Blake3) {
                fail(
                    &list.referenced,
                    "`hash` must list blake3 (every comparison uses BLAKE3); expected `[blake3]` or `[blake3, sha256]`".into(),
                );
            }
            has(Digest::Sha256)
        }
    };
    let access = match &g.access {
        None => Access {
            mode: AccessMode::Off,
            allow: Vec::new(),
        },
        Some(a) => {
            let mut allow = Vec::new();
            for rule in &a.value.allow {
                if let Some(r) = compile_allow(rule, &mut fail) {
                    allow.push(r);
                }
            }
            if a.value.mode.value == AccessMode::Off && !a.value.allow.is_empty() {
                fail(
                    &a.value.mode.referenced,
                    "access mode is `off` but an allow-list is given; expected `enforce` or `audit`"
                        .into(),
                );
            }
            Access {
                mode: a.value.mode.value,
                allow,
            }
        }
    };
    let mut on_change = Vec::new();
    for o in g.on_change.iter().flatten() {
        if !on_change.contains(&o.value) {
            on_change.push(o.value);
        }
    }
    if g.on_change.is_none() {
        on_change.push(OnChange::Alert);
    }
    let class = g.class.as_ref().map_or(Class::Generic, |c| c.value);
    let expect = g.expect.as_ref().map(|x| {
        if class != Class::ProviderBinary {
            fail(
                &x.referenced,
                format!(
                    "`expect` applies to provider-binary groups; this group's class is {}",
                    class.as_str()
                ),
            );
        }
        let build_id = x.value.build_id.as_ref().map(|b| {
            let v = b.value.trim().to_ascii_lowercase();
            if v.len() < 2 || v.len() % 2 != 0 || !v.bytes().all(|c| c.is_ascii_hexdigit()) {
                fail(
                    &b.referenced,
                    "build_id is not hexadecimal; expected the GNU build-id as `readelf -n` prints it".into(),
                );
            }
            v
        });
        let soname = x.value.soname.as_ref().map(|s| s.value.clone());
        if build_id.is_none() && soname.is_none() {
            fail(
                &x.referenced,
                "`expect` is empty; expected `build_id:` and/or `soname:`".into(),
            );
        }
        Expect { build_id, soname }
    });
    ok.then_some(Group {
        name,
        class,
        patterns,
        excludes,
        compare,
        sha256,
        access,
        on_change,
        expect,
        order,
    })
}

fn compile_allow(
    rule: &Spanned<super::schema::RawAllow>,
    fail: &mut dyn FnMut(&Location, String),
) -> Option<AllowRule> {
    let r = &rule.value;
    let mut ok = true;
    if !r.exe.value.starts_with('/') {
        ok = false;
        fail(
            &r.exe.referenced,
            format!(
                "exe `{}` is relative; expected the absolute path of an executable",
                r.exe.value
            ),
        );
    }
    let mut exe_hash = None;
    if let Some(h) = &r.exe_hash {
        let mut out = [0u8; 32];
        match hex::decode_to_slice(h.value.trim(), &mut out) {
            Ok(()) => exe_hash = Some(out),
            Err(_) => {
                ok = false;
                fail(
                    &h.referenced,
                    "exe_hash is not a BLAKE3 digest; expected 64 hexadecimal characters".into(),
                );
            }
        }
    }
    let mut paths = |key: &str, v: &Option<Spanned<super::schema::OneOrMany>>| -> Vec<Vec<u8>> {
        let Some(v) = v else { return Vec::new() };
        let vals = v.value.values();
        if vals.is_empty() {
            ok = false;
            fail(
                &v.referenced,
                format!("`{key}` is empty; expected an absolute path or a list of them"),
            );
        }
        for p in &vals {
            if !p.starts_with('/') {
                ok = false;
                fail(
                    &v.referenced,
                    format!("{key} `{p}` is relative; expected an absolute path"),
                );
            }
        }
        vals.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    let parent_exe = paths("parent_exe", &r.parent_exe);
    let usual_parent_exe = paths("usual_parent_exe", &r.usual_parent_exe);
    let args = r.args.as_ref().map(|a| {
        if let Some(i) = a.value.iter().position(|p| p.value == "**") {
            if i + 1 != a.value.len() {
                ok = false;
                fail(
                    &a.value[i].referenced,
                    "`**` stands for any further arguments, so it can only be the last pattern"
                        .into(),
                );
            }
        }
        let text: Vec<String> = a.value.iter().map(|p| p.value.clone()).collect();
        ArgsPattern::new(&text)
    });
    for u in &r.users {
        if u.value.is_empty() || u.value.contains([':', '/', '\n']) {
            ok = false;
            fail(
                &u.referenced,
                format!("user `{}` is not a valid user name", u.value),
            );
        }
    }
    ok.then(|| AllowRule {
        exe: r.exe.value.as_bytes().to_vec(),
        exe_hash,
        users: r.users.iter().map(|u| u.value.clone()).collect(),
        uids: r.uids.iter().map(|u| u.value).collect(),
        parent_exe,
        usual_parent_exe,
        args,
    })
}

/// serde-saphyr's message without its own " at line L, column C" suffix (we print
/// `file:line:col:` in front), with its parser jargon turned into what a user should write.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let opts = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut msg = e.render_with_options(opts);
    if let Some(i) = msg.rfind(" at line ") {
        if msg[i..].contains(", column ") {
            msg.truncate(i);
        }
    }
    let msg = msg.trim().to_string();
    match msg.as_str() {
        "expected sequence start" => "expected a list, such as `[/etc/kms/client.key]`".into(),
        "expected mapping start" => "expected a mapping of `key: value` pairs".into(),
        "unexpected end of input" => "unexpected end of file; expected more YAML".into(),
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<CompiledPolicy> {
        parse_str(y, b"p.yaml")
    }

    fn problems(y: &str) -> Vec<String> {
        match parse(y) {
            Err(Error::Policy(p)) => p.0.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected policy error, got {other:?}"),
        }
    }

    const GOOD: &str = "\
version: 1
groups:
  - name: client-keys
    class: private-key
    paths: [/etc/kms-client/keys/**, /etc/ssl/private]
    exclude: [\"**/*.swp\"]
    compare: [content, mode, owner, group, acl, xattr, link_target, type]
    access:
      mode: enforce
      allow:
        - exe: /usr/sbin/kms-agent
          users: [root, kms]
    on_change: [alert, restore]
  - name: ssl
    class: ca-cert
    paths: [/etc/ssl/**]
";

    #[test]
    fn the_design_example_compiles() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.groups.len(), 2);
        let g = &p.groups[0];
        assert_eq!(g.class, Class::PrivateKey);
        assert_eq!(g.access.mode, AccessMode::Enforce);
        assert_eq!(g.access.allow[0].users, vec!["root", "kms"]);
        assert_eq!(g.on_change, vec![OnChange::Alert, OnChange::Restore]);
        assert_eq!(p.groups[1].compare, CompareSet::default_set());
        assert_eq!(p.groups[1].on_change, vec![OnChange::Alert]);
        assert_eq!(p.digest.len(), 64);
    }

    #[test]
    fn most_specific_pattern_wins_and_first_wins_ties() {
        let p = parse(GOOD).unwrap();
        assert_eq!(
            p.classify(b"/etc/ssl/private/k.pem").unwrap().name,
            "client-keys"
        );
        assert_eq!(p.classify(b"/etc/ssl/certs/ca.pem").unwrap().name, "ssl");
        assert!(p.classify(b"/etc/passwd").is_none());
        // Excluded from the key group, the swap file falls to the broader group.
        assert_eq!(p.classify(b"/etc/ssl/private/.k.swp").unwrap().name, "ssl");
        assert!(p.classify(b"/etc/kms-client/keys/a.swp").is_none());
        let tie = parse(
            "version: 1\ngroups:\n  - name: a\n    paths: [/x/*.pem]\n  - name: b\n    paths: [/x/*.key, /x/*]\n",
        )
        .unwrap();
        assert_eq!(tie.classify(b"/x/k.pem").unwrap().name, "a");
        assert_eq!(tie.classify(b"/x/k.key").unwrap().name, "b");
    }

    #[test]
    fn bases_are_minimal() {
        let p = parse(GOOD).unwrap();
        assert_eq!(
            p.bases(),
            vec![b"/etc/kms-client/keys".to_vec(), b"/etc/ssl".to_vec()]
        );
    }

    #[test]
    fn unknown_key_names_line_column_and_expected_keys() {
        let e = problems("version: 1\ngroups:\n  - name: a\n    pathz: [/x]\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("p.yaml:4:5: unknown field `pathz`"),
            "{e:?}"
        );
        assert!(e[0].contains("expected one of"), "{e:?}");
    }

    #[test]
    fn hash_records_blake3_by_default_and_sha256_only_where_asked() {
        let p = parse(GOOD).unwrap();
        assert!(p.groups.iter().all(|g| !g.sha256));
        let p = parse(
            "version: 1\ngroups:\n  - name: a\n    hash: [blake3, sha256]\n    paths: [/x]\n  - name: b\n    hash: [blake3]\n    paths: [/y]\n",
        )
        .unwrap();
        assert!(p.groups[0].sha256);
        assert!(!p.groups[1].sha256);
        let e = problems("version: 1\ngroups:\n  - name: a\n    hash: [sha256]\n    paths: [/x]\n");
        assert!(
            e[0].starts_with("p.yaml:4:11: `hash` must list blake3"),
            "{e:?}"
        );
        let e = problems(
            "version: 1\ngroups:\n  - name: a\n    hash: [blake3, md5]\n    paths: [/x]\n",
        );
        assert!(
            e[0].contains("4:20: unknown variant `md5`, expected one of blake3, sha256"),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_types_and_bad_values_are_located() {
        let e = problems("version: 1\ngroups:\n  - name: a\n    paths: /x\n");
        assert!(e[0].starts_with("p.yaml:4:12: expected a list"), "{e:?}");
        let e = problems("version: one\ngroups: []\n");
        assert!(e[0].starts_with("p.yaml:1:10:"), "{e:?}");
        let e =
            problems("version: 1\ngroups:\n  - name: a\n    class: privat-key\n    paths: [/x]\n");
        assert!(e[0].contains("4:12: unknown variant `privat-key`"), "{e:?}");
        let e = problems("version: 1\ngroups:\n\t- name: a\n");
        assert!(e[0].starts_with("p.yaml:3:"), "{e:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let e = problems(
            "version: 2\ngroups:\n  - name: a\n    paths: []\n  - name: a\n    paths: [etc/x, /ok]\n    compare: []\n",
        );
        assert!(e
            .iter()
            .any(|m| m.starts_with("p.yaml:1:10: unsupported policy version 2")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("p.yaml:4:12: `paths` is empty")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("p.yaml:5:11: duplicate group name `a`")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("p.yaml:6:13: path `etc/x` is relative")));
        assert!(e
            .iter()
            .any(|m| m.starts_with("p.yaml:7:14: `compare` is empty")));
    }

    #[test]
    fn empty_and_missing_fields() {
        assert!(problems("")[0].contains("policy is empty"));
        assert!(problems("  \n# just a comment\n")[0].contains("policy is empty"));
        assert!(problems("version: 1\n")[0].contains("missing field `groups`"));
        assert!(problems("version: 1\ngroups: []\n")[0].contains("`groups` is empty"));
    }

    #[test]
    fn allow_rules_are_checked() {
        let e = problems(
            "version: 1\ngroups:\n  - name: a\n    paths: [/x]\n    access:\n      mode: enforce\n      allow:\n        - exe: bin/agent\n          exe_hash: zz\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("8:16: exe `bin/agent` is relative")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("9:21: exe_hash is not a BLAKE3")),
            "{e:?}"
        );
    }

    #[test]
    fn lints_flag_dangerous_policies() {
        let p = parse(
            "version: 1\ngroups:\n  - name: k\n    class: private-key\n    paths: [/**/x.key]\n    compare: [content]\n    access:\n      mode: enforce\n",
        )
        .unwrap();
        let l = p.lints().join("\n");
        assert!(l.contains("empty allow-list"));
        assert!(l.contains("whole file system"));
        assert!(l.contains("does not compare `mode`"));
        let p = parse(GOOD).unwrap();
        assert!(p.lints().iter().any(|w| w.contains("overlap")));
    }

    #[test]
    fn expiry_window_and_provider_expectations_compile_and_are_checked() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.expiry_warning_days, DEFAULT_EXPIRY_WARNING_DAYS);
        let p = parse(
            "version: 1\nexpiry_warning_days: 14\ngroups:\n  - name: p\n    class: provider-binary\n    paths: [/usr/lib/pkcs11]\n    expect:\n      build_id: AB12\n      soname: libx.so.1\n",
        )
        .unwrap();
        assert_eq!(p.expiry_warning_days, 14);
        assert_eq!(
            p.groups[0].expect,
            Some(Expect {
                build_id: Some("ab12".into()),
                soname: Some("libx.so.1".into())
            })
        );
        let e = problems(
            "version: 1\nexpiry_warning_days: 99999\ngroups:\n  - name: k\n    class: private-key\n    paths: [/k]\n    expect:\n      build_id: xyz\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("2:22: expiry_warning_days 99999")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("`expect` applies to provider-binary groups")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("8:17: build_id is not hexadecimal")),
            "{e:?}"
        );
        let e = problems(
            "version: 1\ngroups:\n  - name: p\n    class: provider-binary\n    paths: [/p]\n    expect: {}\n",
        );
        assert!(e.iter().any(|m| m.contains("`expect` is empty")), "{e:?}");
    }

    #[test]
    fn excluded_subtrees_are_pruned() {
        let p = parse(
            "version: 1\ngroups:\n  - name: a\n    paths: [/x]\n    exclude: [/x/cache/**]\n",
        )
        .unwrap();
        let comps = |s: &'static [u8]| split(s).collect::<Vec<_>>();
        assert!(p.could_match_within_comps(&comps(b"/x/keys")));
        assert!(!p.could_match_within_comps(&comps(b"/x/cache")));
        assert!(p.classify(b"/x/cache/a").is_none());
    }
}

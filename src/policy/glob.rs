//! Path patterns: `*` and `?` (and `[...]` classes) stay inside one component, `**` spans zero
//! or more components, and a pattern without wildcards names a file or a directory and
//! everything beneath it. Patterns and paths are bytes; matching is component-wise so the
//! walker can ask "could anything below this directory match?" and prune.
//!
//! Pure: no I/O.

use std::fmt;

/// One `[...]` item.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ClassItem {
    Byte(u8),
    Range(u8, u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    /// `?`: one byte (a component is bytes, not necessarily UTF-8).
    One,
    /// `*`: any run of bytes within the component.
    Star,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Comp {
    Literal(Vec<u8>),
    Wild(Vec<Tok>),
    /// `**`
    AnyDepth,
}

/// A compiled path pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    raw: String,
    comps: Vec<Comp>,
    /// No wildcard at all: matches the path and everything beneath it.
    plain: bool,
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.raw)
    }
}

/// Why a pattern was refused; the policy compiler adds file, line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError(pub String);

impl Pattern {
    /// Compile an absolute pattern (`/etc/ssl/**/*.pem`).
    pub fn new(raw: &str) -> Result<Pattern, GlobError> {
        if !raw.starts_with('/') {
            return Err(GlobError(format!(
                "path `{raw}` is relative; expected an absolute path such as `/etc/kms/client.key`"
            )));
        }
        if raw.as_bytes().contains(&0) {
            return Err(GlobError("path contains a NUL byte".into()));
        }
        let mut comps = Vec::new();
        for part in raw.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." {
                return Err(GlobError(format!(
                    "path `{raw}` contains `{part}`; expected a normalised absolute path"
                )));
            }
            if part == "**" {
                // `**/**` is the same as `**`.
                if comps.last() != Some(&Comp::AnyDepth) {
                    comps.push(Comp::AnyDepth);
                }
                continue;
            }
            if part.contains("**") {
                return Err(GlobError(format!(
                    "`**` in `{part}` must be a whole path component, as in `/etc/**/key.pem`"
                )));
            }
            let toks = parse_component(part.as_bytes())
                .map_err(|m| GlobError(format!("in `{raw}`: {m}")))?;
            if toks.iter().all(|t| matches!(t, Tok::Lit(_))) {
                comps.push(Comp::Literal(
                    toks.iter()
                        .filter_map(|t| match t {
                            Tok::Lit(b) => Some(*b),
                            _ => None,
                        })
                        .collect(),
                ));
            } else {
                comps.push(Comp::Wild(toks));
            }
        }
        let plain = comps.iter().all(|c| matches!(c, Comp::Literal(_)));
        Ok(Pattern {
            raw: raw.to_string(),
            comps,
            plain,
        })
    }

    /// Compile an exclude pattern: one without a leading `/` matches anywhere (`**/` prefix).
    pub fn new_exclude(raw: &str) -> Result<Pattern, GlobError> {
        if raw.starts_with('/') {
            Pattern::new(raw)
        } else {
            let mut p = Pattern::new(&format!("/**/{raw}"))?;
            p.raw = raw.to_string();
            Ok(p)
        }
    }

    /// The text as written in the policy.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether the pattern has no wildcard (names a file or a whole subtree).
    pub fn is_plain(&self) -> bool {
        self.plain
    }

    /// The directory the walk starts from: the leading literal components.
    pub fn base(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for c in &self.comps {
            match c {
                Comp::Literal(l) => {
                    out.push(b'/');
                    out.extend_from_slice(l);
                }
                _ => break,
            }
        }
        if out.is_empty() {
            out.push(b'/');
        }
        out
    }

    /// Specificity for group precedence: length of the literal text before the first wildcard.
    pub fn literal_prefix_len(&self) -> usize {
        if self.plain {
            return self.base().len();
        }
        let mut n = 0;
        for c in &self.comps {
            match c {
                Comp::Literal(l) => n += 1 + l.len(),
                Comp::Wild(toks) => {
                    n += 1 + toks.iter().take_while(|t| matches!(t, Tok::Lit(_))).count();
                    break;
                }
                Comp::AnyDepth => {
                    n += 1;
                    break;
                }
            }
        }
        n
    }

    /// Whether the host-absolute `path` is matched.
    pub fn matches(&self, path: &[u8]) -> bool {
        let comps: Vec<&[u8]> = split(path).collect();
        self.matches_comps(&comps)
    }

    /// [`Pattern::matches`] on a path already split into components.
    pub fn matches_comps(&self, comps: &[&[u8]]) -> bool {
        if self.plain {
            return self.comps.len() <= comps.len()
                && self.comps.iter().zip(comps.iter()).all(|(p, c)| match p {
                    Comp::Literal(l) => l.as_slice() == *c,
                    _ => false,
                });
        }
        match_comps(&self.comps, comps)
    }

    /// Whether `dir` or anything beneath it could be matched: the walker's pruning test.
    pub fn could_match_within(&self, dir: &[u8]) -> bool {
        let comps: Vec<&[u8]> = split(dir).collect();
        self.could_match_within_comps(&comps)
    }

    /// [`Pattern::could_match_within`] on a path already split into components.
    pub fn could_match_within_comps(&self, dir: &[&[u8]]) -> bool {
        if self.plain {
            // Either the directory lies on the way to the named path, or beneath it.
            return self.comps.iter().zip(dir).all(|(p, c)| match p {
                Comp::Literal(l) => l.as_slice() == *c,
                _ => false,
            });
        }
        prefix_viable(&self.comps, dir)
    }
}

/// A path's components (empty ones, from `//` or a trailing `/`, are skipped).
pub fn split(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

fn parse_component(part: &[u8]) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut i = 0;
    while i < part.len() {
        match part[i] {
            b'*' => {
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                i += 1;
            }
            b'?' => {
                toks.push(Tok::One);
                i += 1;
            }
            b'\\' => {
                let b = *part
                    .get(i + 1)
                    .ok_or_else(|| "a trailing `\\` escapes nothing".to_string())?;
                toks.push(Tok::Lit(b));
                i += 2;
            }
            b'[' => {
                let (tok, used) = parse_class(&part[i..])?;
                toks.push(tok);
                i += used;
            }
            b => {
                toks.push(Tok::Lit(b));
                i += 1;
            }
        }
    }
    Ok(toks)
}

/// Parses `[abc]`, `[a-z]`, `[!x]` / `[^x]`; a `]` right after the opening is literal.
fn parse_class(s: &[u8]) -> Result<(Tok, usize), String> {
    let mut i = 1;
    let negated = matches!(s.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let mut items = Vec::new();
    let mut first = true;
    loop {
        let b = *s
            .get(i)
            .ok_or_else(|| "unclosed `[` in pattern; expected `]`".to_string())?;
        if b == b']' && !first {
            return Ok((Tok::Class { negated, items }, i + 1));
        }
        first = false;
        if s.get(i + 1) == Some(&b'-') && s.get(i + 2).is_some_and(|&c| c != b']') {
            let hi = s[i + 2];
            if hi < b {
                return Err(format!(
                    "range `{}-{}` is reversed",
                    char::from(b),
                    char::from(hi)
                ));
            }
            items.push(ClassItem::Range(b, hi));
            i += 3;
        } else {
            items.push(ClassItem::Byte(b));
            i += 1;
        }
    }
}

fn match_comps(pat: &[Comp], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((Comp::AnyDepth, rest)) => (0..=path.len()).any(|k| match_comps(rest, &path[k..])),
        Some((c, rest)) => match path.split_first() {
            None => false,
            Some((first, tail)) => comp_matches(c, first) && match_comps(rest, tail),
        },
    }
}

/// Could `path` be a prefix of (or equal to) some matched path?
fn prefix_viable(pat: &[Comp], path: &[&[u8]]) -> bool {
    if path.is_empty() {
        return true;
    }
    match pat.split_first() {
        // The (wildcard) pattern ran out before the path did: nothing deeper matches.
        None => false,
        Some((Comp::AnyDepth, _)) => true,
        Some((c, rest)) => comp_matches(c, path[0]) && prefix_viable(rest, &path[1..]),
    }
}

fn comp_matches(c: &Comp, name: &[u8]) -> bool {
    match c {
        Comp::Literal(l) => l.as_slice() == name,
        Comp::Wild(toks) => wild_matches(toks, name),
        Comp::AnyDepth => true,
    }
}

/// Classic iterative wildcard match with one backtrack point (linear-ish, no recursion).
fn wild_matches(toks: &[Tok], name: &[u8]) -> bool {
    let (mut t, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(tok) if tok_matches(tok, name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sn)) => {
                t = st + 1;
                n = sn + 1;
                star = Some((st, sn + 1));
            }
            None => return false,
        }
    }
    toks[t.min(toks.len())..].iter().all(|t| *t == Tok::Star)
}

fn tok_matches(tok: &Tok, b: u8) -> bool {
    match tok {
        Tok::Lit(l) => *l == b,
        Tok::One => true,
        Tok::Star => true,
        Tok::Class { negated, items } => {
            let hit = items.iter().any(|i| match i {
                ClassItem::Byte(x) => *x == b,
                ClassItem::Range(lo, hi) => (*lo..=*hi).contains(&b),
            });
            hit != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn plain_path_matches_itself_and_everything_beneath() {
        let pat = p("/etc/ssl/private");
        assert!(pat.is_plain());
        assert!(pat.matches(b"/etc/ssl/private"));
        assert!(pat.matches(b"/etc/ssl/private/a/b.key"));
        assert!(!pat.matches(b"/etc/ssl/privatex"));
        assert!(!pat.matches(b"/etc/ssl"));
    }

    #[test]
    fn star_and_question_stay_within_one_component() {
        let pat = p("/etc/kms/*.pem");
        assert!(pat.matches(b"/etc/kms/a.pem"));
        assert!(pat.matches(b"/etc/kms/.pem"));
        assert!(!pat.matches(b"/etc/kms/sub/a.pem"));
        let q = p("/etc/k?s/x");
        assert!(q.matches(b"/etc/kms/x"));
        assert!(!q.matches(b"/etc/kmms/x"));
        assert!(!q.matches(b"/etc/k/s/x"));
    }

    #[test]
    fn double_star_spans_zero_or_more_components() {
        let pat = p("/etc/kms/**");
        assert!(pat.matches(b"/etc/kms"));
        assert!(pat.matches(b"/etc/kms/a"));
        assert!(pat.matches(b"/etc/kms/a/b/c"));
        assert!(!pat.matches(b"/etc/kmsx/a"));
        let mid = p("/usr/lib/**/pkcs11/*.so");
        assert!(mid.matches(b"/usr/lib/pkcs11/p.so"));
        assert!(mid.matches(b"/usr/lib/x86_64-linux-gnu/pkcs11/p.so"));
        assert!(mid.matches(b"/usr/lib/a/b/pkcs11/p.so"));
        assert!(!mid.matches(b"/usr/lib/a/pkcs11/sub/p.so"));
    }

    #[test]
    fn classes_and_escapes() {
        let pat = p("/k/[a-c]x[!0-9]");
        assert!(pat.matches(b"/k/bxz"));
        assert!(!pat.matches(b"/k/dxz"));
        assert!(!pat.matches(b"/k/bx5"));
        assert!(p("/k/a\\*").matches(b"/k/a*"));
        assert!(!p("/k/a\\*").matches(b"/k/ab"));
        assert!(Pattern::new("/k/[a").is_err());
        assert!(Pattern::new("/k/[z-a]").is_err());
    }

    #[test]
    fn star_backtracks() {
        let pat = p("/x/*a*b*c");
        assert!(pat.matches(b"/x/aaabbbccc"));
        assert!(pat.matches(b"/x/abc"));
        assert!(!pat.matches(b"/x/acb"));
    }

    #[test]
    fn non_utf8_components_match_by_bytes() {
        let pat = p("/etc/*.key");
        assert!(pat.matches(b"/etc/\xff\xfe.key"));
        assert!(p("/etc/?").matches(b"/etc/\xff"));
    }

    #[test]
    fn relative_dotdot_and_bad_double_star_are_refused() {
        assert!(Pattern::new("etc/ssl").unwrap_err().0.contains("relative"));
        assert!(Pattern::new("/etc/../root").is_err());
        assert!(Pattern::new("/etc/a**").is_err());
        assert!(Pattern::new("").is_err());
    }

    #[test]
    fn base_is_the_literal_prefix() {
        assert_eq!(p("/usr/lib/*/pkcs11/*.so").base(), b"/usr/lib");
        assert_eq!(p("/etc/ssl/private").base(), b"/etc/ssl/private");
        assert_eq!(p("/**/x").base(), b"/");
        assert_eq!(p("/").base(), b"/");
    }

    #[test]
    fn specificity_counts_literal_bytes_before_the_first_wildcard() {
        assert!(p("/etc/ssl/private").literal_prefix_len() > p("/etc/ssl/**").literal_prefix_len());
        assert!(p("/etc/ssl/pri*").literal_prefix_len() > p("/etc/ssl/*").literal_prefix_len());
    }

    #[test]
    fn pruning_keeps_only_viable_directories() {
        let pat = p("/usr/lib/*/pkcs11/*.so");
        assert!(pat.could_match_within(b"/"));
        assert!(pat.could_match_within(b"/usr/lib"));
        assert!(pat.could_match_within(b"/usr/lib/x86_64-linux-gnu"));
        assert!(pat.could_match_within(b"/usr/lib/x86_64-linux-gnu/pkcs11"));
        assert!(!pat.could_match_within(b"/usr/lib/x86_64-linux-gnu/gconv"));
        assert!(!pat.could_match_within(b"/usr/share"));
        let plain = p("/etc/ssl");
        assert!(plain.could_match_within(b"/etc"));
        assert!(plain.could_match_within(b"/etc/ssl/certs/deep"));
        assert!(!plain.could_match_within(b"/var"));
        assert!(p("/etc/**").could_match_within(b"/etc/a/b/c"));
    }

    #[test]
    fn exclude_without_slash_matches_anywhere() {
        let ex = Pattern::new_exclude("*.swp").unwrap();
        assert!(ex.matches(b"/etc/kms/.key.swp"));
        assert!(ex.matches(b"/a.swp"));
        assert!(!ex.matches(b"/etc/kms/key"));
        let ex2 = Pattern::new_exclude("**/cache/**").unwrap();
        assert!(ex2.matches(b"/etc/kms/cache/x"));
        assert_eq!(ex2.as_str(), "**/cache/**");
    }
}

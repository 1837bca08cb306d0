//! What of an event a finding may carry: fields flattened to dotted names, values capped,
//! and secrets never copied. A field whose name says password, secret, token, key or
//! credential is masked whatever its value; a value that looks like a key body, a token or
//! a JWT is masked whatever its name; a password inside a statement or message
//! (`PASSWORD '…'`, `IDENTIFIED BY '…'`, `password=…`) has the password replaced.

use serde_json::{Map, Value};
use std::sync::OnceLock;

/// The text that stands where a secret was.
pub const MASK: &str = "<masked>";
/// Longest value copied, in bytes (longer ones are cut at a character boundary, marked `…`).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Most fields copied per finding.
pub const MAX_FIELDS: usize = 64;

fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let leaf = n.rsplit('.').next().unwrap_or(&n);
    const WORDS: [&str; 12] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "private_key",
        "privatekey",
        "authorization",
        "cookie",
        "credential",
    ];
    WORDS.iter().any(|w| leaf.contains(w))
        || leaf == "key"
        || leaf.ends_with("_key") && !leaf.ends_with("_id_key")
        || leaf == "plaintext"
        || leaf == "ciphertext"
}

fn statement_res() -> &'static [regex::Regex] {
    static RE: OnceLock<Vec<regex::Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        let q = r#"'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*""#;
        [
            // `password=x`, `token: x`: any value.
            regex::Regex::new(&format!(
                r#"(?i)((?:password|passwd|pwd|secret|token)\s*[=:]\s*)({q}|[^\s,;)'"]+)"#
            )),
            // `PASSWORD 'x'`, `IDENTIFIED BY 'x'`, `PASSWORD('x')`: quoted values only, so
            // "Failed password for root" keeps its words.
            regex::Regex::new(&format!(
                r#"(?i)((?:password|identified\s+by)\s*(?:\(\s*|\s)\s*(?:password\s*\(\s*)?)({q})"#
            )),
        ]
        .into_iter()
        // Both patterns are constants; the unit tests prove they compile.
        .filter_map(Result::ok)
        .collect()
    })
}

fn secret_value(v: &str) -> bool {
    let t = v.trim();
    if t.contains("-----BEGIN") || t.contains("PRIVATE KEY") {
        return true;
    }
    // JWT, Vault service/batch tokens, AWS secret keys, long base64/base64url runs.
    if t.starts_with("eyJ") && t.matches('.').count() == 2 {
        return true;
    }
    if ["hvs.", "hvb.", "hvr.", "s.", "b."]
        .iter()
        .any(|p| t.starts_with(p))
        && t.len() >= 24
        && !t.contains(' ')
    {
        return true;
    }
    let b64 = t.len() >= 40
        && !t.contains(' ')
        && t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_'));
    // A hex run (key id, hash) is an identifier, not a key body: only mixed-case base64 counts.
    b64 && t.bytes().any(|c| c.is_ascii_uppercase())
        && t.bytes().any(|c| c.is_ascii_lowercase())
        && t.bytes().any(|c| c.is_ascii_digit())
}

/// A value as a finding may carry it.
pub fn mask_value(v: &str) -> String {
    if secret_value(v) {
        return MASK.into();
    }
    let mut out = std::borrow::Cow::Borrowed(v);
    for re in statement_res() {
        if let std::borrow::Cow::Owned(s) =
            re.replace_all(&out, |c: &regex::Captures<'_>| format!("{}{MASK}", &c[1]))
        {
            out = std::borrow::Cow::Owned(s);
        }
    }
    cap(&out)
}

fn cap(s: &str) -> String {
    if s.len() <= MAX_VALUE_BYTES {
        return s.to_string();
    }
    let mut end = MAX_VALUE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The event's fields, flattened (`auth.display_name`), masked and capped.
pub fn fields(event: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    flatten("", event, &mut out, 0);
    out
}

fn flatten(prefix: &str, m: &Map<String, Value>, out: &mut Map<String, Value>, depth: u32) {
    for (k, v) in m {
        if out.len() >= MAX_FIELDS {
            return;
        }
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let name = cap(&name);
        match v {
            Value::Object(o) if depth < 8 => flatten(&name, o, out, depth + 1),
            _ if secret_name(&name) && !v.is_null() && v != &Value::Bool(false) => {
                out.insert(name, Value::String(MASK.into()));
            }
            Value::String(s) => {
                out.insert(name, Value::String(mask_value(s)));
            }
            Value::Array(_) | Value::Object(_) => {
                let s = serde_json::to_string(v).unwrap_or_default();
                out.insert(name, Value::String(mask_value(&s)));
            }
            other => {
                out.insert(name, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_key_bodies_are_never_copied() {
        let e: Map<String, Value> = serde_json::from_str(
            r#"{"auth":{"client_token":"hmac-sha256:abc","display_name":"app"},
                "request":{"data":{"plaintext":"aGVsbG8="}},
                "pem":"-----BEGIN PRIVATE KEY-----\nMIIE",
                "blob":"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEf+/",
                "key_id":"0123456789abcdef0123456789abcdef01234567",
                "password": "hunter2"}"#,
        )
        .unwrap();
        let f = fields(&e);
        assert_eq!(f["auth.client_token"], MASK);
        assert_eq!(f["auth.display_name"], "app");
        assert_eq!(f["request.data.plaintext"], MASK);
        assert_eq!(f["pem"], MASK);
        assert_eq!(f["blob"], MASK);
        assert_eq!(f["key_id"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(f["password"], MASK);
        assert!(!serde_json::to_string(&f).unwrap().contains("hunter2"));
    }

    #[test]
    fn passwords_inside_statements_are_replaced() {
        assert_eq!(statement_res().len(), 2);
        for (s, secret) in [
            ("ALTER ROLE admin WITH PASSWORD 'hunter2'", "hunter2"),
            ("SET PASSWORD FOR 'app'@'%' = PASSWORD('s3cr3t')", "s3cr3t"),
            ("CREATE USER x IDENTIFIED BY 'pw''q'", "pw"),
            ("login failed password=topsecret user=bob", "topsecret"),
        ] {
            let m = mask_value(s);
            assert!(!m.contains(secret), "{s} -> {m}");
            assert!(m.contains(MASK), "{s} -> {m}");
        }
        assert_eq!(
            mask_value("Failed password for root from 10.0.0.1"),
            "Failed password for root from 10.0.0.1"
        );
    }

    #[test]
    fn long_values_are_capped_on_a_char_boundary() {
        let v = "é".repeat(2000);
        let m = mask_value(&v);
        assert!(m.len() <= MAX_VALUE_BYTES + 3);
    }
}

//! The inverse of [`crate::baseline::attrs::acl_text`]: `getfacl`-style short text with
//! numeric ids back to the `system.posix_acl_*` xattr value. Pure.

const UNDEFINED_ID: u32 = u32::MAX;

/// Encode ACL text (`user::rw-,user:1000:r--,group::r--,mask::r--,other::---`, or the
/// `raw:<hex>` form used for values that did not parse) as the kernel's v2 xattr value.
/// `None` when the text is not in either form.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    if let Some(h) = text.strip_prefix("raw:") {
        return hex::decode(h).ok();
    }
    let mut out = vec![2, 0, 0, 0];
    for part in text.split(',') {
        let mut f = part.split(':');
        let (kind, id, perm) = (f.next()?, f.next()?, f.next()?);
        if f.next().is_some() || perm.len() != 3 {
            return None;
        }
        let named = !id.is_empty();
        let tag: u16 = match (kind, named) {
            ("user", false) => 0x01,
            ("user", true) => 0x02,
            ("group", false) => 0x04,
            ("group", true) => 0x08,
            ("mask", false) => 0x10,
            ("other", false) => 0x20,
            _ => return None,
        };
        let id: u32 = if named {
            id.parse().ok()?
        } else {
            UNDEFINED_ID
        };
        let p = perm.as_bytes();
        let bit = |i: usize, c: u8, v: u16| -> Option<u16> {
            match p[i] {
                x if x == c => Some(v),
                b'-' => Some(0),
                _ => None,
            }
        };
        let perm = bit(0, b'r', 4)? | bit(1, b'w', 2)? | bit(2, b'x', 1)?;
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::attrs::acl_text;

    #[test]
    fn text_round_trips_through_the_xattr_encoding() {
        for t in [
            "user::rw-,user:1000:r--,group::r--,group:50:rw-,mask::rw-,other::---",
            "user::rwx,group::r-x,other::r-x",
            "raw:010203",
        ] {
            assert_eq!(acl_text(&encode(t).unwrap()), t);
        }
        assert_eq!(encode("user::rwz"), None);
        assert_eq!(encode("bogus::rw-"), None);
        assert_eq!(encode("user:x:rw-"), None);
    }
}

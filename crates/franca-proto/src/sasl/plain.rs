//! PLAIN (RFC 4616 §2): `message = [authzid] UTF8NUL authcid UTF8NUL passwd`.
//!
//! Offered only over TLS (RFC 6120 §13.8.3) — the caller enforces that. The password is checked
//! against the stored SCRAM keys, so plaintext is never stored.

use subtle::ConstantTimeEq;

use super::SaslError;
use super::scram::{ScramKeys, derive_keys};

/// Longest accepted authzid, authcid or password, in bytes. RFC 4616 §2 requires accepting at
/// least 255 octets; a JID part is at most 1023 bytes (RFC 7622 §3.1).
pub const MAX_PLAIN_FIELD_BYTES: usize = 1023;

/// Splits a PLAIN message into (authzid, authcid, password).
///
/// Exactly two NULs; authcid and password non-empty; every field valid UTF-8 and at most
/// [`MAX_PLAIN_FIELD_BYTES`]; an empty authzid is `None`. Anything else is
/// `malformed-request`.
pub fn plain_parse(data: &[u8]) -> Result<(Option<String>, String, String), SaslError> {
    if data.len() > 3 * MAX_PLAIN_FIELD_BYTES + 2 {
        return Err(SaslError::MalformedRequest("PLAIN message too long"));
    }
    let mut parts = data.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest("PLAIN needs exactly two NULs"));
    };
    if authcid.is_empty() || passwd.is_empty() {
        return Err(SaslError::MalformedRequest(
            "empty PLAIN authcid or password",
        ));
    }
    if [authzid, authcid, passwd]
        .iter()
        .any(|f| f.len() > MAX_PLAIN_FIELD_BYTES)
    {
        return Err(SaslError::MalformedRequest("PLAIN field too long"));
    }
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| SaslError::MalformedRequest("PLAIN field not UTF-8"))
    };
    let authzid = if authzid.is_empty() {
        None
    } else {
        Some(text(authzid)?)
    };
    Ok((authzid, text(authcid)?, text(passwd)?))
}

/// True when `password` matches the stored keys: derives StoredKey with the stored salt and
/// iteration count and compares it in constant time.
pub fn plain_verify(password: &str, keys: &ScramKeys) -> bool {
    let derived = derive_keys(keys.hash, password, &keys.salt, keys.iterations);
    bool::from(derived.stored_key.ct_eq(&keys.stored_key))
}

#[cfg(test)]
mod tests {
    use super::super::scram::ScramHash;
    use super::*;

    #[test]
    fn rfc4616_parse() {
        assert_eq!(
            plain_parse(b"\0tim\0tanstaaftanstaaf"),
            Ok((None, "tim".into(), "tanstaaftanstaaf".into()))
        );
        assert_eq!(
            plain_parse(b"Ursel\0Kurt\0xipj3plmq"),
            Ok((Some("Ursel".into()), "Kurt".into(), "xipj3plmq".into()))
        );
        assert_eq!(
            plain_parse("\0j\u{fc}rgen\0p\u{e4}ss".as_bytes()),
            Ok((None, "jürgen".into(), "päss".into()))
        );
    }

    #[test]
    fn rfc4616_parse_edge_cases() {
        let bad: [&[u8]; 11] = [
            b"",
            b"\0",
            b"\0\0",
            b"\0user\0",
            b"\0\0pass",
            b"user\0pass",
            b"\0user\0pa\0ss",
            b"\0user\0pass\0",
            b"\0\xffuser\0pass",
            b"\0user\0\xc3",
            b"a\0\0\0",
        ];
        for b in bad {
            assert!(
                matches!(plain_parse(b), Err(SaslError::MalformedRequest(_))),
                "accepted {b:?}"
            );
        }
        let long = vec![b'a'; MAX_PLAIN_FIELD_BYTES + 1];
        let mut m = b"\0user\0".to_vec();
        m.extend_from_slice(&long);
        assert!(plain_parse(&m).is_err());
        let mut m = b"\0".to_vec();
        m.extend_from_slice(&long);
        m.extend_from_slice(b"\0pw");
        assert!(plain_parse(&m).is_err());
        assert!(plain_parse(&vec![0u8; 10_000]).is_err());
        let ok = vec![b'a'; MAX_PLAIN_FIELD_BYTES];
        let mut m = ok.clone();
        m.push(0);
        m.extend_from_slice(&ok);
        m.push(0);
        m.extend_from_slice(&ok);
        assert!(plain_parse(&m).is_ok());
    }

    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4616);
        for _ in 0..5000 {
            let len = rng.gen_range(0..40);
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    *[0u8, b'a', 0xc3, 0xbc, 0xff]
                        .get(rng.gen_range(0..5))
                        .unwrap_or(&0)
                })
                .collect();
            if let Ok((z, c, p)) = plain_parse(&v) {
                assert!(!c.is_empty() && !p.is_empty());
                assert!(z.is_none_or(|z| !z.is_empty()));
                assert_eq!(v.iter().filter(|&&b| b == 0).count(), 2);
            }
        }
    }

    #[test]
    fn verify_against_scram_keys() {
        let keys = derive_keys(ScramHash::Sha256, "r0m30myr0m30", b"0123456789abcdef", 32);
        assert!(plain_verify("r0m30myr0m30", &keys));
        assert!(!plain_verify("r0m30myr0m31", &keys));
        assert!(!plain_verify("", &keys));
        // RFC 5802 §5 keys: PLAIN with the same password verifies.
        let keys = derive_keys(ScramHash::Sha1, "pencil", b"salt", 4096);
        assert!(plain_verify("pencil", &keys));
    }
}

//! The XmppAddr identities of a certificate: `id-on-xmppAddr` otherNames (OID
//! 1.3.6.1.5.5.7.8.5, a UTF8String JID) in the subjectAltName extension (RFC 6120 §13.7.1.4).
//! webpki does not expose otherNames, so this reads them with a minimal DER walker: only the
//! path Certificate → tbsCertificate → extensions → subjectAltName → otherName is followed,
//! every length is checked against its enclosing element, and anything unexpected yields no
//! names rather than an error. The chain itself is verified by webpki before this is asked.

/// DER tags used on the way.
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTF8_STRING: u8 = 0x0c;
/// `[0]` constructed: otherName inside GeneralNames, and its `[0] EXPLICIT` value.
const CONTEXT_0: u8 = 0xa0;
/// `[3]` constructed: the extensions of a tbsCertificate.
const CONTEXT_3: u8 = 0xa3;

/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 1.3.6.1.5.5.7.8.5, id-on-xmppAddr.
const OID_XMPP_ADDR: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x05];

/// Most XmppAddr names returned from one certificate.
const MAX_NAMES: usize = 64;

/// The XmppAddr values of a DER certificate, as written (not normalised).
pub(super) fn xmpp_addrs(cert_der: &[u8]) -> Vec<String> {
    san(cert_der).map(other_names).unwrap_or_default()
}

/// One TLV: (tag, contents, rest after it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    // High tag numbers (0x1f) do not occur on this path.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        // Indefinite length (n = 0) is not DER; more than 4 length bytes is absurd here.
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Contents of one element that must have `tag`.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = tlv(input)?;
    (t == tag).then_some((contents, rest))
}

/// The subjectAltName extension's value (GeneralNames contents), if there is one.
fn san(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    // Skip the tbsCertificate fields up to [3] extensions, which comes last.
    let mut fields = tbs;
    let extensions = loop {
        let (tag, contents, rest) = tlv(fields)?;
        if tag == CONTEXT_3 {
            break contents;
        }
        fields = rest;
    };
    let (mut list, _) = expect(extensions, SEQUENCE)?;
    while !list.is_empty() {
        let (ext, rest) = expect(list, SEQUENCE)?;
        list = rest;
        let (oid, mut ext) = expect(ext, OID)?;
        if oid != OID_SAN {
            continue;
        }
        if let Some((_, after)) = expect(ext, BOOLEAN) {
            ext = after;
        }
        let (value, _) = expect(ext, OCTET_STRING)?;
        let (names, _) = expect(value, SEQUENCE)?;
        return Some(names);
    }
    None
}

/// The id-on-xmppAddr values among GeneralNames.
fn other_names(mut names: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some((tag, contents, rest)) = tlv(names) {
        names = rest;
        if tag != CONTEXT_0 {
            continue;
        }
        let Some((oid, value)) = expect(contents, OID) else {
            continue;
        };
        if oid != OID_XMPP_ADDR {
            continue;
        }
        let Some((explicit, _)) = expect(value, CONTEXT_0) else {
            continue;
        };
        let Some((utf8, _)) = expect(explicit, UTF8_STRING) else {
            continue;
        };
        if let Ok(s) = std::str::from_utf8(utf8) {
            out.push(s.to_owned());
        }
        if out.len() >= MAX_NAMES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    const XMPP_ADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

    fn cert(sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_xmpp_addr_other_names_only() {
        let der = cert(vec![
            SanType::DnsName("b.test".try_into().unwrap()),
            SanType::OtherName((XMPP_ADDR.to_vec(), "b.test".into())),
            SanType::OtherName((vec![1, 2, 3, 4], "not-xmpp".into())),
            SanType::OtherName((XMPP_ADDR.to_vec(), "école.test".into())),
        ]);
        assert_eq!(xmpp_addrs(&der), ["b.test", "école.test"]);
    }

    #[test]
    fn none_without_san_or_xmpp_addr() {
        assert!(xmpp_addrs(&cert(vec![])).is_empty());
        assert!(xmpp_addrs(&cert(vec![SanType::DnsName("b.test".try_into().unwrap())])).is_empty());
    }

    #[test]
    fn hostile_der_yields_nothing() {
        let der = cert(vec![SanType::OtherName((
            XMPP_ADDR.to_vec(),
            "b.test".into(),
        ))]);
        // Every truncation, and every single-byte corruption, is handled without a panic.
        for n in 0..der.len() {
            let _ = xmpp_addrs(&der[..n]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = xmpp_addrs(&bad);
        }
        assert!(xmpp_addrs(&[]).is_empty());
        assert!(xmpp_addrs(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_empty());
        assert!(xmpp_addrs(&[0x30, 0x80, 0x00, 0x00]).is_empty());
        assert!(xmpp_addrs(&[0x1f, 0x01, 0x00]).is_empty());
    }
}

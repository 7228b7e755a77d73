//! Channel-binding data for SCRAM-*-PLUS (RFC 5056, RFC 5802 §6).
//!
//! * `tls-exporter` (RFC 9266 §2): 32 bytes of TLS keying material exported with the label
//!   `EXPORTER-Channel-Binding` and no context. Only defined for TLS 1.3 (or TLS 1.2 with the
//!   extended master secret, RFC 9266 §3); the I/O layer decides and fills it in.
//! * `tls-server-end-point` (RFC 5929 §4.1): the hash of our own leaf certificate, using the
//!   certificate's signature hash, except that MD5 and SHA-1 are replaced by SHA-256.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Name of the RFC 9266 channel-binding type.
pub const CB_TLS_EXPORTER: &str = "tls-exporter";
/// Name of the RFC 5929 §4 channel-binding type.
pub const CB_TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Channel-binding data available on one connection. Both `None` means no channel binding
/// (plaintext, or TLS offloaded elsewhere): -PLUS mechanisms must then not be offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// The 32-byte RFC 9266 exporter output.
    pub tls_exporter: Option<Vec<u8>>,
    /// The RFC 5929 hash of our certificate, see [`tls_server_end_point`].
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBinding {
    /// No channel binding.
    pub fn none() -> ChannelBinding {
        ChannelBinding::default()
    }

    /// The types we can bind to, strongest first; the list to advertise with XEP-0440.
    pub fn types(&self) -> Vec<&'static str> {
        let mut v = Vec::with_capacity(2);
        if self.tls_exporter.is_some() {
            v.push(CB_TLS_EXPORTER);
        }
        if self.tls_server_end_point.is_some() {
            v.push(CB_TLS_SERVER_END_POINT);
        }
        v
    }

    /// True when no type is available.
    pub fn is_empty(&self) -> bool {
        self.tls_exporter.is_none() && self.tls_server_end_point.is_none()
    }

    /// The data for a channel-binding type name, if we have it.
    pub fn data(&self, cb_type: &str) -> Option<&[u8]> {
        match cb_type {
            CB_TLS_EXPORTER => self.tls_exporter.as_deref(),
            CB_TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CertHash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The RFC 5929 §4.1 `tls-server-end-point` value for our DER-encoded leaf certificate.
///
/// The hash is the one of the certificate's `signatureAlgorithm`: SHA-224/256/384/512 for the
/// RSA PKCS#1 v1.5, ECDSA and RSASSA-PSS (its `hashAlgorithm` parameter) OIDs; MD5 and SHA-1
/// become SHA-256 as the RFC says. The certificate is parsed just far enough to read that OID;
/// anything else — Ed25519/Ed448 (for which RFC 5929 defines no hash), an unknown OID or a
/// certificate we fail to parse — falls back to SHA-256, which is what other implementations
/// (e.g. OpenSSL-based servers) do.
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    match signature_hash(cert_der).unwrap_or(CertHash::Sha256) {
        CertHash::Sha224 => Sha224::digest(cert_der).to_vec(),
        CertHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        CertHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        CertHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    }
}

/// One DER TLV: (tag, contents, rest). Definite lengths of up to 4 length bytes only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
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

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

// 1.2.840.113549.1.1.x (PKCS#1)
const PKCS1_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
// 1.2.840.10045.4.3.x (ecdsa-with-SHA2)
const ECDSA_SHA2_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
// 2.16.840.1.101.3.4.2.x (NIST hash algorithms)
const NIST_HASH_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];

fn signature_hash(cert: &[u8]) -> Option<CertHash> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    let (tag, cert, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _tbs, rest) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    // AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
    let (tag, alg, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, params) = tlv(alg)?;
    if tag != OID {
        return None;
    }
    if let Some(last) = oid.strip_prefix(PKCS1_PREFIX) {
        return match last {
            [0x0b] => Some(CertHash::Sha256),
            [0x0c] => Some(CertHash::Sha384),
            [0x0d] => Some(CertHash::Sha512),
            [0x0e] => Some(CertHash::Sha224),
            // RSASSA-PSS: the hash is a parameter (default SHA-1 → SHA-256).
            [0x0a] => Some(pss_hash(params).unwrap_or(CertHash::Sha256)),
            // md2/md5/sha1WithRSAEncryption and anything else.
            _ => Some(CertHash::Sha256),
        };
    }
    if let Some(last) = oid.strip_prefix(ECDSA_SHA2_PREFIX) {
        return match last {
            [0x01] => Some(CertHash::Sha224),
            [0x02] => Some(CertHash::Sha256),
            [0x03] => Some(CertHash::Sha384),
            [0x04] => Some(CertHash::Sha512),
            _ => Some(CertHash::Sha256),
        };
    }
    Some(CertHash::Sha256)
}

/// RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] HashAlgorithm DEFAULT sha1, … }
fn pss_hash(params: &[u8]) -> Option<CertHash> {
    let (tag, seq, _) = tlv(params)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, explicit, _) = tlv(seq)?;
    if tag != 0xa0 {
        return None; // hashAlgorithm absent: SHA-1 → SHA-256
    }
    let (tag, alg, _) = tlv(explicit)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = tlv(alg)?;
    if tag != OID {
        return None;
    }
    match oid.strip_prefix(NIST_HASH_PREFIX)? {
        [0x01] => Some(CertHash::Sha256),
        [0x02] => Some(CertHash::Sha384),
        [0x03] => Some(CertHash::Sha512),
        [0x04] => Some(CertHash::Sha224),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake certificate: SEQUENCE { SEQUENCE{} (tbs), SEQUENCE { OID, params }, BIT STRING }.
    fn fake_cert(oid: &[u8], params: &[u8]) -> Vec<u8> {
        let mut alg = vec![OID, oid.len() as u8];
        alg.extend_from_slice(oid);
        alg.extend_from_slice(params);
        let mut body = vec![SEQUENCE, 0x00, SEQUENCE, alg.len() as u8];
        body.extend_from_slice(&alg);
        body.extend_from_slice(&[0x03, 0x01, 0x00]);
        let mut cert = vec![SEQUENCE, 0x81, body.len() as u8];
        cert.extend_from_slice(&body);
        cert
    }

    fn oid(prefix: &[u8], last: u8) -> Vec<u8> {
        let mut v = prefix.to_vec();
        v.push(last);
        v
    }

    #[test]
    fn rfc5929_4_1_hash_selection() {
        let null = [0x05, 0x00];
        let cases: [(Vec<u8>, CertHash); 8] = [
            (oid(PKCS1_PREFIX, 0x0b), CertHash::Sha256),
            (oid(PKCS1_PREFIX, 0x0c), CertHash::Sha384),
            (oid(PKCS1_PREFIX, 0x0d), CertHash::Sha512),
            (oid(PKCS1_PREFIX, 0x05), CertHash::Sha256), // sha1WithRSA → SHA-256
            (oid(PKCS1_PREFIX, 0x04), CertHash::Sha256), // md5WithRSA → SHA-256
            (oid(ECDSA_SHA2_PREFIX, 0x03), CertHash::Sha384),
            (oid(ECDSA_SHA2_PREFIX, 0x04), CertHash::Sha512),
            (vec![0x2b, 0x65, 0x70], CertHash::Sha256), // Ed25519 → default
        ];
        for (o, want) in cases {
            let cert = fake_cert(&o, &null);
            assert_eq!(signature_hash(&cert), Some(want), "oid {o:02x?}");
        }
        let c = fake_cert(&oid(ECDSA_SHA2_PREFIX, 0x03), &[]);
        assert_eq!(tls_server_end_point(&c), Sha384::digest(&c).to_vec());
    }

    #[test]
    fn rfc5929_pss_params() {
        // SEQUENCE { [0] { SEQUENCE { OID sha512 } } }
        let mut hash_oid = vec![OID, 9];
        hash_oid.extend_from_slice(&oid(NIST_HASH_PREFIX, 0x03));
        let mut alg = vec![SEQUENCE, hash_oid.len() as u8];
        alg.extend_from_slice(&hash_oid);
        let mut explicit = vec![0xa0, alg.len() as u8];
        explicit.extend_from_slice(&alg);
        let mut params = vec![SEQUENCE, explicit.len() as u8];
        params.extend_from_slice(&explicit);
        let cert = fake_cert(&oid(PKCS1_PREFIX, 0x0a), &params);
        assert_eq!(signature_hash(&cert), Some(CertHash::Sha512));
        // Absent hashAlgorithm: default SHA-1 → SHA-256.
        let cert = fake_cert(&oid(PKCS1_PREFIX, 0x0a), &[SEQUENCE, 0]);
        assert_eq!(signature_hash(&cert), Some(CertHash::Sha256));
    }

    #[test]
    fn garbage_falls_back_to_sha256() {
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"hello world",
        ] {
            assert_eq!(tls_server_end_point(junk), Sha256::digest(junk).to_vec());
        }
    }

    #[test]
    fn types_and_data() {
        let cb = ChannelBinding {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: None,
        };
        assert_eq!(cb.types(), vec![CB_TLS_EXPORTER]);
        assert_eq!(cb.data(CB_TLS_EXPORTER), Some(&[1u8; 32][..]));
        assert_eq!(cb.data(CB_TLS_SERVER_END_POINT), None);
        assert_eq!(cb.data("tls-unique"), None);
        assert!(ChannelBinding::none().is_empty());
    }
}

//! TLS for server-to-server links, and the check of a peer's certificate against the XMPP
//! domain it claims (RFC 6120 §13.7.2, RFC 6125, RFC 7590).
//!
//! Both TLS sides accept any certificate chain during the handshake (the handshake signatures are
//! still verified, so the peer does hold the key of the certificate it sent); whether the chain
//! proves a domain is decided afterwards by [`check_peer`], once the stream header or the
//! dialback element has said which domain the peer claims. That split is what federation
//! needs: a peer with a self-signed certificate is not refused at TLS but falls back to dialback
//! (XEP-0220, XEP-0344), and one with a valid certificate can use SASL EXTERNAL.
//!
//! [`check_peer`] requires the serverAuth EKU (or no EKU at all) whichever TLS side the peer
//! was: Let's Encrypt stopped issuing clientAuth certificates in 2026, so a server connecting to
//! us presents a serverAuth-only certificate, which rustls' stock client-certificate verifier
//! would refuse (see `notes/B-rust-deps.md`). A clientAuth-only certificate is accepted as well,
//! since that EKU is what older servers used for exactly this. Names are matched as DNS names
//! (subjectAltName dNSName, a wildcard covering exactly one leftmost label, never the common
//! name, RFC 6125 §6.4), or else as an XmppAddr otherName equal to the domain (RFC 6120
//! §13.7.1.4, no wildcards), read by the `xmppaddr` submodule.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use franca_core::config::S2sConfig;

mod xmppaddr;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Where the system's trust anchors are looked for, in order, when `system_roots` is on and
/// `SSL_CERT_FILE` is not set: Debian/Ubuntu, Fedora/RHEL, Alpine/BSD/macOS.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Most certificates read from one PEM file: a system bundle has a few hundred.
const MAX_PEM_CERTS: usize = 10_000;

/// The trust anchors a peer's chain must lead to: the system's roots (when `system_roots`) and
/// the certificates of `ca_file`.
#[derive(Clone)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("anchors", &self.anchors.len())
            .finish()
    }
}

impl Trust {
    /// The anchors `[s2s]` names. A missing or unreadable `ca_file`, or one without a usable
    /// certificate, is an error; a missing system bundle is only logged (a server may trust
    /// its private CA alone).
    pub fn load(cfg: &S2sConfig) -> Result<Trust, String> {
        let mut anchors = Vec::new();
        if cfg.system_roots {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            let bundle = env.or_else(|| {
                SYSTEM_BUNDLES
                    .iter()
                    .map(std::path::PathBuf::from)
                    .find(|p| p.is_file())
            });
            match bundle {
                Some(path) => {
                    let (found, skipped) = read_anchors(&path, &mut anchors)?;
                    tracing::debug!(
                        path = %path.display(),
                        found,
                        skipped,
                        "s2s: system trust anchors"
                    );
                }
                None => tracing::warn!(
                    "s2s: no system CA bundle found (tried SSL_CERT_FILE and {SYSTEM_BUNDLES:?}); \
                     peers' certificates are checked against s2s.ca_file only"
                ),
            }
        }
        if let Some(path) = &cfg.ca_file {
            let (found, skipped) = read_anchors(path, &mut anchors)?;
            if found == 0 {
                return Err(format!(
                    "s2s.ca_file {}: no usable CA certificate ({skipped} unreadable)",
                    path.display()
                ));
            }
        }
        Ok(Trust { anchors })
    }

    /// Trust exactly these CA certificates (tests, or a caller with its own source).
    pub fn from_certificates(certs: &[CertificateDer<'_>]) -> Result<Trust, String> {
        let anchors = certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("not a usable CA certificate: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Trust { anchors })
    }

    /// How many anchors there are (0: no certificate can be valid, every peer uses dialback).
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// Reads every certificate of a PEM file into `anchors`; returns (added, skipped).
fn read_anchors(
    path: &Path,
    anchors: &mut Vec<TrustAnchor<'static>>,
) -> Result<(usize, usize), String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
    let (mut found, mut skipped) = (0, 0);
    for cert in iter.take(MAX_PEM_CERTS) {
        let cert =
            cert.map_err(|e| format!("reading CA certificates from {}: {e}", path.display()))?;
        // A bundle may hold a certificate webpki cannot use as an anchor; skip it, count it.
        match webpki::anchor_from_trusted_cert(&cert) {
            Ok(a) => {
                anchors.push(a.to_owned());
                found += 1;
            }
            Err(_) => skipped += 1,
        }
    }
    Ok((found, skipped))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for outbound s2s: presents our certificate as the client certificate (so the peer can
/// offer SASL EXTERNAL), accepts any server chain at handshake (its signatures still
/// verified); validity is decided afterwards with [`check_peer`]. No ALPN is set: for XEP-0368
/// direct TLS, clone the config and set `alpn_protocols` to [`ALPN_XMPP_SERVER`].
pub fn client_config(
    our_chain: Vec<CertificateDer<'static>>,
    our_key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let verifier = AnyChain {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("s2s TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(our_chain, our_key)
        .map_err(|e| format!("s2s TLS client certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// TLS for inbound s2s: our certificate; asks for (does not require) a client certificate and
/// accepts any chain at handshake; validity is decided afterwards with [`check_peer`].
pub fn server_config(
    our_chain: Vec<CertificateDer<'static>>,
    our_key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = provider();
    let verifier = AnyChain {
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("s2s TLS server: {e}"))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(our_chain, our_key)
        .map_err(|e| format!("s2s TLS server certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// The ALPN protocol id of XEP-0368 direct TLS between servers.
pub const ALPN_XMPP_SERVER: &[u8] = b"xmpp-server";

/// Both TLS verifiers: any chain is accepted at handshake, but the peer must prove it holds the
/// certificate's key (the handshake signature is checked against it).
#[derive(Debug)]
struct AnyChain {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Deferred to check_peer: the stream decides between EXTERNAL and dialback.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyChain {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A peer without a certificate may still authenticate with dialback.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: peers' CAs are many, and listing them is no use to a server.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a peer's certificate proves about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    /// Chains to a trust anchor, is in date, fit for server authentication, and names the
    /// domain: the peer may use SASL EXTERNAL for it.
    Valid,
    /// Presented but not valid for the domain; the text says why (for logs and error texts).
    Invalid(String),
    /// No certificate was presented.
    Absent,
}

impl CertStatus {
    pub fn is_valid(&self) -> bool {
        matches!(self, CertStatus::Valid)
    }
}

/// Whether `chain` (end entity first, as TLS delivers it) is valid now for XMPP domain
/// `domain`.
pub fn check_peer(trust: &Trust, chain: &[CertificateDer<'_>], domain: &str) -> CertStatus {
    check_peer_at(trust, chain, domain, UnixTime::now())
}

/// [`check_peer`] at a given time.
pub fn check_peer_at(
    trust: &Trust,
    chain: &[CertificateDer<'_>],
    domain: &str,
    now: UnixTime,
) -> CertStatus {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return CertStatus::Absent;
    };
    let ee = match webpki::EndEntityCert::try_from(leaf) {
        Ok(ee) => ee,
        Err(e) => return CertStatus::Invalid(format!("the certificate cannot be read ({e})")),
    };
    // serverAuth first (what any server certificate has today); clientAuth for older servers
    // that present a client certificate when connecting.
    let mut failure = None;
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        match ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        ) {
            Ok(_) => {
                failure = None;
                break;
            }
            // The serverAuth attempt's error is the one worth reporting.
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return CertStatus::Invalid(chain_error_text(&e));
    }
    let Some(name) = dns_name(domain) else {
        return CertStatus::Invalid(format!("{domain:?} is not a DNS domain name"));
    };
    if ee.verify_is_valid_for_subject_name(&name).is_ok() {
        return CertStatus::Valid;
    }
    let wanted = crate::policy::normalise_domain(domain);
    if xmppaddr::xmpp_addrs(leaf)
        .iter()
        .any(|a| crate::policy::normalise_domain(a) == wanted)
    {
        return CertStatus::Valid;
    }
    CertStatus::Invalid(format!("the certificate is not valid for {domain}"))
}

/// The DNS form of a JID domain: IDNA A-labels (punycode), lower case, no trailing dot.
fn dns_name(domain: &str) -> Option<ServerName<'static>> {
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        hickory_resolver::proto::rr::Name::from_utf8(domain)
            .ok()?
            .to_ascii()
    };
    let ascii = ascii.strip_suffix('.').unwrap_or(&ascii).to_owned();
    // An IP literal is not an XMPP domain a certificate can prove here.
    if ascii.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    rustls::pki_types::DnsName::try_from(ascii.as_str())
        .ok()
        .map(|d| ServerName::DnsName(d.to_owned()))
}

fn chain_error_text(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => "the certificate is not issued by a trusted authority (self-signed or \
                             unknown CA)"
            .to_owned(),
        E::CertExpired { .. } => "the certificate has expired".to_owned(),
        E::CertNotValidYet { .. } => "the certificate is not valid yet".to_owned(),
        E::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for server authentication (extended key usage)".to_owned()
        }
        E::CaUsedAsEndEntity => "the certificate is a CA certificate, not a server's".to_owned(),
        E::CertRevoked => "the certificate is revoked".to_owned(),
        other => format!("the certificate chain is not valid ({other})"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, KeyUsagePurpose,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Ca { issuer }
        }

        fn der(&self) -> CertificateDer<'static> {
            self.issuer.der().clone()
        }

        fn trust(&self) -> Trust {
            Trust::from_certificates(&[self.der()]).unwrap()
        }

        /// A leaf for `names`, with `eku`, signed by this CA.
        fn leaf(
            &self,
            names: &[&str],
            eku: Vec<ExtendedKeyUsagePurpose>,
        ) -> (CertificateDer<'static>, KeyPair) {
            self.leaf_with(names, |p| p.extended_key_usages = eku)
        }

        fn leaf_with(
            &self,
            names: &[&str],
            tweak: impl FnOnce(&mut CertificateParams),
        ) -> (CertificateDer<'static>, KeyPair) {
            let mut params =
                CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                    .unwrap();
            tweak(&mut params);
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.der().clone(), key)
        }
    }

    fn server_auth() -> Vec<ExtendedKeyUsagePurpose> {
        vec![ExtendedKeyUsagePurpose::ServerAuth]
    }

    #[test]
    fn server_auth_only_leaf_is_valid_for_its_name_only() {
        let ca = Ca::new("Test CA");
        let (leaf, _) = ca.leaf(&["b.test"], server_auth());
        let chain = [leaf];
        assert_eq!(check_peer(&ca.trust(), &chain, "b.test"), CertStatus::Valid);
        assert_eq!(check_peer(&ca.trust(), &chain, "B.TEST"), CertStatus::Valid);
        match check_peer(&ca.trust(), &chain, "c.test") {
            CertStatus::Invalid(why) => assert!(why.contains("not valid for c.test"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_auth_only_and_no_eku_are_accepted_code_signing_is_not() {
        let ca = Ca::new("Test CA");
        let (client, _) = ca.leaf(&["b.test"], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        assert!(check_peer(&ca.trust(), &[client], "b.test").is_valid());
        let (none, _) = ca.leaf(&["b.test"], vec![]);
        assert!(check_peer(&ca.trust(), &[none], "b.test").is_valid());
        let (signing, _) = ca.leaf(&["b.test"], vec![ExtendedKeyUsagePurpose::CodeSigning]);
        match check_peer(&ca.trust(), &[signing], "b.test") {
            CertStatus::Invalid(why) => assert!(why.contains("extended key usage"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn self_signed_and_unknown_ca_are_invalid() {
        let ca = Ca::new("Test CA");
        let other = Ca::new("Other CA");
        let (leaf, _) = other.leaf(&["b.test"], server_auth());
        match check_peer(&ca.trust(), &[leaf], "b.test") {
            CertStatus::Invalid(why) => assert!(why.contains("trusted authority"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut params = CertificateParams::new(vec!["b.test".to_owned()]).unwrap();
        params.extended_key_usages = server_auth();
        let self_signed = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert!(matches!(
            check_peer(&ca.trust(), &[self_signed.der().clone()], "b.test"),
            CertStatus::Invalid(_)
        ));
        // With no anchors at all nothing is valid.
        let empty = Trust::from_certificates(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(!check_peer(&empty, &[self_signed.der().clone()], "b.test").is_valid());
    }

    #[test]
    fn expired_and_not_yet_valid_are_invalid() {
        let ca = Ca::new("Test CA");
        let (expired, _) = ca.leaf_with(&["b.test"], |p| {
            p.extended_key_usages = server_auth();
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        });
        match check_peer(&ca.trust(), &[expired], "b.test") {
            CertStatus::Invalid(why) => assert!(why.contains("expired"), "{why}"),
            other => panic!("{other:?}"),
        }
        let (future, _) = ca.leaf_with(&["b.test"], |p| {
            p.extended_key_usages = server_auth();
            p.not_before = rcgen::date_time_ymd(2999, 1, 1);
            p.not_after = rcgen::date_time_ymd(3000, 1, 1);
        });
        match check_peer(&ca.trust(), &[future], "b.test") {
            CertStatus::Invalid(why) => assert!(why.contains("not valid yet"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let ca = Ca::new("Test CA");
        let (leaf, _) = ca.leaf(&["*.b.test"], server_auth());
        let chain = [leaf];
        assert!(check_peer(&ca.trust(), &chain, "x.b.test").is_valid());
        assert!(!check_peer(&ca.trust(), &chain, "b.test").is_valid());
        assert!(!check_peer(&ca.trust(), &chain, "y.x.b.test").is_valid());
    }

    #[test]
    fn xmpp_addr_names_the_domain_without_wildcards() {
        const XMPP_ADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];
        let ca = Ca::new("Test CA");
        let (leaf, _) = ca.leaf_with(&[], |p| {
            p.extended_key_usages = server_auth();
            p.subject_alt_names = vec![
                rcgen::SanType::OtherName((XMPP_ADDR.to_vec(), "b.test".into())),
                rcgen::SanType::OtherName((XMPP_ADDR.to_vec(), "*.w.test".into())),
            ];
        });
        let chain = [leaf];
        assert!(check_peer(&ca.trust(), &chain, "b.test").is_valid());
        assert!(check_peer(&ca.trust(), &chain, "B.Test.").is_valid());
        assert!(!check_peer(&ca.trust(), &chain, "c.test").is_valid());
        assert!(!check_peer(&ca.trust(), &chain, "x.w.test").is_valid());
        // A self-signed certificate naming the domain is still not valid.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::OtherName((
            XMPP_ADDR.to_vec(),
            "b.test".into(),
        ))];
        let own = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert!(!check_peer(&ca.trust(), &[own.der().clone()], "b.test").is_valid());
    }

    #[test]
    fn intermediates_are_followed() {
        let root = Ca::new("Root");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let mid = Ca {
            issuer: CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root.issuer)
                .unwrap(),
        };
        let (leaf, _) = mid.leaf(&["b.test"], server_auth());
        assert!(check_peer(&root.trust(), &[leaf.clone(), mid.der()], "b.test").is_valid());
        // Without the intermediate the chain does not reach the root.
        assert!(!check_peer(&root.trust(), &[leaf], "b.test").is_valid());
    }

    #[test]
    fn absent_malformed_and_odd_names() {
        let ca = Ca::new("Test CA");
        assert_eq!(check_peer(&ca.trust(), &[], "b.test"), CertStatus::Absent);
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(matches!(
            check_peer(&ca.trust(), &[junk], "b.test"),
            CertStatus::Invalid(_)
        ));
        let (leaf, _) = ca.leaf(&["xn--cole-9oa.test"], server_auth());
        // A Unicode JID domain is matched in its A-label form.
        assert!(check_peer(&ca.trust(), std::slice::from_ref(&leaf), "école.test").is_valid());
        assert!(!check_peer(&ca.trust(), std::slice::from_ref(&leaf), "127.0.0.1").is_valid());
        assert!(!check_peer(&ca.trust(), &[leaf], "not a domain").is_valid());
    }

    #[test]
    fn trust_loads_ca_file_and_reports_errors() {
        let ca = Ca::new("Test CA");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.issuer.pem()).unwrap();
        let cfg = S2sConfig {
            system_roots: false,
            ca_file: Some(path.clone()),
            ..S2sConfig::default()
        };
        let trust = Trust::load(&cfg).unwrap();
        assert_eq!(trust.len(), 1);
        let (leaf, _) = ca.leaf(&["b.test"], server_auth());
        assert!(check_peer(&trust, &[leaf], "b.test").is_valid());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let cfg = S2sConfig {
            system_roots: false,
            ca_file: Some(empty),
            ..S2sConfig::default()
        };
        assert!(Trust::load(&cfg).unwrap_err().contains("no usable CA"));
        let cfg = S2sConfig {
            system_roots: false,
            ca_file: Some(dir.path().join("missing.pem")),
            ..S2sConfig::default()
        };
        assert!(Trust::load(&cfg).is_err());
        let none = S2sConfig {
            system_roots: false,
            ..S2sConfig::default()
        };
        assert!(Trust::load(&none).unwrap().is_empty());
    }

    /// A real TLS handshake over loopback with these configs: the connecting server presents a
    /// serverAuth-only certificate as its client certificate, both sides see the other's chain,
    /// and check_peer finds each valid for its domain.
    #[tokio::test]
    async fn loopback_handshake_with_server_auth_only_client_certificate() {
        let ca = Ca::new("Test CA");
        let trust = ca.trust();
        let (a_cert, a_key) = ca.leaf(&["a.test"], server_auth());
        let (b_cert, b_key) = ca.leaf(&["b.test"], server_auth());
        let key = |k: &KeyPair| PrivateKeyDer::try_from(k.serialize_der()).unwrap();

        let server = server_config(vec![b_cert], key(&b_key)).unwrap();
        let client = client_config(vec![a_cert], key(&a_key)).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .unwrap();
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(b"pong!").await.unwrap();
            tls.flush().await.unwrap();
            let peer: Vec<CertificateDer<'static>> =
                tls.get_ref().1.peer_certificates().unwrap().to_vec();
            (buf, peer)
        });

        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(ServerName::try_from("b.test").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"ping!").await.unwrap();
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        let server_chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        assert_eq!(
            check_peer(&trust, &server_chain, "b.test"),
            CertStatus::Valid
        );

        let (got, client_chain) = accept.await.unwrap();
        assert_eq!(&got, b"ping!");
        assert_eq!(
            check_peer(&trust, &client_chain, "a.test"),
            CertStatus::Valid
        );
        assert!(!check_peer(&trust, &client_chain, "b.test").is_valid());
    }

    /// A self-signed peer still completes the handshake (it will use dialback), and a client
    /// without any certificate is accepted too.
    #[tokio::test]
    async fn loopback_handshake_self_signed_and_anonymous_client() {
        let mut params = CertificateParams::new(vec!["b.test".to_owned()]).unwrap();
        params.extended_key_usages = server_auth();
        let b_key = KeyPair::generate().unwrap();
        let b_cert = params.self_signed(&b_key).unwrap().der().clone();
        let server = server_config(
            vec![b_cert],
            PrivateKeyDer::try_from(b_key.serialize_der()).unwrap(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = tokio_rustls::TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .unwrap();
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).await.unwrap();
            tls.get_ref().1.peer_certificates().map(<[_]>::to_vec)
        });
        // A client config without a client certificate, but with the same lenient verifier.
        let provider = provider();
        let anonymous = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyChain {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(anonymous))
            .connect(ServerName::try_from("b.test").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"hi").await.unwrap();
        tls.flush().await.unwrap();
        let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        let ca = Ca::new("Test CA");
        assert!(matches!(
            check_peer(&ca.trust(), &chain, "b.test"),
            CertStatus::Invalid(_)
        ));
        let client_chain = accept.await.unwrap();
        assert_eq!(
            check_peer(
                &ca.trust(),
                client_chain.as_deref().unwrap_or(&[]),
                "a.test"
            ),
            CertStatus::Absent
        );
    }
}

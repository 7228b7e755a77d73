//! TLS for the listeners: STARTTLS (RFC 6120 §5) and direct TLS (XEP-0368) both use the one
//! [`Tls`] built here from `[tls]` in the configuration, on rustls with the `ring` provider
//! (DESIGN §4; no OpenSSL).
//!
//! * With `tls.cert` / `tls.key` the PEM files are loaded through `rustls-pki-types`.
//! * Without them (the zero-config start, DESIGN §5) a self-signed certificate for every served
//!   domain is generated with rcgen into `data_dir/cert.pem` + `data_dir/key.pem` (mode 0600) on
//!   first start and reused afterwards. `data_dir/cert.domains` records the domains it was made
//!   for, so changing `server.domains` regenerates it.
//! * TLS 1.2 and 1.3 are enabled (RFC 7590 §3.1 requires 1.2 support).
//! * [`channel_binding`] gives SCRAM-*-PLUS (RFC 5802 §6) its data: `tls-exporter` (RFC 9266,
//!   TLS 1.3 only, since RFC 9266 §3 forbids it on TLS 1.2 without extended master secret) and
//!   `tls-server-end-point` (RFC 5929 §4). `tls-unique` is not available in rustls.

use franca_core::Config;
use franca_proto::sasl::{ChannelBinding, tls_server_end_point};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names inside `data_dir` for the generated certificate.
pub const SELF_SIGNED_CERT: &str = "cert.pem";
pub const SELF_SIGNED_KEY: &str = "key.pem";
/// The domains the generated certificate was made for, one per line.
pub const SELF_SIGNED_MARKER: &str = "cert.domains";

/// RFC 9266 §2 exporter label and output length.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";
const EXPORTER_LEN: usize = 32;

/// id-on-xmppAddr (RFC 6120 §13.7.1.4).
const OID_XMPP_ADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

/// The server's TLS context.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The rustls configuration behind `acceptor` (to derive variants, e.g. with ALPN).
    pub server_config: Arc<ServerConfig>,
    /// The certificate chain file in use (configured or generated).
    pub cert_file: PathBuf,
    /// Whether the certificate was generated here (clients will not trust it by default).
    pub self_signed: bool,
    /// RFC 5929 `tls-server-end-point` hash of the leaf certificate.
    pub end_point: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate found in {0}")]
    NoCertificate(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration with certificate {path}: {source}")]
    Rustls {
        path: PathBuf,
        source: rustls::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Install `ring` as the process-wide rustls provider (for code that uses the plain builders).
/// Idempotent: a provider that is already installed is left alone.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race with another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Build the TLS context from `[tls]`, generating a self-signed certificate when none is
/// configured.
pub fn load(config: &Config) -> Result<Tls, TlsError> {
    install_crypto_provider();
    let (cert_file, key_file, self_signed) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), false),
        _ => {
            let (cert, key) = ensure_self_signed(&config.server.data_dir, &config.server.domains)?;
            (cert, key, true)
        }
    };
    let certs = read_certs(&cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&key_file).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_file.clone(),
        source,
    })?;
    let end_point = tls_server_end_point(certs[0].as_ref());

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rustls_err = |source| TlsError::Rustls {
        path: cert_file.clone(),
        source,
    };
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_err)?;
    let server_config = Arc::new(server_config);
    Ok(Tls {
        acceptor: tokio_rustls::TlsAcceptor::from(server_config.clone()),
        server_config,
        cert_file,
        self_signed,
        end_point,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        what: "certificate",
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The marker text for a domain list: sorted, one per line.
fn marker_text(domains: &[String]) -> String {
    let mut d: Vec<&str> = domains.iter().map(String::as_str).collect();
    d.sort_unstable();
    d.dedup();
    let mut s = d.join("\n");
    s.push('\n');
    s
}

/// Make sure `data_dir` holds a self-signed certificate for exactly `domains`; returns the
/// certificate and key paths.
fn ensure_self_signed(data_dir: &Path, domains: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = data_dir.join(SELF_SIGNED_CERT);
    let key = data_dir.join(SELF_SIGNED_KEY);
    let marker = data_dir.join(SELF_SIGNED_MARKER);
    let wanted = marker_text(domains);
    let current = std::fs::read_to_string(&marker).ok();
    if current.as_deref() == Some(wanted.as_str()) && cert.is_file() && key.is_file() {
        tighten_key_mode(&key)?;
        return Ok((cert, key));
    }
    if current.is_some() {
        tracing::info!("server.domains changed; generating a new self-signed certificate");
    } else {
        tracing::info!(
            "no tls.cert configured; generating a self-signed certificate in {}",
            data_dir.display()
        );
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let (cert_pem, key_pem) = generate(domains)?;
    // Write to temporaries and rename, marker last: a crash half-way leaves a marker that does
    // not match, so the next start regenerates.
    let _ = std::fs::remove_file(&marker);
    let key_tmp = data_dir.join(".key.pem.tmp");
    let cert_tmp = data_dir.join(".cert.pem.tmp");
    write_file(&key_tmp, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_tmp, cert_pem.as_bytes(), 0o644)?;
    std::fs::rename(&key_tmp, &key).map_err(io_err(&key))?;
    std::fs::rename(&cert_tmp, &cert).map_err(io_err(&cert))?;
    write_file(&marker, wanted.as_bytes(), 0o644)?;
    tracing::warn!(
        "using a self-signed certificate ({}); clients will not trust it without manual approval",
        cert.display()
    );
    Ok((cert, key))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// A generated key readable by others (copied around, restored from a backup) is made 0600.
fn tighten_key_mode(key: &Path) -> Result<(), TlsError> {
    let meta = std::fs::metadata(key).map_err(io_err(key))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{} was readable by others; setting mode 0600",
            key.display()
        );
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(key))?;
    }
    Ok(())
}

/// A self-signed certificate (PEM) and its key (PEM) naming every domain.
///
/// Subject alternative names per domain: the DNS name, the wildcard `*.domain` (so component
/// and MUC subdomains such as `conference.domain` match; rcgen accepts wildcard DNS names), and
/// an id-on-xmppAddr otherName (RFC 6120 §13.7.1.4). IP-literal domains get an IP SAN only.
/// Non-ASCII domains are skipped (an X.509 dNSName is IA5; converting to A-labels needs IDNA).
fn generate(domains: &[String]) -> Result<(String, String), TlsError> {
    let mut sans = Vec::new();
    for d in domains {
        let bare = d.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            sans.push(rcgen::SanType::IpAddress(ip));
            continue;
        }
        if !d.is_ascii() {
            tracing::warn!("domain {d} is not ASCII; left out of the self-signed certificate");
            continue;
        }
        sans.push(rcgen::SanType::DnsName(d.as_str().try_into()?));
        sans.push(rcgen::SanType::DnsName(format!("*.{d}").try_into()?));
        sans.push(rcgen::SanType::OtherName((
            OID_XMPP_ADDR.to_vec(),
            d.as_str().into(),
        )));
    }
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = sans;
    let cn = domains.first().map(String::as_str).unwrap_or("franca");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Franca self-signed");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Tls {
    /// An acceptor with the same certificate that offers `protocols` by ALPN (RFC 7301), in the
    /// server's order of preference. A client that offers ALPN but none of these is refused
    /// with `no_application_protocol`, as RFC 7301 §3.2 asks.
    pub fn acceptor_with_alpn(&self, protocols: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
        let mut config = (*self.server_config).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// Channel-binding data for SCRAM-*-PLUS on an established connection: `tls-exporter` only on
/// TLS 1.3 (RFC 9266), `tls-server-end-point` (RFC 5929) always.
///
/// Call it once, right after the handshake (rustls 0.24 makes the exporter one-shot).
pub fn channel_binding(conn: &rustls::ServerConnection, tls: &Tls) -> ChannelBinding {
    let tls_exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        conn.export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
            .map(|out| out.to_vec())
            .map_err(|e| tracing::warn!("tls-exporter unavailable: {e}"))
            .ok()
    } else {
        None
    };
    ChannelBinding {
        tls_exporter,
        tls_server_end_point: Some(tls.end_point.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(dir: &Path, domains: &[&str]) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_owned();
        c.server.domains = domains.iter().map(|d| d.to_string()).collect();
        c
    }

    #[test]
    fn generates_then_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let c = config(&data, &["example.org", "localhost"]);
        let first = load(&c).expect("first load");
        assert!(first.self_signed);
        assert_eq!(first.cert_file, data.join(SELF_SIGNED_CERT));
        let cert1 = std::fs::read(data.join(SELF_SIGNED_CERT)).expect("cert");
        let key1 = std::fs::read(data.join(SELF_SIGNED_KEY)).expect("key");
        let mode = std::fs::metadata(data.join(SELF_SIGNED_KEY))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!first.end_point.is_empty());

        let second = load(&c).expect("second load");
        assert_eq!(
            std::fs::read(data.join(SELF_SIGNED_CERT)).expect("cert"),
            cert1
        );
        assert_eq!(
            std::fs::read(data.join(SELF_SIGNED_KEY)).expect("key"),
            key1
        );
        assert_eq!(second.end_point, first.end_point);

        // Same domains in another order: still reused.
        load(&config(&data, &["localhost", "example.org"])).expect("reorder");
        assert_eq!(
            std::fs::read(data.join(SELF_SIGNED_CERT)).expect("cert"),
            cert1
        );

        // Domains changed: regenerated.
        let third = load(&config(&data, &["example.net"])).expect("third load");
        assert_ne!(
            std::fs::read(data.join(SELF_SIGNED_CERT)).expect("cert"),
            cert1
        );
        assert_ne!(third.end_point, first.end_point);
    }

    #[test]
    fn loads_configured_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_pem, key_pem) = generate(&["example.com".into()]).expect("generate");
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, cert_pem).expect("write");
        std::fs::write(&key, key_pem).expect("write");
        let mut c = config(&dir.path().join("data"), &["example.com"]);
        c.tls.cert = Some(cert.clone());
        c.tls.key = Some(key.clone());
        let tls = load(&c).expect("load");
        assert!(!tls.self_signed);
        assert_eq!(tls.cert_file, cert);
        assert!(!dir.path().join("data").exists(), "nothing generated");

        c.tls.cert = Some(dir.path().join("missing.pem"));
        let err = load(&c).expect_err("missing").to_string();
        assert!(err.contains("missing.pem"), "{err}");

        std::fs::write(dir.path().join("empty.pem"), "").expect("write");
        c.tls.cert = Some(dir.path().join("empty.pem"));
        let err = load(&c).expect_err("empty").to_string();
        assert!(err.contains("empty.pem"), "{err}");

        // Key of another certificate.
        let (other_cert, _) = generate(&["example.com".into()]).expect("generate");
        std::fs::write(dir.path().join("other.pem"), other_cert).expect("write");
        c.tls.cert = Some(dir.path().join("other.pem"));
        let err = load(&c).expect_err("mismatch").to_string();
        assert!(err.contains("other.pem"), "{err}");
    }

    fn client_config(
        tls: &Tls,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(&tls.cert_file).expect("certs") {
            roots.add(c).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Handshake over loopback; returns (server-side binding, client exporter, client's
    /// end-point hash of the certificate it saw).
    async fn handshake(
        tls: &Tls,
        name: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (ChannelBinding, Option<Vec<u8>>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tls.acceptor.clone();
        let tls2 = tls.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut s = acceptor.accept(tcp).await.expect("server handshake");
            let cb = channel_binding(s.get_ref().1, &tls2);
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.expect("read");
            s.write_all(&buf).await.expect("write");
            s.flush().await.expect("flush");
            cb
        });
        let connector = tokio_rustls::TlsConnector::from(client_config(tls, versions));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        let mut c = connector
            .connect(server_name, tcp)
            .await
            .expect("client handshake");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        let conn = c.get_ref().1;
        let exporter =
            (conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)).then(|| {
                conn.export_keying_material([0u8; 32], EXPORTER_LABEL, None)
                    .expect("export")
                    .to_vec()
            });
        let peer = conn.peer_certificates().expect("peer certs")[0].clone();
        let cb = server.await.expect("server task");
        (cb, exporter, tls_server_end_point(peer.as_ref()))
    }

    #[tokio::test]
    async fn tls13_handshake_and_channel_binding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = load(&config(dir.path(), &["localhost", "example.org"])).expect("load");
        let (cb, client_exporter, client_end_point) =
            handshake(&tls, "localhost", &[&rustls::version::TLS13]).await;
        let exporter = cb.tls_exporter.expect("exporter on TLS 1.3");
        assert_eq!(exporter.len(), 32);
        assert_eq!(Some(exporter), client_exporter);
        assert_eq!(cb.tls_server_end_point, Some(client_end_point));
        assert_eq!(cb.tls_server_end_point.as_deref(), Some(&tls.end_point[..]));

        // The wildcard SAN covers subdomains.
        handshake(&tls, "conference.example.org", &[&rustls::version::TLS13]).await;
    }

    #[tokio::test]
    async fn tls12_has_no_exporter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = load(&config(dir.path(), &["localhost"])).expect("load");
        let (cb, _, client_end_point) =
            handshake(&tls, "localhost", &[&rustls::version::TLS12]).await;
        assert_eq!(cb.tls_exporter, None);
        assert_eq!(cb.tls_server_end_point, Some(client_end_point));
    }
}

//! The federation layer as the router sees it ([`franca_core::external::Federation`]): what
//! every s2s connection shares ([`Ctx`]: resolver, trust anchors, TLS configurations, policy,
//! the per-user bar, the dialback secret, limits), the checks made before a stanza may leave
//! (policy and the per-user bar, refused with `policy-violation` and a text that says why,
//! RFC 6120 §8.3.3.12), and the hand-over to the per-domain-pair links of `pool.rs`.

use crate::dns::Resolver;
use crate::policy::{FederationPermission, Policy};
use crate::pool::Links;
use crate::verify::{self, Trust};
use async_trait::async_trait;
use franca_core::Server;
use franca_core::config::{Config, S2sConfig};
use franca_core::external::Federation;
use franca_net::limits::ReadRate;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_xml::{Element, Limits};
use jid::Jid;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// What every s2s connection of this server shares.
pub struct Ctx {
    pub cfg: S2sConfig,
    pub resolver: Resolver,
    pub trust: Trust,
    /// Outbound TLS (STARTTLS), presenting our certificate for SASL EXTERNAL.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// The same for XEP-0368 direct TLS, with ALPN `xmpp-server`.
    pub client_tls_direct: Arc<rustls::ClientConfig>,
    /// Inbound TLS, asking for (not requiring) the peer's certificate.
    pub server_tls: Arc<rustls::ServerConfig>,
    pub policy: Policy,
    pub permission: Arc<dyn FederationPermission>,
    /// XEP-0185 key generation secret.
    pub secret: String,
    /// Stanza limits, as c2s.
    pub limits: Limits,
    read_rate: (u32, u32),
    /// Time allowed for one stream's negotiation (header to authenticated) on inbound streams.
    pub negotiation: Duration,
    pub shutdown: watch::Receiver<bool>,
    pub links: Links,
    /// `max_inbound_connections`.
    pub inbound: Arc<Semaphore>,
}

impl Ctx {
    pub fn read_rate(&self) -> ReadRate {
        ReadRate::new(self.read_rate.0, self.read_rate.1)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.connect_timeout_seconds.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.idle_timeout_seconds.max(1))
    }
}

/// The certificate chain and key the server's TLS listeners use (`[tls]`, or the self-signed
/// pair `franca_net::tls::load` generated in `data_dir`), which s2s presents too.
fn our_certificate(
    config: &Config,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let (cert, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => (
            config
                .server
                .data_dir
                .join(franca_net::tls::SELF_SIGNED_CERT),
            config
                .server
                .data_dir
                .join(franca_net::tls::SELF_SIGNED_KEY),
        ),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((chain, key))
}

/// Federation over s2s connections; set into `Server::federation` once at start.
pub struct S2s {
    pub ctx: Arc<Ctx>,
}

impl S2s {
    /// Build the layer from the configuration. Call after `franca_net::tls::load`, which
    /// creates the self-signed certificate when none is configured.
    pub fn new(
        config: &Config,
        permission: Arc<dyn FederationPermission>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<S2s>, String> {
        franca_net::tls::install_crypto_provider();
        let cfg = config.s2s.clone();
        let (chain, key) = our_certificate(config)?;
        let client_tls = verify::client_config(chain.clone(), key.clone_key())?;
        let mut direct = (*client_tls).clone();
        direct.alpn_protocols = vec![franca_proto::ns::ALPN_XMPP_SERVER.as_bytes().to_vec()];
        let server_tls = verify::server_config(chain, key)?;
        let secret = cfg.dialback_secret.clone().unwrap_or_else(|| {
            // One node, one process: a per-start secret only invalidates keys of streams that
            // die with the process anyway.
            crate::stream::new_stream_id() + &crate::stream::new_stream_id()
        });
        let ctx = Ctx {
            resolver: Resolver::new(&cfg.routes)?,
            trust: Trust::load(&cfg)?,
            client_tls,
            client_tls_direct: Arc::new(direct),
            server_tls,
            policy: Policy::new(&cfg),
            permission,
            secret,
            limits: Limits {
                max_stanza_bytes: config.limits.max_stanza_bytes,
                max_depth: config.limits.max_depth,
                max_attrs: config.limits.max_attributes,
            },
            read_rate: (
                config.limits.read_rate_bytes,
                config.limits.read_burst_bytes,
            ),
            negotiation: Duration::from_secs(config.limits.negotiation_timeout_seconds.max(1)),
            shutdown,
            links: Links::default(),
            inbound: Arc::new(Semaphore::new(cfg.max_inbound_connections.max(1))),
            cfg,
        };
        Ok(Arc::new(S2s { ctx: Arc::new(ctx) }))
    }

    /// Accept inbound s2s connections on `listeners` (`[listen] s2s`), one task each.
    pub fn listen(
        &self,
        server: &Arc<Server>,
        listeners: Vec<tokio::net::TcpListener>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        listeners
            .into_iter()
            .map(|l| tokio::spawn(crate::inbound::accept(l, self.ctx.clone(), server.clone())))
            .collect()
    }
}

/// Bounce `stanza` back to its sender with `cond` and an explanation (RFC 6120 §8.3).
pub async fn bounce(server: &Arc<Server>, stanza: &Element, cond: Cond, text: &str) {
    metrics::counter!("franca_s2s_stanzas_bounced_total").increment(1);
    let err = StanzaError::new(cond).with_text(text);
    if let Some(reply) = error_reply(stanza, &err) {
        server.route(reply).await;
    }
}

/// The local domain a stanza leaves from: its `from` domain, which must be one this server is
/// authoritative for (served, a hosted service such as `conference.`, or a connected XEP-0114
/// component, whose stanzas federate through us as they do on Prosody and ejabberd).
fn local_domain(server: &Server, stanza: &Element) -> Option<(String, Option<jid::BareJid>)> {
    let from = Jid::new(stanza.attr("from")?).ok()?;
    let domain = from.domain().as_str().to_owned();
    if server.serves(&domain) {
        let user = from.node().map(|_| from.to_bare());
        Some((domain, user))
    } else if server.service(&domain).is_some() || server.components.get(&domain).is_some() {
        Some((domain, None))
    } else {
        None
    }
}

#[async_trait]
impl Federation for S2s {
    async fn send(&self, server: &Arc<Server>, domain: &str, stanza: Element) {
        if let Err(why) = self.ctx.policy.check(domain) {
            return bounce(server, &stanza, Cond::PolicyViolation, &why).await;
        }
        let Some((local, user)) = local_domain(server, &stanza) else {
            // Only stanzas from our own domains go out; anything else is a routing bug or a
            // stanza relayed from another server, which RFC 6120 §13.6 does not allow.
            tracing::debug!(to = domain, "not sending a stanza from a domain not ours");
            return bounce(
                server,
                &stanza,
                Cond::NotAllowed,
                "this server does not relay stanzas between other domains",
            )
            .await;
        };
        if let Some(user) = &user
            && let Err(why) = self.ctx.permission.may_federate(user).await
        {
            return bounce(server, &stanza, Cond::PolicyViolation, &why).await;
        }
        crate::pool::send(&self.ctx, server, local, domain.to_owned(), stanza).await;
    }

    fn reachable(&self, domain: &str) -> bool {
        self.ctx.policy.check(domain).is_ok()
    }
}

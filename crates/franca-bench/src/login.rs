//! The login transaction (connect → stream → [STARTTLS] → SASL → restart → bind → [session] →
//! roster get → initial presence → ping round trip) and in-band registration.
//!
//! The closing ping is the marker that the server has processed the initial presence: servers
//! handle a session's stanzas in order, and not every server echoes presence to its sender.

use crate::client::Xmpp;
use crate::proto::{Security, Target};
use crate::sasl::ScramCache;
use crate::stats::now_ns;
use crate::xml;
use std::net::Ipv4Addr;
use tokio_rustls::TlsConnector;

/// Everything a worker needs to open sessions.
pub struct Ctx {
    pub target: Target,
    pub source: Option<Ipv4Addr>,
    pub tls: TlsConnector,
    pub cache: ScramCache,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("target", &self.target)
            .field("source", &self.source)
            .finish()
    }
}

/// Connects and negotiates TLS as configured; returns the client and the stream features.
async fn negotiate(ctx: &Ctx) -> Result<(Xmpp, Vec<u8>), String> {
    let mut c = Xmpp::connect(&ctx.target, ctx.source, &ctx.tls).await?;
    let mut features = c.open(&ctx.target.domain).await?;
    if ctx.target.security == Security::Starttls {
        if !xml::contains(&features, "urn:ietf:params:xml:ns:xmpp-tls") {
            return Err("server does not offer STARTTLS".into());
        }
        c.starttls(&ctx.target.domain, &ctx.tls).await?;
        features = c.open(&ctx.target.domain).await?;
    }
    Ok((c, features))
}

/// A logged-in session.
#[derive(Debug)]
pub struct Session {
    pub xmpp: Xmpp,
    /// When the initial presence was written (ns since the epoch).
    pub presence_ns: u64,
}

/// Runs the whole login transaction for `user` (localpart).
/// `stamp`: put the send time (ns) in the initial presence's `<status/>` (presence latency).
/// `other`: stanzas that arrive meanwhile (presence from contacts, roster pushes).
pub async fn login(
    ctx: &Ctx,
    user: &str,
    resource: &str,
    stamp: bool,
    other: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<Session, String> {
    let (mut c, features) = negotiate(ctx).await?;
    c.authenticate(
        &features,
        &ctx.target.mechs,
        user,
        &ctx.target.password,
        &ctx.cache,
    )
    .await?;
    let features = c.open(&ctx.target.domain).await?;
    c.iq(
        "bind1",
        &format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        ),
        other,
    )
    .await?;
    if xml::contains(&features, "urn:ietf:params:xml:ns:xmpp-session")
        && !xml::contains(&features, "<optional")
    {
        c.iq(
            "sess1",
            "<iq type='set' id='sess1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
            other,
        )
        .await?;
    }
    c.iq(
        "roster1",
        "<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>",
        other,
    )
    .await?;
    let presence_ns = now_ns();
    let presence = if stamp {
        format!("<presence><status>{presence_ns}</status></presence>")
    } else {
        "<presence/>".to_owned()
    };
    c.send(&presence).await?;
    c.iq(
        "ping1",
        &format!(
            "<iq type='get' id='ping1' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            ctx.target.domain
        ),
        other,
    )
    .await?;
    Ok(Session {
        xmpp: c,
        presence_ns,
    })
}

/// Registers `user` in band (XEP-0077). `Ok(false)` when the account already existed.
pub async fn register(ctx: &Ctx, user: &str) -> Result<bool, String> {
    let (mut c, _features) = negotiate(ctx).await?;
    let iq = format!(
        "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>{}</username>\
         <password>{}</password></query></iq>",
        xml::escape(user),
        xml::escape(&ctx.target.password)
    );
    c.send(&iq).await?;
    let result = loop {
        let s = c.stanza().await?;
        if xml::name(&s) == b"iq" && xml::attr(&s, "id") == Some(b"reg1") {
            break match xml::attr(&s, "type") {
                Some(b"result") => Ok(true),
                _ if xml::contains(&s, "<conflict") => Ok(false),
                _ => Err(format!(
                    "registration failed: {}",
                    String::from_utf8_lossy(&s)
                )),
            };
        }
    };
    c.close().await;
    result
}

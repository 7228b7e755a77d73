//! XEP-0077 In-Band Registration (`jabber:iq:register`).
//!
//! Before authentication, the c2s layer hands registration IQs to [`preauth`]: a form with
//! `<instructions/>`, `<username/>` and `<password/>`, and account creation (XEP-0077 §3.1,
//! "Entity Registers with a Host") with a localpart that, once lower-cased, is valid and already
//! normalised under both RFC 6122 Nodeprep and RFC 7622 PRECIS ([`franca_proto::jidprep`]), and a
//! password that RFC 8265 `OpaqueString` accepts; `conflict` when the name is taken and
//! `not-acceptable` when the username or password is unusable. All of it only when
//! `registration.enabled`, otherwise `service-unavailable`. Each IP address (each /64 for IPv6,
//! which hands a whole prefix to one host) may create `registration.max_per_ip` accounts per
//! `registration.window_seconds`. The c2s layer advertises the [`stream_feature`] (XEP-0077
//! "Stream Feature") when registration is enabled.
//!
//! After authentication the module answers the account: its registration (`<registered/>`),
//! password change (§3.3) and cancellation with `<remove/>` (§3.2), which deletes the account
//! and everything stored for it and closes its sessions.

use franca_core::{Config, IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{ErrorType, StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::jidprep::{normalise_bare, valid_new_localpart};
use franca_proto::ns::{NS_CLIENT, NS_REGISTER, NS_REGISTER_FEATURE};
use franca_proto::sasl::{ScramHash, new_keys, prepare_password};
use franca_store::{ScramCredentials, StoreError};
use franca_xml::Element;
use jid::BareJid;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The post-authentication module. It holds no state: the pre-authentication rate limiter is
/// process-wide (a static in this module), because [`preauth`] runs before any session or
/// module is involved, and one process serves one [`Server`].
#[derive(Debug, Default)]
pub struct Register {}

impl Register {
    pub fn new(_config: &Config) -> Register {
        Register {}
    }
}

const INSTRUCTIONS: &str = "Choose a username and password to register with this server.";

/// The `<register/>` stream feature (XEP-0077 "Stream Feature"), when registration is enabled.
pub fn stream_feature(config: &Config) -> Option<Element> {
    config
        .registration
        .enabled
        .then(|| Element::new("register", NS_REGISTER_FEATURE))
}

/// SCRAM credentials for every hash the server offers (SHA-1, SHA-256, SHA-512), each with a
/// fresh salt. CPU-heavy (PBKDF2): call it off the async runtime, as [`derive`] does.
pub fn credentials(password: &str) -> Vec<ScramCredentials> {
    [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512]
        .into_iter()
        .map(|hash| {
            let keys = new_keys(hash, password);
            ScramCredentials {
                hash: hash.name().to_owned(),
                salt: keys.salt,
                iterations: keys.iterations,
                stored_key: keys.stored_key,
                server_key: keys.server_key,
            }
        })
        .collect()
}

/// [`credentials`] on the blocking thread pool.
async fn derive(password: String) -> Result<Vec<ScramCredentials>, StanzaError> {
    tokio::task::spawn_blocking(move || credentials(&password))
        .await
        .map_err(|e| {
            tracing::error!("deriving SCRAM keys failed: {e}");
            StanzaError::new(Cond::InternalServerError)
        })
}

fn internal(user: &str, e: StoreError) -> StanzaError {
    tracing::error!(%user, "storage error in registration: {e}");
    StanzaError::new(Cond::InternalServerError)
}

/// The new password in `query`, prepared as RFC 8265 `OpaqueString` requires; `not-acceptable`
/// when missing, empty or refused by the profile.
fn new_password(query: &Element) -> Result<String, StanzaError> {
    let raw = query
        .child("password", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    match prepare_password(&raw) {
        Some(p) if !p.is_empty() => Ok(raw),
        _ => Err(StanzaError::new(Cond::NotAcceptable).with_text("unacceptable password")),
    }
}

// ---- rate limiting ----------------------------------------------------------------------------

/// Addresses tracked at most; past that, registration is refused until entries expire, so a
/// flood of source addresses cannot grow memory without bound.
const MAX_TRACKED: usize = 100_000;

/// Recent account creations per address. Process-wide: see [`Register`].
static LIMITER: LazyLock<Mutex<HashMap<IpAddr, VecDeque<Instant>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The unit that is rate-limited: the address itself for IPv4, its /64 for IPv6.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// A slot taken in the limiter; given back on drop unless [`Slot::commit`]ted (the account was
/// created).
struct Slot {
    key: IpAddr,
    at: Instant,
    committed: bool,
}

impl Slot {
    fn take(ip: IpAddr, max: u32, window: Duration) -> Option<Slot> {
        let key = limit_key(ip);
        let now = Instant::now();
        let expired = |t: &Instant| now.saturating_duration_since(*t) >= window;
        let mut map = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, q| {
                q.retain(|t| !expired(t));
                !q.is_empty()
            });
        }
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            return None;
        }
        let q = map.entry(key).or_default();
        q.retain(|t| !expired(t));
        if q.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
            if q.is_empty() {
                map.remove(&key);
            }
            return None;
        }
        q.push_back(now);
        Some(Slot {
            key,
            at: now,
            committed: false,
        })
    }

    fn commit(mut self) {
        self.committed = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let mut map = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = map.get_mut(&self.key) {
            if let Some(i) = q.iter().position(|t| *t == self.at) {
                q.remove(i);
            }
            if q.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

// ---- before authentication ----------------------------------------------------------------------

/// The domain a pre-authentication request registers in: the IQ's `to` (the c2s layer stamps
/// the stream's domain there, as for any stanza without one), else the first served domain.
fn preauth_domain(server: &Server, iq: &Element) -> Result<String, StanzaError> {
    match iq.attr("to") {
        Some(to) => {
            let jid = BareJid::new(to).map_err(|_| StanzaError::new(Cond::JidMalformed))?;
            let domain = jid.domain().as_str();
            if jid.node().is_some() || !server.serves(domain) {
                return Err(StanzaError::new(Cond::ServiceUnavailable));
            }
            Ok(domain.to_owned())
        }
        None => server
            .config
            .server
            .domains
            .first()
            .cloned()
            .ok_or_else(|| StanzaError::new(Cond::ServiceUnavailable)),
    }
}

/// Answer a registration IQ received before authentication (XEP-0077 §3.1). Returns the reply
/// IQ for the c2s layer to send; it carries no addresses beyond what the request had.
pub async fn preauth(server: &Arc<Server>, peer: IpAddr, iq: Element) -> Element {
    match preauth_result(server, peer, &iq).await {
        Ok(payload) => {
            let mut reply = Element::new("iq", NS_CLIENT)
                .with_attr("type", "result")
                .with_attr("id", iq.attr("id").unwrap_or_default());
            if let Some(to) = iq.attr("to") {
                reply.set_attr("from", to);
            }
            if let Some(from) = iq.attr("from") {
                reply.set_attr("to", from);
            }
            if let Some(p) = payload {
                reply.push(p);
            }
            reply
        }
        Err(e) => error_reply(&iq, &e).unwrap_or_else(|| {
            // A result or error IQ is never answered on a stream; the c2s layer should not pass
            // one, but it gets a well-formed error rather than a panic.
            Element::new("iq", NS_CLIENT)
                .with_attr("type", "error")
                .with_attr("id", iq.attr("id").unwrap_or_default())
                .with_child(StanzaError::new(Cond::BadRequest).to_element(NS_CLIENT))
        }),
    }
}

async fn preauth_result(server: &Arc<Server>, peer: IpAddr, iq: &Element) -> IqResult {
    let settings = &server.config.registration;
    if !settings.enabled {
        return Err(StanzaError::new(Cond::ServiceUnavailable));
    }
    let query = match (iq.attr("type"), iq.first_element()) {
        (Some("get" | "set"), Some(q)) if q.is("query", NS_REGISTER) => q,
        (Some("get" | "set"), _) => return Err(StanzaError::new(Cond::ServiceUnavailable)),
        _ => return Err(StanzaError::new(Cond::BadRequest)),
    };
    let domain = preauth_domain(server, iq)?;
    if iq.attr("type") == Some("get") {
        return Ok(Some(
            Element::new("query", NS_REGISTER)
                .with_child(Element::new("instructions", NS_REGISTER).with_text(INSTRUCTIONS))
                .with_child(Element::new("username", NS_REGISTER))
                .with_child(Element::new("password", NS_REGISTER)),
        ));
    }
    if query.has_child("remove", NS_REGISTER) {
        // §3.2: only an authenticated account can cancel its registration.
        return Err(StanzaError::new(Cond::NotAuthorized));
    }
    let username = query
        .child("username", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    let user = new_account(&username, &domain)?;
    let password = new_password(query)?;
    let window = Duration::from_secs(settings.window_seconds);
    let Some(slot) = Slot::take(peer, settings.max_per_ip, window) else {
        return Err(StanzaError::new(Cond::PolicyViolation)
            .with_type(ErrorType::Wait)
            .with_text("too many registrations from your address; try again later"));
    };
    if server
        .store
        .user_exists(&user)
        .await
        .map_err(|e| internal(&user, e))?
    {
        return Err(StanzaError::new(Cond::Conflict));
    }
    let creds = derive(password).await?;
    match server.store.create_user(&user, &creds).await {
        Ok(()) => {
            slot.commit();
            tracing::info!(%user, %peer, "account registered in-band");
            Ok(None)
        }
        Err(StoreError::UserExists(_)) => Err(StanzaError::new(Cond::Conflict)),
        Err(e) => Err(internal(&user, e)),
    }
}

/// The bare JID of a new account `username@domain`. Upper case is accepted and folded (clients
/// may send "Juliet"), but no other mapping: a name that Nodeprep or PRECIS would rewrite in
/// other ways (compatibility characters, unnormalised sequences) could reach different accounts
/// under the two profiles, so the folded name must be a valid new localpart as it is.
fn new_account(username: &str, domain: &str) -> Result<String, StanzaError> {
    let refuse = || StanzaError::new(Cond::NotAcceptable).with_text("unacceptable username");
    let local = username.to_lowercase();
    if !valid_new_localpart(&local) {
        return Err(refuse());
    }
    let bare = normalise_bare(&format!("{local}@{domain}")).map_err(|_| refuse())?;
    if bare.split_once('@').map(|(l, _)| l) != Some(local.as_str()) {
        return Err(refuse());
    }
    Ok(bare)
}

// ---- after authentication -----------------------------------------------------------------------

/// §3.2: delete the account. The result reaches the requesting resource before its stream is
/// closed, and only once the data is gone. This is [`Server::remove_user`] with the result sent
/// in between its storage and session steps.
async fn remove(server: &Arc<Server>, req: &IqRequest<'_>, user: &BareJid) -> IqResult {
    server
        .store
        .remove_user(user.as_str())
        .await
        .map_err(|e| internal(user.as_str(), e))?;
    if let Some(session) = req
        .from
        .try_as_full()
        .ok()
        .and_then(|f| server.sessions.get(f))
    {
        let result = Element::new("iq", NS_CLIENT)
            .with_attr("type", "result")
            .with_attr("id", req.iq.attr("id").unwrap_or_default())
            .with_attr("from", req.to.as_str())
            .with_attr("to", req.from.as_str());
        session.send(&result);
    }
    server.kick_user(user, "account removed").await;
    for m in server.modules.iter() {
        m.user_removed(server, user).await;
    }
    tracing::info!(%user, "account removed in-band");
    // The router's own result finds no account any more and is dropped.
    Ok(None)
}

/// §3.3: change the password. The username must be the account's own.
async fn change_password(server: &Arc<Server>, query: &Element, user: &BareJid) -> IqResult {
    let username = query
        .child("username", NS_REGISTER)
        .map(Element::text)
        .unwrap_or_default();
    let own = user.node().map(|n| n.as_str()).unwrap_or_default();
    let same =
        normalise_bare(&format!("{username}@{}", user.domain())).is_ok_and(|b| b == user.as_str());
    if username.is_empty() || !same || own.is_empty() {
        return Err(StanzaError::new(Cond::BadRequest).with_text("username is not yours"));
    }
    let password = new_password(query)?;
    let creds = derive(password).await?;
    server
        .store
        .set_credentials(user.as_str(), &creds)
        .await
        .map_err(|e| internal(user.as_str(), e))?;
    tracing::info!(%user, "password changed in-band");
    Ok(None)
}

#[async_trait::async_trait]
impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        // §3.2 sends the request without `to` (the account), §3.3 to the server.
        &[
            (IqTarget::Account, NS_REGISTER),
            (IqTarget::Server, NS_REGISTER),
        ]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_REGISTER]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        // Only a local account manages its own registration: on its bare JID, or on its
        // server's JID.
        let user = req.from.to_bare();
        let local = user.node().is_some() && server.serves(user.domain().as_str());
        let own = match req.to.node() {
            Some(_) => req.from_self(),
            None => req.to.domain() == user.domain(),
        };
        if !local || !own {
            return Err(StanzaError::new(Cond::NotAllowed));
        }
        let Some(query) = req.payload().filter(|q| q.is("query", NS_REGISTER)) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if !req.is_set() {
            let node = user.node().map(|n| n.as_str()).unwrap_or_default();
            return Ok(Some(
                Element::new("query", NS_REGISTER)
                    .with_child(Element::new("registered", NS_REGISTER))
                    .with_child(Element::new("username", NS_REGISTER).with_text(node))
                    .with_child(Element::new("password", NS_REGISTER)),
            ));
        }
        if query.has_child("remove", NS_REGISTER) {
            // §3.2: `<remove/>` must come alone.
            if query.elements().count() != 1 {
                return Err(StanzaError::new(Cond::BadRequest));
            }
            return remove(server, &req, &user).await;
        }
        if query.has_child("password", NS_REGISTER) {
            return change_password(server, query, &user).await;
        }
        Err(StanzaError::new(Cond::BadRequest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, normalise, server, server_with, xml};
    use franca_core::session::Outbound;
    use franca_proto::errors::StreamError;
    use franca_proto::sasl::derive_keys;
    use std::net::Ipv4Addr;

    fn enabled(max_per_ip: u32) -> Config {
        let mut config = Config::default();
        config.registration.enabled = true;
        config.registration.max_per_ip = max_per_ip;
        config
    }

    async fn open_server(max_per_ip: u32) -> Arc<Server> {
        let config = enabled(max_per_ip);
        server_with(config.clone(), vec![Arc::new(Register::new(&config))]).await
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    async fn ask(server: &Arc<Server>, peer: IpAddr, iq: &str) -> String {
        normalise(preauth(server, peer, xml(iq)).await).to_xml()
    }

    fn register_iq(id: &str, user: &str, password: &str) -> String {
        format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>
               <username>{user}</username><password>{password}</password>
             </query></iq>"
        )
    }

    async fn password_is(server: &Server, user: &str, password: &str) -> bool {
        let mut ok = true;
        for hash in [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512] {
            let c = server
                .store
                .credentials(user, hash.name())
                .await
                .expect("credentials")
                .expect("stored");
            let keys = derive_keys(hash, password, &c.salt, c.iterations);
            ok &= keys.stored_key == c.stored_key && keys.server_key == c.server_key;
        }
        ok
    }

    #[test]
    fn xep0077_stream_feature_only_when_enabled() {
        assert_eq!(stream_feature(&Config::default()), None);
        assert_eq!(
            stream_feature(&enabled(1)).map(|f| f.to_xml()),
            Some("<register xmlns='http://jabber.org/features/iq-register'/>".to_owned())
        );
    }

    #[tokio::test]
    async fn xep0077_registration_disabled_is_service_unavailable() {
        let server = server(vec![Arc::new(Register::new(&Config::default()))]).await;
        let got = ask(
            &server,
            ip(1),
            "<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>",
        )
        .await;
        assert_eq!(
            got,
            xml("<iq type='error' id='reg1'><query xmlns='jabber:iq:register'/>
                   <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
                 </iq>")
            .to_xml()
        );
    }

    #[tokio::test]
    async fn xep0077_3_1_entity_requests_registration_fields() {
        let server = open_server(1).await;
        let got = ask(
            &server,
            ip(2),
            "<iq type='get' id='reg1' to='localhost'><query xmlns='jabber:iq:register'/></iq>",
        )
        .await;
        assert_eq!(
            got,
            xml(&format!(
                "<iq type='result' id='reg1' from='localhost'>
                   <query xmlns='jabber:iq:register'>
                     <instructions>{INSTRUCTIONS}</instructions><username/><password/>
                   </query>
                 </iq>"
            ))
            .to_xml()
        );
    }

    #[tokio::test]
    async fn xep0077_3_1_entity_registers_with_host() {
        let server = open_server(5).await;
        let got = ask(
            &server,
            ip(3),
            &register_iq("reg2", "Mercutio", "Queen Mab"),
        )
        .await;
        assert_eq!(got, xml("<iq type='result' id='reg2'/>").to_xml());
        assert!(
            server
                .store
                .user_exists("mercutio@localhost")
                .await
                .expect("exists")
        );
        assert!(password_is(&server, "mercutio@localhost", "Queen Mab").await);

        // Taken (after normalisation too).
        for name in ["mercutio", "MERCUTIO"] {
            let got = ask(&server, ip(3), &register_iq("reg3", name, "x")).await;
            assert!(got.contains("<conflict "), "{got}");
        }
    }

    #[tokio::test]
    async fn xep0077_3_1_unacceptable_username_or_password() {
        let server = open_server(5).await;
        for (user, password) in [
            ("", "secret"),
            ("a b", "secret"),
            ("a@b", "secret"),
            ("tybalt/x", "secret"),
            ("\u{FB01}sh", "secret"),
            ("tybalt", ""),
            ("tybalt", "tab\there"),
        ] {
            let got = ask(&server, ip(4), &register_iq("r", user, password)).await;
            assert!(
                got.contains("<not-acceptable "),
                "{user:?}/{password:?}: {got}"
            );
        }
        let got = ask(
            &server,
            ip(4),
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'><remove/></query></iq>",
        )
        .await;
        assert!(got.contains("<not-authorized "), "{got}");
        assert_eq!(
            server.store.list_users(None).await.expect("users").len(),
            crate::testing::USERS.len()
        );
    }

    #[tokio::test]
    async fn xep0077_registrations_per_address_are_limited() {
        let server = open_server(1).await;
        // A refused attempt does not use up the allowance.
        let got = ask(&server, ip(5), &register_iq("a", "juliet", "pw")).await;
        assert!(got.contains("<conflict "), "{got}");
        let got = ask(&server, ip(5), &register_iq("b", "sampson", "pw")).await;
        assert_eq!(got, xml("<iq type='result' id='b'/>").to_xml());
        let got = ask(&server, ip(5), &register_iq("c", "gregory", "pw")).await;
        assert_eq!(
            got,
            xml(
                "<iq type='error' id='c'>
                   <query xmlns='jabber:iq:register'><username>gregory</username><password>pw</password></query>
                   <error type='wait'>
                     <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                     <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>too many registrations from your address; try again later</text>
                   </error>
                 </iq>"
            )
            .to_xml()
        );
        let got = ask(&server, ip(6), &register_iq("d", "gregory", "pw")).await;
        assert_eq!(got, xml("<iq type='result' id='d'/>").to_xml());

        // IPv6 is limited per /64.
        let a: IpAddr = "2001:db8:77:1::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:77:1:ffff::2".parse().expect("ip");
        let got = ask(&server, a, &register_iq("e", "abram", "pw")).await;
        assert_eq!(got, xml("<iq type='result' id='e'/>").to_xml());
        let got = ask(&server, b, &register_iq("f", "balthasar", "pw")).await;
        assert!(got.contains("<policy-violation "), "{got}");
    }

    #[tokio::test]
    async fn xep0077_3_1_registered_entity_sees_its_registration() {
        let server = open_server(1).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='reg3' to='localhost'><query xmlns='jabber:iq:register'/></iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='reg3' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='jabber:iq:register'>
                 <registered/><username>juliet</username><password/>
               </query>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0077_3_3_user_changes_password() {
        let server = open_server(1).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='set' id='change1' to='localhost'><query xmlns='jabber:iq:register'>
                   <username>juliet</username><password>newpass</password>
                 </query></iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='change1' from='localhost' to='juliet@localhost/balcony'/>",
        );
        assert!(password_is(&server, "juliet@localhost", "newpass").await);

        juliet
            .send(
                "<iq type='set' id='change2' to='localhost'><query xmlns='jabber:iq:register'>
                   <username>romeo</username><password>hijack</password>
                 </query></iq>",
            )
            .await;
        juliet.expect(
            "<iq type='error' id='change2' from='localhost' to='juliet@localhost/balcony'>
               <error type='modify'>
                 <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>username is not yours</text>
               </error>
             </iq>",
        );
        assert!(password_is(&server, "juliet@localhost", "newpass").await);

        // Nobody else changes it.
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(
                "<iq type='set' id='change3' to='juliet@localhost'><query xmlns='jabber:iq:register'>
                   <username>juliet</username><password>hijack</password>
                 </query></iq>",
            )
            .await;
        romeo.expect(
            "<iq type='error' id='change3' from='juliet@localhost' to='romeo@localhost/orchard'>
               <error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0077_3_2_entity_cancels_registration() {
        let server = open_server(1).await;
        let mut balcony = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let mut chamber = Client::online(&server, "juliet@localhost/chamber", 0).await;
        balcony
            .send("<iq type='set' id='unreg1'><query xmlns='jabber:iq:register'><remove/></query></iq>")
            .await;
        balcony.expect(
            "<iq type='result' id='unreg1' from='juliet@localhost' to='juliet@localhost/balcony'/>",
        );
        for c in [&mut balcony, &mut chamber] {
            assert!(
                matches!(
                    c.next(),
                    Some(Outbound::Close(StreamError::NotAuthorized, _))
                ),
                "{} not closed",
                c.session.jid
            );
            c.silent();
        }
        assert!(
            !server
                .store
                .user_exists("juliet@localhost")
                .await
                .expect("exists")
        );
        assert!(
            server
                .sessions
                .resources(&BareJid::new("juliet@localhost").expect("jid"))
                .is_empty()
        );
    }
}

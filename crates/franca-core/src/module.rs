//! The module API (DESIGN §2): features register typed hooks, and the registry owns every
//! registration, so a module that is not loaded leaves nothing behind. Defaults live in the core
//! as the last handler: an IQ nobody handles gets `service-unavailable`.

use crate::config::Config;
use crate::server::Server;
use crate::session::Session;
use franca_proto::errors::StanzaError;
use franca_xml::Element;
use jid::{BareJid, Jid};
use std::collections::HashMap;
use std::sync::Arc;

/// Whether a hook consumed the stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Handled,
}

/// Who an IQ is addressed to, once the router has resolved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqTarget {
    /// The server itself (`to` is a served domain).
    Server,
    /// A local account's bare JID, answered by the server on its behalf (RFC 6120 §10.5.4); an IQ
    /// with no `to` from a client is addressed to its own account (§10.3.3).
    Account,
}

/// An IQ request (`get` or `set`) for a module.
pub struct IqRequest<'a> {
    /// The local session that sent it, if it came from one.
    pub origin: Option<&'a Arc<Session>>,
    pub from: Jid,
    /// The domain (Server) or the bare account JID (Account).
    pub to: Jid,
    pub iq: Element,
}

impl IqRequest<'_> {
    /// The single payload child.
    pub fn payload(&self) -> Option<&Element> {
        self.iq.first_element()
    }
    pub fn is_set(&self) -> bool {
        self.iq.attr("type") == Some("set")
    }
    /// True when the requester is the account the IQ is addressed to.
    pub fn from_self(&self) -> bool {
        self.from.to_bare() == self.to.to_bare()
    }
}

/// Ok(Some(payload)): a result carrying `payload`; Ok(None): an empty result.
pub type IqResult = Result<Option<Element>, StanzaError>;

/// Session life-cycle events, delivered to every module in order.
#[derive(Debug)]
pub enum SessionEvent {
    /// A resource was bound.
    Bound(Arc<Session>),
    /// The session sent its initial available presence (emitted by the presence module through
    /// [`Server::emit`](crate::Server::emit)); offline messages are delivered on this.
    Available(Arc<Session>),
    /// The session ended (after unavailable presence was handled).
    Closed(Arc<Session>),
}

/// A service domain a module hosts (XEP-0045 `conference.example.org`; later `pubsub.`,
/// `upload.`): everything addressed to the domain or a JID on it goes to the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostedService {
    /// The service's domain, e.g. `conference.example.org`. Never a served domain.
    pub domain: String,
    /// The name the main domain's disco#items gives it.
    pub name: &'static str,
}

#[async_trait::async_trait]
pub trait Module: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// IQ payload namespaces this module answers, and for which target.
    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[]
    }
    /// disco#info features on the server JID.
    fn server_features(&self) -> &'static [&'static str] {
        &[]
    }
    /// disco#info features on an account's bare JID.
    fn account_features(&self) -> &'static [&'static str] {
        &[]
    }
    /// Extra stream features offered after authentication (e.g. roster versioning).
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// XEP-0386 Bind 2: namespaces of what this module can turn on for a session inline, in
    /// the `<bind/>` of a SASL2 login (listed in the stream features).
    fn bind2_features(&self) -> &'static [&'static str] {
        &[]
    }

    /// XEP-0386: `el`, in one of [`Module::bind2_features`], came in the client's `<bind/>`
    /// for `session`, just bound and not yet told; an element returned goes into `<bound/>`.
    async fn bind2_inline(
        &self,
        _server: &Arc<Server>,
        _session: &Arc<Session>,
        _el: &Element,
    ) -> Option<Element> {
        None
    }

    /// The service domains this module hosts, asked once when the server is built
    /// ([`Server::new`] keeps them in its registry). Every stanza whose `to` is on one of them
    /// reaches [`Module::service_stanza`]; the served domains' disco#items lists them.
    fn services(&self, _config: &Config) -> Vec<HostedService> {
        Vec::new()
    }

    /// A stanza to one of [`Module::services`]: `to` is its parsed address (the service
    /// itself, or a JID on it) and `from` is trusted. The module answers everything, IQs
    /// included; nothing is answered for it.
    async fn service_stanza(&self, _server: &Arc<Server>, _to: Jid, _stanza: Element) {}

    /// The server is built and storage is open, before any connection is accepted: a module
    /// loads what it keeps in memory (persistent rooms).
    async fn start(&self, _server: &Arc<Server>) {}

    async fn handle_iq(&self, _server: &Arc<Server>, _req: IqRequest<'_>) -> IqResult {
        Err(StanzaError::new(
            franca_proto::errors::StanzaErrorCondition::ServiceUnavailable,
        ))
    }

    /// A stanza from a local session, after `from` is stamped and before it is routed.
    async fn outbound(
        &self,
        _server: &Arc<Server>,
        _session: &Arc<Session>,
        _stanza: &mut Element,
    ) -> Flow {
        Flow::Continue
    }

    /// A stanza about to be delivered to local account `to` (bare or full `to` attribute).
    async fn inbound(&self, _server: &Arc<Server>, _to: &BareJid, _stanza: &mut Element) -> Flow {
        Flow::Continue
    }

    /// A message for an existing account that no session can take right now.
    async fn undeliverable(&self, _server: &Arc<Server>, _to: &BareJid, _stanza: &Element) -> Flow {
        Flow::Continue
    }

    /// A message was queued for `session` while it is hibernated by XEP-0198 (no connection,
    /// waiting to be resumed); XEP-0357 push wakes the device up on this.
    async fn queued_while_hibernated(
        &self,
        _server: &Arc<Server>,
        _session: &Arc<Session>,
        _stanza: &Element,
    ) {
    }

    async fn session_event(&self, _server: &Arc<Server>, _event: &SessionEvent) {}

    /// The account is being deleted: its sessions are closed and its data is still stored, so a
    /// module can tell contacts; the data is deleted right after every module has run.
    async fn user_removed(&self, _server: &Arc<Server>, _user: &BareJid) {}

    /// The server is stopping: its sessions have closed and storage is still open. A module
    /// that holds writes back (last activity) stores them here.
    async fn shutdown(&self, _server: &Arc<Server>) {}
}

/// One IQ registration: the target it answers for and the module.
type IqRoute = (IqTarget, Arc<dyn Module>);

/// The loaded modules, in hook order, and the IQ dispatch table built from them.
#[derive(Default)]
pub struct Modules {
    list: Vec<Arc<dyn Module>>,
    /// Keyed by namespace so a lookup borrows the payload's `&str` without allocating.
    iq: HashMap<&'static str, Vec<IqRoute>>,
}

impl Modules {
    pub fn new() -> Modules {
        Modules::default()
    }

    /// Load a module. Panics on a duplicate IQ registration: that is a wiring bug at start-up,
    /// never reachable from the network.
    pub fn load(&mut self, module: Arc<dyn Module>) {
        for &(target, ns) in module.iqs() {
            let handlers = self.iq.entry(ns).or_default();
            if let Some((_, previous)) = handlers.iter().find(|(t, _)| *t == target) {
                panic!(
                    "two modules handle {ns} ({target:?}): {} and {}",
                    previous.name(),
                    module.name()
                );
            }
            handlers.push((target, module.clone()));
        }
        self.list.push(module);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Module>> {
        self.list.iter()
    }

    pub fn iq_handler(&self, target: IqTarget, ns: &str) -> Option<&Arc<dyn Module>> {
        self.iq
            .get(ns)?
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, m)| m)
    }

    /// The module that turns on `ns` inline in a XEP-0386 `<bind/>`.
    pub fn bind2_handler(&self, ns: &str) -> Option<&Arc<dyn Module>> {
        self.list.iter().find(|m| m.bind2_features().contains(&ns))
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|m| m.name()).collect()
    }
}

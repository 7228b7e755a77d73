//! Test harnesses shared by the module tests: a server on an in-memory store with bound
//! sessions whose queues the tests drain ([`Client`], [`server`]), and the roster/presence kit
//! ([`roster_kit`]) with the RFC 6121 example accounts.
#![allow(clippy::unwrap_used)]

use crate::offline::parse_stored;
use franca_core::session::Outbound;
use franca_core::{Config, Module, Modules, Server, Session, SessionEvent};
use franca_xml::{Element, Node};
use jid::FullJid;
use std::sync::Arc;

/// Accounts every test server has.
pub(crate) const USERS: &[&str] = &["juliet", "romeo", "nurse", "benvolio"];

pub(crate) async fn server(modules: Vec<Arc<dyn Module>>) -> Arc<Server> {
    server_with(Config::default(), modules).await
}

pub(crate) async fn server_with(config: Config, modules: Vec<Arc<dyn Module>>) -> Arc<Server> {
    let store = franca_store::open("sqlite::memory:")
        .await
        .expect("in-memory store");
    for u in USERS {
        store
            .create_user(&format!("{u}@localhost"), &[])
            .await
            .expect("create user");
    }
    let mut loaded = Modules::new();
    for m in modules {
        loaded.load(m);
    }
    Server::new(config, store, loaded)
}

/// Parse test XML (in a `jabber:client` stream), ignoring whitespace between elements and
/// attribute order.
pub(crate) fn xml(s: &str) -> Element {
    normalise(parse_stored(s).unwrap_or_else(|| panic!("test XML does not parse: {s}")))
}

pub(crate) fn normalise(mut el: Element) -> Element {
    el.attrs.sort();
    let has_elements = el.elements().next().is_some();
    el.children = el
        .children
        .into_iter()
        .filter_map(|n| match n {
            Node::Text(t) if has_elements && t.trim().is_empty() => None,
            Node::Element(e) => Some(Node::Element(normalise(e))),
            other => Some(other),
        })
        .collect();
    el
}

/// One bound resource and its outbound queue.
pub(crate) struct Client {
    pub(crate) server: Arc<Server>,
    pub(crate) session: Arc<Session>,
    rx: franca_core::outbox::Receiver,
}

impl Client {
    /// Bind `jid` (no presence sent yet).
    pub(crate) async fn bind(server: &Arc<Server>, jid: &str) -> Client {
        let jid = FullJid::new(jid).expect("full JID");
        let bound = server.bind(jid).await;
        Client {
            server: server.clone(),
            session: bound.session,
            rx: bound.rx,
        }
    }

    /// Bind `jid` and mark it available with `priority`, as the presence module does on
    /// initial presence, then emit `SessionEvent::Available`.
    pub(crate) async fn online(server: &Arc<Server>, jid: &str, priority: i8) -> Client {
        let c = Client::bind(server, jid).await;
        {
            let mut p = c.session.presence();
            p.available = true;
            p.priority = priority;
            p.interested = true;
        }
        server
            .emit(&SessionEvent::Available(c.session.clone()))
            .await;
        c
    }

    /// Send a stanza as this client.
    pub(crate) async fn send(&self, stanza: &str) {
        self.server
            .route_from_session(&self.session, xml(stanza))
            .await;
    }

    /// The next queued item, if any.
    pub(crate) fn next(&mut self) -> Option<Outbound> {
        self.rx.try_recv()
    }

    /// The next queued stanza, parsed; panics on a stream close.
    pub(crate) fn recv(&mut self) -> Option<Element> {
        match self.next()? {
            Outbound::Xml(s) => Some(xml(&s)),
            // What the connection would write: the shared bytes with this session's `to`.
            Outbound::Fanout(f) => Some(xml(&f.to(self.session.jid.as_str()))),
            Outbound::Close(e, t) => panic!("stream closed: {e} {t:?}"),
        }
    }

    /// Assert that the next stanza is `want`.
    #[track_caller]
    pub(crate) fn expect(&mut self, want: &str) {
        let got = self.recv().map(|e| e.to_xml());
        assert_eq!(
            got.as_deref(),
            Some(xml(want).to_xml().as_str()),
            "to {}",
            self.session.jid
        );
    }

    /// Assert that the next stanza is `want` once its (generated) `id` is replaced by `id`.
    #[track_caller]
    pub(crate) fn expect_with_id(&mut self, id: &str, want: &str) {
        let got = self.recv().map(|mut e| {
            assert!(e.attr("id").is_some_and(|i| !i.is_empty()), "no id: {e:?}");
            e.set_attr("id", id);
            normalise(e).to_xml()
        });
        assert_eq!(
            got.as_deref(),
            Some(xml(want).to_xml().as_str()),
            "to {}",
            self.session.jid
        );
    }

    /// Assert that nothing is queued.
    #[track_caller]
    pub(crate) fn silent(&mut self) {
        if let Some(o) = self.next() {
            panic!("{} expected nothing, got {o:?}", self.session.jid);
        }
    }
}

/// Juliet and Romeo from the RFC 6121 examples, on a file-backed store that can restart.
pub(crate) mod roster_kit {
    use crate::presence::{Presence, parse_stanza};
    use franca_core::{Config, Modules, Outbound};
    use franca_core::{Server, Session};
    use franca_proto::ns::NS_CLIENT;
    use franca_store::{RosterItem, Subscription};
    use jid::FullJid;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Env {
        pub server: Arc<Server>,
        dir: PathBuf,
    }

    impl Drop for Env {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

    async fn server_on(dir: &std::path::Path) -> Arc<Server> {
        let url = format!("sqlite://{}/db", dir.display());
        let store = franca_store::open(&url).await.expect("open the test store");
        let mut modules = Modules::new();
        modules.load(Arc::new(crate::roster::Roster));
        modules.load(Arc::new(Presence));
        Server::new(Config::default(), store, modules)
    }

    impl Env {
        /// A fresh server on `localhost` with these accounts.
        pub async fn new(users: &[&str]) -> Env {
            let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("franca-im-presence-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create the test directory");
            let server = server_on(&dir).await;
            for u in users {
                server
                    .store
                    .create_user(u, &[])
                    .await
                    .expect("create a test account");
            }
            Env { server, dir }
        }

        /// A new server process on the same database (every session is gone).
        pub async fn restart(&mut self) {
            self.server = server_on(&self.dir).await;
        }

        /// Bind a resource that has neither requested the roster nor sent presence.
        pub async fn bind(&self, jid: &str) -> Client {
            let jid = FullJid::new(jid).expect("a full JID");
            let bound = self.server.bind(jid).await;
            Client {
                server: self.server.clone(),
                session: bound.session,
                rx: bound.rx,
            }
        }

        /// Bind, request the roster, send initial presence, and drain what that produced.
        pub async fn online(&self, jid: &str) -> Client {
            let mut c = self.bind(jid).await;
            c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
                .await;
            c.send("<presence/>").await;
            c.recv();
            c
        }
    }

    pub struct Client {
        pub server: Arc<Server>,
        pub session: Arc<Session>,
        rx: franca_core::outbox::Receiver,
    }

    impl Client {
        /// Send a stanza as this client would (the router stamps 'from').
        pub async fn send(&self, xml: &str) {
            let stanza = parse_stanza(xml).expect("the test stanza parses");
            self.server.route_from_session(&self.session, stanza).await;
        }

        /// Everything queued for this client so far, serialised as on the wire, with the
        /// generated ids of roster pushes replaced by `push`.
        pub fn recv(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Some(o) = self.rx.try_recv() {
                match o {
                    Outbound::Xml(xml) => {
                        let mut el = parse_stanza(&xml).expect("delivered XML parses");
                        if el.name == "iq" && el.attr("id").is_some_and(|i| i.starts_with("push")) {
                            el.set_attr("id", "push");
                        }
                        out.push(el.to_xml_in(NS_CLIENT));
                    }
                    Outbound::Fanout(f) => {
                        let el = parse_stanza(&f.to(self.session.jid.as_str()))
                            .expect("delivered XML parses");
                        out.push(el.to_xml_in(NS_CLIENT));
                    }
                    Outbound::Close(e, _) => out.push(format!("close {e}")),
                }
            }
            out
        }

        /// The stream ends.
        pub async fn close(&self) {
            self.server.session_closed(&self.session).await;
        }
    }

    pub const J: &str = "juliet@localhost";
    pub const R: &str = "romeo@localhost";
    pub const JB: &str = "juliet@localhost/balcony";
    pub const RO: &str = "romeo@localhost/orchard";

    /// Juliet and Romeo online, with a mutual (`both`) subscription; queues drained.
    pub async fn lovers() -> (Env, Client, Client) {
        let env = Env::new(&[J, R]).await;
        let mut j = env.online(JB).await;
        let mut r = env.online(RO).await;
        j.send("<presence type='subscribe' to='romeo@localhost'/>")
            .await;
        r.send("<presence type='subscribed' to='juliet@localhost'/>")
            .await;
        r.send("<presence type='subscribe' to='juliet@localhost'/>")
            .await;
        j.send("<presence type='subscribed' to='romeo@localhost'/>")
            .await;
        j.recv();
        r.recv();
        let both = |i: Option<RosterItem>| i.map(|i| (i.subscription, i.ask, i.pending_in));
        assert_eq!(
            both(env.server.store.roster_item(J, R).await.expect("item")),
            Some((Subscription::Both, false, None))
        );
        assert_eq!(
            both(env.server.store.roster_item(R, J).await.expect("item")),
            Some((Subscription::Both, false, None))
        );
        (env, j, r)
    }

    /// The expected form of a roster push to `to` at version `ver` carrying `item`.
    pub fn push(to: &str, ver: i64, item: &str) -> String {
        format!(
            "<iq type='set' id='push' to='{to}'><query xmlns='jabber:iq:roster' ver='{ver}'>\
             {item}</query></iq>"
        )
    }
}

//! XEP-0030 Service Discovery for the server JID and for accounts' bare JIDs.
//!
//! The server is `<identity category='server' type='im'/>` with the features every loaded module
//! declares ([`Module::server_features`]); an account is `<identity category='account'
//! type='registered'/>` with the features of [`Module::account_features`], plus `<identity
//! category='pubsub' type='pep'/>` when XEP-0163 PEP is loaded, whose nodes the requester may
//! see are the account's items. The server's items are the services hosted under its domain
//! ([`Module::services`], e.g. the MUC service `conference.example.org`) and the XEP-0114
//! components connected now (see [`component_items`]); node queries get `item-not-found`.
//!
//! An account answers the user itself and the contacts allowed to see its presence (a `from` or
//! `both` subscription), as Prosody does; anyone else gets `service-unavailable`, the answer for
//! an account that does not exist, so disco does not reveal which accounts exist.

use crate::last::subscribed_from;
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_CSI, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_SM};
use franca_xml::Element;
use std::collections::BTreeSet;
use std::sync::Arc;

pub struct Disco;

/// The server identity's human-readable name.
pub const SERVER_NAME: &str = "Franca";

fn identity(category: &str, kind: &str, name: Option<&str>) -> Element {
    let mut el = Element::new("identity", NS_DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if let Some(n) = name {
        el.set_attr("name", n);
    }
    el
}

/// The disco#info result: identity, then features sorted and without duplicates.
fn info(identity: Element, features: BTreeSet<&str>) -> Element {
    let mut query = Element::new("query", NS_DISCO_INFO).with_child(identity);
    for f in features {
        query.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
    }
    query
}

fn pep_loaded(server: &Server) -> bool {
    server.modules.iter().any(|m| m.name() == "pep")
}

#[async_trait::async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[
            (IqTarget::Server, NS_DISCO_INFO),
            (IqTarget::Server, NS_DISCO_ITEMS),
            (IqTarget::Account, NS_DISCO_INFO),
            (IqTarget::Account, NS_DISCO_ITEMS),
        ]
    }

    fn server_features(&self) -> &'static [&'static str] {
        // XEP-0198 and XEP-0352 are stream features every c2s transport implements (no
        // module); they are listed here so disco tells the whole story.
        &[NS_DISCO_INFO, NS_DISCO_ITEMS, NS_SM, NS_CSI]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_DISCO_INFO, NS_DISCO_ITEMS]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        let Some(payload) = req.payload() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let ns = payload.ns.as_str();
        if req.is_set() || payload.name != "query" {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let account = req.to.node().is_some();
        if account
            && !req.from_self()
            && !subscribed_from(server, &req.to.to_bare(), &req.from.to_bare()).await
        {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        if payload.attr("node").is_some_and(|n| !n.is_empty()) {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        if ns == NS_DISCO_ITEMS {
            let mut query = Element::new("query", NS_DISCO_ITEMS);
            if !account {
                // The services hosted under this domain (`conference.example.org`).
                let suffix = format!(".{}", req.to.domain());
                for s in server.services().filter(|s| s.domain.ends_with(&suffix)) {
                    query.push(
                        Element::new("item", NS_DISCO_ITEMS)
                            .with_attr("jid", s.domain.as_str())
                            .with_attr("name", s.name),
                    );
                }
                for item in component_items(server, req.to.domain().as_str()) {
                    query.push(item);
                }
            }
            if account && pep_loaded(server) {
                // XEP-0163 §8: the account's PEP nodes the requester may see.
                let items =
                    crate::pep::Pep::disco_items(server, &req.to.to_bare(), &req.from.to_bare())
                        .await;
                for item in items {
                    query.push(item);
                }
            }
            return Ok(Some(query));
        }
        let reply = if account {
            let features = server
                .modules
                .iter()
                .flat_map(|m| m.account_features().iter().copied())
                .collect();
            let mut reply = info(identity("account", "registered", None), features);
            if pep_loaded(server) {
                // XEP-0163 §1: the account is also a virtual PubSub service.
                reply.children.insert(
                    1,
                    franca_xml::Node::Element(identity("pubsub", "pep", None)),
                );
            }
            reply
        } else {
            let features = server
                .modules
                .iter()
                .flat_map(|m| m.server_features().iter().copied())
                .collect();
            info(identity("server", "im", Some(SERVER_NAME)), features)
        };
        Ok(Some(reply))
    }
}

/// XEP-0114 components connected now, as items of the served domain `domain`: those under it
/// (`irc.example.org` for `example.org`), and those under no served domain at all, which
/// belong to the whole server. The configured `name` is shown; the component answers its own
/// disco#info (a gateway's identity), since the router hands it everything on its domain.
fn component_items(server: &Server, domain: &str) -> Vec<Element> {
    let suffix = format!(".{domain}");
    let served = &server.config.server.domains;
    server
        .components
        .domains()
        .into_iter()
        .filter(|c| c.ends_with(&suffix) || !served.iter().any(|d| c.ends_with(&format!(".{d}"))))
        .map(|c| {
            let name = server
                .config
                .component
                .iter()
                .find(|cc| cc.domain == c)
                .and_then(|cc| cc.name.clone());
            let mut item = Element::new("item", NS_DISCO_ITEMS).with_attr("jid", c);
            if let Some(name) = name {
                item.set_attr("name", name);
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};
    use franca_store::{RosterItem, Subscription};

    async fn disco_server() -> Arc<Server> {
        server(vec![
            Arc::new(crate::blocking::Blocking),
            Arc::new(crate::ping::Ping),
            Arc::new(crate::time::Time),
            Arc::new(Disco),
        ])
        .await
    }

    #[tokio::test]
    async fn xep0030_info_of_the_server_lists_identity_and_every_module_feature() {
        let server = disco_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='info1' to='localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#info'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='info1' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='http://jabber.org/protocol/disco#info'>
                 <identity category='server' type='im' name='Franca'/>
                 <feature var='http://jabber.org/protocol/disco#info'/>
                 <feature var='http://jabber.org/protocol/disco#items'/>
                 <feature var='urn:xmpp:blocking'/>
                 <feature var='urn:xmpp:csi:0'/>
                 <feature var='urn:xmpp:ping'/>
                 <feature var='urn:xmpp:sm:3'/>
                 <feature var='urn:xmpp:time'/>
               </query>
             </iq>",
        );
        juliet.silent();
    }

    #[tokio::test]
    async fn xep0030_items_of_the_server_are_empty() {
        let server = disco_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='items1' to='localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#items'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='items1' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='http://jabber.org/protocol/disco#items'/>
             </iq>",
        );
    }

    /// A component link that keeps what the router hands it.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<Element>>);

    impl franca_core::external::ComponentLink for Recorder {
        fn send(&self, stanza: &Element) -> bool {
            self.0.lock().expect("lock").push(stanza.clone());
            true
        }
    }

    #[tokio::test]
    async fn xep0114_connected_components_are_items_and_answer_their_own_info() {
        let mut config = franca_core::Config::default();
        for (domain, name) in [("irc.localhost", Some("IRC gateway")), ("gw.example", None)] {
            config.component.push(franca_core::config::ComponentConfig {
                domain: domain.into(),
                secret: "s".into(),
                name: name.map(Into::into),
            });
        }
        let server = crate::testing::server_with(config, vec![Arc::new(Disco)]).await;
        let irc = Arc::new(Recorder::default());
        let gw = Arc::new(Recorder::default());
        assert!(
            server
                .components
                .connect("irc.localhost", irc.clone())
                .is_ok()
        );
        assert!(server.components.connect("gw.example", gw.clone()).is_ok());
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='items2' to='localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#items'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='items2' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='http://jabber.org/protocol/disco#items'>
                 <item jid='gw.example'/>
                 <item jid='irc.localhost' name='IRC gateway'/>
               </query>
             </iq>",
        );
        juliet
            .send(
                "<iq type='get' id='info2' to='irc.localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#info'/>
                 </iq>",
            )
            .await;
        let got = irc.0.lock().expect("lock").clone();
        assert_eq!(got.len(), 1, "the component gets its disco#info query");
        assert_eq!(got[0].attr("from"), Some("juliet@localhost/balcony"));
        assert!(got[0].has_child("query", NS_DISCO_INFO));
        juliet.silent();
        // Gone again: no longer an item.
        let link: Arc<dyn franca_core::external::ComponentLink> = irc;
        server.components.disconnect("irc.localhost", &link);
        juliet
            .send(
                "<iq type='get' id='items3' to='localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#items'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='items3' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='http://jabber.org/protocol/disco#items'>
                 <item jid='gw.example'/>
               </query>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0030_unknown_node_is_item_not_found() {
        let server = disco_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='n1' to='localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#info' node='http://example.org/x'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='error' id='n1' from='localhost' to='juliet@localhost/balcony'>
               <error type='cancel'>
                 <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
               </error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0030_info_of_own_account() {
        let server = disco_server().await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(
                "<iq type='get' id='acc1'>
                   <query xmlns='http://jabber.org/protocol/disco#info'/>
                 </iq>",
            )
            .await;
        juliet.expect(
            "<iq type='result' id='acc1' from='juliet@localhost' to='juliet@localhost/balcony'>
               <query xmlns='http://jabber.org/protocol/disco#info'>
                 <identity category='account' type='registered'/>
                 <feature var='http://jabber.org/protocol/disco#info'/>
                 <feature var='http://jabber.org/protocol/disco#items'/>
                 <feature var='urn:xmpp:blocking'/>
                 <feature var='urn:xmpp:ping'/>
               </query>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0030_account_info_for_subscribed_contact_but_not_strangers() {
        let server = disco_server().await;
        let item = RosterItem {
            jid: "romeo@localhost".into(),
            subscription: Subscription::From,
            ..RosterItem::default()
        };
        server
            .store
            .put_roster_item("juliet@localhost", &item)
            .await
            .expect("roster");
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(
                "<iq type='get' id='c1' to='juliet@localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#items'/>
                 </iq>",
            )
            .await;
        romeo.expect(
            "<iq type='result' id='c1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <query xmlns='http://jabber.org/protocol/disco#items'/>
             </iq>",
        );
        let mut nurse = Client::online(&server, "nurse@localhost/chamber", 0).await;
        nurse
            .send(
                "<iq type='get' id='s1' to='juliet@localhost'>
                   <query xmlns='http://jabber.org/protocol/disco#info'/>
                 </iq>",
            )
            .await;
        nurse.expect(
            "<iq type='error' id='s1' from='juliet@localhost' to='nurse@localhost/chamber'>
               <error type='cancel'>
                 <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
               </error>
             </iq>",
        );
    }
}

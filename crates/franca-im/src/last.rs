//! XEP-0012 Last Activity (`jabber:iq:last`): the server's uptime when asked at its own JID
//! ("Server and Component Query"), and for an account's bare JID ("Offline User Query") the
//! seconds since its last resource went offline, with the status of that unavailable presence —
//! `0` while a resource is available. Only the user and the entities allowed to see the user's
//! presence (a `from` or `both` subscription) may ask; others get `forbidden` ("Offline User
//! Query", "Security Considerations"). Queries to a full JID go to the client itself.

use franca_core::util::now_us;
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server, SessionEvent};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_LAST;
use franca_store::{LastActivity, StoreError, Subscription};
use franca_xml::Element;
use jid::BareJid;
use std::sync::Arc;

pub struct Last;

/// Whether `contact` may see `user`'s presence: a `from` or `both` subscription in the user's
/// roster (RFC 6121 §2.1.2.5). A storage error counts as no.
pub(crate) async fn subscribed_from(server: &Server, user: &BareJid, contact: &BareJid) -> bool {
    match server
        .store
        .roster_item(user.as_str(), contact.as_str())
        .await
    {
        Ok(Some(item)) => matches!(item.subscription, Subscription::From | Subscription::Both),
        Ok(None) => false,
        Err(e) => {
            tracing::error!(%user, "storage error reading roster item: {e}");
            false
        }
    }
}

fn query(seconds: u64, status: &str) -> Element {
    Element::new("query", NS_LAST)
        .with_attr("seconds", seconds.to_string())
        .with_text(status)
}

fn now_seconds() -> i64 {
    now_us().div_euclid(1_000_000)
}

#[async_trait::async_trait]
impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Server, NS_LAST), (IqTarget::Account, NS_LAST)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_LAST]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_LAST]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        if req.is_set() || !req.payload().is_some_and(|p| p.is("query", NS_LAST)) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        if req.to.node().is_none() {
            return Ok(Some(query(server.started.elapsed().as_secs(), "")));
        }
        let user = req.to.to_bare();
        if !req.from_self() && !subscribed_from(server, &user, &req.from.to_bare()).await {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let online = server
            .sessions
            .resources(&user)
            .iter()
            .any(|s| s.presence().available);
        if online {
            return Ok(Some(query(0, "")));
        }
        match server.store.last_activity(user.as_str()).await {
            Ok(Some(last)) => {
                let ago = now_seconds().saturating_sub(last.seconds).max(0);
                Ok(Some(query(ago.unsigned_abs(), &last.status)))
            }
            // Never logged out since the server started recording.
            Ok(None) => Err(StanzaError::new(Cond::ItemNotFound)),
            Err(e) => {
                tracing::error!(%user, "storage error reading last activity: {e}");
                Err(StanzaError::new(Cond::InternalServerError))
            }
        }
    }

    /// The last resource of an account went away: remember when, and the status of its
    /// unavailable presence if the presence module kept it.
    async fn session_event(&self, server: &Arc<Server>, event: &SessionEvent) {
        let SessionEvent::Closed(session) = event else {
            return;
        };
        let user = session.bare();
        if !server.sessions.resources(&user).is_empty() {
            return;
        }
        let status = {
            let p = session.presence();
            p.last
                .as_ref()
                .filter(|l| l.attr("type") == Some("unavailable"))
                .and_then(|l| l.elements().find(|c| c.name == "status"))
                .map(Element::text)
                .unwrap_or_default()
        };
        let last = LastActivity {
            seconds: now_seconds(),
            status,
        };
        match server.store.set_last_activity(user.as_str(), &last).await {
            // The account was just deleted (its sessions are closed after its data).
            Ok(()) | Err(StoreError::UnknownUser(_)) => {}
            Err(e) => tracing::error!(%user, "storage error storing last activity: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};
    use franca_proto::ns::NS_CLIENT;
    use franca_store::RosterItem;

    async fn last_server() -> Arc<Server> {
        let server = server(vec![Arc::new(Last)]).await;
        let item = RosterItem {
            jid: "romeo@localhost".into(),
            subscription: Subscription::Both,
            ..RosterItem::default()
        };
        server
            .store
            .put_roster_item("juliet@localhost", &item)
            .await
            .expect("roster");
        server
    }

    fn seconds(reply: &Element) -> Option<u64> {
        reply.child("query", NS_LAST)?.attr("seconds")?.parse().ok()
    }

    #[tokio::test]
    async fn xep0012_server_query_is_uptime() {
        let server = last_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='last3' to='localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        let reply = romeo.recv().expect("reply");
        assert_eq!(reply.attr("type"), Some("result"));
        assert!(seconds(&reply).is_some_and(|s| s < 60), "{reply:?}");
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_needs_a_presence_subscription() {
        let server = last_server().await;
        let mut nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        nurse
            .send("<iq type='get' id='last1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        nurse.expect(
            "<iq type='error' id='last1' from='juliet@localhost' to='nurse@localhost/kitchen'>
               <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_online_user_is_zero() {
        let server = last_server().await;
        let _juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='last1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        romeo.expect(
            "<iq type='result' id='last1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <query xmlns='jabber:iq:last' seconds='0'/>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0012_offline_user_query_after_logout_has_time_and_status() {
        let server = last_server().await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(
                "<iq type='get' id='n1' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>",
            )
            .await;
        romeo.expect(
            "<iq type='error' id='n1' from='juliet@localhost' to='romeo@localhost/orchard'>
               <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );

        let one = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let two = Client::online(&server, "juliet@localhost/chamber", 0).await;
        server.session_closed(&one.session).await;
        assert_eq!(
            server
                .store
                .last_activity("juliet@localhost")
                .await
                .expect("last"),
            None
        );
        two.session.presence().available = false;
        two.session.presence().last = Some(
            Element::new("presence", NS_CLIENT)
                .with_attr("type", "unavailable")
                .with_child(Element::new("status", NS_CLIENT).with_text("Heading Home")),
        );
        server.session_closed(&two.session).await;

        romeo
            .send("<iq type='get' id='last2' to='juliet@localhost'><query xmlns='jabber:iq:last'/></iq>")
            .await;
        let reply = romeo.recv().expect("reply");
        assert!(seconds(&reply).is_some_and(|s| s <= 2), "{reply:?}");
        assert_eq!(
            reply.child("query", NS_LAST).map(Element::text).as_deref(),
            Some("Heading Home")
        );
    }
}

//! XEP-0199 XMPP Ping: the server answers pings to its own JID ("Client-to-Server Ping")
//! and, like Prosody, to an account's bare JID on the account's behalf (the IQ never reaches a
//! client: RFC 6120 §10.5.4). A ping to a full JID is the client's to answer.

use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_PING;
use std::sync::Arc;

pub struct Ping;

#[async_trait::async_trait]
impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Server, NS_PING), (IqTarget::Account, NS_PING)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_PING]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_PING]
    }

    async fn handle_iq(&self, _server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        match req.payload() {
            Some(p) if p.is("ping", NS_PING) && !req.is_set() => Ok(None),
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};

    #[tokio::test]
    async fn xep0199_client_to_server_ping() {
        let server = server(vec![Arc::new(Ping)]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<iq type='get' id='c2s1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        juliet
            .expect("<iq type='result' id='c2s1' from='localhost' to='juliet@localhost/balcony'/>");
    }

    #[tokio::test]
    async fn xep0199_ping_to_bare_jid_is_answered_for_the_account() {
        let server = server(vec![Arc::new(Ping)]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send("<iq type='get' id='p1' to='juliet@localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        romeo.expect(
            "<iq type='result' id='p1' from='juliet@localhost' to='romeo@localhost/orchard'/>",
        );
    }

    #[tokio::test]
    async fn xep0199_ping_set_is_bad_request() {
        let server = server(vec![Arc::new(Ping)]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<iq type='set' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        juliet.expect(
            "<iq type='error' id='p2' from='localhost' to='juliet@localhost/balcony'>
               <error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
    }
}

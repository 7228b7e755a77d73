//! XEP-0054 vcard-temp: every account has a vCard that anyone may read (an account that never
//! set one has an empty `<vCard/>`, as Prosody answers) and only the account itself may replace.
//! The server answers on the account's behalf (the IQ goes to the bare JID, XEP-0054 §3.1 and
//! §3.3), whether or not the user is online.
//!
//! With PEP on, a stored vCard's PHOTO is also published as the XEP-0084 avatar (XEP-0398
//! §3.2, in [`crate::pep::avatar`]).

use crate::offline::parse_stored;
use crate::pep::{Pep, avatar};
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_VCARD;
use franca_xml::Element;
use std::sync::Arc;

/// Largest vCard stored, serialised. Room for an embedded XEP-0153 avatar of the size clients
/// produce (a few hundred pixels square), well below the stanza limit.
pub const MAX_VCARD_BYTES: usize = 128 * 1024;

#[derive(Default)]
pub struct VCard {
    /// PEP with XEP-0398 conversion on: vCard PHOTOs are published there.
    pep: Option<Arc<Pep>>,
}

impl VCard {
    pub fn new(pep: Option<Arc<Pep>>) -> VCard {
        VCard {
            pep: pep.filter(|p| p.avatars().is_some()),
        }
    }
}

fn empty() -> Element {
    Element::new("vCard", NS_VCARD)
}

#[async_trait::async_trait]
impl Module for VCard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Account, NS_VCARD)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_VCARD]
    }

    fn account_features(&self) -> &'static [&'static str] {
        &[NS_VCARD]
    }

    async fn handle_iq(&self, server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        let user = req.to.to_bare();
        let Some(payload) = req.payload().filter(|p| p.is("vCard", NS_VCARD)) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if !req.is_set() {
            // XEP-0054 §3.1 (own vCard) and §3.3 (another user's).
            let stored = server.store.vcard(user.as_str()).await.map_err(|e| {
                tracing::error!(%user, "storage error reading vCard: {e}");
                StanzaError::new(Cond::InternalServerError)
            })?;
            let vcard = match stored {
                None => empty(),
                Some(xml) => parse_stored(&xml).unwrap_or_else(|| {
                    tracing::error!(%user, "stored vCard does not parse; answering an empty one");
                    empty()
                }),
            };
            return Ok(Some(vcard));
        }
        // §3.2: only the user may update their own vCard.
        if !req.from_self() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let xml = payload.to_xml();
        if xml.len() > MAX_VCARD_BYTES {
            return Err(StanzaError::new(Cond::NotAcceptable)
                .with_text(format!("vCard larger than {MAX_VCARD_BYTES} bytes")));
        }
        // Checked before storing: a PHOTO that is not base64 is refused, not converted.
        let photo = match &self.pep {
            Some(_) => avatar::vcard_photo(payload)?,
            None => None,
        };
        server
            .store
            .set_vcard(user.as_str(), &xml)
            .await
            .map_err(|e| {
                tracing::error!(%user, "storage error storing vCard: {e}");
                StanzaError::new(Cond::InternalServerError)
            })?;
        if let Some(pep) = &self.pep {
            avatar::publish_from_vcard(pep, server, &user, photo.as_ref()).await;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};

    const VCARD: &str =
        "<vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN><NICKNAME>JC</NICKNAME></vCard>";

    #[tokio::test]
    async fn xep0054_3_1_own_vcard_is_empty_until_set() {
        let server = server(vec![Arc::new(VCard::default())]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<iq type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")
            .await;
        juliet.expect(
            "<iq type='result' id='v1' from='juliet@localhost' to='juliet@localhost/balcony'>
               <vCard xmlns='vcard-temp'/>
             </iq>",
        );
    }

    #[tokio::test]
    async fn xep0054_3_2_update_own_vcard_then_3_3_others_read_it() {
        let server = server(vec![Arc::new(VCard::default())]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send(&format!("<iq type='set' id='v2'>{VCARD}</iq>"))
            .await;
        juliet.expect(
            "<iq type='result' id='v2' from='juliet@localhost' to='juliet@localhost/balcony'/>",
        );
        juliet
            .send("<iq type='get' id='v3'><vCard xmlns='vcard-temp'/></iq>")
            .await;
        juliet.expect(&format!(
            "<iq type='result' id='v3' from='juliet@localhost' to='juliet@localhost/balcony'>{VCARD}</iq>"
        ));
        // Anyone may read it, with the user offline too.
        server.session_closed(&juliet.session).await;
        let mut nurse = Client::online(&server, "nurse@localhost/kitchen", 0).await;
        nurse
            .send("<iq type='get' id='v4' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>")
            .await;
        nurse.expect(&format!(
            "<iq type='result' id='v4' from='juliet@localhost' to='nurse@localhost/kitchen'>{VCARD}</iq>"
        ));
    }

    #[tokio::test]
    async fn xep0054_3_2_only_the_user_may_update_it() {
        let server = server(vec![Arc::new(VCard::default())]).await;
        let mut romeo = Client::online(&server, "romeo@localhost/orchard", 0).await;
        romeo
            .send(&format!(
                "<iq type='set' id='v5' to='juliet@localhost'>{VCARD}</iq>"
            ))
            .await;
        romeo.expect(
            "<iq type='error' id='v5' from='juliet@localhost' to='romeo@localhost/orchard'>
               <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>
             </iq>",
        );
        assert_eq!(
            server.store.vcard("juliet@localhost").await.expect("vcard"),
            None
        );
    }

    #[tokio::test]
    async fn xep0054_oversized_vcard_is_not_acceptable() {
        let server = server(vec![Arc::new(VCard::default())]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        let photo = "A".repeat(MAX_VCARD_BYTES);
        juliet
            .send(&format!(
                "<iq type='set' id='v6'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>"
            ))
            .await;
        juliet.expect(&format!(
            "<iq type='error' id='v6' from='juliet@localhost' to='juliet@localhost/balcony'>
               <error type='modify'>
                 <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>
                 <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>vCard larger than {MAX_VCARD_BYTES} bytes</text>
               </error>
             </iq>"
        ));
    }
}

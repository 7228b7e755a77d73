//! XEP-0054 vcard-temp: every account has a vCard that anyone may read (an account that never
//! set one has an empty `<vCard/>`, as Prosody answers) and only the account itself may replace.
//! The server answers on the account's behalf (the IQ goes to the bare JID, XEP-0054 §3.1 and
//! §3.3), whether or not the user is online.

use crate::offline::parse_stored;
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_VCARD;
use franca_xml::Element;
use std::sync::Arc;

/// Largest vCard stored, serialised. Room for an embedded XEP-0153 avatar of the size clients
/// produce (a few hundred pixels square), well below the stanza limit.
pub const MAX_VCARD_BYTES: usize = 128 * 1024;

pub struct VCard;

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
        server
            .store
            .set_vcard(user.as_str(), &xml)
            .await
            .map_err(|e| {
                tracing::error!(%user, "storage error storing vCard: {e}");
                StanzaError::new(Cond::InternalServerError)
            })?;
        Ok(None)
    }
}

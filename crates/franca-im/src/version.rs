//! XEP-0092 Software Version: the server's name and version. The operating system is not
//! disclosed: XEP-0092 makes `<os/>` optional, and it mostly helps attackers.

use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_VERSION;
use franca_xml::Element;
use std::sync::Arc;

pub struct Version;

/// The server's software name.
pub const NAME: &str = "Franca";

#[async_trait::async_trait]
impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Server, NS_VERSION)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_VERSION]
    }

    async fn handle_iq(&self, _server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        match req.payload() {
            Some(p) if p.is("query", NS_VERSION) && !req.is_set() => Ok(Some(
                Element::new("query", NS_VERSION)
                    .with_child(Element::new("name", NS_VERSION).with_text(NAME))
                    .with_child(
                        Element::new("version", NS_VERSION).with_text(env!("CARGO_PKG_VERSION")),
                    ),
            )),
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server};

    #[tokio::test]
    async fn xep0092_server_reports_name_and_version_without_os() {
        let server = server(vec![Arc::new(Version)]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<iq type='get' id='version_1' to='localhost'><query xmlns='jabber:iq:version'/></iq>")
            .await;
        juliet.expect(&format!(
            "<iq type='result' id='version_1' from='localhost' to='juliet@localhost/balcony'>
               <query xmlns='jabber:iq:version'>
                 <name>Franca</name>
                 <version>{}</version>
               </query>
             </iq>",
            env!("CARGO_PKG_VERSION")
        ));
    }
}

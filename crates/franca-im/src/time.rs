//! XEP-0202 Entity Time: the server's current time in UTC (`<tzo>+00:00</tzo>`: the server
//! does not reveal the time zone of the machine it runs on) as a XEP-0082 date-time.

use franca_core::util::{now_us, xep0082_datetime};
use franca_core::{IqRequest, IqResult, IqTarget, Module, Server};
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::NS_TIME;
use franca_xml::Element;
use std::sync::Arc;

pub struct Time;

/// The `<time/>` payload for `us` microseconds since the Unix epoch.
pub fn time_element(us: i64) -> Element {
    Element::new("time", NS_TIME)
        .with_child(Element::new("tzo", NS_TIME).with_text("+00:00"))
        .with_child(Element::new("utc", NS_TIME).with_text(xep0082_datetime(us)))
}

#[async_trait::async_trait]
impl Module for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn iqs(&self) -> &'static [(IqTarget, &'static str)] {
        &[(IqTarget::Server, NS_TIME)]
    }

    fn server_features(&self) -> &'static [&'static str] {
        &[NS_TIME]
    }

    async fn handle_iq(&self, _server: &Arc<Server>, req: IqRequest<'_>) -> IqResult {
        match req.payload() {
            Some(p) if p.is("time", NS_TIME) && !req.is_set() => Ok(Some(time_element(now_us()))),
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Client, server, xml};

    #[test]
    fn xep0202_payload_is_utc_with_zero_offset() {
        assert_eq!(
            time_element(1_700_000_000_123_000).to_xml(),
            xml("<time xmlns='urn:xmpp:time'><tzo>+00:00</tzo><utc>2023-11-14T22:13:20.123Z</utc></time>")
                .to_xml()
        );
    }

    #[tokio::test]
    async fn xep0202_server_answers_time_request() {
        let server = server(vec![Arc::new(Time)]).await;
        let mut juliet = Client::online(&server, "juliet@localhost/balcony", 0).await;
        juliet
            .send("<iq type='get' id='time_1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>")
            .await;
        let reply = juliet.recv().expect("reply");
        assert_eq!(reply.attr("type"), Some("result"));
        assert_eq!(reply.attr("id"), Some("time_1"));
        let time = reply.child("time", NS_TIME).expect("time");
        assert_eq!(
            time.child("tzo", NS_TIME).map(Element::text).as_deref(),
            Some("+00:00")
        );
        let utc = time
            .child("utc", NS_TIME)
            .map(Element::text)
            .unwrap_or_default();
        assert!(
            utc.len() >= 20 && utc.ends_with('Z') && utc.as_bytes()[10] == b'T',
            "{utc}"
        );
    }
}

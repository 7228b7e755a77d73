//! Building the answer to a XEP-0313 query (§4.2): one `<message/>` per archived message,
//! carrying `<result queryid id><forwarded><delay/><message/></forwarded></result>`, sent to
//! the requesting resource before the IQ result, which carries `<fin complete>` with the
//! XEP-0059 `<set>` (`first`, `last`, `count`). `stable` is left out: its default, true, holds
//! (ids never change and nothing is reordered).

use super::query::NS_MAM;
use crate::offline::parse_stored;
use franca_core::util::xep0082_datetime;
use franca_proto::ns::{NS_CLIENT, NS_DELAY, NS_FORWARD, NS_RSM};
use franca_store::{ArchivePage, ArchivedMessage};
use franca_xml::Element;

/// The `<message/>` carrying one archived message to `to` (the requesting full JID), from the
/// archive `owner`. `None` when the stored XML no longer parses (a damaged row is skipped).
pub fn result_message(
    owner: &str,
    to: &str,
    queryid: Option<&str>,
    m: &ArchivedMessage,
) -> Option<Element> {
    result_message_edited(owner, to, queryid, m, &|_| {})
}

/// [`result_message`], with `edit` applied to the archived message first (a room leaves out
/// real JIDs the requester may not see).
pub fn result_message_edited(
    owner: &str,
    to: &str,
    queryid: Option<&str>,
    m: &ArchivedMessage,
    edit: &dyn Fn(&mut Element),
) -> Option<Element> {
    let mut original = parse_stored(&m.xml)?;
    original.ns = NS_CLIENT.to_owned();
    edit(&mut original);
    let mut result = Element::new("result", NS_MAM).with_attr("id", m.id.as_str());
    if let Some(q) = queryid {
        result.set_attr("queryid", q);
    }
    let domain = owner.split_once('@').map_or(owner, |(_, d)| d);
    let forwarded = Element::new("forwarded", NS_FORWARD)
        .with_child(
            Element::new("delay", NS_DELAY)
                .with_attr("from", domain)
                .with_attr("stamp", stamp(m.stamp_us)),
        )
        .with_child(original);
    Some(
        Element::new("message", NS_CLIENT)
            .with_attr("from", owner)
            .with_attr("to", to)
            .with_child(result.with_child(forwarded)),
    )
}

/// XEP-0082 date-time with microseconds, so stamps keep the archive's precision.
fn stamp(us: i64) -> String {
    let base = xep0082_datetime(us - us.rem_euclid(1_000_000));
    let micros = us.rem_euclid(1_000_000);
    match base.strip_suffix('Z') {
        Some(b) if micros != 0 => format!("{b}.{micros:06}Z"),
        _ => base,
    }
}

/// The `<fin/>` for `page`, in the order the results were sent.
pub fn fin(page: &ArchivePage, sent: &[&ArchivedMessage]) -> Element {
    let mut set = Element::new("set", NS_RSM);
    if let (Some(first), Some(last)) = (sent.first(), sent.last()) {
        set.push(Element::new("first", NS_RSM).with_text(first.id.as_str()));
        set.push(Element::new("last", NS_RSM).with_text(last.id.as_str()));
    }
    set.push(Element::new("count", NS_RSM).with_text(page.count.to_string()));
    Element::new("fin", NS_MAM)
        .with_attr("complete", if page.complete { "true" } else { "false" })
        .with_child(set)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{normalise, xml};

    fn archived(id: &str) -> ArchivedMessage {
        ArchivedMessage {
            owner: "juliet@capulet.lit".into(),
            id: id.into(),
            stamp_us: 1_278_803_305_000_001,
            with: "romeo@montague.lit".into(),
            outgoing: false,
            xml: "<message xmlns='jabber:client' from='romeo@montague.lit/orchard' \
                  to='juliet@capulet.lit/balcony' type='chat'><body>Hail</body></message>"
                .into(),
        }
    }

    #[test]
    fn xep0313_4_2_result_message() {
        let m = result_message(
            "juliet@capulet.lit",
            "juliet@capulet.lit/balcony",
            Some("f27"),
            &archived("28482"),
        )
        .unwrap();
        let expected = xml(
            "<message from='juliet@capulet.lit' to='juliet@capulet.lit/balcony'>\
             <result xmlns='urn:xmpp:mam:2' queryid='f27' id='28482'>\
             <forwarded xmlns='urn:xmpp:forward:0'>\
             <delay xmlns='urn:xmpp:delay' from='capulet.lit' stamp='2010-07-10T23:08:25.000001Z'/>\
             <message xmlns='jabber:client' from='romeo@montague.lit/orchard' \
             to='juliet@capulet.lit/balcony' type='chat'><body>Hail</body></message></forwarded></result></message>",
        );
        assert_eq!(normalise(m), expected);
        let mut damaged = archived("x");
        damaged.xml = "<message".into();
        assert!(result_message("a@b", "a@b/c", None, &damaged).is_none());
    }

    #[test]
    fn xep0313_4_2_fin_with_rsm_set() {
        let (a, b) = (archived("a"), archived("b"));
        let page = ArchivePage {
            messages: vec![a.clone(), b.clone()],
            complete: true,
            count: 7,
        };
        assert_eq!(
            normalise(fin(&page, &[&a, &b])),
            xml("<fin xmlns='urn:xmpp:mam:2' complete='true'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><first>a</first><last>b</last>\
                 <count>7</count></set></fin>")
        );
        let empty = ArchivePage::default();
        assert_eq!(
            normalise(fin(&empty, &[])),
            xml("<fin xmlns='urn:xmpp:mam:2' complete='false'>\
                 <set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set></fin>")
        );
    }
}

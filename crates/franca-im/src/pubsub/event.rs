//! XEP-0060 §7 notifications: the `<event xmlns='…#event'/>` payloads for a published item, a
//! retraction, a purge and a node deletion, and the headline message that carries them.

use super::NS_PUBSUB_EVENT;
use franca_proto::ns::NS_CLIENT;
use franca_xml::Element;

/// `<event><items node><item id>payload</item></items></event>` for a published item; `item`
/// is the stored `<item/>` (in the `pubsub` namespace), re-qualified for `#event`.
pub fn published(node: &str, item: &Element) -> Element {
    let mut out = Element::new("item", NS_PUBSUB_EVENT);
    out.attrs = item.attrs.clone();
    out.children = item.children.clone();
    event(
        Element::new("items", NS_PUBSUB_EVENT)
            .with_attr("node", node)
            .with_child(out),
    )
}

/// `<event><items node><retract id/></items></event>` (§7.2.2.1).
pub fn retracted(node: &str, id: &str) -> Element {
    event(
        Element::new("items", NS_PUBSUB_EVENT)
            .with_attr("node", node)
            .with_child(Element::new("retract", NS_PUBSUB_EVENT).with_attr("id", id)),
    )
}

/// `<event><purge node/></event>` (§8.5.2).
pub fn purged(node: &str) -> Element {
    event(Element::new("purge", NS_PUBSUB_EVENT).with_attr("node", node))
}

/// `<event><delete node/></event>` (§8.4.2).
pub fn deleted(node: &str) -> Element {
    event(Element::new("delete", NS_PUBSUB_EVENT).with_attr("node", node))
}

fn event(child: Element) -> Element {
    Element::new("event", NS_PUBSUB_EVENT).with_child(child)
}

/// The notification message from `from` to `to` (type `headline`, as XEP-0163 §4.3 shows).
pub fn message(from: &str, to: &str, id: &str, event: Element) -> Element {
    Element::new("message", NS_CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", "headline")
        .with_attr("id", id)
        .with_child(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::NS_PUBSUB;
    use crate::testing::xml;

    #[test]
    fn xep0060_7_1_2_event_carries_the_item() {
        let item = Element::new("item", NS_PUBSUB)
            .with_attr("id", "a1")
            .with_child(Element::new("metadata", "urn:xmpp:avatar:metadata"));
        let m = message(
            "j@l",
            "r@l/x",
            "n1",
            published("urn:xmpp:avatar:metadata", &item),
        );
        assert_eq!(
            xml(&m.to_xml()).to_xml(),
            xml("<message from='j@l' to='r@l/x' type='headline' id='n1'>
                   <event xmlns='http://jabber.org/protocol/pubsub#event'>
                     <items node='urn:xmpp:avatar:metadata'><item id='a1'>
                       <metadata xmlns='urn:xmpp:avatar:metadata'/></item></items>
                   </event></message>")
            .to_xml()
        );
    }

    #[test]
    fn xep0060_retract_purge_delete_events() {
        assert_eq!(
            retracted("n", "i").to_xml(),
            "<event xmlns='http://jabber.org/protocol/pubsub#event'><items node='n'><retract id='i'/></items></event>"
        );
        assert!(purged("n").to_xml().contains("<purge node='n'/>"));
        assert!(deleted("n").to_xml().contains("<delete node='n'/>"));
    }
}

//! XEP-0398 avatar conversion (issue 5) over real connections: a XEP-0084 avatar published by
//! one user is the XEP-0153 vCard PHOTO and presence hash a legacy contact sees, a vCard PHOTO
//! set by a legacy client is published as XEP-0084 data and metadata, a PHOTO that is not
//! base64 or too large is refused and not converted, and the hash is in the presence a room
//! shows of its occupants (the join is directed presence). The images and their SHA-1s were computed
//! outside the server (Python's hashlib and base64).

use crate::client::{Conn, is_error, is_result};
use crate::harness::{ALICE, BOB, Options, Server};

const META: &str = "urn:xmpp:avatar:metadata";
const DATA: &str = "urn:xmpp:avatar:data";
/// A PNG header of a 32×16 image and 40 filler bytes.
const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAQAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJw==";
const PNG_SHA1: &str = "1a967bc8e5a04b2789af9ab2913e702873ed98af";
/// A GIF header of a 20×10 image and 30 filler bytes (40 bytes).
const GIF_B64: &str = "R0lGODlhFAAKAGRlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn+AgQ==";
const GIF_SHA1: &str = "acfba048a79280f6b7a7c94079923f9609b334bc";

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB],
        ..Options::default()
    })
}

fn iq(c: &mut Conn, id: &str, kind: &str, to: Option<&str>, payload: &str) -> String {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    c.send(format!("<iq type='{kind}' id='{id}'{to}>{payload}</iq>"));
    c.wait_stanza(id, 15)
}

fn publish(c: &mut Conn, id: &str, node: &str, item: &str, payload: &str) -> String {
    iq(
        c,
        id,
        "set",
        None,
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>\
             <item id='{item}'>{payload}</item></publish></pubsub>"
        ),
    )
}

/// Alice and Bob see each other's presence.
fn befriend(alice: &mut Conn, bob: &mut Conn) {
    subscribe(alice, "alice@localhost", bob, "bob@localhost");
    subscribe(bob, "bob@localhost", alice, "alice@localhost");
}

/// `watcher` subscribes to `owner`'s presence and `owner` approves.
fn subscribe(watcher: &mut Conn, watcher_jid: &str, owner: &mut Conn, owner_jid: &str) {
    watcher.send(format!("<presence to='{owner_jid}' type='subscribe'/>"));
    owner.wait("a subscription request", 15, |t| {
        t.contains(&format!("from='{watcher_jid}'")) && t.contains("type='subscribe'")
    });
    owner.send(format!("<presence to='{watcher_jid}' type='subscribed'/>"));
    owner.ping("after-subscribed");
    watcher.ping("after-subscribed");
}

/// The `<photo/>` of the XEP-0153 update in the last presence from `from` in `text`.
fn photo_from(text: &str, from: &str) -> Option<String> {
    let presence = text
        .split("<presence")
        .filter(|p| p[..p.find('>').unwrap_or(p.len())].contains(&format!("from='{from}'")))
        .last()?;
    let presence = &presence[..presence.find("</presence>").unwrap_or(presence.len())];
    if presence.contains("<photo/>") {
        return Some(String::new());
    }
    let start = presence.find("<photo>")? + "<photo>".len();
    Some(presence[start..start + presence[start..].find("</photo>")?].to_owned())
}

#[test]
fn xep0398_pep_avatar_is_the_vcard_photo_and_presence_hash() {
    let s = start();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "legacy");
    alice.available();
    bob.available();
    befriend(&mut alice, &mut bob);

    // §2: the account feature.
    let info = iq(
        &mut alice,
        "info",
        "get",
        None,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        info.contains("var='urn:xmpp:pep-vcard-conversion:0'"),
        "{info}"
    );

    // Alice publishes with XEP-0084: data, then metadata.
    let r = publish(
        &mut alice,
        "d1",
        DATA,
        PNG_SHA1,
        &format!("<data xmlns='{DATA}'>{PNG_B64}</data>"),
    );
    assert!(is_result(&r), "{r}");
    let r = publish(
        &mut alice,
        "m1",
        META,
        PNG_SHA1,
        &format!(
            "<metadata xmlns='{META}'><info id='{PNG_SHA1}' bytes='64' type='image/png' \
             width='32' height='16'/></metadata>"
        ),
    );
    assert!(is_result(&r), "{r}");

    // Bob, a XEP-0153 client, reads it from Alice's vCard.
    let v = iq(
        &mut bob,
        "v1",
        "get",
        Some("alice@localhost"),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(is_result(&v), "{v}");
    assert!(
        v.contains(&format!(
            "<PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG_B64}</BINVAL></PHOTO>"
        )),
        "{v}"
    );

    // Alice's next presence carries the hash though her client did not write one.
    alice.send("<presence><show>chat</show></presence>");
    let t = bob.wait("Alice's presence with the hash", 15, |t| {
        t.contains("<show>chat</show>") && t.contains("</presence>")
    });
    assert_eq!(
        photo_from(&t, "alice@localhost/phone").as_deref(),
        Some(PNG_SHA1),
        "{t}"
    );

    // Disabling the avatar (XEP-0084 §4.5) removes the PHOTO.
    let r = publish(
        &mut alice,
        "m2",
        META,
        "off",
        &format!("<metadata xmlns='{META}'/>"),
    );
    assert!(is_result(&r), "{r}");
    let v = iq(
        &mut bob,
        "v2",
        "get",
        Some("alice@localhost"),
        "<vCard xmlns='vcard-temp'/>",
    );
    assert!(!v.contains("<PHOTO>"), "{v}");
    alice.send("<presence><show>away</show></presence>");
    let t = bob.wait("Alice's presence without an avatar", 15, |t| {
        t.contains("<show>away</show>") && t.contains("</presence>")
    });
    assert_eq!(
        photo_from(&t, "alice@localhost/phone").as_deref(),
        Some(""),
        "{t}"
    );
    s.assert_no_panic();
}

#[test]
fn xep0398_vcard_photo_is_published_as_a_pep_avatar() {
    let s = start();
    let mut alice = s.login(ALICE, "phone");
    let mut bob = s.login(BOB, "legacy");
    alice.available();
    bob.available();
    befriend(&mut alice, &mut bob);

    // Bob's legacy client sets a vCard with a PHOTO (no TYPE: the server recognises a GIF).
    let r = iq(
        &mut bob,
        "v1",
        "set",
        None,
        &format!(
            "<vCard xmlns='vcard-temp'><FN>Bob</FN><PHOTO><BINVAL>{GIF_B64}</BINVAL></PHOTO></vCard>"
        ),
    );
    assert!(is_result(&r), "{r}");

    // Alice, a XEP-0084 client, reads the metadata and data from Bob's PEP.
    let m = iq(
        &mut alice,
        "m1",
        "get",
        Some("bob@localhost"),
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{META}'/></pubsub>"
        ),
    );
    assert!(is_result(&m), "{m}");
    assert!(m.contains(&format!("<item id='{GIF_SHA1}'>")), "{m}");
    for attr in [
        format!("id='{GIF_SHA1}'"),
        "bytes='40'".into(),
        "type='image/gif'".into(),
        "width='20'".into(),
        "height='10'".into(),
    ] {
        assert!(m.contains(&attr), "{attr}: {m}");
    }
    let d = iq(
        &mut alice,
        "d1",
        "get",
        Some("bob@localhost"),
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{DATA}'>\
             <item id='{GIF_SHA1}'/></items></pubsub>"
        ),
    );
    assert!(
        d.contains(&format!("<data xmlns='{DATA}'>{GIF_B64}</data>")),
        "{d}"
    );

    // Bob's vCard is as he set it (no conversion back).
    let v = iq(&mut bob, "v2", "get", None, "<vCard xmlns='vcard-temp'/>");
    assert!(
        v.contains(&format!(
            "<FN>Bob</FN><PHOTO><BINVAL>{GIF_B64}</BINVAL></PHOTO>"
        )),
        "{v}"
    );

    // A PHOTO that is not base64, and one too large for a vCard: refused, nothing converted.
    let r = iq(
        &mut bob,
        "v3",
        "set",
        None,
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>*not base64*</BINVAL></PHOTO></vCard>",
    );
    assert!(is_error(&r) && r.contains("<bad-request"), "{r}");
    let huge = "A".repeat(140 * 1024);
    let r = iq(
        &mut bob,
        "v4",
        "set",
        None,
        &format!("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{huge}</BINVAL></PHOTO></vCard>"),
    );
    assert!(is_error(&r) && r.contains("<not-acceptable"), "{r}");
    let m = iq(
        &mut alice,
        "m2",
        "get",
        Some("bob@localhost"),
        &format!(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{META}'/></pubsub>"
        ),
    );
    assert!(m.contains(&format!("<item id='{GIF_SHA1}'>")), "{m}");
    s.assert_no_panic();
}

#[test]
fn xep0398_hash_is_in_the_presence_a_room_shows() {
    let s = start();
    let mut alice = s.login(ALICE, "desk");
    let mut bob = s.login(BOB, "desk");
    let r = iq(
        &mut alice,
        "v1",
        "set",
        None,
        &format!(
            "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{PNG_B64}</BINVAL></PHOTO></vCard>"
        ),
    );
    assert!(is_result(&r), "{r}");
    // Alice creates a room (an instant room, XEP-0045 §10.1.2); her join is directed
    // presence, which gets the hash too (XEP-0398 §4).
    let room = "tea@conference.localhost";
    alice.send(format!(
        "<presence to='{room}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    alice.wait("the room's creation", 15, |t| t.contains("code='201'"));
    let r = iq(
        &mut alice,
        "conf",
        "set",
        Some(room),
        "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>",
    );
    assert!(is_result(&r), "{r}");
    bob.send(format!(
        "<presence to='{room}/bob'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let t = bob.wait("the occupants' presence", 15, |t| t.contains("code='110'"));
    assert_eq!(
        photo_from(&t, &format!("{room}/alice")).as_deref(),
        Some(PNG_SHA1),
        "{t}"
    );
    // Bob has no avatar: his own presence in the room says so with an empty <photo/>.
    assert_eq!(
        photo_from(&t, &format!("{room}/bob")).as_deref(),
        Some(""),
        "{t}"
    );
    s.assert_no_panic();
}

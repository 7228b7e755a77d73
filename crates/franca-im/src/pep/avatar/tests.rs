//! XEP-0398 inside one server: PEP → vCard, vCard → PEP, the presence hash, no loops, and
//! the size and encoding limits.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::pep::tests::{drain, events, online_with_caps};
use crate::testing::{Client, normalise, server, xml};
use franca_store::{RosterItem, Subscription};

async fn avatar_server() -> Arc<Server> {
    let pep = Arc::new(Pep::new(16).with_vcard_conversion());
    let server = server(vec![
        Arc::new(crate::roster::Roster),
        pep.clone(),
        Arc::new(crate::presence::Presence),
        Arc::new(crate::vcard::VCard::new(Some(pep))),
        Arc::new(crate::disco::Disco),
    ])
    .await;
    for (user, contact) in [("juliet", "romeo"), ("romeo", "juliet")] {
        let item = RosterItem {
            jid: format!("{contact}@localhost"),
            name: None,
            subscription: Subscription::Both,
            ask: false,
            pending_in: None,
            approved: false,
            hidden: false,
            groups: vec![],
        };
        server
            .store
            .put_roster_item(&format!("{user}@localhost"), &item)
            .await
            .unwrap();
    }
    server
}

/// A PNG header for a `w`×`h` image followed by `len` filler bytes (the server reads only the
/// header).
fn png(w: u32, h: u32, len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend((0..len).map(|i| (i % 251) as u8));
    b
}

fn b64(b: &[u8]) -> String {
    general_purpose::STANDARD.encode(b)
}

fn sha1_hex(b: &[u8]) -> String {
    hex(&Sha1::digest(b))
}

fn publish(id: &str, node: &str, item_id: &str, payload: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>
           <publish node='{node}'><item id='{item_id}'>{payload}</item></publish>
         </pubsub></iq>"
    )
}

fn publish_data(image: &[u8]) -> String {
    publish(
        "d1",
        NS_AVATAR_DATA,
        &sha1_hex(image),
        &format!("<data xmlns='urn:xmpp:avatar:data'>{}</data>", b64(image)),
    )
}

fn publish_meta(image: &[u8]) -> String {
    let id = sha1_hex(image);
    publish(
        "m1",
        NS_AVATAR_METADATA,
        &id,
        &format!(
            "<metadata xmlns='urn:xmpp:avatar:metadata'>
               <info id='{id}' bytes='{}' type='image/png'/>
               <info id='ext' url='https://example.org/a.png' bytes='1' type='image/png'/>
             </metadata>",
            image.len()
        ),
    )
}

fn result_of<'a>(got: &'a [Element], id: &str) -> &'a Element {
    got.iter()
        .find(|s| s.name == "iq" && s.attr("id") == Some(id))
        .unwrap_or_else(|| panic!("no answer to {id}: {got:?}"))
}

async fn stored_vcard(server: &Server) -> Option<Element> {
    let xml = server.store.vcard("juliet@localhost").await.unwrap()?;
    parse_stored(&xml)
}

async fn items(server: &Server, node: &str) -> Vec<Element> {
    Pep::service(server, "juliet@localhost")
        .items(node, &[], 10)
        .await
        .unwrap()
        .into_iter()
        .map(normalise)
        .collect()
}

fn update_photo(presence: &Element) -> Option<String> {
    presence
        .child("x", NS_VCARD_UPDATE)?
        .child("photo", NS_VCARD_UPDATE)
        .map(Element::text)
}

#[test]
fn xep0398_4_stamp_replaces_all_but_an_empty_photo() {
    let mut p = xml("<presence/>");
    stamp(&mut p, Some("abc"));
    assert_eq!(
        p,
        xml("<presence><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>")
    );
    // An x without <photo/>, or another hash: overwritten (one x left).
    for client in [
        "<x xmlns='vcard-temp:x:update'/>",
        "<x xmlns='vcard-temp:x:update'><photo>old</photo></x>",
    ] {
        let mut p = xml(&format!("<presence><show>away</show>{client}</presence>"));
        stamp(&mut p, Some("abc"));
        assert_eq!(
            p,
            xml(
                "<presence><show>away</show><x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>"
            )
        );
    }
    // No avatar: an empty <photo/> says so.
    let mut p = xml("<presence/>");
    stamp(&mut p, None);
    assert_eq!(
        p,
        xml("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
    );
    // The client's empty <photo/> is left alone.
    let empty = xml("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>");
    let mut p = empty.clone();
    stamp(&mut p, Some("abc"));
    assert_eq!(p, empty);
}

#[test]
fn xep0084_dimensions_and_types_from_headers() {
    assert_eq!(dimensions(&png(64, 32, 10)), Some((64, 32)));
    assert_eq!(sniff(&png(1, 1, 0)), Some("image/png"));
    let gif = b"GIF89a\x40\x01\x20\x00rest";
    assert_eq!(dimensions(gif), Some((320, 32)));
    assert_eq!(sniff(gif), Some("image/gif"));
    // SOI, an APP0 segment of 16 bytes, then SOF0: precision, height 0x0102, width 0x0304.
    let mut jpeg = b"\xff\xd8\xff\xe0\x00\x10".to_vec();
    jpeg.extend([0u8; 14]);
    jpeg.extend(b"\xff\xc0\x00\x11\x08\x01\x02\x03\x04\x03");
    assert_eq!(dimensions(&jpeg), Some((0x0304, 0x0102)));
    assert_eq!(sniff(&jpeg), Some("image/jpeg"));
    // Truncated or unknown: nothing, and no panic.
    assert_eq!(dimensions(&jpeg[..22]), None);
    assert_eq!(dimensions(b"\xff\xd8\xff"), None);
    assert_eq!(dimensions(b"nothing"), None);
    assert_eq!(sniff(b"nothing"), None);
}

#[test]
fn xep0153_binval_is_decoded_leniently_but_must_be_base64() {
    let image = png(2, 2, 5);
    let mut encoded = b64(&image);
    encoded.insert(4, '\n');
    let unpadded = encoded.trim_end_matches('=');
    let vcard = xml(&format!(
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{unpadded}</BINVAL></PHOTO></vCard>"
    ));
    let photo = vcard_photo(&vcard).unwrap().unwrap();
    assert_eq!(photo.bytes, image);
    assert_eq!(photo.mime, "image/png", "recognised without TYPE");
    assert_eq!(photo.sha1, sha1_hex(&image));
    let bad = xml("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>no*base64</BINVAL></PHOTO></vCard>");
    assert_eq!(vcard_photo(&bad).unwrap_err().condition, Cond::BadRequest);
    let ext = xml("<vCard xmlns='vcard-temp'><PHOTO><EXTVAL>http://x/</EXTVAL></PHOTO></vCard>");
    assert_eq!(vcard_photo(&ext).unwrap(), None);
}

#[tokio::test]
async fn xep0398_2_feature_on_the_account() {
    let server = avatar_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    juliet
        .send("<iq type='get' id='i1' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let got = drain(&mut juliet);
    let answer = result_of(&got, "i1").to_xml();
    assert!(answer.contains(NS_CONVERSION), "{answer}");

    // Without the conversion the feature is not offered.
    let plain =
        crate::testing::server(vec![Arc::new(Pep::new(16)), Arc::new(crate::disco::Disco)]).await;
    let mut juliet = Client::bind(&plain, "juliet@localhost/balcony").await;
    juliet
        .send("<iq type='get' id='i2' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let got = drain(&mut juliet);
    assert!(!result_of(&got, "i2").to_xml().contains(NS_CONVERSION));
}

#[tokio::test]
async fn xep0398_3_1_pep_avatar_becomes_the_vcard_photo_and_the_presence_hash() {
    let server = avatar_server().await;
    let notify = format!("{NS_AVATAR_METADATA}+notify");
    let mut romeo = online_with_caps(&server, "romeo@localhost/orchard", &[&notify]).await;
    let mut juliet = online_with_caps(&server, "juliet@localhost/balcony", &[]).await;
    let first = drain(&mut romeo);
    let presence = first.iter().find(|s| s.name == "presence").unwrap();
    assert_eq!(update_photo(presence).as_deref(), Some(""), "no avatar yet");

    // The user already has a vCard: the PHOTO is added to it, the rest kept.
    juliet
        .send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Juliet</FN></vCard></iq>")
        .await;
    drain(&mut juliet);
    let image = png(96, 64, 300);
    let hash = sha1_hex(&image);
    juliet.send(&publish_data(&image)).await;
    juliet.send(&publish_meta(&image)).await;
    let got = drain(&mut juliet);
    assert_eq!(result_of(&got, "m1").attr("type"), Some("result"));
    let want = xml(&format!(
        "<vCard xmlns='vcard-temp'><FN>Juliet</FN>
           <PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard>",
        b64(&image)
    ));
    assert_eq!(stored_vcard(&server).await, Some(want));
    assert_eq!(
        events(&drain(&mut romeo)).len(),
        1,
        "metadata notified once"
    );

    // The PEP items are the client's, untouched: no vCard → PEP loop.
    let meta = items(&server, NS_AVATAR_METADATA).await;
    assert_eq!(meta.len(), 1);
    assert!(meta[0].to_xml().contains("https://example.org/a.png"));

    // Presence now carries the hash, directed presence (a MUC join) too.
    juliet.send("<presence><show>away</show></presence>").await;
    let r = drain(&mut romeo);
    let p = r.iter().find(|s| s.name == "presence").unwrap();
    assert_eq!(update_photo(p), Some(hash.clone()));
    juliet
        .send("<presence to='romeo@localhost/orchard'/>")
        .await;
    let r = drain(&mut romeo);
    assert_eq!(update_photo(&r[0]), Some(hash.clone()));
    // A client saying <photo/> is believed.
    juliet
        .send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>")
        .await;
    let r = drain(&mut romeo);
    assert_eq!(update_photo(&r[0]).as_deref(), Some(""));

    // XEP-0084 §4.5: metadata without <info/> removes the PHOTO.
    juliet
        .send(&publish(
            "m2",
            NS_AVATAR_METADATA,
            "off",
            "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
        ))
        .await;
    let got = drain(&mut juliet);
    assert_eq!(result_of(&got, "m2").attr("type"), Some("result"));
    assert_eq!(
        stored_vcard(&server).await,
        Some(xml("<vCard xmlns='vcard-temp'><FN>Juliet</FN></vCard>"))
    );
    juliet.send("<presence/>").await;
    let r = drain(&mut romeo);
    let p = r.iter().find(|s| s.name == "presence").unwrap();
    assert_eq!(update_photo(p).as_deref(), Some(""));
}

#[tokio::test]
async fn xep0398_3_1_data_that_does_not_match_its_id_is_not_copied() {
    let server = avatar_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    let image = png(1, 1, 10);
    let other = png(1, 1, 11);
    // The data item carries another image under this image's id.
    juliet
        .send(&publish(
            "d1",
            NS_AVATAR_DATA,
            &sha1_hex(&image),
            &format!("<data xmlns='urn:xmpp:avatar:data'>{}</data>", b64(&other)),
        ))
        .await;
    juliet.send(&publish_meta(&image)).await;
    let got = drain(&mut juliet);
    assert_eq!(result_of(&got, "m1").attr("type"), Some("result"));
    assert_eq!(stored_vcard(&server).await, None);
}

#[tokio::test]
async fn xep0398_3_1_an_avatar_too_large_for_the_vcard_is_refused() {
    let server = avatar_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    let image = png(1, 1, MAX_VCARD_BYTES);
    juliet.send(&publish_data(&image)).await;
    juliet.send(&publish_meta(&image)).await;
    let got = drain(&mut juliet);
    let error = result_of(&got, "m1");
    assert_eq!(error.attr("type"), Some("error"));
    let e = error.child("error", franca_proto::ns::NS_CLIENT).unwrap();
    assert!(e.has_child("not-acceptable", franca_proto::ns::NS_STANZAS));
    assert!(e.has_child("payload-too-big", crate::pubsub::NS_PUBSUB_ERRORS));
    assert!(items(&server, NS_AVATAR_METADATA).await.is_empty());
    assert_eq!(stored_vcard(&server).await, None);
}

#[tokio::test]
async fn xep0398_3_2_vcard_photo_is_published_to_pep_once() {
    let server = avatar_server().await;
    let notify = format!("{NS_AVATAR_METADATA}+notify");
    let mut romeo = online_with_caps(&server, "romeo@localhost/orchard", &[&notify]).await;
    let mut juliet = online_with_caps(&server, "juliet@localhost/balcony", &[]).await;
    drain(&mut romeo);
    let image = png(48, 40, 200);
    let hash = sha1_hex(&image);
    let vcard = format!(
        "<vCard xmlns='vcard-temp'><FN>Juliet</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{}</BINVAL></PHOTO></vCard>",
        b64(&image)
    );
    juliet
        .send(&format!("<iq type='set' id='v1'>{vcard}</iq>"))
        .await;
    let got = drain(&mut juliet);
    assert_eq!(result_of(&got, "v1").attr("type"), Some("result"));
    // The vCard is stored as sent: no PEP → vCard loop.
    assert_eq!(stored_vcard(&server).await, Some(xml(&vcard)));
    let data = items(&server, NS_AVATAR_DATA).await;
    assert_eq!(
        data,
        vec![xml(&format!(
            "<item xmlns='http://jabber.org/protocol/pubsub' id='{hash}'><data xmlns='urn:xmpp:avatar:data'>{}</data></item>",
            b64(&image)
        ))]
    );
    let meta = items(&server, NS_AVATAR_METADATA).await;
    assert_eq!(
        meta,
        vec![xml(&format!(
            "<item xmlns='http://jabber.org/protocol/pubsub' id='{hash}'><metadata xmlns='urn:xmpp:avatar:metadata'>
               <info id='{hash}' bytes='{}' type='image/png' width='48' height='40'/>
             </metadata></item>",
            image.len()
        ))]
    );
    // PEP defaults: presence access.
    let config = Pep::service(&server, "juliet@localhost")
        .existing(NS_AVATAR_METADATA)
        .await
        .unwrap();
    assert_eq!(
        config.access_model,
        crate::pubsub::config::AccessModel::Presence
    );
    let r = drain(&mut romeo);
    let ev = events(&r);
    assert_eq!(ev.len(), 1, "{r:?}");
    assert!(ev[0].to_xml().contains(&hash));

    // The same PHOTO again (a nickname change): nothing republished.
    let renamed = vcard.replace("<FN>Juliet</FN>", "<FN>J.</FN>");
    juliet
        .send(&format!("<iq type='set' id='v2'>{renamed}</iq>"))
        .await;
    drain(&mut juliet);
    assert!(events(&drain(&mut romeo)).is_empty());
    assert_eq!(stored_vcard(&server).await, Some(xml(&renamed)));

    // The hash is in presence without the client computing it.
    juliet.send("<presence/>").await;
    let r = drain(&mut romeo);
    assert_eq!(update_photo(&r[0]), Some(hash));

    // The PHOTO removed: empty metadata, and <photo/> in presence.
    juliet
        .send("<iq type='set' id='v3'><vCard xmlns='vcard-temp'><FN>J.</FN></vCard></iq>")
        .await;
    drain(&mut juliet);
    let r = drain(&mut romeo);
    assert_eq!(events(&r).len(), 1);
    let meta = items(&server, NS_AVATAR_METADATA).await;
    let m = meta[0].child("metadata", NS_AVATAR_METADATA).unwrap();
    assert!(m.elements().next().is_none(), "{m:?}");
    juliet.send("<presence/>").await;
    let r = drain(&mut romeo);
    assert_eq!(update_photo(&r[0]).as_deref(), Some(""));
    // Already empty: no second empty metadata.
    juliet
        .send("<iq type='set' id='v4'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    drain(&mut juliet);
    assert!(events(&drain(&mut romeo)).is_empty());
}

#[tokio::test]
async fn xep0153_bad_or_huge_photo_is_refused_and_not_converted() {
    let server = avatar_server().await;
    let mut juliet = Client::bind(&server, "juliet@localhost/balcony").await;
    juliet
        .send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>%%%</BINVAL></PHOTO></vCard></iq>")
        .await;
    let got = drain(&mut juliet);
    let e = result_of(&got, "v1");
    assert_eq!(e.attr("type"), Some("error"));
    assert!(e.to_xml().contains("bad-request"));
    let huge = b64(&png(1, 1, MAX_VCARD_BYTES));
    juliet
        .send(&format!(
            "<iq type='set' id='v2'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{huge}</BINVAL></PHOTO></vCard></iq>"
        ))
        .await;
    let got = drain(&mut juliet);
    let e = result_of(&got, "v2");
    assert!(e.to_xml().contains("not-acceptable"), "{e:?}");
    assert_eq!(stored_vcard(&server).await, None);
    assert!(items(&server, NS_AVATAR_DATA).await.is_empty());
    assert!(items(&server, NS_AVATAR_METADATA).await.is_empty());
}

#[tokio::test]
async fn xep0398_4_hash_is_loaded_once_and_forgotten_with_the_last_session() {
    let server = avatar_server().await;
    let image = png(1, 1, 3);
    let vcard = format!(
        "<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{}</BINVAL></PHOTO></vCard>",
        b64(&image)
    );
    // Stored behind the server's back (an import): read at the first presence.
    server
        .store
        .set_vcard("juliet@localhost", &vcard)
        .await
        .unwrap();
    let mut romeo = online_with_caps(&server, "romeo@localhost/orchard", &[]).await;
    let juliet = online_with_caps(&server, "juliet@localhost/balcony", &[]).await;
    let r = drain(&mut romeo);
    let p = r.iter().find(|s| s.name == "presence").unwrap();
    assert_eq!(update_photo(p), Some(sha1_hex(&image)));
    let user = BareJid::new("juliet@localhost").unwrap();
    // Changed behind the server's back again: the cached hash is used, storage is not read.
    server
        .store
        .set_vcard("juliet@localhost", "<vCard xmlns='vcard-temp'/>")
        .await
        .unwrap();
    juliet.send("<presence/>").await;
    let r = drain(&mut romeo);
    assert_eq!(
        update_photo(&r[0]),
        Some(sha1_hex(&image)),
        "from the cache"
    );
    // The last session ends: the next login reads storage again.
    server.session_closed(&juliet.session).await;
    drain(&mut romeo);
    let _juliet = online_with_caps(&server, "juliet@localhost/balcony", &[]).await;
    let r = drain(&mut romeo);
    let p = r.iter().find(|s| s.name == "presence").unwrap();
    assert_eq!(update_photo(p).as_deref(), Some(""), "reloaded for {user}");
}

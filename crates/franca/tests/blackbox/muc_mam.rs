//! Room archives and room registration on the real binary (issue 5): groupchat messages carry
//! the room's XEP-0359 stanza-id and are found under it by a XEP-0313 query to the room JID,
//! real JIDs only for those who may see them, a members-only room's archive is `forbidden` to
//! others, an absurd `max` is capped; a nickname registered with the room (XEP-0045 §7.10)
//! is refused to anyone else (`conflict`), and the archive and the reservation of a
//! persistent room survive a restart.

use crate::client::{Conn, find_stanza, is_result, stanza_error};
use crate::harness::{ALICE, BOB, Options, Server};

const CAROL: (&str, &str) = ("carol", "carol-password-3");
const ROOM: &str = "tea@conference.localhost";
const OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MAM: &str = "urn:xmpp:mam:2";
/// The page cap the tests configure.
const MAX_PAGE: usize = 3;

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, CAROL],
        extra: format!("[mam]\nmax_page = {MAX_PAGE}\n"),
        ..Options::default()
    })
}

fn iq(c: &mut Conn, ty: &str, to: &str, payload: &str) -> String {
    let id = c.next_id("iq");
    c.send(format!(
        "<iq type='{ty}' id='{id}' to='{to}'>{payload}</iq>"
    ));
    c.wait_stanza(&id, 15)
}

fn join(c: &mut Conn, nick: &str) -> String {
    c.send(format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    c.wait("the room's subject after joining", 15, |t| {
        t.contains("<subject") && t.contains("code='110'")
    })
}

fn refused_join(c: &mut Conn, nick: &str) -> String {
    let id = c.next_id("join");
    c.send(format!(
        "<presence id='{id}' to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    ));
    let st = c.wait_stanza(&id, 15);
    stanza_error(&st).unwrap_or_default()
}

fn configure(c: &mut Conn, fields: &[(&str, &str)]) {
    let fields: String = fields
        .iter()
        .map(|(var, v)| format!("<field var='{var}'><value>{v}</value></field>"))
        .collect();
    let st = iq(
        c,
        "set",
        ROOM,
        &format!(
            "<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>{fields}</x></query>"
        ),
    );
    assert!(is_result(&st), "configuration refused: {st}");
}

/// A query of ROOM's archive: everything received up to and including the answer.
fn query_room(c: &mut Conn, rsm: &str) -> String {
    let id = c.next_id("mam");
    c.send(format!(
        "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='{MAM}' queryid='{id}'>\
           <set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>"
    ));
    let text = c.wait("the archive's answer", 15, |t| {
        find_stanza(t, &id).is_some()
    });
    let answer = find_stanza(&text, &id).unwrap_or_default();
    assert!(is_result(answer), "query refused: {answer}");
    text
}

/// The value of `attr` in each `<tag …>` of `text`.
fn attrs(text: &str, tag: &str, attr: &str) -> Vec<String> {
    text.match_indices(&format!("<{tag} "))
        .filter_map(|(i, _)| {
            let head = &text[i..i + text[i..].find('>')?];
            let at = head.find(&format!(" {attr}='"))? + attr.len() + 3;
            Some(head[at..at + head[at..].find('\'')?].to_owned())
        })
        .collect()
}

fn register(c: &mut Conn, nick: &str) -> String {
    iq(
        c,
        "set",
        ROOM,
        &format!(
            "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>\
               <field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
        ),
    )
}

#[test]
fn xep0313_a_rooms_archive_and_xep0045_reserved_nicks_across_a_restart() {
    let mut s = start();
    let mut alice = s.login(ALICE, "desk");
    let joined = join(&mut alice, "alice");
    assert!(joined.contains("code='201'"), "{joined}");
    configure(&mut alice, &[("muc#roomconfig_persistentroom", "1")]);
    let info = iq(
        &mut alice,
        "get",
        ROOM,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(info.contains(&format!("var='{MAM}'")), "{info}");
    assert!(info.contains("var='jabber:iq:register'"), "{info}");

    let mut bob = s.login(BOB, "phone");
    join(&mut bob, "bob");
    alice.wait("bob's presence", 15, |t| {
        t.contains(&format!("from='{ROOM}/bob'"))
    });
    let mut seen = Vec::new();
    for n in 1..=4 {
        let id = format!("m{n}");
        bob.send(format!(
            "<message to='{ROOM}' type='groupchat' id='{id}'><body>cup {n}</body></message>"
        ));
        let to_alice = alice.wait_stanza(&id, 15);
        let to_bob = bob.wait_stanza(&id, 15);
        let sid = attrs(&to_alice, "stanza-id", "id");
        assert_eq!(sid.len(), 1, "{to_alice}");
        assert_eq!(attrs(&to_alice, "stanza-id", "by"), [ROOM]);
        assert_eq!(
            attrs(&to_bob, "stanza-id", "id"),
            sid,
            "the same id for everyone"
        );
        seen.extend(sid);
    }

    // Bob pages through: an absurd max is capped at the server's page; ids are the stanza-ids.
    let page = query_room(&mut bob, "<max>1000000000</max>");
    let ids = attrs(&page, "result", "id");
    assert_eq!(ids, seen[..MAX_PAGE], "{page}");
    assert!(page.contains("complete='false'"), "{page}");
    assert!(page.contains("cup 1") && !page.contains("cup 4"), "{page}");
    // Semi-anonymous: Bob sees no real JIDs; Alice, the owner, does.
    assert!(!page.contains("jid='bob@localhost'"), "{page}");
    let page = query_room(
        &mut alice,
        &format!("<max>2</max><after>{}</after>", seen[2]),
    );
    assert_eq!(attrs(&page, "result", "id"), seen[3..]);
    assert!(page.contains("jid='bob@localhost'"), "{page}");
    assert!(page.contains("complete='true'"), "{page}");

    // Carol registers a nickname; Bob may not take it, whatever its case.
    let mut carol = s.login(CAROL, "laptop");
    let st = register(&mut carol, "Carol");
    assert!(is_result(&st), "{st}");
    let st = register(&mut bob, "carol");
    assert_eq!(stanza_error(&st).as_deref(), Some("conflict"), "{st}");
    let st = register(&mut bob, &"b".repeat(200));
    assert_eq!(stanza_error(&st).as_deref(), Some("not-acceptable"), "{st}");

    // Members only: Carol is a member now (registration), an outsider gets nothing.
    configure(&mut alice, &[("muc#roomconfig_membersonly", "1")]);
    let page = query_room(&mut carol, "");
    assert_eq!(attrs(&page, "result", "id").len(), MAX_PAGE, "{page}");
    alice.close();
    bob.close();
    carol.close();

    s.stop();
    s.start();
    let mut carol = s.login(CAROL, "laptop");
    let page = query_room(&mut carol, "<max>1</max><before/>");
    assert_eq!(attrs(&page, "result", "id"), seen[3..], "{page}");
    let mut alice = s.login(ALICE, "desk");
    join(&mut alice, "alice");
    let st = iq(
        &mut alice,
        "set",
        ROOM,
        &format!("<query xmlns='{ADMIN}'><item jid='bob@localhost' affiliation='member'/></query>"),
    );
    assert!(is_result(&st), "{st}");
    let mut bob = s.login(BOB, "phone");
    assert_eq!(refused_join(&mut bob, "CAROL"), "conflict");
    let roomuser = iq(
        &mut carol,
        "get",
        ROOM,
        "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>",
    );
    assert!(roomuser.contains("name='Carol'"), "{roomuser}");
    let st = iq(
        &mut bob,
        "set",
        "conference.localhost",
        "<query xmlns='urn:xmpp:mam:2'/>",
    );
    assert!(stanza_error(&st).is_some(), "{st}");
    // Not a member: forbidden.
    let st = iq(
        &mut alice,
        "set",
        ROOM,
        &format!("<query xmlns='{ADMIN}'><item jid='bob@localhost' affiliation='none'/></query>"),
    );
    assert!(is_result(&st), "{st}");
    let id = bob.next_id("mam");
    bob.send(format!(
        "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='{MAM}'/></iq>"
    ));
    let st = bob.wait_stanza(&id, 15);
    assert_eq!(stanza_error(&st).as_deref(), Some("forbidden"), "{st}");
    s.assert_no_panic();
}

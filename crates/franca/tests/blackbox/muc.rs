//! XEP-0045 group chat on the real binary (issue 5): the `conference.localhost` service found
//! through disco, two users in a room with the same message delivered to both, a nickname
//! conflict, kick and ban by the owner, a members-only refusal, history on join with
//! `maxstanzas`, and a persistent room with its affiliations across a restart.

use crate::client::{Conn, is_error, is_result, stanza_error};
use crate::harness::{ALICE, BOB, Options, Server};

const CAROL: (&str, &str) = ("carol", "carol-password-3");
const ROOM: &str = "tea@conference.localhost";
const OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ADMIN: &str = "http://jabber.org/protocol/muc#admin";

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, CAROL],
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

/// Join ROOM as `nick` and wait for the end of the join (the subject).
fn join(c: &mut Conn, nick: &str, extra: &str) -> String {
    c.send(format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    ));
    c.wait("the room's subject after joining", 15, |t| {
        t.contains("<subject") && t.contains("code='110'")
    })
}

/// A join the room refuses; its error condition.
fn refused_join(c: &mut Conn, nick: &str, extra: &str) -> String {
    let id = c.next_id("join");
    c.send(format!(
        "<presence id='{id}' to='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>{extra}</x></presence>"
    ));
    let st = c.wait_stanza(&id, 15);
    assert!(is_error(&st), "join not refused: {st}");
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
            "<query xmlns='{OWNER}'><x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
               {fields}</x></query>"
        ),
    );
    assert!(is_result(&st), "configuration refused: {st}");
}

fn set_affiliation(c: &mut Conn, jid: &str, affiliation: &str) -> String {
    iq(
        c,
        "set",
        ROOM,
        &format!("<query xmlns='{ADMIN}'><item jid='{jid}' affiliation='{affiliation}'/></query>"),
    )
}

/// Alice creates ROOM (locked, §10.1.2) and accepts the default configuration.
fn create(s: &Server) -> Conn {
    let mut alice = s.login(ALICE, "desk");
    let joined = join(&mut alice, "alice", "");
    assert!(joined.contains("code='201'"), "{joined}");
    configure(&mut alice, &[]);
    alice
}

#[test]
fn xep0045_two_users_chat_and_the_owner_kicks_and_bans() {
    let s = start();
    // Discovery: the server lists the service, the service says what it is.
    let mut alice = s.login(ALICE, "desk");
    let items = iq(
        &mut alice,
        "get",
        "localhost",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert!(items.contains("jid='conference.localhost'"), "{items}");
    let info = iq(
        &mut alice,
        "get",
        "conference.localhost",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(info.contains("category='conference'"), "{info}");
    assert!(
        info.contains("var='http://jabber.org/protocol/muc'"),
        "{info}"
    );
    alice.close();

    let mut alice = create(&s);
    let items = iq(
        &mut alice,
        "get",
        "conference.localhost",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert!(items.contains(&format!("jid='{ROOM}'")), "{items}");
    for n in 1..=3 {
        alice.send(format!(
            "<message to='{ROOM}' type='groupchat'><body>old {n}</body></message>"
        ));
    }
    alice.wait("the last of alice's messages reflected", 15, |t| {
        t.contains("old 3")
    });

    // History on join, limited to the last two (§7.2.15), with their delay.
    let mut bob = s.login(BOB, "phone");
    let joined = join(&mut bob, "bob", "<history maxstanzas='2'/>");
    assert!(!joined.contains("old 1"), "{joined}");
    assert!(
        joined.contains("old 2") && joined.contains("old 3"),
        "{joined}"
    );
    assert!(joined.contains("urn:xmpp:delay"), "{joined}");
    alice.wait("bob's presence", 15, |t| {
        t.contains(&format!("from='{ROOM}/bob'"))
    });

    // One message, delivered to both with the same content.
    bob.send(format!(
        "<message to='{ROOM}' type='groupchat' id='hello'><body>Hello, room!</body></message>"
    ));
    let to_alice = alice.wait_stanza("hello", 15);
    let to_bob = bob.wait_stanza("hello", 15);
    assert_eq!(
        to_alice.replace("alice@localhost/desk", "X"),
        to_bob.replace("bob@localhost/phone", "X")
    );
    assert!(
        to_alice.contains(&format!("from='{ROOM}/bob'")),
        "{to_alice}"
    );
    assert!(to_alice.contains("Hello, room!"));

    // A nick in use is a conflict.
    let mut carol = s.login(CAROL, "laptop");
    assert_eq!(refused_join(&mut carol, "bob", ""), "conflict");
    join(&mut carol, "carol", "");
    bob.wait("carol's presence", 15, |t| {
        t.contains(&format!("from='{ROOM}/carol'"))
    });

    // The owner kicks Carol (307), who may come back, then bans her (301), and she may not.
    let st = iq(
        &mut alice,
        "set",
        ROOM,
        &format!("<query xmlns='{ADMIN}'><item nick='carol' role='none'/></query>"),
    );
    assert!(is_result(&st), "{st}");
    carol.wait("the kick", 15, |t| {
        t.contains("code='307'") && t.contains("type='unavailable'")
    });
    bob.wait("carol kicked", 15, |t| t.contains("code='307'"));
    join(&mut carol, "carol", "");
    let st = set_affiliation(&mut alice, "carol@localhost", "outcast");
    assert!(is_result(&st), "{st}");
    carol.wait("the ban", 15, |t| t.contains("code='301'"));
    assert_eq!(refused_join(&mut carol, "carol", ""), "forbidden");

    // Members-only: Carol (no longer banned, but not a member) is refused.
    let st = set_affiliation(&mut alice, "carol@localhost", "none");
    assert!(is_result(&st), "{st}");
    configure(&mut alice, &[("muc#roomconfig_membersonly", "1")]);
    assert_eq!(
        refused_join(&mut carol, "carol", ""),
        "registration-required"
    );
    s.assert_no_panic();
}

#[test]
fn xep0045_a_persistent_room_keeps_its_configuration_and_affiliations_across_a_restart() {
    let mut s = start();
    let mut alice = create(&s);
    configure(
        &mut alice,
        &[
            ("muc#roomconfig_persistentroom", "1"),
            ("muc#roomconfig_membersonly", "1"),
            ("muc#roomconfig_roomname", "Tea Room"),
        ],
    );
    let st = set_affiliation(&mut alice, "bob@localhost", "member");
    assert!(is_result(&st), "{st}");
    alice.send(format!(
        "<message to='{ROOM}' type='groupchat'><subject>Darjeeling</subject></message>"
    ));
    alice.wait("the subject reflected", 15, |t| {
        t.contains("Darjeeling</subject>")
    });
    alice.close();
    // Nobody is in it, and it stays (persistent).
    s.stop();
    s.start();

    let mut bob = s.login(BOB, "phone");
    let joined = join(&mut bob, "bob", "");
    assert!(joined.contains("affiliation='member'"), "{joined}");
    assert!(
        joined.contains("Darjeeling"),
        "the subject survived: {joined}"
    );
    let mut carol = s.login(CAROL, "laptop");
    assert_eq!(
        refused_join(&mut carol, "carol", ""),
        "registration-required"
    );
    let items = iq(
        &mut carol,
        "get",
        "conference.localhost",
        "<query xmlns='http://jabber.org/protocol/disco#items'/>",
    );
    assert!(items.contains("name='Tea Room'"), "{items}");

    let mut alice = s.login(ALICE, "desk");
    let joined = join(&mut alice, "alice", "");
    assert!(joined.contains("affiliation='owner'"), "{joined}");
    let members = iq(
        &mut alice,
        "get",
        ROOM,
        &format!("<query xmlns='{ADMIN}'><item affiliation='member'/></query>"),
    );
    assert!(members.contains("jid='bob@localhost'"), "{members}");
    // Destroyed, it is gone for good.
    let st = iq(
        &mut alice,
        "set",
        ROOM,
        &format!("<query xmlns='{OWNER}'><destroy/></query>"),
    );
    assert!(is_result(&st), "{st}");
    s.stop();
    s.start();
    let mut bob = s.login(BOB, "phone");
    let info = iq(
        &mut bob,
        "get",
        ROOM,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert_eq!(
        stanza_error(&info).as_deref(),
        Some("item-not-found"),
        "{info}"
    );
    s.assert_no_panic();
}

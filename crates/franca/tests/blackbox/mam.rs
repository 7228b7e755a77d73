//! XEP-0313 message archive (issue 5 §2) against the real binary: two users chat and each
//! pages through their own archive forwards and backwards (XEP-0059 `after`, `before`, an empty
//! `<before/>` for the last page, `count`, `complete`), the ids match the XEP-0359 stanza-ids
//! the recipient saw, `with` and `start`/`end` filter, preferences stop archiving, an offline
//! message is archived once; and the hostile cases: an absurd `max` is capped, a bad form is
//! `bad-request`, another account's archive is `forbidden`.

use crate::client::{Conn, find_stanza, is_error, is_result};
use crate::harness::{ALICE, BOB, Options, Server};

const MAM: &str = "urn:xmpp:mam:2";
const CAROL: (&str, &str) = ("carol", "carol-password-3");
/// The page cap the tests configure.
const MAX_PAGE: usize = 5;

fn start() -> Server {
    Server::start_with(Options {
        users: vec![ALICE, BOB, CAROL],
        extra: format!("[mam]\nmax_page = {MAX_PAGE}\n"),
        ..Options::default()
    })
}

fn online(server: &Server, user: (&str, &str)) -> Conn {
    let mut c = server.login(user, "r");
    c.available();
    c
}

/// The value of attribute `name` in the first tag of `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let head = &tag[..tag.find('>').unwrap_or(tag.len())];
    let at = head.find(&format!(" {name}='"))? + name.len() + 3;
    Some(&head[at..at + head[at..].find('\'')?])
}

/// Each `<tag …>` start in `text`, as the text from it on.
fn tags<'a>(text: &'a str, tag: &str) -> Vec<&'a str> {
    let pat = format!("<{tag} ");
    text.match_indices(&pat).map(|(i, _)| &text[i..]).collect()
}

fn text_of(text: &str, name: &str) -> Option<String> {
    crate::client::element_text(text, name)
}

/// One answered query.
struct Page {
    /// (archive id, body) of each result, in the order sent.
    results: Vec<(String, String)>,
    /// (archive id, stamp) of each result.
    stamps: Vec<String>,
    complete: bool,
    count: Option<u64>,
    first: Option<String>,
    last: Option<String>,
}

/// Send a MAM query with `form` fields and `rsm` children; panics unless it is answered with
/// a result.
fn query(c: &mut Conn, to: Option<&str>, form: &str, rsm: &str) -> Page {
    parse_page(&query_raw(c, to, form, rsm))
}

fn query_raw(c: &mut Conn, to: Option<&str>, form: &str, rsm: &str) -> String {
    let id = c.next_id("mam");
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    let form = if form.is_empty() {
        String::new()
    } else {
        format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
             <value>{MAM}</value></field>{form}</x>"
        )
    };
    let rsm = if rsm.is_empty() {
        String::new()
    } else {
        format!("<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>")
    };
    c.send(format!(
        "<iq type='set' id='{id}'{to}><query xmlns='{MAM}' queryid='{id}-q'>{form}{rsm}</query></iq>"
    ));
    let text = c.wait(&format!("the answer to {id}"), 15, |t| {
        find_stanza(t, &id).is_some()
    });
    let answer = find_stanza(&text, &id).expect("found").to_owned();
    // The results come before the answer.
    let before = &text[..text.find(&answer).expect("answer in text")];
    format!("{before}{answer}")
}

fn parse_page(text: &str) -> Page {
    let fin_at = text
        .find("<fin ")
        .unwrap_or_else(|| panic!("no <fin/> in: {text}"));
    let results_text = &text[..fin_at];
    let mut results = Vec::new();
    let mut stamps = Vec::new();
    for r in tags(results_text, "result") {
        assert!(r.starts_with(&format!("<result xmlns='{MAM}'")), "{r}");
        let id = attr(r, "id").expect("result id").to_owned();
        let end = r.find("</result>").expect("result end");
        let one = &r[..end];
        let body = text_of(one, "body").unwrap_or_default();
        let delay = tags(one, "delay");
        stamps.push(attr(delay[0], "stamp").expect("stamp").to_owned());
        results.push((id, body));
    }
    let fin = &text[fin_at..];
    Page {
        results,
        stamps,
        complete: attr(fin, "complete") == Some("true"),
        count: text_of(fin, "count").map(|c| c.parse().expect("count")),
        first: text_of(fin, "first"),
        last: text_of(fin, "last"),
    }
}

fn bodies(p: &Page) -> Vec<&str> {
    p.results.iter().map(|(_, b)| b.as_str()).collect()
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// `from` sends `body` to `to`'s bare JID; `to` (online) receives it. Returns the stanza-id
/// the recipient saw.
fn chat(from: &mut Conn, to: &mut Conn, to_jid: &str, body: &str) -> String {
    from.send(format!(
        "<message to='{to_jid}' type='chat'><body>{body}</body></message>"
    ));
    let text = to.wait(&format!("message {body}"), 15, |t| {
        t.contains(&format!("<body>{body}</body>")) && t.contains("</message>")
    });
    stanza_id(&text, to_jid)
}

fn stanza_id(text: &str, by: &str) -> String {
    let sid = tags(text, "stanza-id")
        .into_iter()
        .find(|t| attr(t, "by") == Some(by))
        .unwrap_or_else(|| panic!("no stanza-id by {by} in: {text}"));
    assert!(
        sid.starts_with("<stanza-id xmlns='urn:xmpp:sid:0'"),
        "{sid}"
    );
    attr(sid, "id").expect("id").to_owned()
}

#[test]
fn xep0313_two_users_page_through_their_archives() {
    let server = start();
    let mut alice = online(&server, ALICE);
    let mut bob = online(&server, BOB);
    let mut carol = online(&server, CAROL);

    // Seven messages, both directions; what Bob saw of Alice's.
    let mut bob_saw = Vec::new();
    for i in 0..7 {
        if i % 3 == 2 {
            chat(&mut bob, &mut alice, "alice@localhost", &format!("b{i}"));
        } else {
            let sid = chat(&mut alice, &mut bob, "bob@localhost", &format!("a{i}"));
            bob_saw.push((sid, format!("a{i}")));
        }
    }
    chat(&mut carol, &mut bob, "bob@localhost", "c-hello");
    let all = ["a0", "a1", "b2", "a3", "a4", "b5", "a6"];

    // Alice: forwards, pages of three (after the last id of each page).
    let p1 = query(&mut alice, None, "", "<max>3</max>");
    assert_eq!(bodies(&p1), all[..3]);
    assert_eq!((p1.count, p1.complete), (Some(7), false));
    assert_eq!(p1.first.as_deref(), Some(p1.results[0].0.as_str()));
    assert_eq!(p1.last.as_deref(), Some(p1.results[2].0.as_str()));
    let after = p1.last.clone().expect("last");
    let p2 = query(
        &mut alice,
        None,
        "",
        &format!("<max>3</max><after>{after}</after>"),
    );
    assert_eq!(bodies(&p2), all[3..6]);
    assert!(!p2.complete);
    let after = p2.last.clone().expect("last");
    let p3 = query(
        &mut alice,
        None,
        "",
        &format!("<max>3</max><after>{after}</after>"),
    );
    assert_eq!(bodies(&p3), all[6..]);
    assert_eq!((p3.count, p3.complete), (Some(7), true));

    // Backwards: an empty <before/> is the last page, then before its first id.
    let b1 = query(&mut alice, None, "", "<max>3</max><before/>");
    assert_eq!(bodies(&b1), all[4..]);
    assert!(!b1.complete);
    let before = b1.first.clone().expect("first");
    let b2 = query(
        &mut alice,
        None,
        "",
        &format!("<max>3</max><before>{before}</before>"),
    );
    assert_eq!(bodies(&b2), all[1..4]);
    assert!(!b2.complete);
    let before = b2.first.clone().expect("first");
    let b3 = query(
        &mut alice,
        None,
        "",
        &format!("<max>3</max><before>{before}</before>"),
    );
    assert_eq!(bodies(&b3), all[..1]);
    assert_eq!((b3.count, b3.complete), (Some(7), true));

    // Bob's archive holds the same conversation plus Carol's message; the ids of what he
    // received are the stanza-ids he saw.
    let mine = query(&mut bob, None, "", "");
    assert_eq!(mine.count, Some(8));
    assert!(!mine.complete, "a page of {MAX_PAGE} of 8");
    let rest = query(
        &mut bob,
        None,
        "",
        &format!("<after>{}</after>", mine.last.clone().expect("last")),
    );
    assert!(rest.complete);
    let everything: Vec<(String, String)> = mine.results.into_iter().chain(rest.results).collect();
    let bodies_bob: Vec<&str> = everything.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies_bob,
        ["a0", "a1", "b2", "a3", "a4", "b5", "a6", "c-hello"]
    );
    for (sid, body) in &bob_saw {
        assert!(
            everything.contains(&(sid.clone(), body.clone())),
            "stanza-id {sid} of {body} not in Bob's archive"
        );
    }

    // `with`.
    let with_carol = query(&mut bob, None, &field("with", "carol@localhost"), "");
    assert_eq!(bodies(&with_carol), ["c-hello"]);
    assert_eq!((with_carol.count, with_carol.complete), (Some(1), true));
    let with_alice = query(
        &mut bob,
        None,
        &field("with", "alice@localhost"),
        "<max>10</max>",
    );
    assert_eq!(with_alice.count, Some(7), "capped page, exact count");
    assert_eq!(bodies(&with_alice), all[..MAX_PAGE]);

    // `start`/`end` (inclusive), from the stamps the archive gave.
    let stamps = query(&mut alice, None, "", "<max>5</max>").stamps;
    let window = query(
        &mut alice,
        None,
        &format!("{}{}", field("start", &stamps[1]), field("end", &stamps[3])),
        "",
    );
    assert_eq!(bodies(&window), all[1..4]);
    assert_eq!((window.count, window.complete), (Some(3), true));

    // `ids` and `after-id` (urn:xmpp:mam:2#extended).
    let wanted = &p2.results[1].0;
    let by_id = query(&mut alice, None, &field("ids", wanted), "");
    assert_eq!(bodies(&by_id), ["a4"]);
    let after_id = query(&mut alice, None, &field("after-id", &p2.results[2].0), "");
    assert_eq!(bodies(&after_id), ["a6"]);

    server.assert_no_panic();
}

#[test]
fn xep0313_prefs_offline_and_hostile_queries() {
    let server = start();
    let mut alice = online(&server, ALICE);

    // Advertised on the account.
    alice.send(
        "<iq type='get' id='disco' to='alice@localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = alice.wait_stanza("disco", 15);
    for feature in [MAM, "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"] {
        assert!(
            info.contains(&format!("var='{feature}'")),
            "{feature}: {info}"
        );
    }

    // An offline message: archived when routed, delivered later with the same stanza-id,
    // and in the archive once.
    alice.send("<message to='bob@localhost' type='chat'><body>while you were out</body></message>");
    alice.ping("after-offline");
    let mut bob = server.login(BOB, "r");
    bob.send("<presence/>");
    let text = bob.wait("the offline message", 15, |t| {
        t.contains("while you were out") && t.contains("</message>")
    });
    let sid = stanza_id(&text, "bob@localhost");
    bob.ping("after-presence");
    let page = query(&mut bob, None, "", "");
    assert_eq!(bodies(&page), ["while you were out"]);
    assert_eq!(page.results[0].0, sid);
    assert_eq!(page.count, Some(1));

    // prefs default='never': nothing more is archived for Bob.
    bob.send(format!(
        "<iq type='set' id='prefs'><prefs xmlns='{MAM}' default='never'/></iq>"
    ));
    let st = bob.wait_stanza("prefs", 15);
    assert!(is_result(&st) && st.contains("default='never'"), "{st}");
    alice.send("<message to='bob@localhost' type='chat'><body>unarchived</body></message>");
    let text = bob.wait("the message", 15, |t| t.contains("unarchived"));
    assert!(!text.contains("urn:xmpp:sid:0"), "{text}");
    assert_eq!(query(&mut bob, None, "", "").count, Some(1));
    // Alice's side is still archived (her default is the server's, always).
    assert_eq!(query(&mut alice, None, "", "").count, Some(2));

    // Hostile: an absurd max is capped.
    for i in 0..(MAX_PAGE + 2) {
        alice.send(format!(
            "<message to='bob@localhost'><body>n{i}</body></message>"
        ));
    }
    alice.ping("after-burst");
    let capped = query(&mut alice, None, "", "<max>1000000000</max>");
    assert_eq!(capped.results.len(), MAX_PAGE);
    assert!(!capped.complete);
    // A bad form is bad-request.
    let st = query_raw(&mut alice, None, &field("start", "last tuesday"), "");
    let answer = &st[st.rfind("<iq").expect("iq")..];
    assert!(
        is_error(answer) && answer.contains("<bad-request"),
        "{answer}"
    );
    // A cursor that is not in the archive is item-not-found.
    let st = query_raw(
        &mut alice,
        None,
        "",
        "<after>00000000000000000000000000</after>",
    );
    let answer = &st[st.rfind("<iq").expect("iq")..];
    assert!(
        is_error(answer) && answer.contains("<item-not-found"),
        "{answer}"
    );
    // Someone else's archive is forbidden.
    let st = query_raw(&mut alice, Some("bob@localhost"), "", "");
    let answer = &st[st.rfind("<iq").expect("iq")..];
    assert!(
        is_error(answer) && answer.contains("<forbidden"),
        "{answer}"
    );
    assert!(!st.contains("<result "), "no results leak: {st}");

    server.assert_no_panic();
}

//! Fast reconnects (issue 4 §5) with the raw test client: XEP-0388 SASL2 with SCRAM-SHA-256,
//! XEP-0386 Bind2 (resource from the tag, carbons and stream management enabled inline),
//! XEP-0198 resumption inside `<authenticate/>`, and XEP-0484 FAST — a token requested at a
//! password login, a reconnection with HT-SHA-256-NONE and no SCRAM at all, replayed counters,
//! another client's id, `franca user revoke-tokens`, and a token past its lifetime. Legacy
//! RFC 6120 SASL keeps working next to it (the other logins here use it).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::client::{Conn, element_text};
use crate::harness::{ALICE, BOB, DOMAIN, Options, Server};

const SASL2: &str = "urn:xmpp:sasl:2";
const SM: &str = "urn:xmpp:sm:3";

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC key");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The value of `attr` in the first `<name …>` tag of `text`.
fn attr(text: &str, name: &str, attr: &str) -> Option<String> {
    let start = text.find(&format!("<{name} "))?;
    let tag = &text[start..start + text[start..].find('>')?];
    let at = tag.find(&format!(" {attr}='"))? + attr.len() + 3;
    Some(tag[at..at + tag[at..].find('\'')?].to_owned())
}

/// A direct-TLS connection with its stream open; the pre-authentication features.
fn connect(s: &Server) -> (Conn, String) {
    let mut c = Conn::connect_tls(s.c2s_tls, &s.cert_pem());
    let features = c.open_stream();
    (c, features)
}

/// The next SASL2 outcome (or challenge).
fn outcome(c: &mut Conn) -> String {
    c.wait("a SASL2 answer", 15, |t| {
        t.contains("</success>") || t.contains("</failure>") || t.contains("</challenge>")
    })
}

/// SCRAM-SHA-256 (RFC 7677) through SASL2 with `children` in `<authenticate/>`; the text of
/// `<success/>` or of whatever came instead.
fn scram_sha256(
    c: &mut Conn,
    user: &str,
    password: &str,
    children: &str,
) -> Result<String, String> {
    let cnonce = B64.encode(rand::random::<[u8; 18]>());
    let bare = format!("n={user},r={cnonce}");
    c.send(format!(
        "<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-256'>\
         <initial-response>{}</initial-response>{children}</authenticate>",
        B64.encode(format!("n,,{bare}"))
    ));
    let text = outcome(c);
    let Some(challenge) = element_text(&text, "challenge") else {
        return Err(text);
    };
    assert!(
        text.contains(&format!("<challenge xmlns='{SASL2}'>")),
        "{text}"
    );
    let server_first = String::from_utf8(B64.decode(challenge.trim()).expect("base64"))
        .expect("UTF-8 server-first");
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {server_first}"))
            .to_owned()
    };
    let nonce = field("r");
    let salt = B64.decode(field("s")).expect("salt");
    let iterations: u32 = field("i").parse().expect("iterations");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(a, b)| a ^ b)
        .collect();
    let expected_v = B64.encode(hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes()));
    c.send(format!(
        "<response xmlns='{SASL2}'>{}</response>",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    ));
    let text = outcome(c);
    if !text.contains("</success>") {
        return Err(text);
    }
    // SASL2 carries the server-final-message in <additional-data/>.
    let v = element_text(&text, "additional-data").expect("additional-data");
    let v = String::from_utf8(B64.decode(v.trim()).expect("base64")).expect("UTF-8");
    assert_eq!(
        v.strip_prefix("v="),
        Some(expected_v.as_str()),
        "server signature"
    );
    Ok(text)
}

/// HT-SHA-256-NONE (XEP-0484) with `token`, as client `ua` with replay counter `count`.
fn fast_login(
    c: &mut Conn,
    user: &str,
    token: &str,
    ua: &str,
    count: u32,
    children: &str,
) -> String {
    let mut response = format!("{user}\0").into_bytes();
    response.extend(hmac(token.as_bytes(), b"Initiator"));
    c.send(format!(
        "<authenticate xmlns='{SASL2}' mechanism='HT-SHA-256-NONE'>\
         <initial-response>{}</initial-response><user-agent id='{ua}'><software>bb</software></user-agent>\
         <fast xmlns='urn:xmpp:fast:0' count='{count}'/>{children}</authenticate>",
        B64.encode(response)
    ));
    outcome(c)
}

/// Bind2 with carbons and resumable stream management, and a FAST token request.
const PHONE: &str = "<user-agent id='ua-phone'/><bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag>\
     <enable xmlns='urn:xmpp:carbons:2'/><enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>\
     <request-token xmlns='urn:xmpp:fast:0' mechanism='HT-SHA-256-NONE'/>";

/// A SASL2 password login as alice's phone; (connection, success text, token).
fn phone_login(s: &Server) -> (Conn, String, String) {
    let (mut c, features) = connect(s);
    assert!(
        features.contains(&format!("<authentication xmlns='{SASL2}'>")),
        "{features}"
    );
    let text = scram_sha256(&mut c, ALICE.0, ALICE.1, PHONE).unwrap_or_else(|t| panic!("{t}"));
    let token = attr(&text, "token", "token").unwrap_or_else(|| panic!("no token: {text}"));
    (c, text, token)
}

#[test]
fn xep0388_sasl2_with_bind2_inline_features_and_a_fast_reconnect() {
    let s = Server::start_with(Options::tls_required());
    let (_, features) = connect(&s);
    // Both SASL profiles are offered; SASL2 lists Bind2's inline features and FAST.
    assert!(
        features.contains("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"),
        "{features}"
    );
    for needle in [
        "<feature var='urn:xmpp:carbons:2'/>",
        "<feature var='urn:xmpp:sm:3'/>",
        "<fast xmlns='urn:xmpp:fast:0'>",
        "<mechanism>HT-SHA-256-NONE</mechanism>",
    ] {
        assert!(features.contains(needle), "{needle}: {features}");
    }

    let (mut phone, text, token) = phone_login(&s);
    // The resource is the tag plus a suffix; no restart, no features: the stream is ready.
    let jid = element_text(&text, "authorization-identifier").expect("identity");
    assert!(jid.starts_with(&format!("alice@{DOMAIN}/Phone/")), "{text}");
    assert!(
        text.contains("<bound xmlns='urn:xmpp:bind:0'><enabled xmlns='urn:xmpp:sm:3'"),
        "{text}"
    );
    assert_eq!(
        attr(&text, "enabled", "resume").as_deref(),
        Some("true"),
        "{text}"
    );
    assert!(
        attr(&text, "token", "expiry").is_some_and(|e| e.ends_with('Z')),
        "{text}"
    );
    phone.ping("bound");
    phone.send(format!("<r xmlns='{SM}'/>"));
    phone.wait("<a/>", 15, |t| {
        t.contains(&format!("<a xmlns='{SM}' h='1'/>"))
    });

    // Carbons are on: bob writes to alice's other resource, the phone gets a copy.
    let mut desk = s.login(ALICE, "desk");
    let mut bob = s.login(BOB, "pc");
    bob.send(format!(
        "<message to='alice@{DOMAIN}/desk' type='chat' id='c1'><body>to the desk</body></message>"
    ));
    desk.wait("the message", 15, |t| {
        t.contains("<body>to the desk</body>")
    });
    let copy = phone.wait("the carbon", 15, |t| t.contains("<body>to the desk</body>"));
    assert!(
        copy.contains("<received xmlns='urn:xmpp:carbons:2'>"),
        "{copy}"
    );
    phone.close();

    // FAST: one message, no SCRAM, and the same resource for the same client.
    let (mut again, _) = connect(&s);
    let text = fast_login(
        &mut again,
        ALICE.0,
        &token,
        "ua-phone",
        1,
        "<bind xmlns='urn:xmpp:bind:0'><tag>Phone</tag></bind>",
    );
    assert!(text.contains("<success"), "{text}");
    assert!(
        !again.all_text().contains("<challenge"),
        "FAST needs no challenge"
    );
    let proof = element_text(&text, "additional-data").expect("responder proof");
    assert_eq!(
        B64.decode(proof.trim()).expect("base64"),
        hmac(token.as_bytes(), b"Responder"),
        "the server proves it knows the token"
    );
    assert_eq!(
        element_text(&text, "authorization-identifier"),
        Some(jid.clone())
    );
    again.ping("fast");
    again.close();

    // The same counter again is a replay; a higher one is fine.
    let (mut replay, _) = connect(&s);
    let text = fast_login(&mut replay, ALICE.0, &token, "ua-phone", 1, "");
    assert!(
        text.contains(&format!("<failure xmlns='{SASL2}'><not-authorized")),
        "{text}"
    );
    let text = fast_login(&mut replay, ALICE.0, &token, "ua-phone", 2, "");
    assert!(text.contains("<success"), "{text}");
    // Without Bind2 the post-authentication features follow at once.
    assert!(
        text.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"),
        "{text}"
    );
    replay.close();

    // The token belongs to that client of that account.
    let (mut other, _) = connect(&s);
    let text = fast_login(&mut other, ALICE.0, &token, "ua-laptop", 3, "");
    assert!(text.contains("<not-authorized"), "{text}");
    let text = fast_login(&mut other, BOB.0, &token, "ua-phone", 3, "");
    assert!(text.contains("<not-authorized"), "{text}");

    // Revoked by the administrator: refused from the next login on.
    let out = s.cli(&["user", "revoke-tokens", &format!("alice@{DOMAIN}")], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 1"),
        "{out:?}"
    );
    let out = s.cli(&["user", "revoke-tokens", &format!("nobody@{DOMAIN}")], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown user"),
        "{out:?}"
    );
    let text = fast_login(&mut other, ALICE.0, &token, "ua-phone", 4, "");
    assert!(
        text.contains(&format!("<failure xmlns='{SASL2}'><not-authorized")),
        "{text}"
    );
    // The password still works, over either SASL profile.
    assert!(scram_sha256(&mut other, ALICE.0, ALICE.1, "").is_ok());
    drop(s.login(ALICE, "legacy"));
    s.assert_no_panic();
}

#[test]
fn xep0484_a_token_past_its_lifetime_is_refused() {
    let mut opts = Options::tls_required();
    opts.extra.push_str("[fast]\ntoken_lifetime_seconds = 1\n");
    let s = Server::start_with(opts);
    let (mut c, _, token) = phone_login(&s);
    c.close();
    std::thread::sleep(Duration::from_millis(2200));
    let (mut late, _) = connect(&s);
    let text = fast_login(&mut late, ALICE.0, &token, "ua-phone", 1, "");
    assert!(
        text.contains(&format!("<failure xmlns='{SASL2}'><credentials-expired")),
        "{text}"
    );
    s.assert_no_panic();
}

#[test]
fn xep0198_resumption_inside_sasl2_authenticate() {
    let s = Server::start_with(Options::tls_required());
    let (mut phone, text, token) = phone_login(&s);
    let previd = attr(&text, "enabled", "id").unwrap_or_else(|| panic!("no id: {text}"));
    let jid = element_text(&text, "authorization-identifier").expect("identity");
    phone.send("<presence/>");
    phone.ping("before-cut");
    let mut bob = s.login(BOB, "pc");
    // The phone's connection dies without a word; a message arrives meanwhile.
    phone.shutdown();
    bob.send(format!(
        "<message to='{jid}' type='chat' id='m1'><body>while away</body></message>"
    ));
    bob.ping("sent");

    // Token login, resumption and the missed message in one round trip (h=0: everything
    // since <enabled/> comes again, the ping result included).
    let (mut back, _) = connect(&s);
    let text = fast_login(
        &mut back,
        ALICE.0,
        &token,
        "ua-phone",
        1,
        &format!("<resume xmlns='{SM}' previd='{previd}' h='0'/>"),
    );
    assert!(
        text.contains(&format!("<resumed xmlns='{SM}' previd='{previd}'")),
        "{text}"
    );
    assert_eq!(element_text(&text, "authorization-identifier"), Some(jid));
    if !text.contains("<body>while away</body>") {
        back.wait("the missed message", 15, |t| {
            t.contains("<body>while away</body>")
        });
    }
    let all = back.all_text();
    let success_at = all.find("<success").expect("success");
    assert!(
        all.find("<body>while away</body>")
            .is_some_and(|m| m > success_at),
        "{all}"
    );
    back.ping("resumed");
    s.assert_no_panic();
}

//! `franca import`: accounts from an XEP-0227 file log in with their exported SCRAM keys (no
//! password ever given to this server), and find their roster and offline messages; a second
//! run leaves them alone; a malformed file is one clear error.

use crate::harness::{DOMAIN, Options, Server};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// XEP-0227 `<scram-credentials/>` for SCRAM-SHA-256 (RFC 5802 §3), computed as an exporting
/// server would have stored them.
fn scram_sha256(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let hmac = |key: &[u8], msg: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key).to_vec();
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-256'>\
           <iter-count>{iterations}</iter-count><salt>{}</salt>\
           <server-key>{}</server-key><stored-key>{}</stored-key>\
         </scram-credentials>",
        B64.encode(salt),
        B64.encode(server_key),
        B64.encode(stored_key)
    )
}

fn export() -> String {
    format!(
        "<?xml version='1.0' encoding='UTF-8'?>\
         <server-data xmlns='urn:xmpp:pie:0'>\
           <host jid='{DOMAIN}'>\
             <user name='juliet'>{creds}\
               <query xmlns='jabber:iq:roster'>\
                 <item jid='romeo@{DOMAIN}' name='Romeo' subscription='both'><group>Friends</group></item>\
               </query>\
               <offline-messages>\
                 <message xmlns='jabber:client' from='romeo@{DOMAIN}/orchard' to='juliet@{DOMAIN}' type='chat' id='o1'>\
                   <body>Wherefore art thou?</body>\
                   <delay xmlns='urn:xmpp:delay' from='{DOMAIN}' stamp='2020-05-01T10:00:00Z'/>\
                 </message>\
               </offline-messages>\
             </user>\
             <user name='romeo' password='plain-from-an-old-export'/>\
           </host>\
         </server-data>",
        creds = scram_sha256("exported-secret", b"pepper-salt-0001", 4096)
    )
}

#[test]
fn imported_accounts_log_in_with_exported_keys_and_find_roster_and_offline() {
    let mut s = Server::new(Options {
        allow_plaintext: true,
        ..Options::default()
    });
    let file = s.dir.path().join("export.xml");
    std::fs::write(&file, export()).expect("write export");
    let out = s.cli(&["import", file.to_str().expect("utf-8 path")], "");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "imported 2 account(s) from 1 file(s): 1 roster item(s), 1 offline message(s)"
        ),
        "{stdout}"
    );
    // A second run changes nothing and says so.
    let again = s.cli(&["import", file.to_str().expect("utf-8 path")], "");
    let again_out = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.status.success(), "{again_out}");
    assert!(again_out.contains("imported 0 account(s)"), "{again_out}");
    assert!(
        again_out.contains("skipped 2 account(s) that already exist"),
        "{again_out}"
    );

    s.start();
    let mut juliet = s.login(("juliet", "exported-secret"), "balcony");
    juliet.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    let roster = juliet.wait_stanza("r1", 10);
    assert!(
        roster.contains(&format!("romeo@{DOMAIN}")) && roster.contains("<group>Friends</group>"),
        "{roster}"
    );
    // Offline messages come with initial presence, before the ping that `available` waits for.
    juliet.available();
    let got = juliet.all_text();
    assert!(got.contains("Wherefore art thou?"), "{got}");
    // Delivered once, with the exported time as its XEP-0203 stamp.
    assert!(
        got.contains("stamp='2020-05-01T10:00:00Z'")
            || got.contains("stamp=\"2020-05-01T10:00:00Z\""),
        "{got}"
    );
    assert_eq!(got.matches("Wherefore art thou?").count(), 1, "{got}");
    assert_eq!(got.matches("urn:xmpp:delay").count(), 1, "{got}");
    // The plaintext password of an older export was hashed on the way in.
    let _romeo = s.login(("romeo", "plain-from-an-old-export"), "orchard");
    s.assert_no_panic();
}

#[test]
fn a_malformed_or_foreign_file_is_one_clear_error_and_imports_nothing() {
    let s = Server::new(Options::default());
    let bad = s.dir.path().join("bad.xml");
    std::fs::write(&bad, "<server-data xmlns='urn:xmpp:pie:0'><host jid='x'>").expect("write");
    let out = s.cli(&["import", bad.to_str().expect("utf-8")], "");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        err.contains("bad.xml") && err.contains("not well-formed"),
        "{err}"
    );

    let foreign = s.dir.path().join("foreign.xml");
    std::fs::write(&foreign, "<roster xmlns='jabber:iq:roster'/>").expect("write");
    let out = s.cli(&["import", foreign.to_str().expect("utf-8")], "");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(err.contains("not an XEP-0227 document"), "{err}");

    let listed = s.cli(&["user", "list"], "");
    assert!(String::from_utf8_lossy(&listed.stdout).trim().is_empty());
}

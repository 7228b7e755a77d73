//! `franca import`: bring accounts in from XEP-0227 (Portable Import/Export Format for
//! XMPP-IM Servers) files, the format ejabberd (`export_piefxis`) and Prosody
//! (`prosody-migrator` with its `xep0227` store) both write.
//!
//! Each file is one `<server-data xmlns='urn:xmpp:pie:0'>` document; a directory is searched
//! for `*.xml` files (Prosody writes one file per account). What is carried over: SCRAM
//! credentials (or a plaintext `password`, hashed here), the roster with groups, offline
//! messages (their XEP-0203 `<delay/>` stamp kept as the stored time), and the vCard. Data this
//! server has no home for yet (private XML, PEP, archives …) is counted and reported, never
//! silently claimed as imported. Accounts that already exist are left untouched, so running an
//! import twice is harmless. Writes go in batches of [`BATCH`] accounts, one transaction each.

use franca_core::Config;
use franca_core::util::{now_us, parse_xep0082_datetime};
use franca_proto::ns::{NS_CLIENT, NS_DELAY, NS_ROSTER, NS_VCARD};
use franca_store::{ImportedAccount, RosterItem, ScramCredentials, Store, Subscription};
use franca_xml::{Element, Limits};
use jid::BareJid;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// XEP-0227's namespace.
const NS_PIE: &str = "urn:xmpp:pie:0";
/// XEP-0227 §4.2: SCRAM credentials of one mechanism.
const NS_PIE_SCRAM: &str = "urn:xmpp:pie:0#scram";
/// The largest file read: the whole document is held in memory while it is read, so larger
/// exports must come split (one file per account, as Prosody writes them).
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Accounts per transaction.
const BATCH: usize = 500;
/// Roster items and offline messages taken per account: what the server's own limits would
/// ever have let one account hold, with room to spare.
const MAX_ITEMS: usize = 100_000;

/// What one run did, printed at the end.
#[derive(Default)]
struct Tally {
    files: usize,
    created: u32,
    existing: u32,
    roster_items: usize,
    offline: usize,
    vcards: usize,
    /// Accounts whose data could not be taken, with the reason.
    refused: Vec<String>,
    /// Elements of accounts this server does not import yet, by name: "private (jabber:iq:private)".
    not_imported: BTreeMap<String, usize>,
    /// Hosts in the files that this server does not serve.
    other_hosts: BTreeMap<String, usize>,
}

pub async fn run(config: Config, paths: Vec<PathBuf>) -> Result<(), String> {
    let mut files = Vec::new();
    for p in &paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        return Err("no XEP-0227 files (*.xml) found".into());
    }
    let store = franca_store::open(&config.storage_url())
        .await
        .map_err(|e| format!("storage: {e}"))?;
    let result = import_files(&config, store.as_ref(), &files).await;
    store.close().await;
    let tally = result?;
    println!(
        "imported {} account(s) from {} file(s): {} roster item(s), {} offline message(s), {} vCard(s)",
        tally.created, tally.files, tally.roster_items, tally.offline, tally.vcards
    );
    if tally.existing > 0 {
        println!(
            "skipped {} account(s) that already exist (left unchanged)",
            tally.existing
        );
    }
    for (host, n) in &tally.other_hosts {
        println!("skipped {n} account(s) of {host}: not a domain of this server");
    }
    for (what, n) in &tally.not_imported {
        println!("not imported (not supported yet): {what} in {n} account(s)");
    }
    for r in &tally.refused {
        println!("refused: {r}");
    }
    Ok(())
}

/// `path` itself, or every `*.xml` under it (sorted, so runs are repeatable).
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_owned());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
    Ok(())
}

async fn import_files(
    config: &Config,
    store: &dyn Store,
    files: &[PathBuf],
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut batch = Vec::with_capacity(BATCH);
    for file in files {
        let doc = read(file)?;
        tally.files += 1;
        for account in accounts(config, &doc, &mut tally) {
            batch.push(account);
            if batch.len() == BATCH {
                flush(store, &mut batch, &mut tally).await?;
            }
        }
    }
    flush(store, &mut batch, &mut tally).await?;
    Ok(tally)
}

async fn flush(
    store: &dyn Store,
    batch: &mut Vec<ImportedAccount>,
    tally: &mut Tally,
) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    let created = store
        .import_accounts(batch)
        .await
        .map_err(|e| format!("storage: {e}"))?;
    tally.created += created;
    tally.existing += u32::try_from(batch.len()).unwrap_or(u32::MAX) - created;
    batch.clear();
    Ok(())
}

/// Reads one file as a `<server-data/>` document.
fn read(file: &Path) -> Result<Element, String> {
    let name = file.display();
    let size = std::fs::metadata(file)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{name}: {size} bytes is more than the {MAX_FILE_BYTES} this command reads at once; \
             export one file per account instead"
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("{name}: {e}"))?;
    let limits = Limits {
        max_stanza_bytes: MAX_FILE_BYTES as usize,
        ..Limits::default()
    };
    let doc = franca_xml::read_document(&bytes, limits, None)
        .map_err(|e| format!("{name}: not well-formed XML: {e}"))?
        .ok_or_else(|| format!("{name}: empty document"))?;
    if !doc.is("server-data", NS_PIE) {
        return Err(format!(
            "{name}: not an XEP-0227 document (the root is <{}/> in {:?}, not <server-data/> in {NS_PIE})",
            doc.name, doc.ns
        ));
    }
    Ok(doc)
}

/// The accounts of a `<server-data/>` document, for the hosts this server serves.
fn accounts(config: &Config, doc: &Element, tally: &mut Tally) -> Vec<ImportedAccount> {
    let mut out = Vec::new();
    for host in doc.elements().filter(|e| e.is("host", NS_PIE)) {
        let domain = host.attr("jid").unwrap_or_default();
        let users = host.elements().filter(|e| e.is("user", NS_PIE));
        if !config.serves(domain) {
            *tally.other_hosts.entry(domain.to_owned()).or_default() += users.count();
            continue;
        }
        for user in users {
            match account(domain, user, tally) {
                Ok(a) => out.push(a),
                Err(why) => tally.refused.push(why),
            }
        }
    }
    out
}

fn account(domain: &str, user: &Element, tally: &mut Tally) -> Result<ImportedAccount, String> {
    let name = user.attr("name").unwrap_or_default();
    let jid = BareJid::new(&format!("{name}@{domain}"))
        .ok()
        .filter(|j| j.node().is_some())
        .ok_or_else(|| format!("user {name:?} of {domain}: not a valid account JID"))?
        .to_string();
    let mut account = ImportedAccount {
        jid: jid.clone(),
        ..ImportedAccount::default()
    };
    for child in user.elements() {
        if child.is("scram-credentials", NS_PIE_SCRAM) {
            account
                .credentials
                .push(scram(child).map_err(|e| format!("{jid}: {e}"))?);
        } else if child.is("query", NS_ROSTER) {
            for item in child.elements().filter(|e| e.is("item", NS_ROSTER)) {
                if account.roster.len() == MAX_ITEMS {
                    return Err(format!("{jid}: more than {MAX_ITEMS} roster items"));
                }
                if let Some(item) = roster_item(item) {
                    account.roster.push(item);
                }
            }
        } else if child.is("offline-messages", NS_PIE) {
            for message in child.elements().filter(|e| e.name == "message") {
                if account.offline.len() == MAX_ITEMS {
                    return Err(format!("{jid}: more than {MAX_ITEMS} offline messages"));
                }
                account.offline.push(offline(message));
            }
        } else if child.is("vCard", NS_VCARD) {
            account.vcard = Some(child.to_xml());
        } else {
            let what = format!("{} ({})", child.name, child.ns);
            *tally.not_imported.entry(what).or_default() += 1;
        }
    }
    if account.credentials.is_empty()
        && let Some(password) = user.attr("password").filter(|p| !p.is_empty())
    {
        account.credentials = franca_core::credentials::from_password(password);
    }
    // Without credentials the account exists but cannot log in until `franca user passwd`.
    tally.roster_items += account.roster.len();
    tally.offline += account.offline.len();
    tally.vcards += usize::from(account.vcard.is_some());
    Ok(account)
}

/// XEP-0227 §4.2 `<scram-credentials mechanism='SCRAM-SHA-256'>` with base64 values.
fn scram(el: &Element) -> Result<ScramCredentials, String> {
    let mechanism = el.attr("mechanism").unwrap_or_default();
    let (hash, len) = match mechanism {
        "SCRAM-SHA-1" => ("SHA-1", 20),
        "SCRAM-SHA-256" => ("SHA-256", 32),
        "SCRAM-SHA-512" => ("SHA-512", 64),
        other => return Err(format!("unsupported SCRAM mechanism {other:?}")),
    };
    let text = |name: &str| {
        el.child(name, NS_PIE_SCRAM)
            .map(|c| c.text().trim().to_owned())
            .ok_or_else(|| format!("{mechanism}: <{name}/> missing"))
    };
    let b64 = |name: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text(name)?)
            .map_err(|e| format!("{mechanism}: <{name}/> is not base64: {e}"))
    };
    let iterations: u32 = text("iter-count")?
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{mechanism}: <iter-count/> is not a positive number"))?;
    let creds = ScramCredentials {
        hash: hash.to_owned(),
        salt: b64("salt")?,
        iterations,
        stored_key: b64("stored-key")?,
        server_key: b64("server-key")?,
    };
    if creds.stored_key.len() != len || creds.server_key.len() != len || creds.salt.is_empty() {
        return Err(format!(
            "{mechanism}: keys must be {len} bytes and the salt not empty"
        ));
    }
    Ok(creds)
}

/// An RFC 6121 roster item as exported (`subscription='remove'` or a bad JID is skipped).
fn roster_item(item: &Element) -> Option<RosterItem> {
    let jid = BareJid::new(item.attr("jid")?).ok()?.to_string();
    let subscription = Subscription::parse(item.attr("subscription").unwrap_or("none"))?;
    Some(RosterItem {
        jid,
        name: item.attr("name").map(str::to_owned),
        subscription,
        ask: item.attr("ask") == Some("subscribe"),
        groups: item
            .elements()
            .filter(|g| g.is("group", NS_ROSTER))
            .map(|g| g.text())
            .filter(|g| !g.is_empty())
            .collect(),
        ..RosterItem::default()
    })
}

/// An offline message: its XEP-0203 stamp becomes the stored time (the server adds the
/// `<delay/>` again on delivery, so the old one is taken off rather than doubled).
fn offline(message: &Element) -> (i64, String) {
    let mut message = message.clone();
    message.ns = NS_CLIENT.to_owned();
    let stamp = message
        .child("delay", NS_DELAY)
        .and_then(|d| d.attr("stamp"))
        .and_then(parse_xep0082_datetime);
    if stamp.is_some() {
        message.remove_child("delay", NS_DELAY);
    }
    (stamp.unwrap_or_else(now_us), message.to_xml())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut c = Config::default();
        c.server.domains = vec!["example.com".into()];
        c
    }

    fn doc(xml: &str) -> Element {
        franca_xml::read_document(xml.as_bytes(), Limits::default(), None)
            .expect("well-formed")
            .expect("a root")
    }

    #[test]
    fn reads_credentials_roster_offline_vcard_and_reports_the_rest() {
        let d = doc("<server-data xmlns='urn:xmpp:pie:0'>\
               <host jid='example.com'>\
                 <user name='juliet'>\
                   <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
                     <iter-count>4096</iter-count><salt>c2FsdA==</salt>\
                     <server-key>AAAAAAAAAAAAAAAAAAAAAAAAAAA=</server-key>\
                     <stored-key>AQEBAQEBAQEBAQEBAQEBAQEBAQE=</stored-key>\
                   </scram-credentials>\
                   <query xmlns='jabber:iq:roster'>\
                     <item jid='romeo@example.net' name='R' subscription='both'><group>Friends</group></item>\
                     <item jid='nurse@example.com' subscription='none' ask='subscribe'/>\
                     <item jid='@bad' subscription='both'/>\
                   </query>\
                   <offline-messages>\
                     <message xmlns='jabber:client' from='romeo@example.net/o' to='juliet@example.com' type='chat'>\
                       <body>hi</body><delay xmlns='urn:xmpp:delay' stamp='2023-11-14T22:13:20Z'/>\
                     </message>\
                   </offline-messages>\
                   <vCard xmlns='vcard-temp'><FN>Juliet</FN></vCard>\
                   <query xmlns='jabber:iq:private'><x xmlns='a'/></query>\
                 </user>\
                 <user name='bad@name'/>\
               </host>\
               <host jid='elsewhere.org'><user name='x'/><user name='y'/></host>\
             </server-data>");
        let mut tally = Tally::default();
        let accounts = accounts(&config(), &d, &mut tally);
        assert_eq!(accounts.len(), 1);
        let a = &accounts[0];
        assert_eq!(a.jid, "juliet@example.com");
        assert_eq!(a.credentials.len(), 1);
        assert_eq!(a.credentials[0].hash, "SHA-1");
        assert_eq!(a.credentials[0].salt, b"salt");
        assert_eq!(a.credentials[0].stored_key, vec![1; 20]);
        assert_eq!(a.roster.len(), 2, "the item with a bad JID is skipped");
        assert_eq!(a.roster[0].groups, vec!["Friends".to_owned()]);
        assert_eq!(a.roster[0].subscription, Subscription::Both);
        assert!(a.roster[1].ask);
        assert_eq!(a.offline.len(), 1);
        assert_eq!(a.offline[0].0, 1_700_000_000_000_000);
        assert!(!a.offline[0].1.contains("delay"), "{}", a.offline[0].1);
        assert!(a.offline[0].1.contains("<body>hi</body>"));
        assert!(a.vcard.as_deref().is_some_and(|v| v.contains("Juliet")));
        assert_eq!(
            tally.not_imported.get("query (jabber:iq:private)"),
            Some(&1)
        );
        assert_eq!(tally.other_hosts.get("elsewhere.org"), Some(&2));
        assert_eq!(tally.refused.len(), 1, "{:?}", tally.refused);
    }

    #[test]
    fn refuses_bad_credentials_and_takes_a_plaintext_password() {
        let bad = doc(
            "<server-data xmlns='urn:xmpp:pie:0'><host jid='example.com'><user name='a'>\
               <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-256'>\
                 <iter-count>4096</iter-count><salt>c2FsdA==</salt>\
                 <server-key>AAAA</server-key><stored-key>AAAA</stored-key>\
               </scram-credentials></user>\
               <user name='b' password='secret'/></host></server-data>",
        );
        let mut tally = Tally::default();
        let accounts = accounts(&config(), &bad, &mut tally);
        assert_eq!(tally.refused.len(), 1, "short keys are refused");
        assert!(tally.refused[0].starts_with("a@example.com"));
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].credentials.len(), 3, "one per supported hash");
    }
}

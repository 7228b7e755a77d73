//! The storage conformance suite: every [`Store`] method, with the behaviour other crates rely
//! on, checked against a real backend.
//!
//! Compiled into the library (not `cfg(test)`) so that any crate's tests can run it against a
//! store they built. [`run_all`] panics on the first failed check, naming it.
//!
//! It needs an empty store, and leaves it empty again when it passes, so it can run twice on
//! the same database (the SQLite test does, across a reopen).

use futures_util::future::join_all;

use crate::{
    ArchivePrefs, ArchiveQuery, ArchivedMessage, FastToken, ImportedAccount, LastActivity,
    MAX_FAST_CLIENTS, MucAffiliation, MucRoom, PubsubItem, PubsubNode, PushRegistration,
    RosterItem, ScramCredentials, Store, StoreError, Subscription,
};

/// `ok!(store.method(args))`: await and unwrap, naming the call when it fails.
macro_rules! ok {
    ($call:expr) => {
        match $call.await {
            Ok(v) => v,
            Err(e) => panic!("{} failed: {e}", stringify!($call)),
        }
    };
}

/// `err!(store.method(args), Pattern)`: await and expect a specific error.
macro_rules! err {
    ($call:expr, $pat:pat) => {
        match $call.await {
            Err($pat) => {}
            other => panic!(
                "{}: expected {}, got {other:?}",
                stringify!($call),
                stringify!($pat)
            ),
        }
    };
}

/// Run every check. The store must be empty.
pub async fn run_all(store: &dyn Store) {
    assert_eq!(
        ok!(store.list_users(None)),
        Vec::<String>::new(),
        "conformance::run_all needs an empty store"
    );
    accounts(store).await;
    roster(store).await;
    roster_versions_are_per_user(store).await;
    offline(store).await;
    offline_quota_is_atomic(store).await;
    vcard(store).await;
    blocking(store).await;
    last_activity(store).await;
    last_activity_many(store).await;
    fast_tokens(store).await;
    push_registrations(store).await;
    pubsub(store).await;
    mam_archives(store).await;
    mam_prefs(store).await;
    muc_rooms(store).await;
    pubsub_subscriptions(store).await;
    muc_mam_pubsub_edges(store).await;
    federation_bars(store).await;
    import_accounts(store).await;
    remove_user_deletes_everything(store).await;
    assert_eq!(
        ok!(store.list_users(None)),
        Vec::<String>::new(),
        "the suite removes every account it made"
    );
}

/// Credentials whose bytes depend on `seed`, with NUL and high bytes to catch text-mangling.
fn creds(hash: &str, seed: u8, iterations: u32) -> ScramCredentials {
    ScramCredentials {
        hash: hash.to_owned(),
        salt: vec![0, seed, 0xff, 0x80, b'\'', b'\\'],
        iterations,
        stored_key: (0..32).map(|i| i ^ seed).collect(),
        server_key: (0..64).map(|i| 255 - (i ^ seed)).collect(),
    }
}

async fn new_user(store: &dyn Store, user: &str) {
    ok!(store.create_user(user, &[creds("SHA-256", 1, 4096)]));
}

async fn accounts(store: &dyn Store) {
    let alice = "alice@a.example";
    assert!(!ok!(store.user_exists(alice)));
    assert_eq!(ok!(store.credentials(alice, "SHA-256")), None);

    // One set of credentials per hash; u32::MAX iterations does not fit a signed 32-bit
    // column, so this also checks the storage width.
    let all = [
        creds("SHA-1", 1, 4096),
        creds("SHA-256", 2, 10_000),
        creds("SHA-512", 3, u32::MAX),
    ];
    ok!(store.create_user(alice, &all));
    assert!(ok!(store.user_exists(alice)));
    for c in &all {
        assert_eq!(ok!(store.credentials(alice, &c.hash)).as_ref(), Some(c));
    }
    assert_eq!(ok!(store.credentials(alice, "SHA-384")), None);
    assert_eq!(
        ok!(store.credentials(alice, "sha-256")),
        None,
        "hash names are exact"
    );

    // Duplicate: refused, and the original credentials are untouched.
    err!(
        store.create_user(alice, &[creds("SHA-1", 9, 1)]),
        StoreError::UserExists(_)
    );
    assert_eq!(ok!(store.credentials(alice, "SHA-1")), Some(all[0].clone()));

    // Password change replaces every hash: ones not given are gone.
    let new = creds("SHA-256", 7, 20_000);
    ok!(store.set_credentials(alice, std::slice::from_ref(&new)));
    assert_eq!(ok!(store.credentials(alice, "SHA-256")), Some(new));
    assert_eq!(ok!(store.credentials(alice, "SHA-1")), None);
    assert_eq!(ok!(store.credentials(alice, "SHA-512")), None);
    err!(
        store.set_credentials("nobody@a.example", &all),
        StoreError::UnknownUser(_)
    );
    assert!(!ok!(store.user_exists("nobody@a.example")));

    // An account without credentials (e.g. authenticated elsewhere) is still an account.
    ok!(store.create_user("nocreds@a.example", &[]));
    assert!(ok!(store.user_exists("nocreds@a.example")));
    assert_eq!(ok!(store.credentials("nocreds@a.example", "SHA-1")), None);

    // Listing: sorted, and the domain filter matches the whole domain only.
    for u in [
        "bob@a.example",
        "carol@b.example",
        "alice@b.example",
        "dave@sub.a.example",
    ] {
        new_user(store, u).await;
    }
    assert_eq!(
        ok!(store.list_users(None)),
        [
            "alice@a.example",
            "alice@b.example",
            "bob@a.example",
            "carol@b.example",
            "dave@sub.a.example",
            "nocreds@a.example",
        ]
    );
    assert_eq!(
        ok!(store.list_users(Some("a.example"))),
        ["alice@a.example", "bob@a.example", "nocreds@a.example"]
    );
    assert_eq!(
        ok!(store.list_users(Some("b.example"))),
        ["alice@b.example", "carol@b.example"]
    );
    assert_eq!(
        ok!(store.list_users(Some("c.example"))),
        Vec::<String>::new()
    );

    // Removal.
    err!(
        store.remove_user("nobody@a.example"),
        StoreError::UnknownUser(_)
    );
    ok!(store.remove_user(alice));
    assert!(!ok!(store.user_exists(alice)));
    assert_eq!(ok!(store.credentials(alice, "SHA-256")), None);
    err!(store.remove_user(alice), StoreError::UnknownUser(_));
    assert_eq!(
        ok!(store.list_users(Some("a.example"))),
        ["bob@a.example", "nocreds@a.example"]
    );
    // The name is free again, with fresh credentials.
    ok!(store.create_user(alice, &[creds("SHA-1", 5, 1)]));
    assert_eq!(
        ok!(store.credentials(alice, "SHA-1")),
        Some(creds("SHA-1", 5, 1))
    );
    assert_eq!(ok!(store.credentials(alice, "SHA-256")), None);

    for u in [
        alice,
        "bob@a.example",
        "carol@b.example",
        "alice@b.example",
        "dave@sub.a.example",
        "nocreds@a.example",
    ] {
        ok!(store.remove_user(u));
    }
}

fn full_item(jid: &str) -> RosterItem {
    RosterItem {
        jid: jid.to_owned(),
        name: Some("Bé 'Bob' <&> 🙂".to_owned()),
        subscription: Subscription::Both,
        ask: true,
        pending_in: Some(
            "<presence xmlns='jabber:client' from='bob@b.example' type='subscribe'/>".to_owned(),
        ),
        approved: true,
        groups: vec![
            "Work".to_owned(),
            "Friends".to_owned(),
            "Ünïcode ✓".to_owned(),
        ],
        hidden: true,
    }
}

fn sorted(mut items: Vec<RosterItem>) -> Vec<RosterItem> {
    items.sort_by(|a, b| a.jid.cmp(&b.jid));
    items
}

async fn roster(store: &dyn Store) {
    let u = "roster@a.example";
    // Unknown account: empty roster, writes refused.
    assert!(ok!(store.roster(u)).1.is_empty());
    assert_eq!(ok!(store.roster_item(u, "x@b.example")), None);
    err!(
        store.put_roster_item(u, &RosterItem::default()),
        StoreError::UnknownUser(_)
    );
    err!(
        store.remove_roster_item(u, "x@b.example"),
        StoreError::UnknownUser(_)
    );

    new_user(store, u).await;
    let (v0, items) = ok!(store.roster(u));
    assert!(items.is_empty());

    // Minimal item: all defaults round-trip (no name, no groups, no flags).
    let plain = RosterItem {
        jid: "plain@b.example".to_owned(),
        ..RosterItem::default()
    };
    let v1 = ok!(store.put_roster_item(u, &plain));
    assert!(v1 > v0, "put bumps the version ({v0} -> {v1})");
    assert_eq!(ok!(store.roster_item(u, &plain.jid)), Some(plain.clone()));

    // Every field set, including hidden + pending-in state and group order.
    let full = full_item("bob@b.example");
    let v2 = ok!(store.put_roster_item(u, &full));
    assert!(v2 > v1);
    assert_eq!(ok!(store.roster_item(u, &full.jid)), Some(full.clone()));
    let (v, items) = ok!(store.roster(u));
    assert_eq!(v, v2, "roster() reports the version of the last change");
    assert_eq!(
        ok!(store.roster_count(u)),
        2,
        "roster_count counts hidden items too"
    );
    assert_eq!(sorted(items), [full.clone(), plain.clone()]);
    // The shared read is the same roster.
    let shared = ok!(store.roster_shared(u));
    assert_eq!(shared.version, v2);
    assert_eq!(sorted(shared.items.clone()), [full.clone(), plain.clone()]);

    // Update in place: fields cleared, groups replaced (not merged).
    let mut changed = full.clone();
    changed.name = None;
    changed.subscription = Subscription::To;
    changed.ask = false;
    changed.pending_in = None;
    changed.approved = false;
    changed.hidden = false;
    changed.groups = vec!["Friends".to_owned()];
    let v3 = ok!(store.put_roster_item(u, &changed));
    assert!(v3 > v2);
    assert_eq!(ok!(store.roster_item(u, &full.jid)), Some(changed.clone()));
    changed.groups.clear();
    let v4 = ok!(store.put_roster_item(u, &changed));
    assert!(v4 > v3);
    assert_eq!(ok!(store.roster_item(u, &full.jid)), Some(changed.clone()));
    assert_eq!(ok!(store.roster(u)).1.len(), 2, "an update adds no item");

    // Each subscription state round-trips, in either flag combination.
    let mut last = v4;
    for (i, sub) in [
        Subscription::None,
        Subscription::To,
        Subscription::From,
        Subscription::Both,
    ]
    .into_iter()
    .enumerate()
    {
        let item = RosterItem {
            jid: format!("sub{i}@c.example"),
            subscription: sub,
            ask: i % 2 == 0,
            approved: i % 2 == 1,
            groups: vec![format!("g{i}"), "shared".to_owned()],
            ..RosterItem::default()
        };
        let v = ok!(store.put_roster_item(u, &item));
        assert!(v > last);
        last = v;
        assert_eq!(ok!(store.roster_item(u, &item.jid)), Some(item));
    }
    assert_eq!(ok!(store.roster(u)).1.len(), 6);

    // Removal bumps the version; removing an absent item changes nothing and never goes back.
    let v5 = ok!(store.remove_roster_item(u, &plain.jid));
    assert!(v5 > last);
    assert_eq!(ok!(store.roster_item(u, &plain.jid)), None);
    let v6 = ok!(store.remove_roster_item(u, &plain.jid));
    assert!(v6 >= v5, "versions never decrease ({v5} -> {v6})");
    let (v, items) = ok!(store.roster(u));
    assert_eq!(v, v6);
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|i| i.jid != plain.jid));

    // Re-adding a removed item does not resurrect its old groups.
    let bare = RosterItem {
        jid: full.jid.clone(),
        ..RosterItem::default()
    };
    ok!(store.remove_roster_item(u, &full.jid));
    ok!(store.put_roster_item(u, &full));
    ok!(store.remove_roster_item(u, &full.jid));
    ok!(store.put_roster_item(u, &bare));
    assert_eq!(ok!(store.roster_item(u, &full.jid)), Some(bare));

    ok!(store.remove_user(u));
}

async fn roster_versions_are_per_user(store: &dyn Store) {
    let (a, b) = ("rv-a@a.example", "rv-b@a.example");
    new_user(store, a).await;
    new_user(store, b).await;
    let (vb, _) = ok!(store.roster(b));
    for i in 0..3 {
        let item = RosterItem {
            jid: format!("c{i}@b.example"),
            ..RosterItem::default()
        };
        ok!(store.put_roster_item(a, &item));
    }
    let (vb2, items_b) = ok!(store.roster(b));
    assert_eq!(
        vb, vb2,
        "another account's changes leave this version alone"
    );
    assert!(items_b.is_empty(), "items belong to one account");
    assert_eq!(ok!(store.roster_item(b, "c0@b.example")), None);
    // Concurrent changes of one roster each get their own, distinct version.
    let puts = (0..8).map(|i| {
        let item = RosterItem {
            jid: format!("conc{i}@b.example"),
            ..RosterItem::default()
        };
        async move { ok!(store.put_roster_item(a, &item)) }
    });
    let mut versions = join_all(puts).await;
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(versions.len(), 8, "concurrent puts got distinct versions");
    let (va, items) = ok!(store.roster(a));
    assert_eq!(Some(&va), versions.last());
    assert_eq!(items.len(), 11);
    ok!(store.remove_user(a));
    ok!(store.remove_user(b));
}

async fn offline(store: &dyn Store) {
    let (u, other) = ("off@a.example", "off2@a.example");
    err!(
        store.push_offline(u, 1, "<message/>", 10),
        StoreError::UnknownUser(_)
    );
    assert!(ok!(store.offline(u)).is_empty());
    assert_eq!(ok!(store.offline_count(u)), 0);
    new_user(store, u).await;
    new_user(store, other).await;

    let xml = |i: usize| {
        format!(
            "<message xmlns='jabber:client' from='x@b.example' to='{u}' id='m{i}'>\
             <body>hello #{i} ü 🙂 &amp; \"q\"\nline 2</body></message>"
        )
    };
    for i in 0..3 {
        ok!(store.push_offline(u, 1_700_000_000_000_000 + i as i64, &xml(i), 3));
    }
    err!(
        store.push_offline(u, 9, &xml(9), 3),
        StoreError::QuotaExceeded
    );
    err!(
        store.push_offline(other, 9, &xml(9), 0),
        StoreError::QuotaExceeded
    );
    assert_eq!(ok!(store.offline_count(u)), 3);

    // Oldest first, with stamp and XML exactly as stored; reading does not remove.
    let msgs = ok!(store.offline(u));
    assert_eq!(msgs.len(), 3);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m.stamp_us, 1_700_000_000_000_000 + i as i64);
        assert_eq!(m.xml, xml(i));
    }
    assert!(msgs.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(ok!(store.offline(u)), msgs);

    // Another account's messages and ids are separate.
    ok!(store.push_offline(other, 5, "<message id='other'/>", 10));
    let theirs = ok!(store.offline(other));
    assert_eq!(theirs.len(), 1);
    ok!(store.delete_offline(u, &[theirs[0].id]));
    assert_eq!(
        ok!(store.offline(other)),
        theirs,
        "delete is scoped to the account"
    );

    // Delete by id; unknown ids and an empty list are fine.
    ok!(store.delete_offline(u, &[msgs[0].id, msgs[1].id, i64::MAX]));
    ok!(store.delete_offline(u, &[]));
    assert_eq!(ok!(store.offline(u)), [msgs[2].clone()]);
    assert_eq!(ok!(store.offline_count(u)), 1);

    // Room under the quota again; ids are never reused, even the highest deleted one.
    ok!(store.push_offline(u, 10, &xml(10), 3));
    let now = ok!(store.offline(u));
    assert_eq!(now.len(), 2);
    let top = now[1].id;
    ok!(store.delete_offline(u, &[top]));
    ok!(store.push_offline(u, 11, &xml(11), 3));
    let after = ok!(store.offline(u));
    assert!(after[1].id > top, "id {top} reused as {}", after[1].id);
    assert_eq!(after[1].xml, xml(11));

    // Many ids at once (several statements' worth).
    let all: Vec<i64> = after.iter().map(|m| m.id).collect();
    for i in 0..520 {
        ok!(store.push_offline(other, i, "<message/>", 2000));
    }
    let ids: Vec<i64> = ok!(store.offline(other)).iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 521);
    ok!(store.delete_offline(other, &ids[..510]));
    assert_eq!(ok!(store.offline_count(other)), 11);
    ok!(store.delete_offline(u, &all));
    assert_eq!(ok!(store.offline_count(u)), 0);

    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
}

async fn offline_quota_is_atomic(store: &dyn Store) {
    let u = "quota@a.example";
    new_user(store, u).await;
    let pushes = (0..16).map(|i| store.push_offline(u, i, "<message/>", 5));
    let results = join_all(pushes).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::QuotaExceeded)))
        .count();
    assert_eq!(
        (stored, refused),
        (5, 11),
        "16 concurrent pushes against quota 5: {results:?}"
    );
    assert_eq!(ok!(store.offline_count(u)), 5);
    ok!(store.remove_user(u));
}

async fn vcard(store: &dyn Store) {
    let u = "vcard@a.example";
    err!(store.set_vcard(u, "<vCard/>"), StoreError::UnknownUser(_));
    assert_eq!(ok!(store.vcard(u)), None);
    new_user(store, u).await;
    assert_eq!(ok!(store.vcard(u)), None);
    let first = "<vCard xmlns='vcard-temp'><FN>Zoë</FN></vCard>";
    ok!(store.set_vcard(u, first));
    assert_eq!(ok!(store.vcard(u)).as_deref(), Some(first));
    // Replaced, not appended; a large photo survives intact.
    let photo: String = (0..200_000).map(|i| ['A', 'b', '+', '/'][i % 4]).collect();
    let second =
        format!("<vCard xmlns='vcard-temp'><PHOTO><BINVAL>{photo}</BINVAL></PHOTO></vCard>");
    ok!(store.set_vcard(u, &second));
    assert_eq!(ok!(store.vcard(u)), Some(second));
    ok!(store.remove_user(u));
}

fn jids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

async fn blocking(store: &dyn Store) {
    let (u, other) = ("block@a.example", "block2@a.example");
    err!(
        store.block(u, &jids(&["x@b.example"])),
        StoreError::UnknownUser(_)
    );
    assert!(ok!(store.blocklist(u)).is_empty());
    new_user(store, u).await;
    new_user(store, other).await;

    ok!(store.block(u, &[]));
    assert!(ok!(store.blocklist(u)).is_empty());
    ok!(store.block(u, &jids(&["b@b.example", "a@b.example", "b.example"])));
    ok!(store.block(other, &jids(&["a@b.example"])));
    // Blocking again is not an error and adds no duplicate.
    ok!(store.block(u, &jids(&["a@b.example", "c@b.example/res"])));
    let mut list = ok!(store.blocklist(u));
    list.sort();
    assert_eq!(
        list,
        ["a@b.example", "b.example", "b@b.example", "c@b.example/res"]
    );

    // Unblock specific JIDs; unknown ones are ignored; other accounts untouched.
    ok!(store.unblock(u, &jids(&["a@b.example", "nope@b.example"])));
    let mut list = ok!(store.blocklist(u));
    list.sort();
    assert_eq!(list, ["b.example", "b@b.example", "c@b.example/res"]);
    assert_eq!(ok!(store.blocklist(other)), ["a@b.example"]);

    // Unblock all.
    ok!(store.unblock(u, &[]));
    assert!(ok!(store.blocklist(u)).is_empty());
    assert_eq!(ok!(store.blocklist(other)), ["a@b.example"]);

    // Long lists (several statements' worth).
    let many: Vec<String> = (0..1200).map(|i| format!("spam{i:04}@c.example")).collect();
    ok!(store.block(u, &many));
    assert_eq!(ok!(store.blocklist(u)).len(), 1200);
    ok!(store.unblock(u, &many[..1100]));
    let mut list = ok!(store.blocklist(u));
    list.sort();
    assert_eq!(list, many[1100..]);

    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
}

async fn last_activity(store: &dyn Store) {
    let u = "last@a.example";
    let seen = LastActivity {
        seconds: 1_700_000_000,
        status: "Gone fishing 🎣".to_owned(),
    };
    err!(
        store.set_last_activity(u, &seen),
        StoreError::UnknownUser(_)
    );
    assert_eq!(ok!(store.last_activity(u)), None);
    new_user(store, u).await;
    assert_eq!(ok!(store.last_activity(u)), None);
    ok!(store.set_last_activity(u, &seen));
    assert_eq!(ok!(store.last_activity(u)), Some(seen));
    let later = LastActivity {
        seconds: 1_800_000_000,
        status: String::new(),
    };
    ok!(store.set_last_activity(u, &later));
    assert_eq!(ok!(store.last_activity(u)), Some(later));
    ok!(store.remove_user(u));
}

async fn last_activity_many(store: &dyn Store) {
    let (a, b, gone) = ("many1@a.example", "many2@a.example", "many3@a.example");
    let at = |seconds, status: &str| LastActivity {
        seconds,
        status: status.to_owned(),
    };
    ok!(store.set_last_activity_many(&[]));
    new_user(store, a).await;
    new_user(store, b).await;
    ok!(store.set_last_activity(b, &at(1, "old")));
    // An account that does not exist (removed after the record was taken) is skipped, and the
    // others are still written.
    ok!(store.set_last_activity_many(&[
        (a.to_owned(), at(1_700_000_000, "Gone fishing 🎣")),
        (gone.to_owned(), at(1_700_000_001, "")),
        (b.to_owned(), at(1_700_000_002, "")),
    ]));
    assert_eq!(
        ok!(store.last_activity(a)),
        Some(at(1_700_000_000, "Gone fishing 🎣"))
    );
    assert_eq!(ok!(store.last_activity(b)), Some(at(1_700_000_002, "")));
    assert!(
        !ok!(store.user_exists(gone)),
        "a batch write creates no account"
    );
    assert_eq!(ok!(store.last_activity(gone)), None);
    ok!(store.remove_user(a));
    ok!(store.remove_user(b));
}

/// Give `u` something in every kind of storage.
async fn fill(store: &dyn Store, u: &str) {
    ok!(store.create_user(u, &[creds("SHA-1", 1, 4096), creds("SHA-256", 2, 4096)]));
    ok!(store.put_roster_item(u, &full_item("friend@b.example")));
    ok!(store.put_roster_item(
        u,
        &RosterItem {
            jid: "other@b.example".to_owned(),
            groups: vec!["G".to_owned()],
            ..RosterItem::default()
        }
    ));
    ok!(store.push_offline(u, 1, "<message/>", 10));
    ok!(store.push_offline(u, 2, "<message/>", 10));
    ok!(store.set_vcard(u, "<vCard xmlns='vcard-temp'/>"));
    ok!(store.block(u, &jids(&["spam@b.example"])));
    ok!(store.set_last_activity(
        u,
        &LastActivity {
            seconds: 1,
            status: "bye".to_owned()
        }
    ));
    ok!(store.put_fast_token(u, &token("phone", 1, 100), 0));
    assert!(ok!(store.put_push_registration(
        u,
        &push("push.b.example", "n1", None),
        4
    )));
    ok!(store.archive_messages(&[archived(u, "0001", 1, "friend@b.example", true)]));
    ok!(store.set_archive_prefs(u, &prefs("never", &["a@b.example"], &[])));
}

async fn assert_nothing_stored(store: &dyn Store, u: &str) {
    assert_eq!(ok!(store.credentials(u, "SHA-1")), None, "{u}: credentials");
    assert_eq!(
        ok!(store.credentials(u, "SHA-256")),
        None,
        "{u}: credentials"
    );
    assert!(ok!(store.roster(u)).1.is_empty(), "{u}: roster");
    assert!(ok!(store.roster_shared(u)).items.is_empty(), "{u}: roster");
    assert_eq!(ok!(store.roster_count(u)), 0, "{u}: roster count");
    assert_eq!(
        ok!(store.roster_item(u, "friend@b.example")),
        None,
        "{u}: roster item"
    );
    assert!(ok!(store.offline(u)).is_empty(), "{u}: offline");
    assert_eq!(ok!(store.offline_count(u)), 0, "{u}: offline count");
    assert_eq!(ok!(store.vcard(u)), None, "{u}: vcard");
    assert!(ok!(store.blocklist(u)).is_empty(), "{u}: blocklist");
    assert_eq!(ok!(store.last_activity(u)), None, "{u}: last activity");
    assert!(
        ok!(store.fast_tokens(u, "phone")).is_empty(),
        "{u}: FAST tokens"
    );
    assert!(
        ok!(store.push_registrations(u)).is_empty(),
        "{u}: push registrations"
    );
    assert!(!ok!(store.archive_has(u, "0001")), "{u}: archive");
    assert_eq!(ok!(store.archive_prefs(u)), None, "{u}: archive prefs");
}

async fn import_accounts(store: &dyn Store) {
    let (a, b, existing) = ("imp-a@a.example", "imp-b@a.example", "imp-old@a.example");
    new_user(store, existing).await;
    let account = |jid: &str| ImportedAccount {
        jid: jid.to_owned(),
        credentials: vec![creds("SHA-1", 3, 4096), creds("SHA-256", 4, 8192)],
        roster: vec![
            full_item("friend@b.example"),
            RosterItem {
                jid: "other@b.example".to_owned(),
                groups: vec!["G2".to_owned(), "G1".to_owned()],
                ..RosterItem::default()
            },
        ],
        offline: vec![
            (5, "<message id='1'/>".to_owned()),
            (3, "<message id='2'/>".to_owned()),
        ],
        vcard: Some("<vCard xmlns='vcard-temp'><FN>A</FN></vCard>".to_owned()),
    };
    let created = ok!(store.import_accounts(&[account(a), account(existing), account(b)]));
    assert_eq!(created, 2, "an existing account is skipped, not counted");
    for u in [a, b] {
        assert_eq!(
            ok!(store.credentials(u, "SHA-256")),
            Some(creds("SHA-256", 4, 8192)),
            "{u}: imported credentials"
        );
        let (version, mut items) = ok!(store.roster(u));
        assert!(version > 0, "{u}: imported roster items bump the version");
        items.sort_by(|x, y| x.jid.cmp(&y.jid));
        assert_eq!(items, account(u).roster, "{u}: roster with groups in order");
        // Imported in the order given (ids grow), with the stamps given.
        let offline: Vec<(i64, String)> = ok!(store.offline(u))
            .into_iter()
            .map(|m| (m.stamp_us, m.xml))
            .collect();
        assert_eq!(offline, account(u).offline, "{u}: offline messages");
        assert_eq!(ok!(store.vcard(u)), account(u).vcard, "{u}: vCard");
    }
    // The existing account was not touched.
    assert_eq!(
        ok!(store.credentials(existing, "SHA-256")),
        Some(creds("SHA-256", 1, 4096))
    );
    assert!(ok!(store.roster(existing)).1.is_empty());
    assert!(ok!(store.offline(existing)).is_empty());
    for u in [a, b, existing] {
        ok!(store.remove_user(u));
    }
}

async fn remove_user_deletes_everything(store: &dyn Store) {
    let (u, keep) = ("gone@a.example", "stays@a.example");
    fill(store, u).await;
    fill(store, keep).await;
    let kept_roster = ok!(store.roster(keep));
    let kept_offline = ok!(store.offline(keep));
    // Read first, so a caching store has this roster to forget.
    assert_eq!(ok!(store.roster(u)).1.len(), 2);
    assert_eq!(ok!(store.roster_count(u)), 2);

    ok!(store.remove_user(u));
    assert!(!ok!(store.user_exists(u)));
    assert_nothing_stored(store, u).await;
    // A new account under the same name starts empty: nothing was left behind to inherit.
    ok!(store.create_user(u, &[]));
    assert_nothing_stored(store, u).await;
    ok!(store.remove_user(u));

    // The other account is untouched.
    assert_eq!(ok!(store.roster(keep)), kept_roster);
    assert_eq!(ok!(store.offline(keep)), kept_offline);
    assert!(ok!(store.vcard(keep)).is_some());
    assert_eq!(ok!(store.blocklist(keep)), ["spam@b.example"]);
    assert!(ok!(store.last_activity(keep)).is_some());
    assert_eq!(
        ok!(store.credentials(keep, "SHA-1")),
        Some(creds("SHA-1", 1, 4096))
    );
    ok!(store.remove_user(keep));
    assert_nothing_stored(store, keep).await;
}

/// The per-account federation bar: set, idempotent, lifted, per account, gone with the account.
async fn federation_bars(store: &dyn Store) {
    let (u, other) = ("nofed@a.example", "fed@a.example");
    err!(
        store.set_federation_barred(u, true),
        StoreError::UnknownUser(_)
    );
    err!(
        store.set_federation_barred(u, false),
        StoreError::UnknownUser(_)
    );
    assert!(!ok!(store.federation_barred(u)));
    new_user(store, u).await;
    new_user(store, other).await;
    assert!(!ok!(store.federation_barred(u)), "not barred by default");

    ok!(store.set_federation_barred(u, true));
    // Barring again is not an error.
    ok!(store.set_federation_barred(u, true));
    assert!(ok!(store.federation_barred(u)));
    assert!(
        !ok!(store.federation_barred(other)),
        "the bar is per account"
    );

    ok!(store.set_federation_barred(u, false));
    assert!(!ok!(store.federation_barred(u)));
    // Lifting a bar that is not there is not an error either.
    ok!(store.set_federation_barred(u, false));

    // Removing the account removes its bar: a new account of the same name is not barred.
    ok!(store.set_federation_barred(u, true));
    ok!(store.remove_user(u));
    assert!(!ok!(store.federation_barred(u)));
    new_user(store, u).await;
    assert!(!ok!(store.federation_barred(u)));
    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
}

/// A FAST token for `client` whose hash depends on `seed`, expiring at `expires_us`.
fn token(client: &str, seed: u8, expires_us: i64) -> FastToken {
    FastToken {
        client_id: client.to_owned(),
        hash: (0..32).map(|i| i ^ seed).collect(),
        mechanism: "HT-SHA-256-NONE".to_owned(),
        expires_us,
        count: 0,
        new: true,
    }
}

async fn fast_tokens(store: &dyn Store) {
    let (u, other) = ("fast@a.example", "fast-other@a.example");
    err!(
        store.put_fast_token(u, &token("phone", 1, 100), 0),
        StoreError::UnknownUser(_)
    );
    new_user(store, u).await;
    new_user(store, other).await;
    assert!(ok!(store.fast_tokens(u, "phone")).is_empty());

    // Issued: the 'new' slot. Another issue before any use replaces it.
    ok!(store.put_fast_token(u, &token("phone", 1, 100), 0));
    ok!(store.put_fast_token(u, &token("phone", 2, 200), 0));
    assert_eq!(ok!(store.fast_tokens(u, "phone")), [token("phone", 2, 200)]);
    assert!(!ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 1, 0).hash,
        None,
        false,
        10
    )));
    // Not another user's, not another client's.
    assert!(!ok!(store.use_fast_token(
        other,
        "phone",
        &token("phone", 2, 0).hash,
        None,
        false,
        10
    )));
    assert!(!ok!(store.use_fast_token(
        u,
        "laptop",
        &token("phone", 2, 0).hash,
        None,
        false,
        10
    )));

    // Used with a counter: it becomes current and remembers the counter.
    assert!(ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 2, 0).hash,
        Some(5),
        false,
        10
    )));
    let current = ok!(store.fast_tokens(u, "phone"));
    assert_eq!(current.len(), 1);
    assert!(!current[0].new);
    assert_eq!(current[0].count, 5);
    // A replayed or lower counter changes nothing; no counter (no 0-RTT) is fine.
    assert!(!ok!(store.use_fast_token(
        u,
        "phone",
        &current[0].hash,
        Some(5),
        false,
        10
    )));
    assert!(!ok!(store.use_fast_token(
        u,
        "phone",
        &current[0].hash,
        Some(4),
        false,
        10
    )));
    assert!(ok!(store.use_fast_token(
        u,
        "phone",
        &current[0].hash,
        None,
        false,
        10
    )));
    assert_eq!(ok!(store.fast_tokens(u, "phone"))[0].count, 5);

    // Rotation: a new token sits next to the current one until it is used, which drops the
    // old one.
    ok!(store.put_fast_token(u, &token("phone", 3, 300), 10));
    let both = ok!(store.fast_tokens(u, "phone"));
    assert_eq!(both.len(), 2);
    assert!(
        both.iter()
            .any(|t| t.new && t.hash == token("phone", 3, 0).hash)
    );
    assert!(ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 2, 0).hash,
        Some(6),
        false,
        10
    )));
    assert_eq!(ok!(store.fast_tokens(u, "phone")).len(), 2);
    assert!(ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 3, 0).hash,
        None,
        false,
        10
    )));
    let after = ok!(store.fast_tokens(u, "phone"));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].hash, token("phone", 3, 0).hash);
    assert!(!ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 2, 0).hash,
        Some(7),
        false,
        10
    )));

    // Expired tokens are refused, and dropped at the next issue.
    assert!(!ok!(store.use_fast_token(
        u,
        "phone",
        &token("phone", 3, 0).hash,
        None,
        false,
        300
    )));
    ok!(store.put_fast_token(u, &token("tablet", 4, 1000), 300));
    assert!(ok!(store.fast_tokens(u, "phone")).is_empty());

    // Invalidation deletes the token it logged in with.
    assert!(ok!(store.use_fast_token(
        u,
        "tablet",
        &token("tablet", 4, 0).hash,
        None,
        true,
        400
    )));
    assert!(ok!(store.fast_tokens(u, "tablet")).is_empty());

    // Clients are bounded: the ones renewed least recently go.
    let clients = MAX_FAST_CLIENTS + 2;
    for i in 0..clients {
        ok!(store.put_fast_token(u, &token(&format!("c{i:03}"), 9, 10_000 + i), 500));
    }
    assert!(ok!(store.fast_tokens(u, "c000")).is_empty());
    assert!(ok!(store.fast_tokens(u, "c001")).is_empty());
    assert_eq!(ok!(store.fast_tokens(u, "c002")).len(), 1);

    // Revocation removes them all, and only this user's.
    ok!(store.put_fast_token(other, &token("phone", 5, 1000), 0));
    assert_eq!(
        ok!(store.revoke_fast_tokens(u)),
        u64::try_from(MAX_FAST_CLIENTS).unwrap_or(0)
    );
    assert_eq!(ok!(store.revoke_fast_tokens(u)), 0);
    assert_eq!(ok!(store.fast_tokens(other, "phone")).len(), 1);
    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
}

fn push(jid: &str, node: &str, options: Option<&str>) -> PushRegistration {
    PushRegistration {
        jid: jid.to_owned(),
        node: node.to_owned(),
        options: options.map(str::to_owned),
    }
}

async fn push_registrations(store: &dyn Store) {
    let (u, other) = ("push@a.example", "push-other@a.example");
    err!(
        store.put_push_registration(u, &push("p.example", "n", None), 4),
        StoreError::UnknownUser(_)
    );
    new_user(store, u).await;
    new_user(store, other).await;
    assert!(ok!(store.push_registrations(u)).is_empty());

    let form = "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>\u{e9}'\"</value></field></x>";
    assert!(ok!(store.put_push_registration(
        u,
        &push("p.example", "n2", None),
        3
    )));
    assert!(ok!(store.put_push_registration(
        u,
        &push("p.example", "n1", Some(form)),
        3
    )));
    assert!(ok!(store.put_push_registration(
        u,
        &push("q.example", "n1", None),
        3
    )));
    assert_eq!(
        ok!(store.push_registrations(u)),
        [
            push("p.example", "n1", Some(form)),
            push("p.example", "n2", None),
            push("q.example", "n1", None)
        ],
        "ordered by JID then node, options kept byte for byte"
    );
    // At the cap a new pair is refused, but the same pair again replaces its options (§5).
    assert!(!ok!(store.put_push_registration(
        u,
        &push("r.example", "n", None),
        3
    )));
    assert!(ok!(store.put_push_registration(
        u,
        &push("p.example", "n1", None),
        3
    )));
    assert_eq!(ok!(store.push_registrations(u)).len(), 3);
    assert_eq!(ok!(store.push_registrations(u))[0].options, None);
    // Other accounts have their own cap.
    assert!(ok!(store.put_push_registration(
        other,
        &push("p.example", "n1", None),
        1
    )));

    // Disabling one node, then every node of a JID.
    assert_eq!(
        ok!(store.remove_push_registrations(u, "p.example", Some("n9"))),
        0
    );
    assert_eq!(
        ok!(store.remove_push_registrations(u, "p.example", Some("n2"))),
        1
    );
    assert!(ok!(store.put_push_registration(
        u,
        &push("p.example", "n3", None),
        3
    )));
    assert_eq!(
        ok!(store.remove_push_registrations(u, "p.example", None)),
        2
    );
    assert_eq!(
        ok!(store.push_registrations(u)),
        [push("q.example", "n1", None)]
    );
    assert_eq!(ok!(store.push_registrations(other)).len(), 1);
    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
    assert!(ok!(store.push_registrations(u)).is_empty());
}

// ---- pubsub/pep

fn ps_node(node: &str, config: &str) -> PubsubNode {
    PubsubNode {
        node: node.to_owned(),
        config: config.to_owned(),
    }
}

fn ps_item(id: &str, stamp_us: i64, xml: &str) -> PubsubItem {
    PubsubItem {
        id: id.to_owned(),
        stamp_us,
        xml: xml.to_owned(),
    }
}

fn ids(items: &[PubsubItem]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

async fn pubsub(store: &dyn Store) {
    let (u, service) = ("pep@a.example", "pubsub.a.example");
    new_user(store, u).await;
    assert!(ok!(store.pubsub_nodes(u)).is_empty());
    assert!(!ok!(store.publish_pubsub_item(
        u,
        "n",
        &ps_item("1", 1, "<x/>"),
        5
    )));

    // Nodes: capped per owner, reconfiguring an existing one is not a new node.
    assert!(ok!(store.put_pubsub_node(u, &ps_node("b", "c1"), 2)));
    assert!(ok!(store.put_pubsub_node(u, &ps_node("a", "c2"), 2)));
    assert!(!ok!(store.put_pubsub_node(u, &ps_node("c", "c3"), 2)));
    assert!(ok!(store.put_pubsub_node(u, &ps_node("b", "c4"), 2)));
    assert_eq!(
        ok!(store.pubsub_nodes(u)),
        [ps_node("a", "c2"), ps_node("b", "c4")]
    );
    assert_eq!(ok!(store.pubsub_node(u, "b")), Some(ps_node("b", "c4")));
    assert_eq!(ok!(store.pubsub_node(u, "c")), None);
    // An owner that is not an account (a PubSub service) has its own nodes.
    assert!(ok!(store.put_pubsub_node(service, &ps_node("b", "s"), 1)));

    // Items: newest first, max_items trims the oldest, same id replaces and becomes newest,
    // equal stamps keep publish order.
    let xml = "<item id='1'><data xmlns='urn:xmpp:avatar:data'>\u{e9}&amp;</data></item>";
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("1", 10, xml),
        3
    )));
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("2", 10, "<two/>"),
        3
    )));
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("3", 5, "<three/>"),
        3
    )));
    let all = ok!(store.pubsub_items(u, "b", &[], 10));
    assert_eq!(ids(&all), ["3", "2", "1"]);
    assert_eq!(all[2].xml, xml, "stored byte for byte");
    assert!(all[0].stamp_us > all[1].stamp_us && all[1].stamp_us > all[2].stamp_us);
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("4", 20, "<four/>"),
        3
    )));
    assert_eq!(
        ids(&ok!(store.pubsub_items(u, "b", &[], 10))),
        ["4", "3", "2"]
    );
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("2", 30, "<new/>"),
        3
    )));
    let all = ok!(store.pubsub_items(u, "b", &[], 10));
    assert_eq!(ids(&all), ["2", "4", "3"]);
    assert_eq!(all[0].xml, "<new/>");
    assert_eq!(ids(&ok!(store.pubsub_items(u, "b", &[], 1))), ["2"]);
    let wanted = ["3".to_owned(), "9".to_owned(), "4".to_owned()];
    assert_eq!(
        ids(&ok!(store.pubsub_items(u, "b", &wanted, 1))),
        ["4", "3"]
    );
    assert!(ok!(store.pubsub_items(service, "b", &[], 10)).is_empty());
    // A lower max_items on the next publish trims at once.
    assert!(ok!(store.publish_pubsub_item(
        u,
        "b",
        &ps_item("5", 40, "<five/>"),
        1
    )));
    assert_eq!(ids(&ok!(store.pubsub_items(u, "b", &[], 10))), ["5"]);

    // Retract, purge, delete.
    assert!(ok!(store.retract_pubsub_item(u, "b", "5")));
    assert!(!ok!(store.retract_pubsub_item(u, "b", "5")));
    assert!(ok!(store.publish_pubsub_item(
        u,
        "a",
        &ps_item("x", 1, "<x/>"),
        5
    )));
    assert!(ok!(store.publish_pubsub_item(
        u,
        "a",
        &ps_item("y", 2, "<y/>"),
        5
    )));
    assert_eq!(ok!(store.purge_pubsub_node(u, "a")), 2);
    assert!(ok!(store.pubsub_items(u, "a", &[], 10)).is_empty());
    assert!(ok!(store.publish_pubsub_item(
        u,
        "a",
        &ps_item("z", 3, "<z/>"),
        5
    )));
    assert!(ok!(store.delete_pubsub_node(u, "a")));
    assert!(!ok!(store.delete_pubsub_node(u, "a")));
    assert!(ok!(store.pubsub_items(u, "a", &[], 10)).is_empty());
    assert!(ok!(store.put_pubsub_node(u, &ps_node("a", "c"), 5)));
    assert!(
        ok!(store.pubsub_items(u, "a", &[], 10)).is_empty(),
        "a node created again starts empty"
    );

    // Removing the account removes its nodes and items, not the service's.
    assert!(ok!(store.publish_pubsub_item(
        u,
        "a",
        &ps_item("z", 3, "<z/>"),
        5
    )));
    ok!(store.remove_user(u));
    assert!(ok!(store.pubsub_nodes(u)).is_empty());
    assert!(ok!(store.pubsub_items(u, "a", &[], 10)).is_empty());
    assert!(ok!(store.delete_pubsub_node(service, "b")));
    assert!(ok!(store.pubsub_nodes(service)).is_empty());
}

fn archived(owner: &str, id: &str, stamp_us: i64, with: &str, outgoing: bool) -> ArchivedMessage {
    ArchivedMessage {
        owner: owner.to_owned(),
        id: id.to_owned(),
        stamp_us,
        with: with.to_owned(),
        outgoing,
        xml: format!("<message id='{id}'><body>é\u{1F600} {id}</body></message>"),
    }
}

fn prefs(default: &str, always: &[&str], never: &[&str]) -> ArchivePrefs {
    ArchivePrefs {
        default: default.to_owned(),
        always: jids(always),
        never: jids(never),
    }
}

fn page_ids(page: &crate::ArchivePage) -> Vec<&str> {
    page.messages.iter().map(|m| m.id.as_str()).collect()
}

async fn mam_archives(store: &dyn Store) {
    // Owners need not be accounts (rooms use the same archive).
    let (u, other) = ("mam@a.example", "room@muc.a.example");
    let (alice, bob) = ("alice@b.example", "bob@b.example");
    // Ten messages, ids 00..09 in archive order, alternating partners; inserted out of order
    // and in two calls (one a multi-row statement) to show order comes from the id.
    let all: Vec<ArchivedMessage> = (0..10)
        .map(|i| {
            let with = if i % 2 == 0 { alice } else { bob };
            archived(u, &format!("{i:02}"), 100 + i, with, i % 3 == 0)
        })
        .collect();
    let mut shuffled = all.clone();
    shuffled.reverse();
    ok!(store.archive_messages(&shuffled[..3]));
    ok!(store.archive_messages(&shuffled[3..]));
    ok!(store.archive_messages(&[archived(other, "05", 1, alice, false)]));
    let q = |max| ArchiveQuery {
        max,
        ..ArchiveQuery::default()
    };

    // Forwards, first page; rows round-trip whole.
    let page = ok!(store.archive_query(u, &q(4)));
    assert_eq!(page_ids(&page), ["00", "01", "02", "03"]);
    assert_eq!(page.messages[0], all[0]);
    assert_eq!(page.messages[1], all[1]);
    assert_eq!((page.count, page.complete), (10, false));
    // Following pages with `after`; the last one is complete.
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            after: Some("03".into()),
            ..q(4)
        }
    ));
    assert_eq!(page_ids(&page), ["04", "05", "06", "07"]);
    assert!(!page.complete);
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            after: Some("07".into()),
            ..q(4)
        }
    ));
    assert_eq!(page_ids(&page), ["08", "09"]);
    assert_eq!((page.count, page.complete), (10, true));
    // Exactly the rest is complete too (the extra row fetched tells).
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            after: Some("05".into()),
            ..q(4)
        }
    ));
    assert_eq!(page_ids(&page), ["06", "07", "08", "09"]);
    assert!(page.complete);

    // Backwards: the last page, then `before` its first; still oldest first within a page.
    let last = ArchiveQuery {
        last_page: true,
        ..q(4)
    };
    let page = ok!(store.archive_query(u, &last));
    assert_eq!(page_ids(&page), ["06", "07", "08", "09"]);
    assert!(!page.complete);
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            before: Some("02".into()),
            ..last.clone()
        }
    ));
    assert_eq!(page_ids(&page), ["00", "01"]);
    assert_eq!((page.count, page.complete), (10, true));

    // Filters: with, the id range of start/end, ids; the count follows the filters.
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            with: Some(bob.into()),
            ..q(3)
        }
    ));
    assert_eq!(page_ids(&page), ["01", "03", "05"]);
    assert_eq!((page.count, page.complete), (5, false));
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            with: Some(bob.into()),
            after: Some("05".into()),
            ..q(3)
        }
    ));
    assert_eq!(page_ids(&page), ["07", "09"]);
    assert!(page.complete);
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            from_id: Some("03".into()),
            until_id: Some("06".into()),
            ..q(10)
        }
    ));
    assert_eq!(page_ids(&page), ["03", "04", "05"]);
    assert_eq!((page.count, page.complete), (3, true));
    let page = ok!(store.archive_query(
        u,
        &ArchiveQuery {
            ids: vec!["07".into(), "02".into(), "nope".into()],
            ..q(10)
        }
    ));
    assert_eq!(page_ids(&page), ["02", "07"]);
    assert_eq!(page.count, 2);
    // max 0: only the count.
    let page = ok!(store.archive_query(u, &q(0)));
    assert!(page.messages.is_empty());
    assert_eq!((page.count, page.complete), (10, false));
    // The other owner's archive is separate.
    let page = ok!(store.archive_query(other, &q(10)));
    assert_eq!(page_ids(&page), ["05"]);
    assert_eq!(page.count, 1);
    let page = ok!(store.archive_query("nobody@a.example", &q(10)));
    assert_eq!(
        (page.messages.len(), page.count, page.complete),
        (0, 0, true)
    );

    assert!(ok!(store.archive_has(u, "09")));
    assert!(!ok!(store.archive_has(u, "10")));
    assert!(!ok!(store.archive_has("nobody@a.example", "09")));
    // Ids are per owner: the same id under two owners, and a duplicate is refused.
    assert!(store.archive_messages(&[all[0].clone()]).await.is_err());

    // Expiry in batches: stamps below 105 are u's 00..04 and the other owner's one.
    assert_eq!(ok!(store.archive_expire(105, 4)), 4);
    assert_eq!(ok!(store.archive_expire(105, 4)), 2);
    assert_eq!(ok!(store.archive_expire(105, 4)), 0);
    let page = ok!(store.archive_query(u, &q(10)));
    assert_eq!(page_ids(&page), ["05", "06", "07", "08", "09"]);
    assert_eq!(ok!(store.archive_query(other, &q(10))).count, 0);

    // One owner's own retention (a room's): only its rows, oldest first, in batches.
    ok!(store.archive_messages(&[archived(other, "06", 107, alice, false)]));
    assert_eq!(ok!(store.archive_expire_owner(u, 108, 2)), 2);
    assert_eq!(ok!(store.archive_expire_owner(u, 108, 2)), 1);
    assert_eq!(ok!(store.archive_expire_owner(u, 108, 2)), 0);
    assert_eq!(page_ids(&ok!(store.archive_query(u, &q(10)))), ["08", "09"]);
    assert_eq!(ok!(store.archive_query(other, &q(10))).count, 1);
    assert_eq!(ok!(store.archive_remove(other)), 1);

    assert_eq!(ok!(store.archive_remove(u)), 2);
    assert_eq!(ok!(store.archive_query(u, &q(10))).count, 0);
    assert_eq!(ok!(store.archive_remove(u)), 0);
}

async fn mam_prefs(store: &dyn Store) {
    let u = "mam-prefs@a.example";
    err!(
        store.set_archive_prefs(u, &prefs("always", &[], &[])),
        StoreError::UnknownUser(_)
    );
    new_user(store, u).await;
    assert_eq!(ok!(store.archive_prefs(u)), None);
    let p = prefs(
        "roster",
        &["a@b.example", "c@d.example"],
        &["spam@b.example"],
    );
    ok!(store.set_archive_prefs(u, &p));
    assert_eq!(ok!(store.archive_prefs(u)), Some(p));
    // Replaced whole, empty lists included.
    let p = prefs("never", &[], &[]);
    ok!(store.set_archive_prefs(u, &p));
    assert_eq!(ok!(store.archive_prefs(u)), Some(p));
    ok!(store.remove_user(u));
    assert_eq!(ok!(store.archive_prefs(u)), None);
}

fn aff(jid: &str, affiliation: &str, reason: Option<&str>) -> MucAffiliation {
    MucAffiliation {
        jid: jid.to_owned(),
        affiliation: affiliation.to_owned(),
        reason: reason.map(str::to_owned),
        nick: None,
    }
}

async fn muc_rooms(store: &dyn Store) {
    let (svc, other_svc) = ("conference.a.example", "conference.b.example");
    assert!(ok!(store.muc_rooms(svc)).is_empty());
    let config = "<x xmlns='jabber:x:data' type='submit'><field var='n'><value>\u{e9}'\"&lt;</value></field></x>";
    let mut room = MucRoom {
        jid: format!("tea@{svc}"),
        config: config.to_owned(),
        subject: None,
        created_us: 1_700_000_000_000_000,
        affiliations: vec![
            aff("a@a.example", "owner", None),
            aff("troll@b.example", "outcast", Some("spam \u{2603}")),
        ],
    };
    err!(
        store.set_muc_affiliations(&room.jid, &[aff("x@a.example", "member", None)]),
        StoreError::UnknownRoom(_)
    );
    ok!(store.put_muc_room(svc, &room, true));
    let lounge = MucRoom {
        jid: format!("lounge@{svc}"),
        config: "<x/>".to_owned(),
        affiliations: vec![aff("a@a.example", "owner", None)],
        ..MucRoom::default()
    };
    ok!(store.put_muc_room(svc, &lounge, true));
    let elsewhere = MucRoom {
        jid: format!("tea@{other_svc}"),
        config: "<x/>".to_owned(),
        ..MucRoom::default()
    };
    ok!(store.put_muc_room(other_svc, &elsewhere, false));
    assert_eq!(
        ok!(store.muc_rooms(svc)),
        [lounge.clone(), room.clone()],
        "ordered by room JID, configuration kept byte for byte, affiliations by JID"
    );
    assert_eq!(
        ok!(store.muc_rooms(other_svc)),
        std::slice::from_ref(&elsewhere)
    );

    // A new configuration and subject, affiliations untouched; the creation time stays.
    room.config = "<x xmlns='jabber:x:data' type='submit'/>".to_owned();
    room.subject = Some("<subject>Tea \u{1f375}</subject>".to_owned());
    let mut rewritten = room.clone();
    rewritten.created_us = 5;
    rewritten.affiliations.clear();
    ok!(store.put_muc_room(svc, &rewritten, false));
    assert_eq!(ok!(store.muc_rooms(svc))[1], room);

    // Changes: a new member, a changed affiliation, a removal; the last change of a JID wins.
    ok!(store.set_muc_affiliations(
        &room.jid,
        &[
            aff("m@a.example", "admin", None),
            aff("troll@b.example", "none", None),
            aff("a@a.example", "owner", Some("founder")),
            aff("m@a.example", "member", None),
            aff("gone@a.example", "none", None),
        ]
    ));
    assert_eq!(
        ok!(store.muc_rooms(svc))[1].affiliations,
        [
            aff("a@a.example", "owner", Some("founder")),
            aff("m@a.example", "member", None)
        ]
    );
    // A reserved nickname goes with its affiliation, and a change of affiliation replaces it.
    let with_nick = MucAffiliation {
        nick: Some("M \u{e9}".to_owned()),
        ..aff("m@a.example", "member", None)
    };
    ok!(store.set_muc_affiliations(&room.jid, std::slice::from_ref(&with_nick)));
    assert_eq!(ok!(store.muc_rooms(svc))[1].affiliations[1], with_nick);
    ok!(store.set_muc_affiliations(&room.jid, &[aff("m@a.example", "admin", None)]));
    assert_eq!(
        ok!(store.muc_rooms(svc))[1].affiliations[1],
        aff("m@a.example", "admin", None)
    );
    ok!(store.set_muc_affiliations(&room.jid, std::slice::from_ref(&with_nick)));
    // Many at once (more than one statement's worth).
    let many: Vec<MucAffiliation> = (0..700)
        .map(|i| aff(&format!("u{i:04}@a.example"), "member", None))
        .collect();
    ok!(store.set_muc_affiliations(&room.jid, &many));
    assert_eq!(ok!(store.muc_rooms(svc))[1].affiliations.len(), 702);
    // Replacing the whole list, nicknames with it.
    room.affiliations[0].nick = Some("Al".to_owned());
    ok!(store.put_muc_room(svc, &room, true));
    assert_eq!(ok!(store.muc_rooms(svc))[1], room);

    assert!(ok!(store.remove_muc_room(&room.jid)));
    assert!(!ok!(store.remove_muc_room(&room.jid)));
    assert_eq!(ok!(store.muc_rooms(svc)), std::slice::from_ref(&lounge));
    err!(
        store.set_muc_affiliations(&room.jid, &[aff("x@a.example", "member", None)]),
        StoreError::UnknownRoom(_)
    );
    assert!(ok!(store.remove_muc_room(&lounge.jid)));
    assert!(ok!(store.remove_muc_room(&elsewhere.jid)));
    assert!(ok!(store.muc_rooms(svc)).is_empty());
    assert!(ok!(store.muc_rooms(other_svc)).is_empty());
}

/// Explicit subscriptions of a PubSub service's node: only to an existing node, capped, an
/// existing one kept, gone with the node.
async fn pubsub_subscriptions(store: &dyn Store) {
    let (svc, node) = ("pubsub.sub.example", "news");
    assert!(!ok!(store.subscribe_pubsub(svc, node, "a@sub.example", 2)));
    assert!(ok!(store.put_pubsub_node(svc, &ps_node(node, "c"), 5)));
    assert!(ok!(store.put_pubsub_node(svc, &ps_node("other", "c"), 5)));
    assert!(ok!(store.subscribe_pubsub(svc, node, "b@sub.example/r", 2)));
    assert!(ok!(store.subscribe_pubsub(svc, node, "a@sub.example", 2)));
    assert!(ok!(store.subscribe_pubsub(svc, node, "a@sub.example", 2)));
    assert!(!ok!(store.subscribe_pubsub(svc, node, "c@sub.example", 2)));
    assert!(ok!(store.subscribe_pubsub(
        svc,
        "other",
        "c@sub.example",
        2
    )));
    assert_eq!(
        ok!(store.pubsub_subscribers(svc, node)),
        ["a@sub.example", "b@sub.example/r"]
    );
    assert!(ok!(store.unsubscribe_pubsub(svc, node, "a@sub.example")));
    assert!(!ok!(store.unsubscribe_pubsub(svc, node, "a@sub.example")));
    assert_eq!(
        ok!(store.pubsub_subscribers(svc, node)),
        ["b@sub.example/r"]
    );
    assert!(ok!(store.delete_pubsub_node(svc, node)));
    assert!(ok!(store.pubsub_subscribers(svc, node)).is_empty());
    assert!(ok!(store.put_pubsub_node(svc, &ps_node(node, "c"), 5)));
    assert!(
        ok!(store.pubsub_subscribers(svc, node)).is_empty(),
        "a new node starts empty"
    );
    assert_eq!(
        ok!(store.pubsub_subscribers(svc, "other")),
        ["c@sub.example"]
    );
    assert!(ok!(store.delete_pubsub_node(svc, node)));
    assert!(ok!(store.delete_pubsub_node(svc, "other")));
}

// ---- MUC, MAM and PubSub under concurrency and removal (issue 5): what the modules rely on
// beyond the single-caller checks above.

/// Caps and trimming hold when callers race (PostgreSQL runs them on separate connections):
/// the node cap, `max_items`, and a service node's subscriber cap; a removed room leaves no
/// affiliation behind for a room created again under its JID; archive preferences are per
/// account; node configurations and stamps round-trip exactly.
async fn muc_mam_pubsub_edges(store: &dyn Store) {
    let u = "edges@a.example";
    new_user(store, u).await;

    // Eight new nodes at once against a cap of three: exactly three are created.
    let puts = (0..8).map(|i| {
        let node = ps_node(&format!("n{i}"), "c");
        async move { ok!(store.put_pubsub_node(u, &node, 3)) }
    });
    let created = join_all(puts).await;
    assert_eq!(
        created.iter().filter(|c| **c).count(),
        3,
        "concurrent node creation against the cap: {created:?}"
    );
    let nodes = ok!(store.pubsub_nodes(u));
    assert_eq!(nodes.len(), 3);
    let node = nodes[0].node.clone();

    // Twelve publishes at once with max_items 2: two items are left, with distinct stamps
    // (publish order), whatever order the writes took.
    let publishes = (0..12).map(|i| {
        let item = ps_item(&format!("i{i:02}"), 7, "<p/>");
        let node = node.as_str();
        async move { ok!(store.publish_pubsub_item(u, node, &item, 2)) }
    });
    assert!(join_all(publishes).await.into_iter().all(|stored| stored));
    let left = ok!(store.pubsub_items(u, &node, &[], 100));
    assert_eq!(left.len(), 2, "trimmed to max_items: {:?}", ids(&left));
    assert!(left[0].stamp_us > left[1].stamp_us);

    // A node configuration with quotes, markup and non-ASCII text is kept byte for byte, and
    // replacing it keeps the items.
    let config = "<x xmlns='jabber:x:data' type='submit'><field var='pubsub#title'><value>\u{e9}\u{1F600} &lt;'\"</value></field></x>";
    assert!(ok!(store.put_pubsub_node(u, &ps_node(&node, config), 3)));
    assert_eq!(
        ok!(store.pubsub_node(u, &node)).map(|n| n.config),
        Some(config.to_owned())
    );
    assert_eq!(ok!(store.pubsub_items(u, &node, &[], 100)).len(), 2);
    // Operations on a node that is not there change nothing and say so.
    assert!(!ok!(store.retract_pubsub_item(u, "absent", "i00")));
    assert_eq!(ok!(store.purge_pubsub_node(u, "absent")), 0);
    assert!(!ok!(store.delete_pubsub_node(u, "absent")));
    assert!(ok!(store.pubsub_items(u, "absent", &[], 10)).is_empty());

    // Six subscribers at once against a cap of four on a service node.
    let (svc, topic) = ("pubsub.edges.example", "topic");
    assert!(ok!(store.put_pubsub_node(svc, &ps_node(topic, "c"), 1)));
    let subs = (0..6).map(|i| {
        let jid = format!("s{i}@edges.example");
        async move { ok!(store.subscribe_pubsub(svc, topic, &jid, 4)) }
    });
    let subscribed = join_all(subs).await;
    assert_eq!(
        subscribed.iter().filter(|s| **s).count(),
        4,
        "concurrent subscriptions against the cap: {subscribed:?}"
    );
    assert_eq!(ok!(store.pubsub_subscribers(svc, topic)).len(), 4);
    // The service's node is not the account's, and the account's removal leaves it.
    assert_eq!(ok!(store.pubsub_node(u, topic)), None);
    assert!(ok!(store.pubsub_subscribers(u, topic)).is_empty());

    // Archive preferences are per account.
    let other = "edges-other@a.example";
    new_user(store, other).await;
    let mine = prefs("roster", &["x@b.example"], &[]);
    let theirs = prefs("always", &[], &["y@b.example", "z@b.example"]);
    ok!(store.set_archive_prefs(u, &mine));
    ok!(store.set_archive_prefs(other, &theirs));
    assert_eq!(ok!(store.archive_prefs(u)), Some(mine));
    assert_eq!(ok!(store.archive_prefs(other)), Some(theirs.clone()));

    // Concurrent archive writes of one owner under distinct ids are all kept, in id order.
    let owner = "room@muc.edges.example";
    let writes = (0..6).map(|i| {
        let m = archived(owner, &format!("{i:02}"), 500 + i, u, false);
        async move { ok!(store.archive_messages(&[m])) }
    });
    join_all(writes).await;
    let page = ok!(store.archive_query(
        owner,
        &ArchiveQuery {
            max: 10,
            ..ArchiveQuery::default()
        }
    ));
    assert_eq!(page_ids(&page), ["00", "01", "02", "03", "04", "05"]);
    assert_eq!(ok!(store.archive_remove(owner)), 6);

    // A removed room takes its affiliations: a room made again under its JID starts without.
    let service = "conference.edges.example";
    let room = MucRoom {
        jid: format!("again@{service}"),
        config: "<x/>".to_owned(),
        affiliations: vec![
            aff("o@a.example", "owner", None),
            aff("bad@b.example", "outcast", Some("spam")),
        ],
        ..MucRoom::default()
    };
    ok!(store.put_muc_room(service, &room, true));
    assert!(ok!(store.remove_muc_room(&room.jid)));
    let bare = MucRoom {
        affiliations: Vec::new(),
        ..room.clone()
    };
    ok!(store.put_muc_room(service, &bare, false));
    assert_eq!(ok!(store.muc_rooms(service)), std::slice::from_ref(&bare));
    // Affiliation changes on several rooms at once land each in its own room.
    let second = MucRoom {
        jid: format!("second@{service}"),
        ..bare.clone()
    };
    ok!(store.put_muc_room(service, &second, false));
    let member = |room: &str| format!("{}-member@a.example", &room[..room.find('@').unwrap_or(0)]);
    let changes = [bare.jid.clone(), second.jid.clone()].map(|jid| async move {
        ok!(store.set_muc_affiliations(&jid, &[aff(&member(&jid), "member", None)]));
    });
    join_all(changes).await;
    let rooms = ok!(store.muc_rooms(service));
    assert_eq!(rooms.len(), 2);
    for r in &rooms {
        assert_eq!(r.affiliations, [aff(&member(&r.jid), "member", None)]);
    }
    assert!(ok!(store.remove_muc_room(&bare.jid)));
    assert!(ok!(store.remove_muc_room(&second.jid)));
    assert!(ok!(store.muc_rooms(service)).is_empty());

    ok!(store.remove_user(u));
    ok!(store.remove_user(other));
    assert!(ok!(store.pubsub_nodes(u)).is_empty());
    assert_eq!(ok!(store.pubsub_subscribers(svc, topic)).len(), 4);
    assert!(ok!(store.delete_pubsub_node(svc, topic)));
    assert!(ok!(store.pubsub_subscribers(svc, topic)).is_empty());
}

//! Persistent rooms in storage (migration `0006_muc`): a room's configuration (the stored
//! `muc#roomconfig` form), subject and affiliations with their reserved nicknames (migration
//! `0009_muc_nicks`), written when they change and read when the service starts. Temporary
//! rooms are never stored.

use super::config::RoomConfig;
use super::occupant::Affiliation;
use super::room::{Room, Save};
use crate::offline::parse_stored;
use franca_core::config::MucConfig;
use franca_store::{MucAffiliation, MucRoom, Store};
use jid::BareJid;

/// The stored form of `room`.
pub fn to_stored(room: &Room) -> MucRoom {
    MucRoom {
        jid: room.jid.to_string(),
        config: room.config.to_stored(),
        subject: room.subject().map(|s| s.to_xml()),
        created_us: room.created_us,
        affiliations: room
            .affiliation_list()
            .into_iter()
            .map(|(jid, a, reason)| stored_affiliation(room, jid, a, reason))
            .collect(),
    }
}

/// One affiliation as stored, with the nickname `room` reserves for it now.
fn stored_affiliation(
    room: &Room,
    jid: String,
    a: Affiliation,
    reason: Option<String>,
) -> MucAffiliation {
    let nick = room.reserved_nick(&jid).map(str::to_owned);
    MucAffiliation {
        jid,
        affiliation: a.name().to_owned(),
        reason,
        nick,
    }
}

/// A room read back; `None` (and the row left alone) when it cannot be read.
pub fn from_stored(stored: &MucRoom, limits: &MucConfig) -> Option<Room> {
    let jid = BareJid::new(&stored.jid).ok()?;
    let config = RoomConfig::from_stored(&parse_stored(&stored.config)?, limits)?;
    if !config.persistent {
        return None;
    }
    let mut room = Room::new(jid, config, false, stored.created_us);
    room.set_subject(stored.subject.as_deref().and_then(parse_stored));
    for a in &stored.affiliations {
        if let Some(aff) = Affiliation::parse(&a.affiliation) {
            room.set_affiliation(a.jid.clone(), aff, a.reason.clone());
            if let Some(nick) = &a.nick {
                room.reserve_nick(a.jid.clone(), nick.clone());
            }
        }
    }
    Some(room)
}

/// Carry out `save` for `room` of `service`.
pub async fn save(
    store: &dyn Store,
    service: &str,
    room: &Room,
    save: &Save,
) -> franca_store::Result<()> {
    match save {
        Save::Room => store.put_muc_room(service, &to_stored(room), false).await,
        Save::RoomAndAffiliations => store.put_muc_room(service, &to_stored(room), true).await,
        Save::Affiliations(changes) => {
            let changes: Vec<MucAffiliation> = changes
                .iter()
                .map(|(jid, a, reason)| stored_affiliation(room, jid.clone(), *a, reason.clone()))
                .collect();
            store
                .set_muc_affiliations(room.jid.as_str(), &changes)
                .await
        }
        Save::Remove => store.remove_muc_room(room.jid.as_str()).await.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xml;

    #[tokio::test]
    async fn a_room_survives_storage_with_its_configuration_subject_and_affiliations() {
        let store = franca_store::open("sqlite::memory:").await.expect("store");
        let limits = MucConfig::default();
        let mut config = RoomConfig::new(&limits);
        config.persistent = true;
        config.name = "Tea".into();
        config.members_only = true;
        let jid = BareJid::new("tea@conference.localhost").expect("jid");
        let mut room = Room::new(jid, config, false, 42);
        room.set_affiliation("juliet@localhost".into(), Affiliation::Owner, None);
        room.reserve_nick("juliet@localhost".into(), "Jules".into());
        room.set_affiliation(
            "tybalt@localhost".into(),
            Affiliation::Outcast,
            Some("rude".into()),
        );
        room.set_subject(Some(xml(
            "<message from='tea@conference.localhost/j' type='groupchat'><subject>Hi</subject></message>",
        )));
        let svc = "conference.localhost";
        save(&*store, svc, &room, &Save::RoomAndAffiliations)
            .await
            .expect("save");
        save(
            &*store,
            svc,
            &room,
            &Save::Affiliations(vec![
                ("romeo@localhost".into(), Affiliation::Member, None),
                ("tybalt@localhost".into(), Affiliation::None, None),
            ]),
        )
        .await
        .expect("save");
        let stored = store.muc_rooms(svc).await.expect("load");
        assert_eq!(stored.len(), 1);
        let back = from_stored(&stored[0], &limits).expect("reads back");
        assert_eq!(back.config, room.config);
        assert_eq!(back.created_us, 42);
        assert_eq!(back.subject(), room.subject());
        assert_eq!(back.reserved_nick("juliet@localhost"), Some("Jules"));
        assert_eq!(back.reserved_nick("romeo@localhost"), None);
        assert_eq!(
            back.affiliation_list(),
            [
                ("juliet@localhost".to_owned(), Affiliation::Owner, None),
                ("romeo@localhost".to_owned(), Affiliation::Member, None),
            ]
        );
        save(&*store, svc, &room, &Save::Remove)
            .await
            .expect("remove");
        assert!(store.muc_rooms(svc).await.expect("load").is_empty());
    }
}

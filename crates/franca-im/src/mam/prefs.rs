//! XEP-0313 §7 archiving preferences: `<prefs default='always|never|roster'>` with
//! `<always/>` and `<never/>` lists of bare JIDs, the decision they make for one message
//! ([`Mode::decide`]), and a bounded in-memory cache so the routing path does not read the
//! store for every archived message.

use super::query::NS_MAM;
use franca_core::config::MamDefault;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_store::ArchivePrefs;
use franca_xml::Element;
use jid::Jid;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Most JIDs in one of the lists; more is `not-acceptable`.
pub const MAX_LIST: usize = 1000;

/// Most accounts whose preferences the cache holds; past it the cache starts again empty,
/// which costs one read per account at its next archived message.
const MAX_CACHED: usize = 100_000;

/// One account's preferences as used on the routing path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    pub default: MamDefault,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

/// What the preferences say about a message with one partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Archive,
    Skip,
    /// Archive if the partner is in the roster (`default='roster'`): the caller looks.
    IfInRoster,
}

impl Prefs {
    /// The server default for an account that set nothing.
    pub fn server_default(default: MamDefault) -> Prefs {
        Prefs {
            default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    /// `never` wins over `always` (XEP-0313 §7: a JID in both is never archived), and both
    /// over the default.
    pub fn decide(&self, with: &str) -> Decision {
        if self.never.iter().any(|j| j == with) {
            return Decision::Skip;
        }
        if self.always.iter().any(|j| j == with) {
            return Decision::Archive;
        }
        match self.default {
            MamDefault::Always => Decision::Archive,
            MamDefault::Never => Decision::Skip,
            MamDefault::Roster => Decision::IfInRoster,
        }
    }

    pub fn from_stored(p: &ArchivePrefs, fallback: MamDefault) -> Prefs {
        Prefs {
            default: parse_default(&p.default).unwrap_or(fallback),
            always: p.always.clone(),
            never: p.never.clone(),
        }
    }

    pub fn to_stored(&self) -> ArchivePrefs {
        ArchivePrefs {
            default: self.default.as_str().to_owned(),
            always: self.always.clone(),
            never: self.never.clone(),
        }
    }

    /// The `<prefs/>` element answering a get or a set.
    pub fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[String]| {
            let mut el = Element::new(name, NS_MAM);
            for j in jids {
                el.push(Element::new("jid", NS_MAM).with_text(j.as_str()));
            }
            el
        };
        Element::new("prefs", NS_MAM)
            .with_attr("default", self.default.as_str())
            .with_child(list("always", &self.always))
            .with_child(list("never", &self.never))
    }

    /// Parse a `<prefs/>` set. JIDs are normalised to bare JIDs (archives are per bare JID).
    pub fn parse(el: &Element) -> Result<Prefs, StanzaError> {
        let bad = |t: &str| StanzaError::new(Cond::BadRequest).with_text(t);
        let default = el
            .attr("default")
            .and_then(parse_default)
            .ok_or_else(|| bad("default must be always, never or roster"))?;
        let list = |name: &str| -> Result<Vec<String>, StanzaError> {
            let Some(l) = el.child(name, NS_MAM) else {
                return Ok(Vec::new());
            };
            let mut out: Vec<String> = Vec::new();
            for j in l.elements().filter(|e| e.is("jid", NS_MAM)) {
                let jid = Jid::new(j.text().trim()).map_err(|_| bad("bad JID"))?;
                let bare = jid.to_bare().to_string();
                if !out.contains(&bare) {
                    out.push(bare);
                }
                if out.len() > MAX_LIST {
                    return Err(StanzaError::new(Cond::NotAcceptable).with_text("list too long"));
                }
            }
            Ok(out)
        };
        Ok(Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        })
    }
}

fn parse_default(s: &str) -> Option<MamDefault> {
    match s {
        "always" => Some(MamDefault::Always),
        "never" => Some(MamDefault::Never),
        "roster" => Some(MamDefault::Roster),
        _ => None,
    }
}

/// Preferences of recently archiving accounts; `None` is cached too (never set), so most
/// accounts cost one read after start-up. Routing only reads it (a shared lock); the lock is
/// never held across an await.
#[derive(Default)]
pub struct PrefsCache {
    map: RwLock<HashMap<String, Option<Arc<Prefs>>>>,
}

impl PrefsCache {
    /// `Some(entry)` when cached (`entry` is `None` for "never set").
    pub fn get(&self, user: &str) -> Option<Option<Arc<Prefs>>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(user).cloned()
    }

    /// After a set: replaces what is cached.
    pub fn put(&self, user: &str, prefs: Option<Arc<Prefs>>) {
        let mut map = self.write();
        if map.len() >= MAX_CACHED && !map.contains_key(user) {
            map.clear();
        }
        map.insert(user.to_owned(), prefs);
    }

    /// After a read of the store: a set that finished meanwhile (and cached its newer value)
    /// wins, so the value read is kept only when nothing is cached. Returns what is cached.
    pub fn put_read(&self, user: &str, prefs: Option<Arc<Prefs>>) -> Option<Arc<Prefs>> {
        let mut map = self.write();
        if let Some(cached) = map.get(user) {
            return cached.clone();
        }
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(user.to_owned(), prefs.clone());
        prefs
    }

    pub fn forget(&self, user: &str) {
        self.write().remove(user);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Option<Arc<Prefs>>>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    #[test]
    fn xep0313_7_never_beats_always_beats_default() {
        let p = Prefs {
            default: MamDefault::Roster,
            always: vec!["a@x".into(), "both@x".into()],
            never: vec!["n@x".into(), "both@x".into()],
        };
        assert_eq!(p.decide("a@x"), Decision::Archive);
        assert_eq!(p.decide("n@x"), Decision::Skip);
        assert_eq!(p.decide("both@x"), Decision::Skip);
        assert_eq!(p.decide("other@x"), Decision::IfInRoster);
        assert_eq!(
            Prefs::server_default(MamDefault::Never).decide("a@x"),
            Decision::Skip
        );
    }

    #[test]
    fn xep0313_7_prefs_parse_and_round_trip() {
        let p = Prefs::parse(&xml("<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
             <always><jid>Romeo@Montague.lit/phone</jid><jid>romeo@montague.lit</jid></always>\
             <never><jid>montague.lit</jid></never></prefs>"))
        .unwrap();
        assert_eq!(p.default, MamDefault::Roster);
        assert_eq!(p.always, ["romeo@montague.lit"]);
        assert_eq!(p.never, ["montague.lit"]);
        assert_eq!(Prefs::parse(&p.to_element()).unwrap(), p);
        assert_eq!(
            Prefs::from_stored(&p.to_stored(), MamDefault::Always),
            p.clone()
        );
    }

    #[test]
    fn bad_prefs_are_refused() {
        let e = Prefs::parse(&xml("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>"));
        assert_eq!(e.unwrap_err().condition, Cond::BadRequest);
        let e = Prefs::parse(&xml(
            "<prefs xmlns='urn:xmpp:mam:2' default='always'><never><jid>@@</jid></never></prefs>",
        ));
        assert_eq!(e.unwrap_err().condition, Cond::BadRequest);
        let many: String = (0..=MAX_LIST)
            .map(|i| format!("<jid>u{i}@x</jid>"))
            .collect();
        let e = Prefs::parse(&xml(&format!(
            "<prefs xmlns='urn:xmpp:mam:2' default='always'><always>{many}</always></prefs>"
        )));
        assert_eq!(e.unwrap_err().condition, Cond::NotAcceptable);
    }

    #[test]
    fn the_cache_is_bounded_and_remembers_unset() {
        let c = PrefsCache::default();
        assert_eq!(c.get("a"), None);
        c.put("a", None);
        assert_eq!(c.get("a"), Some(None));
        // A read that raced with a set does not undo it.
        let set = Arc::new(Prefs::server_default(MamDefault::Never));
        c.put("b", Some(set.clone()));
        assert_eq!(c.put_read("b", None), Some(set.clone()));
        assert_eq!(c.get("b"), Some(Some(set)));
        c.forget("a");
        assert_eq!(c.get("a"), None);
    }
}

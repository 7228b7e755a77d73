//! XEP-0115 entity capabilities, as PEP needs them: which `<node>+notify` features each
//! online resource has (XEP-0163 §4.3 filtered notifications). A presence with
//! `<c node ver hash/>` whose `ver` is known costs one map lookup under a lock and no storage
//! access; an unknown `ver` is resolved by one disco#info query to that resource. An answer
//! whose SHA-1 verification string (XEP-0115 §5.1) matches `ver` is remembered for everyone
//! (a bounded FIFO of `ver`s); anything else (another hash, legacy caps, a mismatch) counts
//! for that one resource only, so a client cannot poison what other clients' hashes mean.

use franca_proto::ns::{NS_CLIENT, NS_DATA_FORMS, NS_DISCO_INFO};
use franca_xml::Element;
use jid::FullJid;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Disco#info queries waiting for an answer at once; more are not sent (the resource is
/// treated as having no +notify until a later presence).
const MAX_PENDING: usize = 1024;
/// Features kept per answer.
const MAX_FEATURES: usize = 1024;
/// The id prefix of our queries, so their answers are recognised.
pub const ID_PREFIX: &str = "pep-caps-";

pub type Features = HashSet<String>;

struct SessionCaps {
    ver: String,
    features: Option<Arc<Features>>,
    /// Initial presence came before the features were known: send the last items once they
    /// are (XEP-0163 §6.2).
    initial_pending: bool,
}

struct Query {
    jid: FullJid,
    ver: String,
    /// Verifiable (`sha-1`): the answer may be shared.
    shareable: bool,
}

#[derive(Default)]
struct State {
    by_ver: HashMap<String, Arc<Features>>,
    order: VecDeque<String>,
    sessions: HashMap<FullJid, SessionCaps>,
    pending: HashMap<String, Query>,
}

pub struct Caps {
    state: Mutex<State>,
    capacity: usize,
    hasher: RandomState,
    next_id: AtomicU64,
}

/// What a presence means for PEP.
#[derive(Debug)]
pub enum Seen {
    /// Nothing new (same `ver` as before, or no caps).
    Nothing,
    /// The features are known now; `initial` when this is the resource's first presence.
    Known {
        features: Arc<Features>,
        initial: bool,
    },
    /// Send this disco#info query to learn them.
    Query(Element),
}

impl Caps {
    pub fn new(capacity: usize) -> Caps {
        Caps {
            state: Mutex::default(),
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A broadcast available presence from `jid`, with its `<c/>` if any.
    pub fn presence(&self, jid: &FullJid, c: Option<&Element>) -> Seen {
        let (node, ver, hash) = match c {
            Some(c) => (
                c.attr("node").unwrap_or_default(),
                c.attr("ver").unwrap_or_default(),
                c.attr("hash"),
            ),
            None => ("", "", None),
        };
        let mut state = self.lock();
        let initial = match state.sessions.get(jid) {
            Some(s) if s.ver == ver => return Seen::Nothing,
            Some(_) => false,
            None => true,
        };
        if ver.is_empty() || ver.len() > 256 || node.len() > 1024 {
            state.sessions.insert(
                jid.clone(),
                SessionCaps {
                    ver: String::new(),
                    features: None,
                    initial_pending: false,
                },
            );
            return Seen::Nothing;
        }
        if let Some(features) = state.by_ver.get(ver).cloned() {
            state.sessions.insert(
                jid.clone(),
                SessionCaps {
                    ver: ver.to_owned(),
                    features: Some(features.clone()),
                    initial_pending: false,
                },
            );
            return Seen::Known { features, initial };
        }
        state.sessions.insert(
            jid.clone(),
            SessionCaps {
                ver: ver.to_owned(),
                features: None,
                initial_pending: initial,
            },
        );
        if state.pending.len() >= MAX_PENDING {
            return Seen::Nothing;
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{ID_PREFIX}{:016x}{n:x}", self.hasher.hash_one(n));
        state.pending.insert(
            id.clone(),
            Query {
                jid: jid.clone(),
                ver: ver.to_owned(),
                shareable: hash == Some("sha-1"),
            },
        );
        let iq = Element::new("iq", NS_CLIENT)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_attr("from", jid.to_bare().as_str())
            .with_attr("to", jid.as_str())
            .with_child(
                Element::new("query", NS_DISCO_INFO).with_attr("node", format!("{node}#{ver}")),
            );
        Seen::Query(iq)
    }

    /// The resource's features, when known.
    pub fn features(&self, jid: &FullJid) -> Option<Arc<Features>> {
        self.lock().sessions.get(jid)?.features.clone()
    }

    /// The resource went offline.
    pub fn gone(&self, jid: &FullJid) {
        let mut state = self.lock();
        state.sessions.remove(jid);
        state.pending.retain(|_, q| q.jid != *jid);
    }

    /// An IQ result or error to an account: if it answers one of our queries, learn from it
    /// and return the resources whose initial presence waited for it (with their features).
    /// `None` when it is not ours.
    pub fn answer(&self, iq: &Element) -> Option<Vec<(FullJid, Arc<Features>)>> {
        let id = iq.attr("id").filter(|id| id.starts_with(ID_PREFIX))?;
        let from = iq.attr("from").and_then(|f| FullJid::new(f).ok())?;
        let mut state = self.lock();
        if state.pending.get(id).is_none_or(|q| q.jid != from) {
            return None;
        }
        let query = state.pending.remove(id)?;
        let result = iq
            .child("query", NS_DISCO_INFO)
            .filter(|_| iq.attr("type") == Some("result"));
        let Some(result) = result else {
            return Some(Vec::new());
        };
        let features: Arc<Features> = Arc::new(
            result
                .elements()
                .filter(|e| e.is("feature", NS_DISCO_INFO))
                .filter_map(|e| e.attr("var"))
                .take(MAX_FEATURES)
                .map(str::to_owned)
                .collect(),
        );
        let shared = query.shareable && verification_hash(result) == query.ver;
        if shared && !state.by_ver.contains_key(&query.ver) {
            if state.order.len() >= self.capacity
                && let Some(old) = state.order.pop_front()
            {
                state.by_ver.remove(&old);
            }
            state.order.push_back(query.ver.clone());
            state.by_ver.insert(query.ver.clone(), features.clone());
        }
        let mut initial = Vec::new();
        for (jid, s) in state.sessions.iter_mut() {
            let applies = if shared {
                s.ver == query.ver && s.features.is_none()
            } else {
                *jid == query.jid && s.ver == query.ver
            };
            if applies {
                s.features = Some(features.clone());
                if std::mem::take(&mut s.initial_pending) {
                    initial.push((jid.clone(), features.clone()));
                }
            }
        }
        Some(initial)
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.lock().by_ver.len()
    }
}

/// XEP-0115 §5.1: the SHA-1 verification string of a disco#info result, base64.
pub fn verification_hash(query: &Element) -> String {
    use base64::Engine;
    use sha1::{Digest, Sha1};
    let mut identities: Vec<String> = query
        .elements()
        .filter(|e| e.is("identity", NS_DISCO_INFO))
        .map(|e| {
            format!(
                "{}/{}/{}/{}<",
                e.attr("category").unwrap_or_default(),
                e.attr("type").unwrap_or_default(),
                e.attr("{http://www.w3.org/XML/1998/namespace}lang")
                    .or_else(|| e.attr("xml:lang"))
                    .unwrap_or_default(),
                e.attr("name").unwrap_or_default()
            )
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = query
        .elements()
        .filter(|e| e.is("feature", NS_DISCO_INFO))
        .filter_map(|e| e.attr("var"))
        .collect();
    features.sort_unstable();
    let mut forms: Vec<(String, String)> = Vec::new();
    for x in query.elements().filter(|e| e.is("x", NS_DATA_FORMS)) {
        let mut form_type = String::new();
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for f in x.elements().filter(|e| e.is("field", NS_DATA_FORMS)) {
            let mut values: Vec<String> = f
                .elements()
                .filter(|e| e.is("value", NS_DATA_FORMS))
                .map(|v| v.text())
                .collect();
            let var = f.attr("var").unwrap_or_default();
            if var == "FORM_TYPE" {
                form_type = values.into_iter().next().unwrap_or_default();
                continue;
            }
            values.sort();
            fields.push((var.to_owned(), values));
        }
        fields.sort();
        let mut s = format!("{form_type}<");
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
        forms.push((form_type, s));
    }
    forms.sort();
    let mut s: String = identities.concat();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    for (_, f) in forms {
        s.push_str(&f);
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    /// XEP-0115 §5.2, the simple example.
    const EXODUS: &str = "<iq type='result' from='romeo@localhost/orchard' id='X'>
        <query xmlns='http://jabber.org/protocol/disco#info' node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
          <identity category='client' name='Exodus 0.9.1' type='pc'/>
          <feature var='http://jabber.org/protocol/caps'/>
          <feature var='http://jabber.org/protocol/disco#info'/>
          <feature var='http://jabber.org/protocol/disco#items'/>
          <feature var='http://jabber.org/protocol/muc'/>
        </query></iq>";

    fn c(ver: &str) -> Element {
        xml(&format!(
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://code.google.com/p/exodus' ver='{ver}'/>"
        ))
    }

    #[test]
    fn xep0115_5_2_simple_example_hash() {
        let iq = xml(EXODUS);
        let q = iq.child("query", NS_DISCO_INFO).unwrap();
        assert_eq!(verification_hash(q), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    #[test]
    fn xep0115_5_3_complex_example_hash() {
        let q = xml("<query xmlns='http://jabber.org/protocol/disco#info'>
          <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
          <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
          <feature var='http://jabber.org/protocol/caps'/>
          <feature var='http://jabber.org/protocol/disco#info'/>
          <feature var='http://jabber.org/protocol/disco#items'/>
          <feature var='http://jabber.org/protocol/muc'/>
          <x xmlns='jabber:x:data' type='result'>
            <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
            <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
            <field var='os'><value>Mac</value></field>
            <field var='os_version'><value>10.5.1</value></field>
            <field var='software'><value>Psi</value></field>
            <field var='software_version'><value>0.11</value></field>
          </x></query>");
        assert_eq!(verification_hash(&q), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn xep0115_unknown_ver_is_queried_once_then_cached_for_everyone() {
        let caps = Caps::new(8);
        let romeo = FullJid::new("romeo@localhost/orchard").unwrap();
        let ver = "QgayPKawpkPSDYmwT/WM94uAlu0=";
        let Seen::Query(iq) = caps.presence(&romeo, Some(&c(ver))) else {
            panic!("expected a query")
        };
        assert_eq!(iq.attr("to"), Some("romeo@localhost/orchard"));
        // The same presence again changes nothing while the query is out.
        assert!(matches!(
            caps.presence(&romeo, Some(&c(ver))),
            Seen::Nothing
        ));
        let mut answer = xml(EXODUS);
        answer.set_attr("id", iq.attr("id").unwrap());
        let initial = caps.answer(&answer).unwrap();
        assert_eq!(initial.len(), 1, "initial presence waited for the features");
        assert!(
            caps.features(&romeo)
                .unwrap()
                .contains("http://jabber.org/protocol/muc")
        );
        assert_eq!(caps.cached(), 1);
        assert!(caps.answer(&answer).is_none(), "answered once");
        // Another resource with the same ver needs no query.
        let nurse = FullJid::new("nurse@localhost/x").unwrap();
        assert!(matches!(
            caps.presence(&nurse, Some(&c(ver))),
            Seen::Known { initial: true, .. }
        ));
        caps.gone(&nurse);
        assert!(caps.features(&nurse).is_none());
    }

    #[test]
    fn xep0115_a_wrong_hash_counts_for_that_resource_only() {
        let caps = Caps::new(8);
        let romeo = FullJid::new("romeo@localhost/orchard").unwrap();
        let Seen::Query(iq) = caps.presence(&romeo, Some(&c("forged="))) else {
            panic!()
        };
        let mut answer = xml(EXODUS);
        answer.set_attr("id", iq.attr("id").unwrap());
        caps.answer(&answer).unwrap();
        assert!(caps.features(&romeo).is_some());
        assert_eq!(caps.cached(), 0);
        let nurse = FullJid::new("nurse@localhost/x").unwrap();
        assert!(matches!(
            caps.presence(&nurse, Some(&c("forged="))),
            Seen::Query(_)
        ));
    }

    #[test]
    fn xep0115_answers_from_someone_else_are_ignored_and_cache_is_bounded() {
        let caps = Caps::new(1);
        let romeo = FullJid::new("romeo@localhost/orchard").unwrap();
        let Seen::Query(iq) = caps.presence(&romeo, Some(&c("QgayPKawpkPSDYmwT/WM94uAlu0=")))
        else {
            panic!()
        };
        let mut answer = xml(EXODUS);
        answer.set_attr("id", iq.attr("id").unwrap());
        answer.set_attr("from", "nurse@localhost/x");
        assert!(caps.answer(&answer).is_none());
        answer.set_attr("from", "romeo@localhost/orchard");
        caps.answer(&answer).unwrap();
        assert_eq!(caps.cached(), 1);
        // A second verified ver evicts the first.
        let q2 =
            xml("<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/></query>");
        let ver2 = verification_hash(&q2);
        let other = FullJid::new("nurse@localhost/x").unwrap();
        let Seen::Query(iq) = caps.presence(&other, Some(&c(&ver2))) else {
            panic!()
        };
        let answer = xml(&format!(
            "<iq type='result' from='nurse@localhost/x' id='{}'>{}</iq>",
            iq.attr("id").unwrap(),
            q2.to_xml()
        ));
        caps.answer(&answer).unwrap();
        assert_eq!(caps.cached(), 1);
    }
}

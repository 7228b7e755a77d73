//! Parsing a XEP-0313 `<query/>` (§4): the data form filters (`with`, `start`, `end`, and the
//! `urn:xmpp:mam:2#extended` fields `before-id`, `after-id`, `ids`), XEP-0059 paging (`max`,
//! `after`, `before`, an empty `<before/>` for the last page; `index` is not supported) and
//! `<flip-page/>`, into the store's [`ArchiveQuery`].
//!
//! Everything is bounded before it reaches the store: `max` is capped by the caller's page
//! limit, at most that many `ids`, at most [`MAX_FIELDS`] fields, and every id must have the
//! shape of ours (one that cannot exist is `item-not-found` without a query).

use super::id;
use franca_core::util::parse_xep0082_datetime;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_DATA_FORMS, NS_RSM};
use franca_store::ArchiveQuery;
use franca_xml::Element;
use jid::Jid;

pub const NS_MAM: &str = "urn:xmpp:mam:2";

/// Most fields a query form may carry (the known ones number six).
const MAX_FIELDS: usize = 16;

/// A parsed query, ready for the store.
#[derive(Debug, PartialEq, Eq)]
pub struct Query {
    /// Echoed in every `<result/>` (XEP-0313 §4.2).
    pub queryid: Option<String>,
    pub archive: ArchiveQuery,
    /// Return the page newest first (XEP-0313 §4.1.3 `<flip-page/>`).
    pub flip: bool,
    /// Ids the query names as cursors: each must exist in the archive (`item-not-found`).
    pub cursors: Vec<String>,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(Cond::BadRequest).with_text(text)
}

fn not_found() -> StanzaError {
    StanzaError::new(Cond::ItemNotFound)
}

/// A cursor id: ours in shape, else it cannot be in the archive.
fn cursor(s: &str) -> Result<String, StanzaError> {
    if id::is_valid(s) {
        Ok(s.to_owned())
    } else {
        Err(not_found())
    }
}

/// What the `with` field is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithJid {
    /// An account's archive is kept per bare JID: a full JID matches its bare JID.
    Bare,
    /// A room's archive is kept per occupant JID (`room@service/nick`): matched as given.
    AsGiven,
}

/// Parse `query` (an `urn:xmpp:mam:2` `<query/>`), with at most `max_page` results a page.
pub fn parse(query: &Element, max_page: u32) -> Result<Query, StanzaError> {
    parse_as(query, max_page, WithJid::Bare)
}

/// [`parse`], with `with` matched as `with_jid` says.
pub fn parse_as(query: &Element, max_page: u32, with_jid: WithJid) -> Result<Query, StanzaError> {
    let mut q = Query {
        queryid: query.attr("queryid").map(str::to_owned),
        archive: ArchiveQuery {
            max: max_page,
            ..ArchiveQuery::default()
        },
        flip: query.has_child("flip-page", NS_MAM),
        cursors: Vec::new(),
    };
    if q.queryid.as_ref().is_some_and(|id| id.len() > 256) {
        return Err(bad("queryid too long"));
    }
    let forms: Vec<&Element> = query
        .elements()
        .filter(|e| e.is("x", NS_DATA_FORMS))
        .collect();
    match forms.as_slice() {
        [] => {}
        [form] => parse_form(form, &mut q, max_page, with_jid)?,
        _ => return Err(bad("more than one data form")),
    }
    if let Some(set) = query.child("set", NS_RSM) {
        parse_rsm(set, &mut q, max_page)?;
    }
    Ok(q)
}

fn parse_form(
    form: &Element,
    q: &mut Query,
    max_page: u32,
    with_jid: WithJid,
) -> Result<(), StanzaError> {
    if !matches!(form.attr("type"), Some("submit") | None) {
        return Err(bad("the form must be of type submit"));
    }
    let fields: Vec<&Element> = form
        .elements()
        .filter(|e| e.is("field", NS_DATA_FORMS))
        .collect();
    if fields.len() > MAX_FIELDS {
        return Err(bad("too many fields"));
    }
    let a = &mut q.archive;
    for field in fields {
        let values: Vec<String> = field
            .elements()
            .filter(|e| e.is("value", NS_DATA_FORMS))
            .map(Element::text)
            .collect();
        let one = || -> Result<&str, StanzaError> {
            match values.as_slice() {
                [v] => Ok(v.trim()),
                _ => Err(bad("a field needs exactly one value")),
            }
        };
        let time = |v: &str| parse_xep0082_datetime(v).ok_or_else(|| bad("bad date-time"));
        match field.attr("var").unwrap_or_default() {
            "FORM_TYPE" => {
                if one()? != NS_MAM {
                    return Err(bad("FORM_TYPE must be urn:xmpp:mam:2"));
                }
            }
            "with" => {
                // XEP-0313 §4.1.1: archives are kept per bare JID here, so a full JID matches
                // the conversation with its bare JID.
                let with = Jid::new(one()?).map_err(|_| bad("bad JID in with"))?;
                a.with = Some(match with_jid {
                    WithJid::Bare => with.to_bare().to_string(),
                    WithJid::AsGiven => with.to_string(),
                });
            }
            "start" => a.from_id = Some(id::floor(time(one()?)?)),
            "end" => {
                // Inclusive: everything archived up to and including that microsecond.
                a.until_id = Some(id::floor(time(one()?)?.saturating_add(1)));
            }
            "after-id" => {
                let c = cursor(one()?)?;
                q.cursors.push(c.clone());
                a.after = Some(c);
            }
            "before-id" => {
                let c = cursor(one()?)?;
                q.cursors.push(c.clone());
                a.before = Some(c);
            }
            "ids" => {
                if values.len() > max_page as usize {
                    return Err(bad("too many ids"));
                }
                // An id that cannot be ours simply matches nothing.
                a.ids = values
                    .iter()
                    .map(|v| v.trim())
                    .filter(|v| id::is_valid(v))
                    .map(str::to_owned)
                    .collect();
                if a.ids.is_empty() && !values.is_empty() {
                    // Keep the filter meaningful: nothing can match.
                    a.ids.push("-".to_owned());
                }
            }
            _ => {
                return Err(
                    StanzaError::new(Cond::FeatureNotImplemented).with_text("unknown query field")
                );
            }
        }
    }
    Ok(())
}

fn parse_rsm(set: &Element, q: &mut Query, max_page: u32) -> Result<(), StanzaError> {
    let a = &mut q.archive;
    if set.has_child("index", NS_RSM) {
        return Err(StanzaError::new(Cond::FeatureNotImplemented).with_text("RSM index"));
    }
    if let Some(max) = set.child("max", NS_RSM) {
        let max: u64 = max
            .text()
            .trim()
            .parse()
            .map_err(|_| bad("RSM max must be a number"))?;
        // An absurd max is capped, not refused (XEP-0313 §4.1.3 lets the server limit it).
        a.max = u32::try_from(max).unwrap_or(u32::MAX).min(max_page);
    }
    if let Some(after) = set.child("after", NS_RSM) {
        let c = cursor(after.text().trim())?;
        q.cursors.push(c.clone());
        // With an after-id as well, the later of the two.
        a.after = Some(match a.after.take() {
            Some(other) => other.max(c),
            None => c,
        });
    }
    if let Some(before) = set.child("before", NS_RSM) {
        a.last_page = true;
        let text = before.text();
        let text = text.trim();
        if !text.is_empty() {
            let c = cursor(text)?;
            q.cursors.push(c.clone());
            a.before = Some(match a.before.take() {
                Some(other) => other.min(c),
                None => c,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::xml;

    fn parse_xml(s: &str) -> Result<Query, StanzaError> {
        parse(&xml(s), 50)
    }

    fn form(fields: &str) -> String {
        format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='q1'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             {fields}</x></query>"
        )
    }

    fn field(var: &str, value: &str) -> String {
        format!("<field var='{var}'><value>{value}</value></field>")
    }

    fn condition(r: Result<Query, StanzaError>) -> Cond {
        r.expect_err("an error").condition
    }

    #[test]
    fn xep0313_4_1_an_empty_query_is_the_whole_archive_a_page_at_a_time() {
        let q = parse_xml("<query xmlns='urn:xmpp:mam:2'/>").unwrap();
        assert_eq!(q.queryid, None);
        assert_eq!(q.archive.max, 50);
        assert_eq!(q.archive.with, None);
        assert!(!q.archive.last_page && !q.flip);
    }

    #[test]
    fn xep0313_4_1_form_filters() {
        let a = id::new(1);
        let q = parse_xml(&form(&format!(
            "{}{}{}{}",
            field("with", "Romeo@Montague.lit/orchard"),
            field("start", "2010-06-07T00:00:00Z"),
            field("end", "2010-07-07T13:23:54Z"),
            field("after-id", &a),
        )))
        .unwrap();
        assert_eq!(q.queryid.as_deref(), Some("q1"));
        assert_eq!(q.archive.with.as_deref(), Some("romeo@montague.lit"));
        let start = parse_xep0082_datetime("2010-06-07T00:00:00Z").unwrap();
        let end = parse_xep0082_datetime("2010-07-07T13:23:54Z").unwrap();
        assert_eq!(q.archive.from_id, Some(id::floor(start)));
        assert_eq!(q.archive.until_id, Some(id::floor(end + 1)));
        assert_eq!(q.archive.after.as_deref(), Some(a.as_str()));
        assert_eq!(q.cursors, [a]);
    }

    #[test]
    fn xep0313_4_1_ids_field_keeps_only_possible_ids() {
        let a = id::new(1);
        let q = parse_xml(&form(&format!(
            "<field var='ids'><value>{a}</value><value>nonsense</value></field>"
        )))
        .unwrap();
        assert_eq!(q.archive.ids, [a]);
        let q = parse_xml(&form("<field var='ids'><value>nonsense</value></field>")).unwrap();
        assert_eq!(q.archive.ids.len(), 1, "a filter that matches nothing");
        let many: String = (0..51)
            .map(|_| format!("<value>{}</value>", id::new(1)))
            .collect();
        let too_many = form(&format!("<field var='ids'>{many}</field>"));
        assert_eq!(condition(parse_xml(&too_many)), Cond::BadRequest);
    }

    #[test]
    fn xep0059_paging_max_after_before() {
        let (a, b) = (id::new(1), id::new(2));
        let q = parse_xml(&format!(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>10</max><after>{a}</after></set></query>"
        ))
        .unwrap();
        assert_eq!(
            (q.archive.max, q.archive.after.as_deref()),
            (10, Some(a.as_str()))
        );
        assert!(!q.archive.last_page);
        // An empty <before/> asks for the last page.
        let q = parse_xml(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>5</max><before/></set><flip-page/></query>",
        )
        .unwrap();
        assert!(q.archive.last_page && q.flip);
        assert_eq!(q.archive.before, None);
        let q = parse_xml(&format!(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <before>{b}</before></set></query>"
        ))
        .unwrap();
        assert!(q.archive.last_page);
        assert_eq!(q.archive.before.as_deref(), Some(b.as_str()));
    }

    #[test]
    fn hostile_max_is_capped() {
        for max in ["1000000", "99999999999999999999"] {
            let q = parse_xml(&format!(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                 <max>{max}</max></set></query>"
            ));
            match (max, q) {
                ("1000000", Ok(q)) => assert_eq!(q.archive.max, 50),
                (_, Err(e)) => assert_eq!(e.condition, Cond::BadRequest),
                (_, Ok(q)) => panic!("{max}: {q:?}"),
            }
        }
    }

    #[test]
    fn bad_queries_are_refused_with_the_right_condition() {
        let rsm = |inner: &str| {
            format!(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                 {inner}</set></query>"
            )
        };
        assert_eq!(
            condition(parse_xml(&rsm("<max>-1</max>"))),
            Cond::BadRequest
        );
        assert_eq!(
            condition(parse_xml(&rsm("<max>ten</max>"))),
            Cond::BadRequest
        );
        assert_eq!(
            condition(parse_xml(&rsm("<after>nope</after>"))),
            Cond::ItemNotFound
        );
        assert_eq!(
            condition(parse_xml(&rsm("<index>3</index>"))),
            Cond::FeatureNotImplemented
        );
        assert_eq!(
            condition(parse_xml(&form(&field("start", "yesterday")))),
            Cond::BadRequest
        );
        assert_eq!(
            condition(parse_xml(&form(&field("with", "@@")))),
            Cond::BadRequest
        );
        assert_eq!(
            condition(parse_xml(&form(&field("color", "red")))),
            Cond::FeatureNotImplemented
        );
        let wrong_type = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='form'/>\
                          </query>";
        assert_eq!(condition(parse_xml(wrong_type)), Cond::BadRequest);
        let wrong_form_type = "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data'>\
             <field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>";
        assert_eq!(condition(parse_xml(wrong_form_type)), Cond::BadRequest);
        let two_values = form("<field var='with'><value>a@b</value><value>c@d</value></field>");
        assert_eq!(condition(parse_xml(&two_values)), Cond::BadRequest);
    }
}

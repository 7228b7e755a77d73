//! Discussion history sent on join (XEP-0045 §7.2.13–§7.2.14, §7.2.15 for the request).
//!
//! Each message is kept serialised, already carrying its XEP-0203 `<delay/>`, as a
//! [`Fanout`]: replaying it to a joiner queues the shared bytes, no copy. The room keeps at most its
//! configured number of messages and [`MAX_HISTORY_BYTES`] of them, whichever is reached first.

use franca_core::session::Fanout;
use franca_core::util::{parse_xep0082_datetime, xep0082_datetime};
use franca_proto::ns::{NS_DELAY, NS_MUC};
use franca_xml::Element;
use std::collections::VecDeque;

/// Most bytes of history one room keeps, so a room's memory is bounded whatever the messages.
pub const MAX_HISTORY_BYTES: usize = 256 * 1024;

struct Entry {
    stamp_us: i64,
    xml: Fanout,
    /// Characters of the message as sent (the `maxchars` unit).
    chars: usize,
}

#[derive(Default)]
pub struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

/// What a joiner asked for in `<history/>` (§7.2.15); every limit applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRequest {
    pub max_stanzas: Option<usize>,
    pub max_chars: Option<usize>,
    /// Only messages newer than this (from `seconds` or `since`), microseconds since the epoch.
    pub since_us: Option<i64>,
}

impl HistoryRequest {
    /// Read the `<history/>` of a join's `<x xmlns='…muc'/>`; `now_us` turns `seconds` into a
    /// time. Unreadable attributes are ignored (the default is everything the room keeps).
    pub fn from_join(x: Option<&Element>, now_us: i64) -> HistoryRequest {
        let Some(h) = x.and_then(|x| x.child("history", NS_MUC)) else {
            return HistoryRequest::default();
        };
        let num = |a: &str| h.attr(a).and_then(|v| v.trim().parse::<u64>().ok());
        let seconds = num("seconds").map(|s| {
            now_us.saturating_sub(i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
        });
        let since = h.attr("since").and_then(parse_xep0082_datetime);
        HistoryRequest {
            max_stanzas: num("maxstanzas").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            max_chars: num("maxchars").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            since_us: seconds.max(since),
        }
    }
}

impl History {
    /// Keep `message` (a reflected groupchat message without `to`) sent at `stamp_us`, then
    /// drop the oldest beyond `max` messages or [`MAX_HISTORY_BYTES`].
    pub fn push(&mut self, room: &str, message: &Element, stamp_us: i64, max: usize) {
        if max == 0 {
            self.entries.clear();
            self.bytes = 0;
            return;
        }
        let chars = message
            .to_xml_in(franca_proto::ns::NS_CLIENT)
            .chars()
            .count();
        let mut delayed = message.clone();
        delayed.push(
            Element::new("delay", NS_DELAY)
                .with_attr("from", room)
                .with_attr("stamp", xep0082_datetime(stamp_us)),
        );
        let xml = Fanout::new(&delayed);
        self.bytes += xml.len();
        self.entries.push_back(Entry {
            stamp_us,
            xml,
            chars,
        });
        while self.entries.len() > max || (self.bytes > MAX_HISTORY_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.xml.len();
            }
        }
    }

    /// Keep at most `max` messages (the room's setting was lowered).
    pub fn truncate(&mut self, max: usize) {
        while self.entries.len() > max {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.xml.len();
            }
        }
    }

    /// The messages a joiner gets, oldest first: the newest ones within every limit of `req`.
    pub fn select(&self, req: &HistoryRequest) -> impl Iterator<Item = &Fanout> {
        let mut chars = 0usize;
        let mut first = self.entries.len();
        for (count, (i, e)) in self.entries.iter().enumerate().rev().enumerate() {
            if req.max_stanzas.is_some_and(|m| count >= m)
                || req.since_us.is_some_and(|s| e.stamp_us <= s)
            {
                break;
            }
            chars = chars.saturating_add(e.chars);
            if req.max_chars.is_some_and(|m| chars > m) {
                break;
            }
            first = i;
        }
        self.entries.range(first..).map(|e| &e.xml)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::xml;

    fn msg(n: u32) -> Element {
        xml(&format!(
            "<message from='tea@conference.localhost/j' type='groupchat'><body>{n}</body></message>"
        ))
    }

    fn bodies<'a>(it: impl Iterator<Item = &'a Fanout>) -> Vec<String> {
        it.map(|f| {
            let el = xml(&f.to("a@b/c"));
            el.child("body", &el.ns)
                .map(Element::text)
                .unwrap_or_default()
        })
        .collect()
    }

    fn req(x: &str) -> HistoryRequest {
        HistoryRequest::from_join(
            Some(&xml(&format!(
                "<x xmlns='http://jabber.org/protocol/muc'>{x}</x>"
            ))),
            100_000_000,
        )
    }

    #[test]
    fn xep0045_7_2_15_history_limits() {
        let mut h = History::default();
        for n in 1..=10 {
            h.push(
                "tea@conference.localhost",
                &msg(n),
                i64::from(n) * 10_000_000,
                5,
            );
        }
        assert_eq!(h.len(), 5, "the room keeps its configured length");
        let all = HistoryRequest::default();
        assert_eq!(bodies(h.select(&all)), ["6", "7", "8", "9", "10"]);
        assert_eq!(
            bodies(h.select(&req("<history maxstanzas='2'/>"))),
            ["9", "10"]
        );
        assert!(bodies(h.select(&req("<history maxstanzas='0'/>"))).is_empty());
        assert!(bodies(h.select(&req("<history maxchars='0'/>"))).is_empty());
        // now = 100 s: the last 25 s are messages 8, 9 and 10 (stamped 80, 90, 100 s).
        assert_eq!(
            bodies(h.select(&req("<history seconds='25'/>"))),
            ["8", "9", "10"]
        );
        assert_eq!(
            bodies(h.select(&req("<history since='1970-01-01T00:01:25Z'/>"))),
            ["9", "10"]
        );
        // The replayed copy carries its delay (XEP-0203) from the room.
        let first = xml(&h.select(&all).next().expect("one").to("a@b/c"));
        let delay = first.child("delay", NS_DELAY).expect("delay");
        assert_eq!(delay.attr("stamp"), Some("1970-01-01T00:01:00Z"));
        assert_eq!(delay.attr("from"), Some("tea@conference.localhost"));
        h.truncate(1);
        assert_eq!(bodies(h.select(&all)), ["10"]);
    }

    #[test]
    fn history_is_bounded_in_bytes_too() {
        let mut h = History::default();
        let big = xml(&format!(
            "<message type='groupchat'><body>{}</body></message>",
            "x".repeat(100_000)
        ));
        for n in 0..10 {
            h.push("r@s", &big, n, 100);
        }
        assert!(h.len() <= MAX_HISTORY_BYTES / 100_000, "{}", h.len());
        assert!(h.bytes <= MAX_HISTORY_BYTES);
    }
}

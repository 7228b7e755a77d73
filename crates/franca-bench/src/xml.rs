//! A minimal, fast XMPP stream splitter for the load generator.
//!
//! The generator talks only to servers under test, whose output is well-formed XML, so it does
//! not validate: it tracks element depth to cut the stream into the header and complete
//! top-level stanzas, and offers a few lookups (element name, attribute, child text) on a cut
//! stanza. Quoted attribute values, the XML declaration, comments and CDATA are skipped
//! correctly; entities are left escaped (the generator only reads digits and base64 back).

/// What the splitter found in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The `<stream:stream ...>` header (byte range in the buffer).
    StreamStart(usize, usize),
    /// One complete top-level element (byte range in the buffer).
    Stanza(usize, usize),
    /// `</stream:stream>`.
    StreamEnd,
}

/// Incremental splitter state over a growing buffer.
#[derive(Debug, Default)]
pub struct Splitter {
    pos: usize,
    depth: usize,
    start: usize,
}

enum Tag {
    Open(usize),
    Close(usize),
    Empty(usize),
    Skip(usize),
}

impl Splitter {
    /// Forget everything: a new stream starts (after STARTTLS or SASL success).
    pub fn reset(&mut self) {
        *self = Splitter::default();
    }

    /// The caller removed `n` bytes from the front of the buffer.
    pub fn consumed(&mut self, n: usize) {
        self.pos -= n;
        if self.depth >= 2 {
            self.start -= n;
        }
    }

    /// Bytes at the front that no pending element needs any more.
    pub fn done_up_to(&self) -> usize {
        if self.depth >= 2 {
            self.start
        } else {
            self.pos
        }
    }

    /// The next event in `buf`, or `None` when more bytes are needed.
    pub fn next(&mut self, buf: &[u8]) -> Option<Event> {
        loop {
            let lt = self.pos + memchr(b'<', &buf[self.pos..])?;
            let tag_start = lt;
            let tag = scan_tag(buf, lt)?;
            match tag {
                Tag::Skip(end) => self.pos = end,
                Tag::Open(end) => {
                    self.pos = end;
                    self.depth += 1;
                    match self.depth {
                        1 => return Some(Event::StreamStart(tag_start, end)),
                        2 => self.start = tag_start,
                        _ => {}
                    }
                }
                Tag::Empty(end) => {
                    self.pos = end;
                    if self.depth == 1 {
                        return Some(Event::Stanza(tag_start, end));
                    }
                }
                Tag::Close(end) => {
                    self.pos = end;
                    self.depth = self.depth.saturating_sub(1);
                    match self.depth {
                        0 => return Some(Event::StreamEnd),
                        1 => return Some(Event::Stanza(self.start, end)),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn memchr(b: u8, s: &[u8]) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Classifies the markup starting at `buf[lt] == b'<'`; `None` if it is not complete yet.
fn scan_tag(buf: &[u8], lt: usize) -> Option<Tag> {
    let rest = &buf[lt..];
    if rest.len() < 2 {
        return None;
    }
    match rest[1] {
        b'?' => find(rest, b"?>").map(|i| Tag::Skip(lt + i + 2)),
        b'!' => {
            if rest.starts_with(b"<![CDATA[") {
                find(rest, b"]]>").map(|i| Tag::Skip(lt + i + 3))
            } else if rest.starts_with(b"<!--") {
                find(rest, b"-->").map(|i| Tag::Skip(lt + i + 3))
            } else if rest.len() < 9 {
                None
            } else {
                memchr(b'>', rest).map(|i| Tag::Skip(lt + i + 1))
            }
        }
        b'/' => memchr(b'>', rest).map(|i| Tag::Close(lt + i + 1)),
        _ => {
            let mut quote = 0u8;
            for (i, &c) in rest.iter().enumerate().skip(1) {
                if quote != 0 {
                    if c == quote {
                        quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    quote = c;
                } else if c == b'>' {
                    return Some(if rest[i - 1] == b'/' {
                        Tag::Empty(lt + i + 1)
                    } else {
                        Tag::Open(lt + i + 1)
                    });
                }
            }
            None
        }
    }
}

/// The local name of the element at the start of `s` (prefix stripped).
pub fn name(s: &[u8]) -> &[u8] {
    let s = s.strip_prefix(b"<").unwrap_or(s);
    let end = s
        .iter()
        .position(|&c| {
            c == b' ' || c == b'>' || c == b'/' || c == b'\t' || c == b'\n' || c == b'\r'
        })
        .unwrap_or(s.len());
    let qname = &s[..end];
    match memchr(b':', qname) {
        Some(i) => &qname[i + 1..],
        None => qname,
    }
}

/// The start tag of the element at the start of `s`.
fn start_tag(s: &[u8]) -> &[u8] {
    let mut quote = 0u8;
    for (i, &c) in s.iter().enumerate() {
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'"' || c == b'\'' {
            quote = c;
        } else if c == b'>' {
            return &s[..i];
        }
    }
    s
}

/// The value of attribute `attr` on the top element of `s` (still escaped).
pub fn attr<'a>(s: &'a [u8], attr: &str) -> Option<&'a [u8]> {
    let tag = start_tag(s);
    let a = attr.as_bytes();
    let mut i = 0;
    while i + a.len() + 2 <= tag.len() {
        let j = i + find(&tag[i..], a)?;
        let before_ok = j > 0 && matches!(tag[j - 1], b' ' | b'\t' | b'\n' | b'\r');
        let mut k = j + a.len();
        while k < tag.len() && tag[k] == b' ' {
            k += 1;
        }
        if before_ok && k < tag.len() && tag[k] == b'=' {
            k += 1;
            while k < tag.len() && tag[k] == b' ' {
                k += 1;
            }
            let q = *tag.get(k)?;
            if q == b'"' || q == b'\'' {
                let v = k + 1;
                let end = v + memchr(q, &tag[v..])?;
                return Some(&tag[v..end]);
            }
        }
        i = j + 1;
    }
    None
}

/// The text of the first descendant element named `child` (unprefixed), e.g. `body`.
pub fn child_text<'a>(s: &'a [u8], child: &str) -> Option<&'a [u8]> {
    let open = format!("<{child}");
    let close = format!("</{child}>");
    let mut from = 1;
    loop {
        let i = from + find(&s[from..], open.as_bytes())?;
        let after = i + open.len();
        match s.get(after) {
            Some(b'>') | Some(b' ') | Some(b'/') | Some(b'\t') | Some(b'\n') => {
                let gt = after + memchr(b'>', &s[after..])?;
                if s[gt - 1] == b'/' {
                    return Some(&[]);
                }
                let text_start = gt + 1;
                let end = text_start + find(&s[text_start..], close.as_bytes())?;
                return Some(&s[text_start..end]);
            }
            _ => from = after,
        }
    }
}

/// Every text of elements named `child`, e.g. the `<mechanism>`s of `<mechanisms>`.
pub fn child_texts<'a>(s: &'a [u8], child: &str) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = s;
    let close = format!("</{child}>");
    while let Some(t) = child_text(rest, child) {
        out.push(t);
        let base = t.as_ptr() as usize - rest.as_ptr() as usize;
        let skip = base + t.len() + close.len();
        if skip >= rest.len() {
            break;
        }
        rest = &rest[skip - 1..];
    }
    out
}

/// Whether `s` contains `needle` anywhere (namespaces, conditions).
pub fn contains(s: &[u8], needle: &str) -> bool {
    find(s, needle.as_bytes()).is_some()
}

/// Escapes text for an attribute value or element content.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '\'' => o.push_str("&apos;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &str) -> Vec<String> {
        let buf = input.as_bytes();
        let mut sp = Splitter::default();
        let mut out = Vec::new();
        while let Some(ev) = sp.next(buf) {
            out.push(match ev {
                Event::StreamStart(a, b) => format!("S:{}", &input[a..b]),
                Event::Stanza(a, b) => input[a..b].to_owned(),
                Event::StreamEnd => "END".to_owned(),
            });
        }
        out
    }

    #[test]
    fn splits_stream() {
        let s = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='a>b'>\
                 <stream:features><mechanisms><mechanism>PLAIN</mechanism>\
                 <mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>\
                 <presence from='a@b/c'/><message to='x'><body>1 2</body><![CDATA[</x>]]></message>\
                 </stream:stream>";
        let ev = events(s);
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert!(ev[0].starts_with("S:<stream:stream"));
        assert_eq!(name(ev[1].as_bytes()), b"features");
        let mechs = child_texts(ev[1].as_bytes(), "mechanism");
        assert_eq!(mechs, vec![&b"PLAIN"[..], &b"SCRAM-SHA-1"[..]]);
        assert_eq!(attr(ev[2].as_bytes(), "from"), Some(&b"a@b/c"[..]));
        assert_eq!(child_text(ev[3].as_bytes(), "body"), Some(&b"1 2"[..]));
        assert_eq!(ev[4], "END");
    }

    #[test]
    fn waits_for_more_bytes() {
        let full = "<stream:stream><message type=\"chat\" id='1'><body>x</body></message>";
        let mut sp = Splitter::default();
        for cut in 0..full.len() {
            let mut sp2 = Splitter::default();
            let part = &full.as_bytes()[..cut];
            let mut n = 0;
            while sp2.next(part).is_some() {
                n += 1;
            }
            assert!(n <= 2);
        }
        assert!(matches!(
            sp.next(full.as_bytes()),
            Some(Event::StreamStart(..))
        ));
        assert!(matches!(sp.next(full.as_bytes()), Some(Event::Stanza(..))));
        assert_eq!(sp.next(full.as_bytes()), None);
    }

    #[test]
    fn attr_needs_word_boundary() {
        let s = b"<iq xid='1' id='2' type='result'/>";
        assert_eq!(attr(s, "id"), Some(&b"2"[..]));
        assert_eq!(attr(s, "type"), Some(&b"result"[..]));
        assert_eq!(attr(s, "to"), None);
    }
}

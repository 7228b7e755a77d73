//! Reader tests: events, chunking independence, restarts, limits and hostile input.

use super::*;
use crate::writer::NS_STREAMS;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

fn reader() -> StreamReader {
    StreamReader::new(Limits::default())
}

/// Feeds `input` in chunks of `chunk` bytes, collecting every event (like a socket loop).
fn read_chunked(r: &mut StreamReader, input: &[u8], chunk: usize) -> Result<Vec<Event>, XmlError> {
    let mut out = Vec::new();
    for mut piece in input.chunks(chunk.max(1)) {
        while let Some(ev) = r.feed(&mut piece)? {
            out.push(ev);
        }
        assert!(piece.is_empty(), "Ok(None) must mean the input was used up");
    }
    Ok(out)
}

fn read_all(input: &[u8]) -> Result<Vec<Event>, XmlError> {
    read_chunked(&mut reader(), input, input.len())
}

fn error_of(input: &[u8]) -> XmlError {
    match read_all(input) {
        Ok(evs) => panic!("expected an error, got {evs:?}"),
        Err(e) => e,
    }
}

fn in_stream(body: &str) -> Vec<u8> {
    format!("{HEADER}{body}").into_bytes()
}

fn stanzas(evs: Vec<Event>) -> Vec<Element> {
    evs.into_iter()
        .filter_map(|e| match e {
            Event::Stanza(el) => Some(el),
            _ => None,
        })
        .collect()
}

#[test]
fn header_stanza_and_end() {
    let evs = read_all(&in_stream(
        "<message to='a@b' type='chat' xml:lang='de'><body>hi &amp; bye</body></message>\
         </stream:stream>",
    ))
    .expect("valid stream");
    assert_eq!(evs.len(), 3);
    let Event::StreamStart(h) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!((h.name.as_str(), h.ns.as_str()), ("stream", NS_STREAMS));
    assert_eq!(h.attr("to"), Some("example.com"));
    assert_eq!(h.attr("version"), Some("1.0"));
    assert_eq!(h.attr("xml:lang"), Some("en"));
    assert_eq!(
        h.attr("xmlns"),
        Some("jabber:client"),
        "content namespace is exposed"
    );
    let expected = Element::new("message", "jabber:client")
        .with_attr("to", "a@b")
        .with_attr("type", "chat")
        .with_attr("xml:lang", "de")
        .with_child(Element::new("body", "jabber:client").with_text("hi & bye"));
    assert_eq!(evs[1], Event::Stanza(expected));
    assert_eq!(evs[2], Event::StreamEnd);
}

#[test]
fn namespaces_are_resolved_not_prefixes() {
    let evs = read_all(&in_stream(
        "<iq type='get' id='1'><p:query xmlns:p='urn:q' xmlns:x='urn:x' x:flag='1'>\
         <p:item/><other xmlns='urn:o'><deep/></other></p:query></iq>",
    ))
    .expect("valid");
    let iq = &stanzas(evs)[0];
    let q = iq
        .child("query", "urn:q")
        .expect("query resolved via prefix");
    assert_eq!(q.attr("{urn:x}flag"), Some("1"));
    assert!(q.has_child("item", "urn:q"));
    let other = q.child("other", "urn:o").expect("default ns");
    assert!(other.has_child("deep", "urn:o"));
}

/// A stream exercising every lexer path whose state could straddle a chunk boundary.
fn rich_stream() -> Vec<u8> {
    in_stream(
        " \n<message from='x@y/r\u{e9}' id='a&apos;b&#x41;'>\r\n<body>caf\u{e9} \u{1f600} &lt;&gt;&amp;&quot; &#233;&#x1F600;\r\nz</body>\
         <x xmlns='urn:x' a='1&#9;2'><![CDATA[<not> ]] markup]]></x><empty/></message>\t \
         <presence/><iq type='result' id='2'/>  </stream:stream>",
    )
}

#[test]
fn byte_by_byte_equals_all_at_once() {
    let whole = read_all(&rich_stream()).expect("valid");
    assert_eq!(whole.len(), 5);
    for chunk in [1, 2, 3, 7, 64] {
        let evs = read_chunked(&mut reader(), &rich_stream(), chunk).expect("valid");
        assert_eq!(evs, whole, "chunk size {chunk}");
    }
    let msg = &stanzas(whole)[0];
    assert_eq!(msg.attr("id"), Some("a'bA"));
    let body = msg.child("body", "jabber:client").expect("body").text();
    assert_eq!(
        body, "caf\u{e9} \u{1f600} <>&\" \u{e9}\u{1f600}\nz",
        "CRLF folded"
    );
    let x = msg.child("x", "urn:x").expect("x");
    assert_eq!(x.attr("a"), Some("1\t2"));
    assert_eq!(x.text(), "<not> ]] markup");
}

#[test]
fn returns_one_event_and_leaves_the_rest() {
    let input = in_stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>");
    let mut r = reader();
    let mut rest = &input[..];
    assert!(matches!(r.feed(&mut rest), Ok(Some(Event::StreamStart(_)))));
    assert_eq!(
        rest,
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected/>"
    );
    let Ok(Some(Event::Stanza(st))) = r.feed(&mut rest) else {
        panic!()
    };
    assert!(st.is("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    assert_eq!(
        rest, b"<injected/>",
        "plaintext after <starttls/> stays with the caller"
    );
}

#[test]
fn restart_with_pipelined_bytes() {
    let second = format!(
        "{HEADER}<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"
    );
    // A keepalive right before the restarted header is tolerated.
    let input = in_stream(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth> {second}"
    ));
    for chunk in [1, 5, input.len()] {
        let mut r = reader();
        let mut evs = Vec::new();
        let mut restarted = false;
        let input = [&b"\n "[..], &input].concat();
        for mut piece in input.chunks(chunk) {
            while let Some(ev) = r.feed(&mut piece).expect("valid") {
                if matches!(&ev, Event::Stanza(e) if e.name == "auth") {
                    // SASL success: restart exactly at the element boundary.
                    assert!(r.is_idle());
                    r.reset();
                    restarted = true;
                }
                evs.push(ev);
            }
        }
        assert!(restarted);
        assert!(
            matches!(evs.as_slice(), [
            Event::StreamStart(_),
            Event::Stanza(a),
            Event::StreamStart(_),
            Event::Stanza(iq),
        ] if a.text() == "AGEAYg==" && iq.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")),
            "chunk {chunk}: {evs:?}"
        );
    }
}

#[test]
fn whitespace_between_stanzas_is_ignored_text_is_not() {
    let evs = read_all(&in_stream(" \r\n\t <presence/> \n ")).expect("keepalives");
    assert_eq!(evs.len(), 2);
    let e = error_of(&in_stream("<presence/>hello<presence/>"));
    assert!(matches!(e, XmlError::BadFormat(_)), "{e:?}");
    assert_eq!(e.stream_condition(), "bad-format");
}

#[test]
fn endless_whitespace_keepalives_do_not_hit_the_stanza_limit() {
    let limits = Limits {
        max_stanza_bytes: 1000,
        ..Limits::default()
    };
    let mut r = StreamReader::new(limits);
    read_chunked(&mut r, HEADER.as_bytes(), 1000).expect("header");
    let ws = vec![b' '; 10_000];
    read_chunked(&mut r, &ws, 100).expect("whitespace is not a stanza");
    let evs = read_chunked(&mut r, b"<presence/>", 3).expect("stanza after whitespace");
    assert_eq!(evs.len(), 1);
}

#[test]
fn stanza_size_limit_counts_raw_bytes() {
    let stanza = |n: usize| format!("<message><body>{}</body></message>", "a".repeat(n));
    let overhead = stanza(0).len();
    let limits = Limits {
        max_stanza_bytes: 1000,
        ..Limits::default()
    };
    let at_limit = format!("{HEADER}{}", stanza(1000 - overhead));
    let evs = read_chunked(&mut StreamReader::new(limits), at_limit.as_bytes(), 100).expect("fits");
    assert_eq!(evs.len(), 2);
    let over = format!("{HEADER}{}", stanza(1001 - overhead));
    let e =
        read_chunked(&mut StreamReader::new(limits), over.as_bytes(), 100).expect_err("too big");
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
    assert_eq!(e.stream_condition(), "policy-violation");
}

#[test]
fn endless_start_tag_and_endless_text_are_cut_off() {
    let limits = Limits {
        max_stanza_bytes: 4096,
        ..Limits::default()
    };
    for prefix in [
        "<message to='",
        "<message a='1' b='2' c",
        "<message><body>",
        "<m",
    ] {
        let mut r = StreamReader::new(limits);
        read_chunked(&mut r, HEADER.as_bytes(), 64).expect("header");
        read_chunked(&mut r, prefix.as_bytes(), 64).expect("partial");
        assert!(!r.is_idle());
        let filler = if prefix.ends_with('c') || prefix == "<m" {
            b"c"
        } else {
            b"x"
        };
        let mut fed = 0;
        let err = loop {
            match r.feed(&mut &filler[..]) {
                Ok(_) => fed += 1,
                Err(e) => break e,
            }
            assert!(fed <= 4096, "{prefix}: never cut off");
        };
        assert!(
            matches!(err, XmlError::PolicyViolation(_)),
            "{prefix}: {err:?}"
        );
    }
}

#[test]
fn the_header_is_limited_too() {
    let limits = Limits {
        max_stanza_bytes: 512,
        ..Limits::default()
    };
    let huge = format!(
        "<stream:stream xmlns:stream='{NS_STREAMS}' to='{}'>",
        "a".repeat(600)
    );
    let e = read_chunked(&mut StreamReader::new(limits), huge.as_bytes(), 10).expect_err("limit");
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
}

#[test]
fn big_text_fits_but_token_limit_bounds_attribute_values() {
    // rxml chunks text at its token limit, so a body near the stanza limit still parses.
    let body = "b".repeat(200 * 1024);
    let evs = read_all(&in_stream(&format!(
        "<message><body>{body}</body></message>"
    )))
    .expect("big body");
    let msg = &stanzas(evs)[0];
    assert_eq!(
        msg.child("body", "jabber:client").map(|b| b.text().len()),
        Some(body.len())
    );

    let attr = "j".repeat(10 * 1024);
    let evs = read_all(&in_stream(&format!("<message to='{attr}'/>"))).expect("10 KiB attribute");
    assert_eq!(stanzas(evs)[0].attr("to").map(str::len), Some(attr.len()));

    let e = error_of(&in_stream(&format!(
        "<message to='{}'/>",
        "j".repeat(MAX_TOKEN_BYTES + 1)
    )));
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
}

fn nested(depth: usize) -> String {
    let open: String = (0..depth).map(|_| "<a>").collect();
    let close: String = (0..depth).map(|_| "</a>").collect();
    format!("{open}{close}")
}

#[test]
fn depth_limit() {
    let evs = read_all(&in_stream(&nested(64))).expect("depth 64 is allowed");
    let mut depth = 0;
    let mut el = stanzas(evs).into_iter().next();
    while let Some(e) = el {
        depth += 1;
        el = e.first_element().cloned();
    }
    assert_eq!(depth, 64);
    let e = error_of(&in_stream(&nested(65)));
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
}

#[test]
fn attribute_count_limit() {
    let tag = |n: usize| {
        let attrs: String = (0..n).map(|i| format!(" a{i}='v'")).collect();
        format!("<presence{attrs}/>")
    };
    let evs = read_all(&in_stream(&tag(64))).expect("64 attributes are allowed");
    assert_eq!(stanzas(evs)[0].attrs.len(), 64);
    let e = error_of(&in_stream(&tag(65)));
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
    // Namespace declarations count as attributes: they cost memory just the same.
    let decls: String = (0..65).map(|i| format!(" xmlns:p{i}='urn:{i}'")).collect();
    let e = error_of(&in_stream(&format!("<presence{decls}/>")));
    assert!(matches!(e, XmlError::PolicyViolation(_)), "{e:?}");
}

#[test]
fn doctype_and_billion_laughs_are_restricted() {
    let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
        <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>\
        <stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol2;";
    let e = error_of(laughs.as_bytes());
    assert!(matches!(e, XmlError::RestrictedXml(_)), "{e:?}");
    assert_eq!(e.stream_condition(), "restricted-xml");
    let e = error_of(&in_stream("<!DOCTYPE x>"));
    assert!(matches!(e, XmlError::RestrictedXml(_)), "{e:?}");
}

#[test]
fn processing_instructions_are_restricted() {
    for pi in [
        "<?foo bar?>",
        "<message><?foo?></message>",
        "<?xml version='1.0'?>",
    ] {
        let e = error_of(&in_stream(pi));
        assert!(matches!(e, XmlError::RestrictedXml(_)), "{pi}: {e:?}");
    }
    // rxml lexes `<?xml-` as a broken XML declaration, so it cannot tell this PI from a
    // syntax error; either condition closes the stream.
    let e = error_of(b"<?xml-stylesheet href='x'?><stream:stream/>");
    assert!(
        matches!(e, XmlError::RestrictedXml(_) | XmlError::NotWellFormed(_)),
        "{e:?}"
    );
}

#[test]
fn comments_are_restricted() {
    for c in ["<!-- hi -->", "<message><!-- hi --></message>"] {
        let e = error_of(&in_stream(c));
        assert!(matches!(e, XmlError::RestrictedXml(_)), "{c}: {e:?}");
    }
    let e = error_of(format!("<!-- x -->{HEADER}").as_bytes());
    assert!(matches!(e, XmlError::RestrictedXml(_)), "{e:?}");
}

#[test]
fn only_predefined_entities() {
    let e = error_of(&in_stream("<message><body>&nbsp;</body></message>"));
    assert!(matches!(e, XmlError::RestrictedXml(_)), "{e:?}");
    let e = error_of(&in_stream("<message to='&foo;'/>"));
    assert!(matches!(e, XmlError::RestrictedXml(_)), "{e:?}");
    let evs =
        read_all(&in_stream("<m>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;</m>")).expect("predefined");
    assert_eq!(stanzas(evs)[0].text(), "<>&'\"AB");
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    for bad in [
        &b"<m>\xff</m>"[..],
        b"<m a='\xc3\x28'/>",
        b"<m\xe2\x82/>",
        b"<m>\xed\xa0\x80</m>",
    ] {
        let mut input = HEADER.as_bytes().to_vec();
        input.extend_from_slice(bad);
        for chunk in [1, input.len()] {
            let e = read_chunked(&mut reader(), &input, chunk).expect_err("invalid utf-8");
            assert!(
                matches!(e, XmlError::NotWellFormed(_)),
                "{bad:?}/{chunk}: {e:?}"
            );
            assert_eq!(e.stream_condition(), "not-well-formed");
        }
    }
    let e = error_of(&in_stream("<m>\u{1}</m>"));
    assert!(
        matches!(e, XmlError::NotWellFormed(_)),
        "control char: {e:?}"
    );
}

#[test]
fn wrong_stream_root_is_invalid_namespace() {
    for root in [
        "<stream:stream xmlns:stream='urn:wrong'>",
        "<stream xmlns='jabber:client'>",
        "<features xmlns='http://etherx.jabber.org/streams'>",
    ] {
        let e = error_of(root.as_bytes());
        assert!(matches!(e, XmlError::InvalidNamespace(_)), "{root}: {e:?}");
        assert_eq!(e.stream_condition(), "invalid-namespace");
    }
    // The root may use a default namespace instead of the usual prefix.
    let evs =
        read_all(format!("<stream xmlns='{NS_STREAMS}'>").as_bytes()).expect("unprefixed root");
    assert!(matches!(&evs[0], Event::StreamStart(h) if h.attr("xmlns") == Some(NS_STREAMS)));
}

#[test]
fn syntax_errors_are_not_well_formed() {
    for body in [
        "<a></b>",
        "<p:a/>",
        "<a x='1' x='2'/>",
        "<a xmlns:p='urn:p' xmlns:q='urn:p' p:x='1' q:x='2'/>",
        "<a xmlns='urn:1' xmlns='urn:2'/>",
        "<a x=1/>",
        "</stream:stream><extra/>",
        "</wrong>",
    ] {
        let e = error_of(&in_stream(body));
        assert!(matches!(e, XmlError::NotWellFormed(_)), "{body}: {e:?}");
    }
}

#[test]
fn errors_are_sticky() {
    let mut r = reader();
    let input = in_stream("<!-- x -->");
    let e = read_chunked(&mut r, &input, input.len()).expect_err("comment");
    assert_eq!(r.feed(&mut &b"<presence/>"[..]), Err(e));
    r.reset();
    assert!(
        read_chunked(&mut r, HEADER.as_bytes(), 10).is_ok(),
        "reset clears the error"
    );
}

#[test]
fn idle_state() {
    let mut r = reader();
    assert!(r.is_idle());
    read_chunked(&mut r, HEADER.as_bytes(), 9).expect("header");
    assert!(r.is_idle());
    read_chunked(&mut r, b"<message><bo", 4).expect("partial");
    assert!(!r.is_idle());
    let evs = read_chunked(&mut r, b"dy>x</body></message>  ", 4).expect("rest");
    assert_eq!(evs.len(), 1);
    assert!(r.is_idle());
}

#[test]
fn self_closing_root_ends_the_stream() {
    let evs =
        read_all(format!("<stream:stream xmlns:stream='{NS_STREAMS}'/>").as_bytes()).expect("ok");
    assert!(matches!(
        evs.as_slice(),
        [Event::StreamStart(_), Event::StreamEnd]
    ));
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(usize, u8),
        Insert(usize, Vec<u8>),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let interesting = prop::sample::select(vec![
            &b"<"[..],
            b">",
            b"/>",
            b"</",
            b"&",
            b"&#",
            b";",
            b"'",
            b"\"",
            b"<!",
            b"<?",
            b"]]>",
            b"<![CDATA[",
            b"xmlns:",
            b"=",
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\r",
            b"\0",
            b":",
        ]);
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), interesting).prop_map(|(i, s)| Mutation::Insert(i, s.to_vec())),
            (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
                .prop_map(|(i, s)| Mutation::Insert(i, s)),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(mut input: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
        for m in ms {
            let len = input.len().max(1);
            match m {
                Mutation::Flip(i, b) => {
                    if let Some(x) = input.get_mut(i % len) {
                        *x = *b;
                    }
                }
                Mutation::Insert(i, s) => {
                    let at = i % (input.len() + 1);
                    input.splice(at..at, s.iter().copied());
                }
                Mutation::Truncate(i) => input.truncate(i % len),
            }
        }
        input
    }

    proptest! {
        /// Whatever the bytes, the reader returns events or errors; it never panics and
        /// never leaves input unconsumed when it says it needs more.
        #[test]
        fn hostile_input_never_panics(
            ms in prop::collection::vec(mutation(), 0..6),
            chunk in 1usize..40,
            reset_at in prop::option::of(0usize..8),
        ) {
            let input = mutate(rich_stream(), &ms);
            let limits = Limits { max_stanza_bytes: 300, max_depth: 3, max_attrs: 3 };
            let mut r = StreamReader::new(limits);
            let mut n = 0;
            for mut piece in input.chunks(chunk) {
                loop {
                    match r.feed(&mut piece) {
                        Ok(Some(_)) => {
                            n += 1;
                            if Some(n) == reset_at {
                                r.reset();
                            }
                        }
                        Ok(None) => {
                            prop_assert!(piece.is_empty());
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

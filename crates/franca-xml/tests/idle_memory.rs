//! What an idle stream reader keeps on the heap. Memory per idle session is the scale limit
//! (DESIGN §6), and rxml reserves a 16 KiB token buffer as soon as it lexes anything, so this
//! checks that the buffer is handed back once the reader sits between stanzas.

use franca_xml::{Event, Limits, StreamReader};

// dhat's testing mode counts the live heap without unsafe code of ours (the workspace forbids
// it). It is process-wide, so this file holds a single test.
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn live() -> isize {
    dhat::HeapStats::get().curr_bytes as isize
}

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";
const STANZA: &[u8] = b"<message to='juliet@example.com' type='chat' id='m1'>\
    <body>Wherefore art thou?</body></message>";

/// Feeds `bytes` completely, dropping the events.
fn feed_all(r: &mut StreamReader, bytes: &[u8]) -> usize {
    let mut input = bytes;
    let mut events = 0;
    while let Some(ev) = r.feed(&mut input).expect("well-formed") {
        drop::<Event>(ev);
        events += 1;
        if input.is_empty() {
            break;
        }
    }
    events
}

#[test]
fn idle_reader_gives_back_its_token_buffer() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut r = StreamReader::new(Limits::default());
    let base = live();
    assert_eq!(feed_all(&mut r, HEADER), 1);
    assert_eq!(feed_all(&mut r, STANZA), 1);
    // The stanza ended exactly at the end of the input, as it does on a quiet connection: the
    // reader has not been asked for more, so the buffer is still held…
    let busy = live() - base;
    assert!(
        busy >= 16 * 1024,
        "expected rxml's token buffer, held {busy} bytes"
    );
    // …until the caller says it is out of bytes.
    r.release_if_idle();
    let idle = live() - base;
    assert!(idle < 1024, "idle reader still holds {idle} bytes");

    // Mid-stanza the lexer's state lives in that buffer, so releasing it would lose bytes.
    let base = live();
    let mut input = &STANZA[..20];
    assert!(r.feed(&mut input).expect("well-formed").is_none());
    r.release_if_idle();
    assert!(live() - base >= 16 * 1024);
    let mut rest = &STANZA[20..];
    assert!(matches!(r.feed(&mut rest), Ok(Some(Event::Stanza(_)))));
}

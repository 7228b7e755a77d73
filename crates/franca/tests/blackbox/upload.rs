//! XEP-0363 HTTP file upload on the real binary: a slot from `upload.localhost`, the PUT over
//! HTTP and the GET returning the same bytes; a file over the limit (`file-too-large` with the
//! limit), the per-account quota, PUTs of the wrong size, type or secret, and unknown slots.

use crate::client::{Conn, is_error, is_result};
use crate::harness::{ALICE, Options, Server};
use std::io::{Read, Write};
use std::time::Duration;

const SERVICE: &str = "upload.localhost";
const NS: &str = "urn:xmpp:http:upload:0";

fn start() -> Server {
    Server::start_with(Options {
        extra: "[upload]\nmax_file_size = 1000\nquota_per_user = 1500\n".into(),
        ..Options::default()
    })
}

fn iq(c: &mut Conn, payload: &str) -> String {
    let id = c.next_id("up");
    c.send(format!(
        "<iq type='get' id='{id}' to='{SERVICE}'>{payload}</iq>"
    ));
    c.wait_stanza(&id, 15)
}

fn request(c: &mut Conn, name: &str, size: usize, ct: &str) -> String {
    iq(
        c,
        &format!("<request xmlns='{NS}' filename='{name}' size='{size}' content-type='{ct}'/>"),
    )
}

/// The value of attribute `name` on the first `<tag` in `xml`.
fn attr(xml: &str, tag: &str, name: &str) -> String {
    let at = xml.find(tag).unwrap_or_else(|| panic!("no {tag} in {xml}"));
    let rest = &xml[at..];
    let k = rest.find(&format!("{name}=")).expect("attribute") + name.len() + 1;
    let q = &rest[k..k + 1];
    let v = &rest[k + 1..];
    v[..v.find(q).expect("closing quote")].to_owned()
}

/// (path of the URL, Authorization value) of a slot answer.
fn slot(st: &str, s: &Server) -> (String, String) {
    assert!(is_result(st), "no slot: {st}");
    let put = attr(st, "<put", "url");
    assert_eq!(put, attr(st, "<get", "url"));
    let prefix = format!("https://localhost:{}", s.https);
    let path = put
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{put} not under {prefix}"))
        .to_owned();
    let h = st
        .find("name='Authorization'>")
        .or_else(|| st.find("name=\"Authorization\">"));
    let h = &st[h.expect("Authorization header") + "name='Authorization'>".len()..];
    (path, h[..h.find('<').expect("end")].to_owned())
}

/// One HTTP/1.1 request to the plain listener: (status code, headers lowercased, body).
fn http(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut t = std::net::TcpStream::connect(("127.0.0.1", s.http)).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    t.write_all(req.as_bytes()).expect("write");
    let _ = t.write_all(body);
    let mut raw = Vec::new();
    let _ = t.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head end");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let code = head[9..12].parse().expect("status");
    (code, head, raw[end + 4..].to_vec())
}

fn put(s: &Server, path: &str, auth: &str, ct: &str, body: &[u8]) -> u16 {
    let len = body.len().to_string();
    http(
        s,
        "PUT",
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", ct),
            ("Content-Length", &len),
        ],
        body,
    )
    .0
}

#[test]
fn upload_round_trip_and_refusals() {
    let s = start();
    let mut c = s.login(ALICE, "up");

    let info = iq(
        &mut c,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(
        info.contains("category='store'") || info.contains("category=\"store\""),
        "{info}"
    );
    assert!(
        info.contains(NS) && info.contains("max-file-size") && info.contains("1000"),
        "{info}"
    );

    // Round trip.
    let data: Vec<u8> = (0..700u32).map(|i| (i * 7) as u8).collect();
    let st = request(&mut c, "../My photo.png", data.len(), "image/png");
    let (path, auth) = slot(&st, &s);
    assert!(path.ends_with("/My%20photo.png"), "{path}");
    // Wrong secret, wrong type, wrong sizes: refused, and the slot stays usable.
    assert_eq!(put(&s, &path, "Bearer 0000", "image/png", &data), 403);
    assert_eq!(put(&s, &path, &auth, "text/plain", &data), 400);
    assert_eq!(put(&s, &path, &auth, "image/png", &data[..10]), 400);
    let mut more = data.clone();
    more.extend_from_slice(b"extra");
    assert_eq!(put(&s, &path, &auth, "image/png", &more), 413);
    // The right secret, type and size: stored once.
    assert_eq!(put(&s, &path, &auth, "image/png", &data), 201);
    assert_eq!(put(&s, &path, &auth, "image/png", &data), 403, "used twice");
    let (code, head, body) = http(&s, "GET", &path, &[], &[]);
    assert_eq!(code, 200);
    assert_eq!(body, data);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert!(
        head.contains("content-disposition: inline; filename*=utf-8''my%20photo.png"),
        "{head}"
    );
    let (code, head, body) = http(&s, "HEAD", &path, &[], &[]);
    assert_eq!(code, 200);
    assert!(
        head.contains("content-length: 700") && body.is_empty(),
        "{head}"
    );

    // Unknown and guessed slots.
    let (code, _, _) = http(
        &s,
        "GET",
        "/upload/0123456789abcdef0123456789abcdef/x.png",
        &[],
        &[],
    );
    assert_eq!(code, 404);
    let (code, _, _) = http(&s, "GET", "/upload/..%2F..%2Fetc/passwd", &[], &[]);
    assert_eq!(code, 404);
    assert_eq!(
        put(
            &s,
            "/upload/0123456789abcdef0123456789abcdef/x.png",
            &auth,
            "image/png",
            &data
        ),
        404
    );

    // Too large: file-too-large with the limit.
    let st = request(&mut c, "big.bin", 5000, "application/octet-stream");
    assert!(
        is_error(&st) && st.contains("not-acceptable") && st.contains("file-too-large"),
        "{st}"
    );
    assert!(st.contains("<max-file-size>1000</max-file-size>"), "{st}");

    // Quota: 700 stored + 900 > 1500.
    let st = request(&mut c, "more.bin", 900, "application/octet-stream");
    assert!(is_error(&st) && st.contains("resource-constraint"), "{st}");
    let st = request(&mut c, "fits.bin", 800, "application/octet-stream");
    assert!(is_result(&st), "{st}");

    // Disallowed type (text/html is denied by default).
    let st = request(&mut c, "page.html", 10, "text/html");
    assert!(is_error(&st) && st.contains("not-acceptable"), "{st}");
    s.assert_no_panic();
}

#[test]
fn stored_files_and_quota_survive_a_restart() {
    let mut s = start();
    let mut c = s.login(ALICE, "up");
    let data = vec![b'x'; 900];
    let st = request(&mut c, "notes.txt", data.len(), "text/plain");
    let (path, auth) = slot(&st, &s);
    assert_eq!(put(&s, &path, &auth, "text/plain", &data), 201);
    drop(c);
    s.stop();
    s.start();
    let (code, head, body) = http(&s, "GET", &path, &[], &[]);
    assert_eq!((code, body.len()), (200, 900), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    // 900 bytes are still counted: 700 more would pass the 1500-byte quota.
    let mut c = s.login(ALICE, "up2");
    let st = request(&mut c, "more.txt", 700, "text/plain");
    assert!(is_error(&st) && st.contains("resource-constraint"), "{st}");
    s.assert_no_panic();
}

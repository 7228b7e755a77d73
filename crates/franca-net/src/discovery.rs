//! XEP-0156 discovery of the HTTP connection methods: `/.well-known/host-meta` (XRD, RFC 6415)
//! and `/.well-known/host-meta.json` (JRD), listing the WebSocket endpoint
//! (`urn:xmpp:alt-connections:websocket`) and the BOSH endpoint
//! (`urn:xmpp:alt-connections:xbosh`). Browser clients fetch these from another origin,
//! so the router gives them the CORS headers of `http.cors_origins` (by default `*`, the XEP's
//! advice; nothing private is in them).
//!
//! The address is the one the client used: the `Host` header, and `wss` when the request came
//! over TLS (the `https` listener, the multiplexed port) or a proxy in front says it came over
//! HTTPS (`X-Forwarded-Proto`), else `ws` (`https` and `http` for BOSH). A forged header only changes the answer to the
//! forger.

use crate::http::HttpPeer;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

const WEBSOCKET_REL: &str = "urn:xmpp:alt-connections:websocket";
const BOSH_REL: &str = "urn:xmpp:alt-connections:xbosh";

/// The WebSocket URL as this request sees it, or `None` without a usable `Host`. `tls` is
/// whether the request itself came over TLS.
fn websocket_url(headers: &HeaderMap, tls: bool) -> Option<String> {
    let (https, host) = origin(headers, tls)?;
    let scheme = if https { "wss" } else { "ws" };
    Some(format!("{scheme}://{host}/xmpp-websocket"))
}

/// The BOSH URL as this request sees it (XEP-0206).
fn bosh_url(headers: &HeaderMap, tls: bool) -> Option<String> {
    let (https, host) = origin(headers, tls)?;
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{host}/http-bind"))
}

/// Whether the client's side is HTTPS, and the host (with its port) it asked for.
fn origin(headers: &HeaderMap, tls: bool) -> Option<(bool, &str)> {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))?
        .to_str()
        .ok()?
        .split(',')
        .next()?
        .trim();
    // A host, optionally with a port; anything that could break out of the URL or the XML
    // attribute is refused.
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !valid {
        return None;
    }
    let https = tls
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    Some((https, host))
}

fn bad_host() -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        "XEP-0156 discovery needs a valid Host header\n",
    )
        .into_response()
}

/// `GET /.well-known/host-meta`: the XRD form.
pub async fn host_meta(ConnectInfo(peer): ConnectInfo<HttpPeer>, headers: HeaderMap) -> Response {
    let urls = (
        websocket_url(&headers, peer.tls),
        bosh_url(&headers, peer.tls),
    );
    let (Some(url), Some(bosh)) = urls else {
        return bad_host();
    };
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n\
         \x20 <Link rel='{WEBSOCKET_REL}' href='{url}'/>\n\
         \x20 <Link rel='{BOSH_REL}' href='{bosh}'/>\n\
         </XRD>\n"
    );
    (
        [(header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /.well-known/host-meta.json`: the JRD form.
pub async fn host_meta_json(
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Response {
    let urls = (
        websocket_url(&headers, peer.tls),
        bosh_url(&headers, peer.tls),
    );
    let (Some(url), Some(bosh)) = urls else {
        return bad_host();
    };
    let body = format!(
        r#"{{"links":[{{"rel":"{WEBSOCKET_REL}","href":"{url}"}},{{"rel":"{BOSH_REL}","href":"{bosh}"}}]}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn xep0156_bosh_url_follows_the_host_and_the_scheme() {
        assert_eq!(
            bosh_url(&headers(&[("host", "chat.example:5280")]), false).as_deref(),
            Some("http://chat.example:5280/http-bind")
        );
        assert_eq!(
            bosh_url(&headers(&[("host", "chat.example:5443")]), true).as_deref(),
            Some("https://chat.example:5443/http-bind")
        );
        assert_eq!(bosh_url(&headers(&[("host", "evil'/><x")]), false), None);
    }

    #[test]
    fn xep0156_url_follows_the_host_and_the_proxy_scheme() {
        assert_eq!(
            websocket_url(&headers(&[("host", "chat.example:5280")]), false).as_deref(),
            Some("ws://chat.example:5280/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(&headers(&[("host", "chat.example:5443")]), true).as_deref(),
            Some("wss://chat.example:5443/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(
                &headers(&[
                    ("host", "127.0.0.1:5280"),
                    ("x-forwarded-host", "chat.example"),
                    ("x-forwarded-proto", "https"),
                ]),
                false
            )
            .as_deref(),
            Some("wss://chat.example/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(&headers(&[("host", "[::1]:5280")]), false).as_deref(),
            Some("ws://[::1]:5280/xmpp-websocket")
        );
    }

    #[test]
    fn xep0156_hostile_hosts_are_refused() {
        for bad in ["", "evil'/><x", "a b", "host/path", "x\"y"] {
            assert_eq!(
                websocket_url(&headers(&[("host", bad)]), true),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(websocket_url(&HeaderMap::new(), true), None);
    }
}

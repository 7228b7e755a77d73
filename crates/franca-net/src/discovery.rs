//! XEP-0156 discovery of the HTTP connection methods: `/.well-known/host-meta` (XRD, RFC 6415)
//! and `/.well-known/host-meta.json` (JRD), listing the WebSocket endpoint
//! (`urn:xmpp:alt-connections:websocket`). Browser clients fetch these from another origin,
//! so they carry `Access-Control-Allow-Origin: *` (the XEP's advice; nothing private is in them).
//!
//! The address is the one the client used: the `Host` header, and `wss` when a proxy in
//! front says the request came over HTTPS (`X-Forwarded-Proto`), else `ws`. A forged header
//! only changes the answer to the forger.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

const WEBSOCKET_REL: &str = "urn:xmpp:alt-connections:websocket";

/// The WebSocket URL as this request sees it, or `None` without a usable `Host`.
fn websocket_url(headers: &HeaderMap) -> Option<String> {
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
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let scheme = if https { "wss" } else { "ws" };
    Some(format!("{scheme}://{host}/xmpp-websocket"))
}

fn bad_host() -> Response {
    (
        axum::http::StatusCode::BAD_REQUEST,
        "XEP-0156 discovery needs a valid Host header\n",
    )
        .into_response()
}

/// `GET /.well-known/host-meta`: the XRD form.
pub async fn host_meta(headers: HeaderMap) -> Response {
    let Some(url) = websocket_url(&headers) else {
        return bad_host();
    };
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n\
         <XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n\
         \x20 <Link rel='{WEBSOCKET_REL}' href='{url}'/>\n\
         </XRD>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "application/xrd+xml; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

/// `GET /.well-known/host-meta.json`: the JRD form.
pub async fn host_meta_json(headers: HeaderMap) -> Response {
    let Some(url) = websocket_url(&headers) else {
        return bad_host();
    };
    let body = format!(r#"{{"links":[{{"rel":"{WEBSOCKET_REL}","href":"{url}"}}]}}"#);
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
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
    fn xep0156_url_follows_the_host_and_the_proxy_scheme() {
        assert_eq!(
            websocket_url(&headers(&[("host", "chat.example:5280")])).as_deref(),
            Some("ws://chat.example:5280/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(&headers(&[
                ("host", "127.0.0.1:5280"),
                ("x-forwarded-host", "chat.example"),
                ("x-forwarded-proto", "https"),
            ]))
            .as_deref(),
            Some("wss://chat.example/xmpp-websocket")
        );
        assert_eq!(
            websocket_url(&headers(&[("host", "[::1]:5280")])).as_deref(),
            Some("ws://[::1]:5280/xmpp-websocket")
        );
    }

    #[test]
    fn xep0156_hostile_hosts_are_refused() {
        for bad in ["", "evil'/><x", "a b", "host/path", "x\"y"] {
            assert_eq!(websocket_url(&headers(&[("host", bad)])), None, "{bad:?}");
        }
        assert_eq!(websocket_url(&HeaderMap::new()), None);
    }
}

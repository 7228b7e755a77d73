//! CORS (the CORS protocol of the WHATWG Fetch standard) for the endpoints browser clients read
//! from pages of another origin: XEP-0156 discovery and BOSH. The allowed origins are
//! `http.cors_origins`; the default `*` is what Prosody and the XEP-0156 advice use, since these
//! endpoints carry nothing a login does not already protect (no cookies are involved, so
//! credentials are never allowed).
//!
//! WebSocket is not subject to CORS (browsers do not enforce it on upgrades), and the
//! operations endpoints (`/health`, `/metrics`) get no CORS headers at all.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// How long a browser may cache a preflight answer, seconds.
const PREFLIGHT_MAX_AGE: &str = "86400";
/// Methods the XMPP endpoints answer (BOSH posts, discovery gets).
const METHODS: &str = "GET, POST, OPTIONS";
/// BOSH bodies are `text/xml`, which makes `Content-Type` a non-safelisted request header.
const HEADERS: &str = "Content-Type";

/// The configured origins.
#[derive(Clone, Debug)]
pub struct Cors {
    any: bool,
    /// Lower-cased origins (scheme and host compare case-insensitively).
    origins: Arc<[String]>,
}

impl Cors {
    /// `None` when the list is empty: no CORS headers are sent.
    pub fn new(origins: &[String]) -> Option<Cors> {
        if origins.is_empty() {
            return None;
        }
        Some(Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().map(|o| o.to_ascii_lowercase()).collect(),
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = origin?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn layer(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let allow = cors.allow(request.headers().get(header::ORIGIN));
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if !cors.any {
        // The answer depends on the Origin header, so caches must key on it.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(allow) = allow {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn any_origin_or_a_listed_one() {
        assert!(Cors::new(&[]).is_none());
        let any = Cors::new(&origins(&["*"])).expect("cors");
        assert_eq!(any.allow(None), Some(HeaderValue::from_static("*")));

        let some = Cors::new(&origins(&["https://Chat.example"])).expect("cors");
        let ok = HeaderValue::from_static("https://chat.example");
        assert_eq!(some.allow(Some(&ok)), Some(ok));
        let other = HeaderValue::from_static("https://evil.example");
        assert_eq!(some.allow(Some(&other)), None);
        assert_eq!(some.allow(None), None);
    }
}

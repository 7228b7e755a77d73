//! XEP-0363 HTTP File Upload: the `upload.<domain>` service (subdomain from `[upload]`),
//! hosted through the core's service registry like `conference.`. It answers disco (identity
//! `store/file`, feature `urn:xmpp:http:upload:0`, the `max-file-size` form) and slot
//! requests; the bytes themselves go over HTTP to `franca-net`'s `/upload/` routes.
//!
//! The two halves share [`franca_core::upload::Uploads`] (reached through `Server::uploads`):
//! this module reserves a slot there (a 128-bit random id for the URL, another 128-bit secret
//! the client must echo in the PUT's `Authorization` header, size, content type, owner), and the
//! HTTP side takes it out when the PUT arrives. The quota counts stored bytes plus reserved
//! slots, so parallel requests cannot overshoot it. Only accounts of this server get slots.

use franca_core::config::{Config, UploadConfig};
use franca_core::upload::{Slot, SlotRefusal, encode_segment};
use franca_core::{HostedService, Module, Server};
use franca_proto::errors::{ErrorType, StanzaError, StanzaErrorCondition as Cond, error_reply};
use franca_proto::ns::{NS_CLIENT, NS_DATA_FORMS, NS_DISCO_INFO, NS_DISCO_ITEMS};
use franca_xml::Element;
use jid::Jid;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NS_HTTP_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// The name disco gives the service.
pub const SERVICE_NAME: &str = "HTTP File Upload";

/// Longest file name kept, in bytes (common file systems' limit).
pub const MAX_FILENAME_BYTES: usize = 200;

/// Longest content type accepted.
pub const MAX_CONTENT_TYPE: usize = 128;

/// How often expired slots and files are swept.
const CLEAN_INTERVAL: Duration = Duration::from_secs(3600);

pub struct Upload {
    /// Service domain → the served domain it belongs to (the default URL host).
    services: HashMap<String, String>,
}

impl Upload {
    pub fn new(config: &Config) -> Upload {
        let services = config
            .server
            .domains
            .iter()
            .map(|d| (format!("{}.{d}", config.upload.subdomain), d.clone()))
            .collect();
        Upload { services }
    }
}

/// The base of slot URLs for `domain` (see `UploadConfig::public_url`).
pub fn base_url(config: &Config, domain: &str) -> String {
    if let Some(url) = &config.upload.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let port = |addrs: &[String]| {
        addrs
            .first()
            .and_then(|a| a.rsplit_once(':'))
            .map(|(_, p)| p.to_owned())
    };
    let l = &config.listen;
    if let Some(p) = port(&l.https).or_else(|| port(&l.multiplex)) {
        format!("https://{domain}:{p}")
    } else if let Some(p) = port(&l.http) {
        format!("http://{domain}:{p}")
    } else {
        format!("https://{domain}")
    }
}

/// The last path component of what the client proposed, without control characters, not
/// starting with a dot, at most [`MAX_FILENAME_BYTES`]; `file` when nothing is left.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in last.chars() {
        if c.is_control() || matches!(c, '"' | '<' | '>' | '|' | ':' | '*' | '?') {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_FILENAME_BYTES {
            break;
        }
        out.push(c);
    }
    let out = out.trim().trim_start_matches('.').to_owned();
    if out.is_empty() { "file".into() } else { out }
}

fn hex(bytes: [u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn iq_result(req: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).with_attr("type", "result");
    for (from, to) in [("id", "id"), ("to", "from"), ("from", "to")] {
        if let Some(v) = req.attr(from) {
            r.set_attr(to, v);
        }
    }
    if let Some(p) = payload {
        r.push(p);
    }
    r
}

fn service_info(cfg: &UploadConfig) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).with_child(
        Element::new("identity", NS_DISCO_INFO)
            .with_attr("category", "store")
            .with_attr("type", "file")
            .with_attr("name", SERVICE_NAME),
    );
    for f in [NS_DISCO_INFO, NS_DISCO_ITEMS, NS_HTTP_UPLOAD] {
        q.push(Element::new("feature", NS_DISCO_INFO).with_attr("var", f));
    }
    // §3: the size limit, as an XEP-0128 extension form.
    let field = |var: &str, ty: Option<&str>, value: String| {
        let mut f = Element::new("field", NS_DATA_FORMS).with_attr("var", var);
        if let Some(t) = ty {
            f.set_attr("type", t);
        }
        f.with_child(Element::new("value", NS_DATA_FORMS).with_text(value))
    };
    q.push(
        Element::new("x", NS_DATA_FORMS)
            .with_attr("type", "result")
            .with_child(field("FORM_TYPE", Some("hidden"), NS_HTTP_UPLOAD.into()))
            .with_child(field("max-file-size", None, cfg.max_file_size.to_string())),
    );
    q
}

/// Answer one `<request/>` from `owner` (a bare JID of this server); `domain` is the served
/// domain the service belongs to, the default host of the URLs.
pub fn request_slot(
    server: &Server,
    domain: &str,
    owner: &str,
    req: &Element,
) -> Result<Element, StanzaError> {
    let cfg = &server.config.upload;
    let bad = |t: &str| StanzaError::new(Cond::BadRequest).with_text(t.to_owned());
    let size: u64 = req
        .attr("size")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("size must be a whole number of bytes"))?;
    if size == 0 {
        return Err(bad("empty files are not uploaded"));
    }
    let filename = sanitize_filename(req.attr("filename").ok_or_else(|| bad("no filename"))?);
    if size > cfg.max_file_size {
        return Err(StanzaError::new(Cond::NotAcceptable)
            .with_type(ErrorType::Modify)
            .with_text(format!(
                "File too large: the limit is {} bytes",
                cfg.max_file_size
            ))
            .with_app(
                Element::new("file-too-large", NS_HTTP_UPLOAD).with_child(
                    Element::new("max-file-size", NS_HTTP_UPLOAD)
                        .with_text(cfg.max_file_size.to_string()),
                ),
            ));
    }
    let content_type = req
        .attr("content-type")
        .unwrap_or("application/octet-stream")
        .trim();
    let ct_ok = !content_type.is_empty()
        && content_type.len() <= MAX_CONTENT_TYPE
        && content_type.contains('/')
        && content_type
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ');
    if !ct_ok {
        return Err(bad("malformed content-type"));
    }
    if !cfg.content_type_allowed(content_type) {
        return Err(StanzaError::new(Cond::NotAcceptable)
            .with_type(ErrorType::Modify)
            .with_text(format!(
                "files of type {content_type} are not accepted here"
            )));
    }
    let slot = Slot {
        id: hex(rand::random()),
        secret: hex(rand::random()),
        owner: owner.to_owned(),
        filename,
        size,
        content_type: content_type.to_owned(),
        expires: Instant::now() + Duration::from_secs(cfg.slot_minutes.saturating_mul(60)),
    };
    let url = format!(
        "{}/upload/{}/{}",
        base_url(&server.config, domain),
        slot.id,
        encode_segment(&slot.filename)
    );
    let auth = format!("Bearer {}", slot.secret);
    match server.uploads.add_slot(slot, cfg.quota_per_user) {
        Ok(()) => {}
        Err(SlotRefusal::Quota) => {
            return Err(StanzaError::new(Cond::ResourceConstraint)
                .with_type(ErrorType::Wait)
                .with_text(format!(
                    "Quota exceeded: each account may store {} bytes",
                    cfg.quota_per_user
                )));
        }
        Err(SlotRefusal::Busy) => {
            return Err(StanzaError::new(Cond::ResourceConstraint)
                .with_type(ErrorType::Wait)
                .with_text("too many uploads are pending; try again later"));
        }
    }
    Ok(Element::new("slot", NS_HTTP_UPLOAD)
        .with_child(
            Element::new("put", NS_HTTP_UPLOAD)
                .with_attr("url", url.clone())
                .with_child(
                    Element::new("header", NS_HTTP_UPLOAD)
                        .with_attr("name", "Authorization")
                        .with_text(auth),
                ),
        )
        .with_child(Element::new("get", NS_HTTP_UPLOAD).with_attr("url", url)))
}

impl Upload {
    fn answer(&self, server: &Server, to: &Jid, stanza: &Element) -> Result<Element, StanzaError> {
        if stanza.name != "iq" {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        if to.node().is_some() {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        let payload = stanza
            .first_element()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let get = stanza.attr("type") == Some("get");
        match (get, payload.name.as_str(), payload.ns.as_str()) {
            (true, "query", NS_DISCO_INFO) if payload.attr("node").is_none() => {
                Ok(iq_result(stanza, Some(service_info(&server.config.upload))))
            }
            (true, "query", NS_DISCO_ITEMS) => Ok(iq_result(
                stanza,
                Some(Element::new("query", NS_DISCO_ITEMS)),
            )),
            (true, "request", NS_HTTP_UPLOAD) => {
                let from = stanza
                    .attr("from")
                    .and_then(|f| Jid::new(f).ok())
                    .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                if !server.serves(from.domain().as_str()) || from.node().is_none() {
                    return Err(StanzaError::new(Cond::Forbidden)
                        .with_text("only accounts of this server may upload"));
                }
                // Slot URLs name the served domain by default: it resolves wherever the
                // client found this server, the service's subdomain may not.
                let served = self
                    .services
                    .get(to.domain().as_str())
                    .map_or(to.domain().as_str(), String::as_str);
                let slot = request_slot(server, served, from.to_bare().as_str(), payload)?;
                Ok(iq_result(stanza, Some(slot)))
            }
            _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
        }
    }
}

#[async_trait::async_trait]
impl Module for Upload {
    fn name(&self) -> &'static str {
        "upload"
    }

    fn services(&self, _config: &Config) -> Vec<HostedService> {
        let mut list: Vec<HostedService> = self
            .services
            .keys()
            .map(|domain| HostedService {
                domain: domain.clone(),
                name: SERVICE_NAME,
            })
            .collect();
        list.sort_by(|a, b| a.domain.cmp(&b.domain));
        list
    }

    async fn service_stanza(&self, server: &Arc<Server>, to: Jid, stanza: Element) {
        if !self.services.contains_key(to.domain().as_str()) {
            return;
        }
        if stanza.name == "iq" && matches!(stanza.attr("type"), Some("result" | "error")) {
            return;
        }
        let reply = match self.answer(server, &to, &stanza) {
            Ok(r) => Some(r),
            Err(e) => error_reply(&stanza, &e),
        };
        if let Some(r) = reply {
            server.route(r).await;
        }
    }

    async fn start(&self, server: &Arc<Server>) {
        if let Err(e) = server.uploads.load().await {
            tracing::error!(dir = %server.uploads.dir().display(), "upload storage: {e}");
        }
        // The sweep holds only a weak reference, so it ends with the server.
        let weak = Arc::downgrade(server);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLEAN_INTERVAL);
            loop {
                tick.tick().await;
                let Some(server) = weak.upgrade() else { break };
                let days = server.config.upload.retention_days;
                let retention = (days > 0).then(|| Duration::from_secs(days * 86_400));
                let n = server.uploads.clean(retention).await;
                if n > 0 {
                    tracing::info!("removed {n} expired uploads");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filenames_are_sanitised() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\a b.png"), "a b.png");
        assert_eq!(sanitize_filename(".htaccess"), "htaccess");
        assert_eq!(sanitize_filename("a\nb\r.txt"), "ab.txt");
        assert_eq!(sanitize_filename(""), "file");
        assert!(sanitize_filename(&"é".repeat(500)).len() <= MAX_FILENAME_BYTES);
        assert_eq!(encode_segment("a b/é.png"), "a%20b%2F%C3%A9.png");
    }

    #[test]
    fn url_base() {
        let mut c = Config::default();
        c.listen.https.clear();
        c.listen.multiplex.clear();
        c.listen.http = vec!["127.0.0.1:5280".into()];
        assert_eq!(base_url(&c, "x.org"), "http://x.org:5280");
        c.listen.https = vec!["[::]:5443".into()];
        assert_eq!(base_url(&c, "x.org"), "https://x.org:5443");
        c.upload.public_url = Some("https://files.x.org/".into());
        assert_eq!(base_url(&c, "x.org"), "https://files.x.org");
    }
}

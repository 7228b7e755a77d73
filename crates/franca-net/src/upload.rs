//! The HTTP half of XEP-0363 file upload: `PUT` and `GET`/`HEAD` at
//! `/upload/<slot-id>/<filename>`, on every listener that serves [`crate::http::router`]
//! (http, https, multiplex). Slots come from the `upload.<domain>` module in `franca-im`
//! through the shared registry [`franca_core::upload::Uploads`] on the server; this crate
//! never depends on `franca-im`.
//!
//! A PUT must name a live slot, carry its secret (`Authorization: Bearer …`, the header the
//! slot announced), the slot's content type and exactly its size: otherwise 404 (unknown
//! slot), 403 (wrong secret or file name), 413 (more bytes) or 400 (fewer bytes, other
//! type). The body is streamed to `<id>.part` and renamed into place once complete, so it is
//! never held in memory and a half-written file is never served. GET and HEAD serve the
//! stored file with its type and a `Content-Disposition` built from the sanitised name;
//! `nosniff` and a restrictive CSP keep an uploaded file from running as a page of ours.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use franca_core::Server;
use franca_core::upload::{Slot, encode_segment, same_secret, valid_id};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for the next bytes of a PUT body.
const BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes read from disk per chunk of a GET.
const READ_CHUNK: usize = 64 * 1024;

/// The upload routes, with their own state.
pub fn routes(server: Arc<Server>) -> Router {
    Router::new()
        .route("/upload/{id}/{filename}", get(fetch).put(put))
        // The size is checked against the slot as the body streams in; the default 2 MiB
        // limit of the buffering extractors does not apply to the raw body, but say so.
        .layer(DefaultBodyLimit::disable())
        .with_state(server)
}

fn status(code: StatusCode, msg: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

/// An HTTP refusal: status and a one-line reason.
type Refusal = (StatusCode, &'static str);

/// Check the request against the slot; the refusal otherwise.
fn check(slot: &Slot, filename: &str, headers: &HeaderMap) -> Result<(), Refusal> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(auth, &slot.secret) || filename != slot.filename {
        return Err((StatusCode::FORBIDDEN, "this slot is not yours"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    if !ct.trim().eq_ignore_ascii_case(&slot.content_type) {
        return Err((
            StatusCode::BAD_REQUEST,
            "the content type is not the one announced",
        ));
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|l| l.parse::<u64>().ok()) {
            Some(n) if n == slot.size => {}
            Some(n) if n > slot.size => {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "larger than the slot"));
            }
            _ => return Err((StatusCode::BAD_REQUEST, "not the size announced")),
        }
    }
    Ok(())
}

async fn put(
    State(server): State<Arc<Server>>,
    Path((id, filename)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let uploads = &server.uploads;
    if !valid_id(&id) {
        return status(StatusCode::NOT_FOUND, "no such slot");
    }
    let Some(slot) = uploads.take_slot(&id) else {
        if uploads.meta(&id).await.is_some() {
            return status(StatusCode::FORBIDDEN, "this slot was used");
        }
        return status(StatusCode::NOT_FOUND, "no such slot");
    };
    if let Err((code, msg)) = check(&slot, &filename, &headers) {
        uploads.return_slot(slot);
        return status(code, msg);
    }
    match receive(&server, &slot, body).await {
        Ok(()) => match uploads.complete(&slot).await {
            Ok(()) => {
                tracing::debug!(owner = %slot.owner, size = slot.size, "upload stored");
                status(StatusCode::CREATED, "stored")
            }
            Err(e) => {
                tracing::error!("cannot store upload {id}: {e}");
                let _ = tokio::fs::remove_file(uploads.part_path(&id)).await;
                uploads.return_slot(slot);
                status(StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file")
            }
        },
        Err((code, msg)) => {
            let _ = tokio::fs::remove_file(uploads.part_path(&id)).await;
            uploads.return_slot(slot);
            status(code, msg)
        }
    }
}

/// Stream the body into the slot's part file, refusing a byte more or less than announced.
async fn receive(server: &Server, slot: &Slot, body: Body) -> Result<(), Refusal> {
    let path = server.uploads.part_path(&slot.id);
    let io_err = |e: std::io::Error| {
        tracing::error!("upload {}: {e}", slot.id);
        (StatusCode::INTERNAL_SERVER_ERROR, "cannot store the file")
    };
    let mut file = tokio::fs::File::create(&path).await.map_err(io_err)?;
    let mut got: u64 = 0;
    let mut stream = body.into_data_stream();
    // A client that stops sending would hold the slot and a file handle for ever.
    loop {
        let next = tokio::time::timeout(BODY_IDLE, stream.next())
            .await
            .map_err(|_| (StatusCode::REQUEST_TIMEOUT, "the body stopped coming"))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| (StatusCode::BAD_REQUEST, "body cut off"))?;
        got = got.saturating_add(chunk.len() as u64);
        if got > slot.size {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "larger than the slot"));
        }
        file.write_all(&chunk).await.map_err(io_err)?;
    }
    if got != slot.size {
        return Err((StatusCode::BAD_REQUEST, "not the size announced"));
    }
    file.flush().await.map_err(io_err)?;
    file.sync_all().await.map_err(io_err)?;
    Ok(())
}

/// Types a browser may show inline; anything else is offered as a download.
fn inline(content_type: &str) -> bool {
    ["image/", "video/", "audio/", "text/plain"]
        .iter()
        .any(|p| content_type.to_ascii_lowercase().starts_with(p))
        && !content_type.to_ascii_lowercase().starts_with("image/svg")
}

async fn fetch(
    State(server): State<Arc<Server>>,
    Path((id, filename)): Path<(String, String)>,
) -> Response {
    let uploads = &server.uploads;
    let Some(meta) = uploads.meta(&id).await else {
        return status(StatusCode::NOT_FOUND, "no such file");
    };
    if meta.filename != filename {
        return status(StatusCode::NOT_FOUND, "no such file");
    }
    let Ok(file) = tokio::fs::File::open(uploads.file_path(&id)).await else {
        return status(StatusCode::NOT_FOUND, "no such file");
    };
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; READ_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline(&meta.content_type) {
            "inline"
        } else {
            "attachment"
        },
        encode_segment(&meta.filename)
    );
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    let ct = HeaderValue::from_str(&meta.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}

//! XEP-0398 User Avatar to vCard-Based Avatars conversion: the server keeps an account's
//! XEP-0084 avatar (the PEP nodes `urn:xmpp:avatar:data` and `urn:xmpp:avatar:metadata`) and
//! the PHOTO of its XEP-0054 vCard (the XEP-0153 avatar) in step, and puts the XEP-0153 hash in
//! every available presence the account sends.
//!
//! PEP → vCard (§3.1): a metadata item published through the PubSub IQ names the image by its
//! SHA-1; the data item with that id is checked against it and copied into the vCard as
//! PHOTO (TYPE, BINVAL). Metadata without `<info/>` (XEP-0084 §4.5) removes the PHOTO. An image
//! the vCard cannot hold fails the publish with `payload-too-big` before anything is stored.
//! vCard → PEP (§3.2): a vCard set with a new PHOTO publishes the data item (id = SHA-1) and
//! then the metadata item, with notifications; a vCard set without one, while the metadata
//! names an image, publishes empty metadata. XEP-0398 names no access model, so nodes created
//! here get the PEP default (`presence`, as XEP-0084 expects) and existing nodes keep theirs.
//!
//! Each direction writes the other side's storage directly, never through the other's
//! handler, so a conversion never sets off the reverse one. The hash per account
//! ([`Hashes`]) is loaded from the vCard on the account's first available presence, kept in
//! step by both directions, and dropped when the account's last session ends: presence never
//! reads storage again.

use super::Pep;
use crate::offline::parse_stored;
use crate::pubsub::NS_PUBSUB;
use crate::pubsub::service::pubsub_error;
use crate::vcard::MAX_VCARD_BYTES;
use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use franca_core::Server;
use franca_proto::errors::{StanzaError, StanzaErrorCondition as Cond};
use franca_proto::ns::{NS_VCARD, NS_VCARD_UPDATE};
use franca_xml::{Element, Node};
use jid::BareJid;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// XEP-0084 nodes.
pub const NS_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
pub const NS_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0398 §2: the account feature.
pub const NS_CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// Accounts whose hash is kept at once; past this the map starts over (entries are reloaded
/// on demand), so a flood of logins cannot grow it without bound.
const MAX_CACHED: usize = 100_000;
/// Longest MIME type copied between vCard TYPE and metadata `type`.
const MAX_TYPE_BYTES: usize = 128;

/// Clients write BINVAL with or without padding and with line breaks; whitespace is removed
/// before decoding, padding is accepted either way.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The avatar hash (SHA-1, lowercase hex) of each account with sessions; `None` inside means
/// the account has no avatar.
#[derive(Default)]
pub struct Hashes {
    map: Mutex<HashMap<BareJid, Option<String>>>,
}

impl Hashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BareJid, Option<String>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, user: &BareJid) -> Option<Option<String>> {
        self.lock().get(user).cloned()
    }

    /// The account's avatar changed.
    fn set(&self, user: &BareJid, hash: Option<String>) {
        let mut map = self.lock();
        if map.len() >= MAX_CACHED && !map.contains_key(user) {
            map.clear();
        }
        map.insert(user.clone(), hash);
    }

    /// A value loaded from storage: a change made meanwhile wins.
    fn loaded(&self, user: &BareJid, hash: Option<String>) {
        let mut map = self.lock();
        if map.len() >= MAX_CACHED && !map.contains_key(user) {
            map.clear();
        }
        map.entry(user.clone()).or_insert(hash);
    }

    pub fn forget(&self, user: &BareJid) {
        self.lock().remove(user);
    }
}

/// An image embedded in a vCard or published as XEP-0084 data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Photo {
    pub bytes: Vec<u8>,
    /// MIME type: the one given, else recognised from the bytes.
    pub mime: String,
    /// SHA-1 of the bytes, lowercase hex: the XEP-0153 hash and the XEP-0084 item id.
    pub sha1: String,
}

impl Photo {
    fn new(bytes: Vec<u8>, given_type: Option<&str>) -> Photo {
        let mime = given_type
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= MAX_TYPE_BYTES)
            .map(str::to_owned)
            .or_else(|| sniff(&bytes).map(str::to_owned))
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let sha1 = hex(&Sha1::digest(&bytes));
        Photo { bytes, mime, sha1 }
    }

    fn base64(&self) -> String {
        general_purpose::STANDARD.encode(&self.bytes)
    }

    /// XEP-0084 §4.2 `<info/>`; width and height when the header gives them.
    fn info(&self) -> Element {
        let mut info = Element::new("info", NS_AVATAR_METADATA)
            .with_attr("id", self.sha1.as_str())
            .with_attr("bytes", self.bytes.len().to_string())
            .with_attr("type", self.mime.as_str());
        if let Some((w, h)) = dimensions(&self.bytes) {
            info.set_attr("width", w.to_string());
            info.set_attr("height", h.to_string());
        }
        info
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(40), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn decode(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT.decode(compact).ok()
}

/// The image a vCard embeds (PHOTO/BINVAL), if any; a PHOTO given only by EXTVAL has no bytes
/// to hash and counts as none. A BINVAL that is not base64 is `bad-request`.
pub fn vcard_photo(vcard: &Element) -> Result<Option<Photo>, StanzaError> {
    let Some(photo) = vcard.child("PHOTO", NS_VCARD) else {
        return Ok(None);
    };
    let Some(binval) = photo.child("BINVAL", NS_VCARD) else {
        return Ok(None);
    };
    let text = binval.text();
    if text.trim().is_empty() {
        return Ok(None);
    }
    let bytes = decode(&text).ok_or_else(|| {
        StanzaError::new(Cond::BadRequest).with_text("PHOTO BINVAL is not base64".to_owned())
    })?;
    let given = photo.child("TYPE", NS_VCARD).map(Element::text);
    Ok(Some(Photo::new(bytes, given.as_deref())))
}

/// The MIME type of the common image formats, from their signatures.
fn sniff(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(b"\xff\xd8\xff") {
        Some("image/jpeg")
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if b.len() >= 12 && b.starts_with(b"RIFF") && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

/// Width and height from a PNG, GIF or JPEG header; the first two are fixed offsets, JPEG
/// needs a walk over the segments up to the start-of-frame.
fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && b.get(12..16) == Some(b"IHDR") {
        let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
        let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
        return Some((w, h));
    }
    if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        let w = u16::from_le_bytes(b.get(6..8)?.try_into().ok()?);
        let h = u16::from_le_bytes(b.get(8..10)?.try_into().ok()?);
        return Some((w.into(), h.into()));
    }
    if !b.starts_with(b"\xff\xd8") {
        return None;
    }
    let mut at = 2;
    loop {
        if *b.get(at)? != 0xff {
            return None;
        }
        let marker = *b.get(at + 1)?;
        match marker {
            // Fill bytes before a marker.
            0xff => at += 1,
            // Markers without a length.
            0x01 | 0xd0..=0xd7 => at += 2,
            // SOF0–SOF15, except DHT (c4), JPG (c8) and DAC (cc): precision, height, width.
            0xc0..=0xcf if !matches!(marker, 0xc4 | 0xc8 | 0xcc) => {
                let h = be16(b, at + 5)?;
                let w = be16(b, at + 7)?;
                return Some((w, h));
            }
            // Start of scan or end of image before any frame header.
            0xd9 | 0xda => return None,
            _ => at += 2 + usize::try_from(be16(b, at + 2)?).ok()?,
        }
    }
}

/// The account's avatar hash for presence: `Some(None)` when it has none, `None` when it
/// cannot be told (storage error), in which case presence is left as the client wrote it.
pub async fn current(server: &Server, hashes: &Hashes, user: &BareJid) -> Option<Option<String>> {
    if let Some(hash) = hashes.get(user) {
        return Some(hash);
    }
    let stored = match server.store.vcard(user.as_str()).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(%user, "storage error reading vCard for the avatar hash: {e}");
            return None;
        }
    };
    let hash = stored
        .as_deref()
        .and_then(parse_stored)
        .and_then(|v| vcard_photo(&v).ok().flatten())
        .map(|p| p.sha1);
    hashes.loaded(user, hash.clone());
    Some(hash)
}

/// XEP-0398 §4 on an available presence: an `x:update` with an empty `<photo/>` (the client
/// says it has no avatar to announce yet) is left alone; anything else — none, one without
/// `<photo/>`, one with another hash — is replaced by the server's.
pub fn stamp(presence: &mut Element, hash: Option<&str>) {
    if let Some(x) = presence.child("x", NS_VCARD_UPDATE)
        && x.child("photo", NS_VCARD_UPDATE)
            .is_some_and(|p| p.text().trim().is_empty())
    {
        return;
    }
    presence
        .children
        .retain(|n| !matches!(n, Node::Element(e) if e.is("x", NS_VCARD_UPDATE)));
    let mut photo = Element::new("photo", NS_VCARD_UPDATE);
    if let Some(hash) = hash {
        photo.push_text(hash);
    }
    presence.push(Element::new("x", NS_VCARD_UPDATE).with_child(photo));
}

/// What a metadata publish does to the vCard, worked out before the publish is stored.
pub(super) enum VcardChange {
    /// The vCard already says this, or the metadata names nothing that can be copied.
    Keep,
    /// Store this vCard; the account's avatar hash becomes `hash`.
    Store { xml: String, hash: Option<String> },
}

/// §3.1: the vCard a metadata `item` leads to. `payload-too-big` when the image does not fit
/// in a vCard; the caller then publishes nothing.
pub(super) async fn vcard_for_metadata(
    server: &Arc<Server>,
    owner: &BareJid,
    item: &Element,
) -> Result<VcardChange, StanzaError> {
    let Some(metadata) = item.child("metadata", NS_AVATAR_METADATA) else {
        return Ok(VcardChange::Keep);
    };
    let infos: Vec<&Element> = metadata
        .elements()
        .filter(|e| e.is("info", NS_AVATAR_METADATA))
        .collect();
    let photo = if infos.is_empty() {
        None
    } else {
        // §3.1: the image in the data node is the one without a URL.
        let Some((info, id)) = infos
            .iter()
            .filter(|i| i.attr("url").is_none())
            .find_map(|i| i.attr("id").map(|id| (i, id.to_ascii_lowercase())))
        else {
            return Ok(VcardChange::Keep);
        };
        let data = Pep::service(server, owner.as_str())
            .items(NS_AVATAR_DATA, std::slice::from_ref(&id), 1)
            .await?;
        let Some(bytes) = data
            .iter()
            .filter_map(|i| i.child("data", NS_AVATAR_DATA))
            .find_map(|d| decode(&d.text()))
        else {
            tracing::debug!(%owner, id, "avatar metadata names no stored data item");
            return Ok(VcardChange::Keep);
        };
        let photo = Photo::new(bytes, info.attr("type"));
        if photo.sha1 != id {
            tracing::debug!(%owner, id, "avatar data does not match its SHA-1 id");
            return Ok(VcardChange::Keep);
        }
        Some(photo)
    };
    let stored = server.store.vcard(owner.as_str()).await.map_err(|e| {
        tracing::error!(%owner, "storage error reading vCard: {e}");
        StanzaError::new(Cond::InternalServerError)
    })?;
    let mut vcard = stored
        .as_deref()
        .and_then(parse_stored)
        .filter(|v| v.is("vCard", NS_VCARD))
        .unwrap_or_else(|| Element::new("vCard", NS_VCARD));
    let old = vcard_photo(&vcard).ok().flatten().map(|p| p.sha1);
    let new = photo.as_ref().map(|p| p.sha1.clone());
    if old == new && (new.is_some() || !vcard.has_child("PHOTO", NS_VCARD)) {
        return Ok(VcardChange::Keep);
    }
    vcard
        .children
        .retain(|n| !matches!(n, Node::Element(e) if e.is("PHOTO", NS_VCARD)));
    if let Some(p) = &photo {
        vcard.push(
            Element::new("PHOTO", NS_VCARD)
                .with_child(Element::new("TYPE", NS_VCARD).with_text(p.mime.as_str()))
                .with_child(Element::new("BINVAL", NS_VCARD).with_text(p.base64())),
        );
    }
    let xml = vcard.to_xml();
    if xml.len() > MAX_VCARD_BYTES {
        return Err(
            pubsub_error(Cond::NotAcceptable, "payload-too-big").with_text(format!(
                "avatar too large for a {MAX_VCARD_BYTES}-byte vCard"
            )),
        );
    }
    Ok(VcardChange::Store { xml, hash: new })
}

/// Store what [`vcard_for_metadata`] decided, after the metadata was published.
pub(super) async fn store_vcard(
    hashes: &Hashes,
    server: &Server,
    owner: &BareJid,
    change: VcardChange,
) -> Result<(), StanzaError> {
    let VcardChange::Store { xml, hash } = change else {
        return Ok(());
    };
    server
        .store
        .set_vcard(owner.as_str(), &xml)
        .await
        .map_err(|e| {
            tracing::error!(%owner, "storage error storing the converted vCard: {e}");
            StanzaError::new(Cond::InternalServerError)
        })?;
    hashes.set(owner, hash);
    Ok(())
}

/// The `<info/>` id (without URL) of the newest metadata item, and whether it names any image.
async fn published(
    server: &Server,
    owner: &BareJid,
) -> Result<(Option<String>, bool), StanzaError> {
    let items = Pep::service(server, owner.as_str())
        .items(NS_AVATAR_METADATA, &[], 1)
        .await?;
    let Some(metadata) = items
        .last()
        .and_then(|i| i.child("metadata", NS_AVATAR_METADATA))
    else {
        return Ok((None, false));
    };
    let mut infos = metadata
        .elements()
        .filter(|e| e.is("info", NS_AVATAR_METADATA))
        .peekable();
    let any = infos.peek().is_some();
    let id = infos
        .filter(|i| i.attr("url").is_none())
        .find_map(|i| i.attr("id"))
        .map(str::to_ascii_lowercase);
    Ok((id, any))
}

/// §3.2, after a vCard with `photo` (or none) was stored: publish the data and metadata items
/// unless the metadata already names this image; publish empty metadata when the PHOTO was
/// removed. The vCard is stored whatever happens here, so failures are logged, not answered.
pub async fn publish_from_vcard(
    pep: &Pep,
    server: &Arc<Server>,
    owner: &BareJid,
    photo: Option<&Photo>,
) {
    if let Some(hashes) = pep.avatars() {
        hashes.set(owner, photo.map(|p| p.sha1.clone()));
    }
    let result = async {
        let (id, any) = published(server, owner).await?;
        match photo {
            Some(p) if id.as_deref() == Some(p.sha1.as_str()) => Ok(()),
            Some(p) => {
                let data = Element::new("item", NS_PUBSUB)
                    .with_attr("id", p.sha1.as_str())
                    .with_child(Element::new("data", NS_AVATAR_DATA).with_text(p.base64()));
                pep.publish(server, owner, NS_AVATAR_DATA, &data, None)
                    .await?;
                let metadata = Element::new("item", NS_PUBSUB)
                    .with_attr("id", p.sha1.as_str())
                    .with_child(Element::new("metadata", NS_AVATAR_METADATA).with_child(p.info()));
                pep.publish(server, owner, NS_AVATAR_METADATA, &metadata, None)
                    .await
            }
            None if any => {
                // XEP-0084 §4.5: metadata without <info/> disables the avatar.
                let metadata = Element::new("item", NS_PUBSUB)
                    .with_attr("id", pep.new_item_id())
                    .with_child(Element::new("metadata", NS_AVATAR_METADATA));
                pep.publish(server, owner, NS_AVATAR_METADATA, &metadata, None)
                    .await
            }
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(%owner, "vCard avatar not converted to XEP-0084: {e:?}");
    }
}

#[cfg(test)]
mod tests;

//! The core IM feature modules of RFC 6121 and the XEPs every client expects: roster and
//! presence with the full subscription state machine, offline messages, carbons, blocking,
//! vCard, last activity, ping, time, version, service discovery, in-band registration and
//! XEP-0357 push notifications, and XEP-0163 PEP (on the XEP-0060 core in [`pubsub`]) with
//! XEP-0049 private XML storage, XEP-0045 group chat (a hosted `conference.` service) and a
//! XEP-0060 PubSub service (hosted at `pubsub.`); XEP-0363 HTTP file upload slots from
//! `upload.` (the bytes go to `franca-net`'s HTTP routes).
//! Each is a [`franca_core::Module`]; [`load`] registers the ones the configuration turns on.

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod last;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod ping;
pub mod presence;
pub mod pubsub;
pub mod pubsub_service;
pub mod push;
pub mod register;
pub mod roster;
#[cfg(test)]
mod testing;
pub mod time;
pub mod upload;
pub mod vcard;
pub mod version;

use franca_core::{Config, Modules};
use std::sync::Arc;

/// The modules the configuration enables, in hook order: filters that can refuse a stanza
/// (blocking) run before those that act on it.
pub fn load(config: &Config) -> Modules {
    let on = &config.modules;
    let mut modules = Modules::new();
    if on.blocking {
        modules.load(Arc::new(blocking::Blocking));
    }
    modules.load(Arc::new(roster::Roster));
    // Before presence, whose outbound hook takes broadcast presence: PEP reads the XEP-0115
    // capabilities in it first.
    // XEP-0398 avatar conversion needs both PEP and the vCard module.
    let pep = config.pep.enabled.then(|| {
        let pep = pep::Pep::new(config.pep.caps_cache);
        Arc::new(if on.vcard {
            pep.with_vcard_conversion()
        } else {
            pep
        })
    });
    if let Some(pep) = &pep {
        modules.load(pep.clone());
    }
    modules.load(Arc::new(presence::Presence));
    // Before carbons, so carbon copies carry the XEP-0359 stanza-id the archive added.
    if config.mam.enabled {
        modules.load(Arc::new(mam::Mam::new()));
    }
    if on.carbons {
        modules.load(Arc::new(carbons::Carbons));
    }
    // After presence, whose closing hook tells the rooms a session is in that it left.
    if config.muc.enabled {
        modules.load(Arc::new(muc::Muc::new(config)));
    }
    if config.pubsub.enabled {
        modules.load(Arc::new(pubsub_service::PubsubService::new(config)));
    }
    if config.upload.enabled {
        modules.load(Arc::new(upload::Upload::new(config)));
    }
    // Before offline storage, whose undeliverable hook takes the message.
    if config.push.enabled {
        modules.load(Arc::new(push::Push::new()));
    }
    if on.offline {
        modules.load(Arc::new(offline::Offline));
    }
    if on.vcard {
        modules.load(Arc::new(vcard::VCard::new(pep)));
    }
    if on.last {
        modules.load(Arc::new(last::Last));
    }
    if on.ping {
        modules.load(Arc::new(ping::Ping));
    }
    if on.time {
        modules.load(Arc::new(time::Time));
    }
    if on.version {
        modules.load(Arc::new(version::Version));
    }
    modules.load(Arc::new(register::Register::new(config)));
    if on.disco {
        modules.load(Arc::new(disco::Disco));
    }
    modules
}

//! Turning a password into the SCRAM keys that are stored instead of it (RFC 5802 §3), for
//! every hash the server offers, so any SCRAM mechanism (and PLAIN) can verify later.

use franca_proto::sasl::{ScramHash, new_keys};
use franca_store::ScramCredentials;

/// The hashes an account gets keys for.
pub const HASHES: [ScramHash; 3] = [ScramHash::Sha1, ScramHash::Sha256, ScramHash::Sha512];

/// Fresh salted keys for `password` under every supported hash.
pub fn from_password(password: &str) -> Vec<ScramCredentials> {
    HASHES
        .into_iter()
        .map(|hash| {
            let k = new_keys(hash, password);
            ScramCredentials {
                hash: hash.name().to_owned(),
                salt: k.salt,
                iterations: k.iterations,
                stored_key: k.stored_key,
                server_key: k.server_key,
            }
        })
        .collect()
}

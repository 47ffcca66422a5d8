//! Minting identifiers and tokens.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use ruma_common::{OwnedDeviceId, OwnedEventId, OwnedRoomId, ServerName};
use sha2::{Digest, Sha256};

fn random_string(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A new access token. Tokens are 32 random alphanumerics (~190 bits).
pub fn new_access_token() -> String {
    format!("pd_{}", random_string(32))
}

/// The form an access token is stored in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new device ID: ten capital letters, like Synapse's.
pub fn new_device_id() -> OwnedDeviceId {
    let mut rng = rand::rng();
    let id: String = (0..10)
        .map(|_| char::from(rng.random_range(b'A'..=b'Z')))
        .collect();
    OwnedDeviceId::from(id)
}

/// A new room ID on this server.
pub fn new_room_id(server: &ServerName) -> OwnedRoomId {
    format!("!{}:{server}", random_string(18))
        .try_into()
        .expect("alphanumeric localpart and a valid server name form a room id")
}

/// A new event ID, in the server-less form of room versions 4 and later.
pub fn new_event_id() -> OwnedEventId {
    format!("${}", random_string(43))
        .try_into()
        .expect("'$' and alphanumerics form an event id")
}

/// A random secret (registration secret, nonces).
pub fn new_secret() -> String {
    random_string(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_parse() {
        let server: &ServerName = "example.org".try_into().unwrap();
        assert!(new_room_id(server).as_str().ends_with(":example.org"));
        assert!(new_event_id().as_str().starts_with('$'));
        assert_eq!(new_device_id().as_str().len(), 10);
        assert_ne!(new_access_token(), new_access_token());
        assert_eq!(hash_token("abc").len(), 64);
    }
}

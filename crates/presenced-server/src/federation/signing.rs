//! The server's own ed25519 signing key, in Synapse's key-file format.
//!
//! The file holds one line, `ed25519 <version> <unpadded base64 seed>`
//! (Synapse's `signing_key_path` format), so an operator can move a
//! Synapse server's key to presenced or the other way round. A missing
//! file is generated at first start. Signing, canonical JSON and the
//! X-Matrix header come from ruma (`ruma-signatures`,
//! `ruma-federation-api`); this module only reads and writes the file.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ruma_common::serde::Base64;
use ruma_common::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerSigningKeyId, ServerName};
use ruma_federation_api::authentication::XMatrix;
use ruma_signatures::{Ed25519KeyPair, KeyPair};

/// The only algorithm Matrix signs with.
const ALGORITHM: &str = "ed25519";

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The file could not be read or written.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but does not hold an ed25519 key line.
    #[error("signing key file {path}: {message}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Why something could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The value is not a JSON object, or holds something canonical JSON
    /// cannot express (floats, integers beyond ±2^53).
    #[error("cannot sign a value that is not canonical JSON: {0}")]
    NotCanonical(String),
}

/// The server's signing key: the key pair and its key ID.
pub struct ServerSigningKey {
    pair: Ed25519KeyPair,
    /// `ed25519:<version>`.
    key_id: OwnedServerSigningKeyId,
    seed: [u8; 32],
}

impl fmt::Debug for ServerSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSigningKey")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl ServerSigningKey {
    /// Reads the key at `path`, or generates one there (mode 0600) when the
    /// file does not exist. The first `ed25519` line of the file is used;
    /// other lines are ignored, as Synapse does with extra keys.
    pub fn load_or_generate(path: &Path) -> Result<Self, SigningKeyError> {
        let io = |source| SigningKeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|message| SigningKeyError::Malformed {
                path: path.to_owned(),
                message,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.write_new(path).map_err(io)?;
                tracing::info!(path = %path.display(), key_id = %key.key_id(), "generated a new server signing key");
                Ok(key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A fresh random key with a Synapse-style version (`a_` and four
    /// random characters), not written anywhere.
    pub fn generate() -> Self {
        use rand::distr::{Alphanumeric, SampleString};
        let version = format!("a_{}", Alphanumeric.sample_string(&mut rand::rng(), 4));
        let seed: [u8; 32] = rand::random();
        Self::from_seed(&version, seed).expect("an alphanumeric version is a valid key name")
    }

    /// A secret for `purpose` derived from the seed (HMAC-SHA256): the
    /// nodes of a cluster share the signing key, so they share these too,
    /// without another file to distribute.
    pub fn derive_secret(&self, purpose: &str) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.seed)
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The key with this version and 32-byte ed25519 seed.
    pub fn from_seed(version: &str, seed: [u8; 32]) -> Result<Self, String> {
        let key_id = OwnedServerSigningKeyId::try_from(format!("{ALGORITHM}:{version}"))
            .map_err(|e| format!("invalid key version {version:?}: {e}"))?;
        let pair = Ed25519KeyPair::new(
            ed25519_dalek::pkcs8::ALGORITHM_OID,
            &seed,
            None,
            version.to_owned(),
        )
        .map_err(|e| format!("invalid ed25519 seed: {e}"))?;
        Ok(Self { pair, key_id, seed })
    }

    /// Parses the key-file text: `ed25519 <version> <base64 seed>` lines.
    pub fn parse(text: &str) -> Result<Self, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("the file holds no key")?;
        let mut parts = line.split_whitespace();
        let (Some(algorithm), Some(version), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected a line \"ed25519 <version> <base64 seed>\"".to_owned());
        };
        if algorithm != ALGORITHM {
            return Err(format!("unsupported key algorithm {algorithm:?}"));
        }
        // Synapse writes unpadded base64; padded input is accepted too.
        let seed = Base64::<ruma_common::serde::base64::Standard>::parse(seed)
            .map_err(|e| format!("the seed is not base64: {e}"))?;
        let seed: [u8; 32] = seed
            .as_bytes()
            .try_into()
            .map_err(|_| format!("the seed has {} bytes, not 32", seed.as_bytes().len()))?;
        Self::from_seed(version, seed)
    }

    /// The key-file line for this key.
    pub fn to_file_line(&self) -> String {
        format!(
            "{ALGORITHM} {} {}",
            self.pair.version(),
            Base64::<ruma_common::serde::base64::Standard, _>::new(self.seed).encode()
        )
    }

    fn write_new(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: never overwrite a key another process just wrote.
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // Whoever reads this key can impersonate the server.
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        writeln!(file, "{}", self.to_file_line())?;
        file.sync_all()
    }

    /// The key ID, e.g. `ed25519:a_AbCd`.
    pub fn key_id(&self) -> &str {
        self.key_id.as_str()
    }

    /// The key ID as ruma's type.
    pub fn signing_key_id(&self) -> &OwnedServerSigningKeyId {
        &self.key_id
    }

    /// The public key, unpadded standard base64 (as in `verify_keys`).
    pub fn public_key_base64(&self) -> String {
        Base64::<ruma_common::serde::base64::Standard, _>::new(self.pair.public_key()).encode()
    }

    /// Adds this server's signature to `value`'s `signatures` (keeping any
    /// there), per the Matrix signing-JSON algorithm (`unsigned` and
    /// `signatures` are not signed).
    pub fn sign_json(
        &self,
        server_name: &ServerName,
        value: &mut serde_json::Value,
    ) -> Result<(), SignError> {
        let mut object = to_canonical_object(value.clone())?;
        ruma_signatures::sign_json(server_name.as_str(), &self.pair, &mut object)
            .map_err(|e| SignError::NotCanonical(e.to_string()))?;
        *value = CanonicalJsonValue::Object(object).into();
        Ok(())
    }

    /// The full `Authorization` header value (`X-Matrix origin=…,
    /// destination=…,key=…,sig=…`) for a request from `origin` to
    /// `destination`. `uri` is the path and query as sent
    /// (`/_matrix/federation/v1/send/1`); `content` is the JSON body, if any.
    pub fn x_matrix_authorization(
        &self,
        origin: &ServerName,
        destination: &ServerName,
        method: &str,
        uri: &str,
        content: Option<&serde_json::Value>,
    ) -> Result<String, SignError> {
        let object = request_object(origin, destination, method, uri, content)?;
        let canonical = ruma_signatures::canonical_json(&object)
            .map_err(|e| SignError::NotCanonical(e.to_string()))?;
        let signature = self.pair.sign(canonical.as_bytes());
        let header = XMatrix::new(
            origin.to_owned(),
            destination.to_owned(),
            self.key_id.clone(),
            Base64::new(signature.as_bytes().to_vec()),
        );
        Ok(header.to_string())
    }
}

/// The JSON object an X-Matrix signature covers (spec: request
/// authentication): method, uri, origin, destination and, when the request
/// has a body, content.
pub fn request_object(
    origin: &ServerName,
    destination: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&serde_json::Value>,
) -> Result<CanonicalJsonObject, SignError> {
    let mut object = CanonicalJsonObject::from([
        ("method".to_owned(), method.into()),
        ("uri".to_owned(), uri.into()),
        ("origin".to_owned(), origin.as_str().into()),
        ("destination".to_owned(), destination.as_str().into()),
    ]);
    if let Some(content) = content {
        let content = CanonicalJsonValue::try_from(content.clone())
            .map_err(|e| SignError::NotCanonical(e.to_string()))?;
        object.insert("content".to_owned(), content);
    }
    Ok(object)
}

/// `value` as a canonical JSON object.
pub fn to_canonical_object(value: serde_json::Value) -> Result<CanonicalJsonObject, SignError> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(SignError::NotCanonical("not a JSON object".to_owned())),
        Err(e) => Err(SignError::NotCanonical(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma_signatures::PublicKeyMap;
    use serde_json::json;

    use super::*;

    fn public_keys(server: &str, key: &ServerSigningKey) -> PublicKeyMap {
        let set = BTreeMap::from([(
            key.key_id().to_owned(),
            Base64::parse(key.public_key_base64()).unwrap(),
        )]);
        BTreeMap::from([(server.to_owned(), set)])
    }

    fn server(name: &str) -> &ServerName {
        <&ServerName>::try_from(name).unwrap()
    }

    #[test]
    fn generated_key_file_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("example.org.signing.key");
        let first = ServerSigningKey::load_or_generate(&path).unwrap();
        assert!(
            first.key_id().starts_with("ed25519:a_"),
            "{}",
            first.key_id()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), first.to_file_line());
        let second = ServerSigningKey::load_or_generate(&path).unwrap();
        assert_eq!(first.key_id(), second.key_id());
        assert_eq!(first.public_key_base64(), second.public_key_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn reads_a_synapse_key_line() {
        // Seed of all 7s, written the way Synapse writes it (unpadded).
        let seed = Base64::<ruma_common::serde::base64::Standard, _>::new([7u8; 32]).encode();
        let key = ServerSigningKey::parse(&format!("ed25519 a_7777 {seed}\n")).unwrap();
        assert_eq!(key.key_id(), "ed25519:a_7777");
        // Padded base64 is accepted too.
        let padded = ServerSigningKey::parse(&format!("ed25519 a_7777 {seed}=")).unwrap();
        assert_eq!(padded.public_key_base64(), key.public_key_base64());
        // The public key is 32 bytes, unpadded base64 (43 characters).
        assert_eq!(key.public_key_base64().len(), 43);
    }

    #[test]
    fn malformed_key_files_are_refused_with_a_reason() {
        for (text, reason) in [
            ("", "no key"),
            ("ed25519 a_1", "expected a line"),
            ("rsa a_1 AAAA", "unsupported key algorithm"),
            ("ed25519 a_1 !!!", "not base64"),
            ("ed25519 a_1 AAAA", "not 32"),
        ] {
            let err = ServerSigningKey::parse(text).unwrap_err();
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn signed_json_verifies_with_ruma() {
        let key = ServerSigningKey::generate();
        let mut value = json!({"server_name": "a.test", "n": 1, "unsigned": {"x": 1}});
        key.sign_json(server("a.test"), &mut value).unwrap();
        assert!(value["signatures"]["a.test"][key.key_id()].is_string());
        assert_eq!(value["unsigned"], json!({"x": 1}), "unsigned is kept");
        let object = to_canonical_object(value.clone()).unwrap();
        ruma_signatures::verify_json(&public_keys("a.test", &key), &object).unwrap();

        // Any change to a signed field breaks the signature.
        value["n"] = json!(2);
        let object = to_canonical_object(value).unwrap();
        assert!(ruma_signatures::verify_json(&public_keys("a.test", &key), &object).is_err());
    }

    #[test]
    fn floats_cannot_be_signed() {
        let key = ServerSigningKey::generate();
        let mut value = json!({"f": 1.5});
        assert!(key.sign_json(server("a.test"), &mut value).is_err());
    }

    #[test]
    fn x_matrix_header_parses_and_verifies_with_ruma() {
        let key = ServerSigningKey::generate();
        let content = json!({"edus": [], "pdus": [], "origin": "a.test"});
        let header = key
            .x_matrix_authorization(
                server("a.test"),
                server("b.test:8448"),
                "PUT",
                "/_matrix/federation/v1/send/t1",
                Some(&content),
            )
            .unwrap();
        let parsed = XMatrix::parse(&header).unwrap();
        assert_eq!(parsed.origin, "a.test");
        assert_eq!(
            parsed.destination.as_deref().map(ServerName::as_str),
            Some("b.test:8448")
        );
        assert_eq!(parsed.key.as_str(), key.key_id());

        let request = axum::http::Request::builder()
            .method("PUT")
            .uri("/_matrix/federation/v1/send/t1")
            .body(serde_json::to_vec(&content).unwrap())
            .unwrap();
        parsed
            .verify_request(
                &request,
                server("b.test:8448"),
                &public_keys("a.test", &key),
            )
            .unwrap();

        // Another destination or another body does not verify.
        assert!(parsed
            .verify_request(&request, server("c.test"), &public_keys("a.test", &key))
            .is_err());
        let other = axum::http::Request::builder()
            .method("PUT")
            .uri("/_matrix/federation/v1/send/t1")
            .body(b"{\"edus\":[{}]}".to_vec())
            .unwrap();
        assert!(parsed
            .verify_request(&other, server("b.test:8448"), &public_keys("a.test", &key))
            .is_err());
    }

    #[test]
    fn header_without_content_verifies_for_a_bodyless_request() {
        let key = ServerSigningKey::generate();
        let header = key
            .x_matrix_authorization(
                server("a.test"),
                server("b.test"),
                "GET",
                "/_matrix/key/v2/server",
                None,
            )
            .unwrap();
        let request = axum::http::Request::builder()
            .method("GET")
            .uri("/_matrix/key/v2/server")
            .body(Vec::new())
            .unwrap();
        XMatrix::parse(&header)
            .unwrap()
            .verify_request(&request, server("b.test"), &public_keys("a.test", &key))
            .unwrap();
    }
}

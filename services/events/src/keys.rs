//! Producer keys in the C2SP signed-note text formats (c2sp.org/signed-note,
//! "Ed25519"): signer `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`, verifier
//! `<name>+<id>+<base64(0x01 || public key)>`, where `<id>` is the first four
//! bytes of SHA-256(name || "\n" || 0x01 || public key) as 8 hex digits.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::EventError;

/// Signature algorithm byte for Ed25519 (c2sp.org/signed-note, "Signature types").
const ALG_ED25519: u8 = 0x01;

/// A key id: `<name>+<8 hex digits>`, as used in DSSE `keyid` and note signatures.
pub type KeyId = String;

/// A producer's signing key.
#[derive(Clone)]
pub struct ProducerKey {
    name: String,
    key_id: KeyId,
    signing: SigningKey,
}

impl std::fmt::Debug for ProducerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProducerKey({})", self.key_id)
    }
}

impl ProducerKey {
    /// A fresh random key for `name` (a C2SP key name: no spaces or '+').
    pub fn generate(name: &str) -> Result<Self, EventError> {
        check_name(name)?;
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        Ok(Self::from_signing_key(name, signing))
    }

    /// A deterministic key from a 32-byte seed (benchmarks and tests).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, EventError> {
        check_name(name)?;
        Ok(Self::from_signing_key(name, SigningKey::from_bytes(&seed)))
    }

    fn from_signing_key(name: &str, signing: SigningKey) -> Self {
        let key_id = format!(
            "{name}+{:08x}",
            note_key_hash(name, &signing.verifying_key())
        );
        Self {
            name: name.to_string(),
            key_id,
            signing,
        }
    }

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn parse(text: &str) -> Result<Self, EventError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| EventError::BadKey("signer key must start with PRIVATE+KEY+".into()))?;
        let (name, id, key) = split_key(rest)?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(EventError::BadKey(format!(
                "signer key {name}: expected an Ed25519 key (0x01 + 32 bytes)"
            )));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&key[1..]);
        let k = Self::from_signing_key(name, SigningKey::from_bytes(&seed));
        if k.key_id != format!("{name}+{id}") {
            return Err(EventError::BadKey(format!(
                "signer key {name}: id {id} does not match the key"
            )));
        }
        Ok(k)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<id>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs a message.
    pub fn sign(&self, msg: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(msg)
    }

    /// The signer key text `PRIVATE+KEY+<name>+<id>+<base64>`.
    pub fn to_signer_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.signing.to_bytes());
        format!("PRIVATE+KEY+{}+{}", self.key_id, B64.encode(raw))
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            key_id: self.key_id.clone(),
            verifying: self.verifying_key(),
        }
    }
}

/// A producer's public key, parsed from `<name>+<id>+<base64>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    key_id: KeyId,
    verifying: VerifyingKey,
}

impl VerifierKey {
    /// The verifier key of `verifying` under `name`, unchecked (tests that
    /// need keys `parse` refuses).
    #[cfg(test)]
    pub(crate) fn from_verifying_key(name: &str, verifying: VerifyingKey) -> Self {
        Self {
            key_id: format!("{name}+{:08x}", note_key_hash(name, &verifying)),
            verifying,
        }
    }

    /// Parses and checks `<name>+<id>+<base64(0x01 || pk)>`; refuses small-order keys.
    pub fn parse(text: &str) -> Result<Self, EventError> {
        let (name, id, key) = split_key(text.trim())?;
        if key.len() != 33 || key[0] != ALG_ED25519 {
            return Err(EventError::BadKey(format!(
                "verifier key {name}: expected an Ed25519 key (0x01 + 32 bytes)"
            )));
        }
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&key[1..]);
        let verifying = VerifyingKey::from_bytes(&pk)
            .map_err(|_| EventError::BadKey(format!("verifier key {name}: not a curve point")))?;
        if verifying.is_weak() {
            return Err(EventError::BadKey(format!(
                "verifier key {name}: small-order public key"
            )));
        }
        if format!("{:08x}", note_key_hash(name, &verifying)) != id {
            return Err(EventError::BadKey(format!(
                "verifier key {name}: id {id} does not match the key"
            )));
        }
        Ok(Self {
            key_id: format!("{name}+{id}"),
            verifying,
        })
    }

    /// `<name>+<id>`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key name.
    pub fn name(&self) -> &str {
        self.key_id.split('+').next().unwrap_or_default()
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// The verifier key text `<name>+<id>+<base64>`.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.verifying.as_bytes());
        format!("{}+{}", self.key_id, B64.encode(raw))
    }
}

fn check_name(name: &str) -> Result<(), EventError> {
    if signed_note::is_key_name_valid(name) {
        Ok(())
    } else {
        Err(EventError::BadKey(format!(
            "key name {name:?} must be non-empty with no spaces or '+'"
        )))
    }
}

fn split_key(text: &str) -> Result<(&str, &str, Vec<u8>), EventError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EventError::BadKey("expected <name>+<id>+<base64>".into()));
    };
    check_name(name)?;
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EventError::BadKey(format!(
            "key {name}: id must be 8 hex digits"
        )));
    }
    let raw = B64
        .decode(b64)
        .map_err(|_| EventError::BadKey(format!("key {name}: key material is not base64")))?;
    Ok((name, id, raw))
}

/// Key id hash of c2sp.org/signed-note ("Signatures": key ID).
fn note_key_hash(name: &str, key: &VerifyingKey) -> u32 {
    let mut raw = vec![ALG_ED25519];
    raw.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text_and_match_signed_note() {
        let k = ProducerKey::generate("clew.example/ingest").unwrap();
        let again = ProducerKey::parse(&k.to_signer_text()).unwrap();
        assert_eq!(again.key_id(), k.key_id());
        let v = VerifierKey::parse(&k.verifier().to_text()).unwrap();
        assert_eq!(v, k.verifier());
        // The formats are the ones signed_note (and Go's sumdb/note) read.
        assert!(signed_note::StandardSigner::new(&k.to_signer_text()).is_ok());
        assert!(signed_note::StandardVerifier::new(&v.to_text()).is_ok());
    }

    #[test]
    fn a_key_with_the_wrong_id_is_refused() {
        let k = ProducerKey::generate("a").unwrap();
        let text = k.verifier().to_text();
        let bad = text.replacen(&k.key_id()[2..4], "zz", 1);
        assert!(VerifierKey::parse(&bad).is_err());
        let other = ProducerKey::generate("a").unwrap();
        let mixed = format!(
            "{}+{}",
            k.key_id(),
            other.verifier().to_text().splitn(3, '+').nth(2).unwrap()
        );
        let err = VerifierKey::parse(&mixed).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}

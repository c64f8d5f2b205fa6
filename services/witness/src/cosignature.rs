//! Witness keys and cosignatures (C2SP tlog-cosignature, `cosignature/v1`).
//!
//! A cosignature is a signed-note signature line by the witness's key over
//! a checkpoint. Its key ID is the first four bytes of
//! SHA-256(name || 0x0A || 0x04 || public key); its signature bytes are an
//! 8-byte big-endian UNIX time followed by the Ed25519 signature of
//! "cosignature/v1\ntime <T>\n" + the checkpoint text.

use base64::prelude::{Engine, BASE64_STANDARD};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Signature, Signer, Verifier};

use crate::WitnessError;

/// The signature algorithm byte of a cosignature/v1 key (tlog-cosignature).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

fn message(time: u64, checkpoint: &[u8]) -> Vec<u8> {
    // tlog-cosignature, "Format": the signed message.
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(checkpoint);
    m
}

fn key_id(name: &str, public: &VerifyingKey) -> u32 {
    let mut key = vec![ALG_COSIGNATURE_V1];
    key.extend_from_slice(public.as_bytes());
    signed_note::key_id(name, &key)
}

fn checked_name(name: &str) -> Result<&str, WitnessError> {
    if signed_note::is_key_name_valid(name) {
        Ok(name)
    } else {
        Err(WitnessError::Key(format!(
            "{name:?} is not a key name (non-empty, no spaces or '+')"
        )))
    }
}

/// A witness's signing key.
pub struct CosignatureSigner {
    name: String,
    id: u32,
    key: SigningKey,
    /// The signing time (UNIX seconds); the clock unless set for a test.
    clock: fn() -> u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CosignatureSigner {
    /// A new random key named `name` (the witness's URL-like name).
    pub fn generate(name: &str) -> Result<Self, WitnessError> {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_key(name, key)
    }

    fn from_key(name: &str, key: SigningKey) -> Result<Self, WitnessError> {
        let name = checked_name(name)?.to_string();
        Ok(CosignatureSigner {
            id: key_id(&name, &key.verifying_key()),
            name,
            key,
            clock: now,
        })
    }

    /// Reads the private key text [`CosignatureSigner::to_skey`] wrote:
    /// `PRIVATE+KEY+<name>+<id>+<base64(0x04 || seed)>`, the signed-note
    /// private key layout with the cosignature algorithm.
    pub fn from_skey(text: &str) -> Result<Self, WitnessError> {
        let bad =
            || WitnessError::Key("not a witness private key (PRIVATE+KEY+name+id+key)".into());
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let (name, rest) = rest.split_once('+').ok_or_else(bad)?;
        let (id, b64) = rest.split_once('+').ok_or_else(bad)?;
        let bytes = BASE64_STANDARD.decode(b64).map_err(|_| bad())?;
        let [alg, seed @ ..] = bytes.as_slice() else {
            return Err(bad());
        };
        if *alg != ALG_COSIGNATURE_V1 {
            return Err(WitnessError::Key(format!(
                "key algorithm {alg:#04x} is not cosignature/v1 (0x04)"
            )));
        }
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad())?;
        let signer = Self::from_key(name, SigningKey::from_bytes(&seed))?;
        if format!("{:08x}", signer.id) != id {
            return Err(WitnessError::Key(
                "the key ID does not match the key and name".into(),
            ));
        }
        Ok(signer)
    }

    /// The private key text (keep it secret).
    pub fn to_skey(&self) -> String {
        let mut bytes = vec![ALG_COSIGNATURE_V1];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(bytes)
        )
    }

    /// The verifier key text partners configure (`<name>+<id>+<base64(0x04 || key)>`).
    pub fn vkey(&self) -> String {
        self.verifier().vkey()
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The cosignature line ("— name base64\n") over a checkpoint's text.
    pub fn cosign(&self, checkpoint: &[u8]) -> Result<Vec<u8>, WitnessError> {
        let sig = Signer::sign(self, checkpoint)
            .map_err(|e| WitnessError::Key(format!("signing: {e}")))?;
        let line = Signature::new(self.name.clone(), self.id, sig)
            .map_err(|e| WitnessError::Key(format!("signature line: {e}")))?;
        Ok(line.to_bytes())
    }

    #[cfg(test)]
    fn at(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }
}

impl Signer for CosignatureSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let time = (self.clock)();
        let sig = self.key.try_sign(&message(time, msg))?;
        let mut out = time.to_be_bytes().to_vec();
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// A witness's public key, as partners configure it.
#[derive(Clone, Debug)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// The verifier of the Ed25519 public key `key` under `name` (e.g. a
    /// witness whose key is kept elsewhere, such as in an ssh-agent).
    pub fn new(name: &str, key: &[u8; 32]) -> Result<Self, WitnessError> {
        let key = VerifyingKey::from_bytes(key)
            .map_err(|_| WitnessError::Key("not an Ed25519 public key".into()))?;
        let name = checked_name(name)?.to_string();
        Ok(CosignatureVerifier {
            id: key_id(&name, &key),
            name,
            key,
        })
    }

    /// Parses `<name>+<id>+<base64(0x04 || key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, WitnessError> {
        let bad = |why: &str| WitnessError::Key(format!("witness key {vkey:?}: {why}"));
        let (name, rest) = vkey
            .trim()
            .split_once('+')
            .ok_or_else(|| bad("not name+id+key"))?;
        let (id, b64) = rest.split_once('+').ok_or_else(|| bad("not name+id+key"))?;
        let bytes = BASE64_STANDARD
            .decode(b64)
            .map_err(|_| bad("key is not base64"))?;
        let [alg, key @ ..] = bytes.as_slice() else {
            return Err(bad("empty key"));
        };
        if *alg != ALG_COSIGNATURE_V1 {
            return Err(bad("not a cosignature/v1 key (algorithm 0x04)"));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| bad("not a 32-byte Ed25519 key"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("not an Ed25519 point"))?;
        let name = checked_name(name)?.to_string();
        let v = CosignatureVerifier {
            id: key_id(&name, &key),
            name,
            key,
        };
        if format!("{:08x}", v.id) != id {
            return Err(bad("the key ID does not match the key and name"));
        }
        Ok(v)
    }

    pub fn vkey(&self) -> String {
        let mut bytes = vec![ALG_COSIGNATURE_V1];
        bytes.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(bytes)
        )
    }

    /// The time a cosignature says it was made, if `sig` is one of this key's
    /// over `checkpoint`.
    pub fn verified_time(&self, checkpoint: &[u8], sig: &[u8]) -> Option<u64> {
        if sig.len() != 8 + 64 {
            return None;
        }
        let time = u64::from_be_bytes(sig[..8].try_into().ok()?);
        let signature = ed25519_dalek::Signature::from_slice(&sig[8..]).ok()?;
        self.key
            .verify_strict(&message(time, checkpoint), &signature)
            .ok()
            .map(|()| time)
    }
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verified_time(msg, sig).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signed_note::{Note, VerifierList};

    const CHECKPOINT: &[u8] =
        b"clew.example.org/ledger\n75\nAnQxqwFOp6pZYY1lHKfSFhmsUiXIVU5NYNOQL4kkbWM=\n";

    #[test]
    fn a_cosignature_verifies_as_a_note_signature_and_nothing_else_does() {
        let w = CosignatureSigner::generate("witness.example/w1")
            .unwrap()
            .at(|| 1_700_000_000);
        let line = w.cosign(CHECKPOINT).unwrap();
        assert!(
            line.starts_with("— witness.example/w1 ".as_bytes()),
            "{}",
            String::from_utf8_lossy(&line)
        );
        let mut signed = CHECKPOINT.to_vec();
        signed.push(b'\n');
        signed.extend_from_slice(&line);
        let note = Note::from_bytes(&signed).unwrap();
        let known = VerifierList::new(vec![Box::new(w.verifier())]);
        let (ok, _) = note.verify(&known).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(
            w.verifier().verified_time(CHECKPOINT, ok[0].signature()),
            Some(1_700_000_000)
        );
        // Another checkpoint, another key, another time: no.
        let other = b"clew.example.org/ledger\n76\nAnQxqwFOp6pZYY1lHKfSFhmsUiXIVU5NYNOQL4kkbWM=\n";
        assert!(!w.verifier().verify(other, ok[0].signature()));
        let stranger = CosignatureSigner::generate("witness.example/w1").unwrap();
        assert!(!stranger.verifier().verify(CHECKPOINT, ok[0].signature()));
        let mut later = ok[0].signature().to_vec();
        later[7] ^= 1;
        assert!(!w.verifier().verify(CHECKPOINT, &later));
    }

    #[test]
    fn keys_round_trip_and_malformed_keys_are_named() {
        let w = CosignatureSigner::generate("witness.example/w2").unwrap();
        let back = CosignatureSigner::from_skey(&w.to_skey()).unwrap();
        assert_eq!(back.vkey(), w.vkey());
        let v = CosignatureVerifier::from_vkey(&w.vkey()).unwrap();
        assert_eq!(v.vkey(), w.vkey());
        // The key ID is SHA-256(name || 0x0A || 0x04 || key)[..4].
        let vkey = w.vkey();
        let (_, rest) = vkey.split_once('+').unwrap();
        let key = BASE64_STANDARD
            .decode(rest.split_once('+').unwrap().1)
            .unwrap();
        assert_eq!(key[0], 0x04);
        assert_eq!(
            format!("{:08x}", signed_note::key_id("witness.example/w2", &key)),
            rest[..8]
        );
        // A signed-note Ed25519 key (algorithm 0x01) is not a witness key.
        let (_, ledger_vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, "log.example");
        let e = CosignatureVerifier::from_vkey(&ledger_vkey).unwrap_err();
        assert!(e.to_string().contains("algorithm 0x04"), "{e}");
        let e = CosignatureVerifier::from_vkey(&w.vkey().replacen("w2", "w3", 1)).unwrap_err();
        assert!(e.to_string().contains("key ID does not match"), "{e}");
        assert!(CosignatureSigner::generate("bad name").is_err());
    }
}

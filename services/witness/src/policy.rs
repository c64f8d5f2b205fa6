//! Which witnesses a verifier requires: a checkpoint is *witnessed* when at
//! least `quorum` of the listed witnesses cosigned it (C2SP tlog-cosignature
//! signatures on the checkpoint note, each verified with its key).

use signed_note::{Note, Verifier};

use crate::cosignature::CosignatureVerifier;
use crate::WitnessError;

/// A witness policy: K of N known witness keys.
#[derive(Clone, Debug)]
pub struct WitnessPolicy {
    witnesses: Vec<CosignatureVerifier>,
    quorum: usize,
}

/// A cosignature the policy counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cosigned {
    pub witness: String,
    /// When the witness says it cosigned (UNIX seconds).
    pub time: u64,
}

impl WitnessPolicy {
    /// `quorum` of `witnesses` (their verifier keys); `quorum` None: all of them.
    pub fn new(witnesses: &[String], quorum: Option<usize>) -> Result<Self, WitnessError> {
        let witnesses = witnesses
            .iter()
            .map(|w| CosignatureVerifier::from_vkey(w))
            .collect::<Result<Vec<_>, _>>()?;
        let quorum = quorum.unwrap_or(witnesses.len());
        if quorum > witnesses.len() {
            return Err(WitnessError::Key(format!(
                "a quorum of {quorum} needs at least {quorum} witness keys; {} given",
                witnesses.len()
            )));
        }
        Ok(WitnessPolicy { witnesses, quorum })
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    pub fn is_empty(&self) -> bool {
        self.quorum == 0
    }

    /// The witnesses' names.
    pub fn names(&self) -> Vec<String> {
        self.witnesses
            .iter()
            .map(|w| w.name().to_string())
            .collect()
    }

    /// The cosignature lines of `note` (a signed checkpoint) by the policy's
    /// witnesses that verify over its text: (witness name, line with its
    /// newline). Lines by anyone else, or that do not verify, are left out.
    pub fn verified_lines(&self, note: &[u8]) -> Vec<(String, Vec<u8>)> {
        let Ok(parsed) = Note::from_bytes(note) else {
            return Vec::new();
        };
        let sigs = signatures(note);
        self.witnesses
            .iter()
            .filter_map(|w| {
                let (name, id, sig) = by(w, &sigs)?;
                w.verified_time(parsed.text(), sig)?;
                let line = signed_note::Signature::new(name.clone(), *id, sig.clone()).ok()?;
                Some((name.clone(), line.to_bytes()))
            })
            .collect()
    }

    /// The cosignatures of `note` (a signed checkpoint) by the policy's
    /// witnesses that verify, or why the quorum is not met, naming the
    /// witnesses whose cosignature is missing or does not verify.
    pub fn check(&self, note: &[u8]) -> Result<Vec<Cosigned>, String> {
        let parsed = Note::from_bytes(note)
            .map_err(|e| format!("the checkpoint is not a signed note: {e}"))?;
        let sigs = signatures(note);
        let mut cosigned = Vec::new();
        let mut missing = Vec::new();
        for w in &self.witnesses {
            let found = by(w, &sigs);
            match found.and_then(|(_, _, sig)| w.verified_time(parsed.text(), sig)) {
                Some(time) => cosigned.push(Cosigned {
                    witness: w.name().to_string(),
                    time,
                }),
                None if found.is_some() => {
                    missing.push(format!("{} (its cosignature does not verify)", w.name()))
                }
                None => missing.push(w.name().to_string()),
            }
        }
        if cosigned.len() < self.quorum {
            return Err(format!(
                "the checkpoint is cosigned by {} of the {} witnesses required (quorum {} of {}); missing: {}",
                cosigned.len(),
                self.quorum,
                self.quorum,
                self.witnesses.len(),
                missing.join(", ")
            ));
        }
        Ok(cosigned)
    }
}

/// The signature among `sigs` by `w`'s key, if any.
fn by<'a>(
    w: &CosignatureVerifier,
    sigs: &'a [(String, u32, Vec<u8>)],
) -> Option<&'a (String, u32, Vec<u8>)> {
    sigs.iter()
        .find(|(name, id, _)| name == w.name() && *id == w.key_id())
}

/// (name, key ID, signature bytes) of every signature line of a note.
fn signatures(note: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let Some(split) = note.windows(2).position(|w| w == b"\n\n") else {
        return Vec::new();
    };
    note[split + 2..]
        .split(|b| *b == b'\n')
        .filter_map(|line| signed_note::Signature::from_bytes(line).ok())
        .map(|s| (s.name().to_string(), s.id(), s.signature().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cosignature::CosignatureSigner;

    const TEXT: &[u8] = b"log.example/a\n3\nAnQxqwFOp6pZYY1lHKfSFhmsUiXIVU5NYNOQL4kkbWM=\n";

    /// `TEXT` signed by a fresh log key.
    fn log_signed() -> Note {
        let (skey, _) = signed_note::generate_key(&mut rand::rngs::OsRng, "log.example/a");
        let log = signed_note::StandardSigner::new(&skey).unwrap();
        let mut note = Note::new(TEXT, &[]).unwrap();
        note.add_sigs(&[&log]).unwrap();
        note
    }

    #[test]
    fn a_quorum_counts_verified_cosignatures_and_names_the_missing() {
        let text = TEXT;
        let note = log_signed();
        let mut bytes = note.to_bytes();
        let (w1, w2, w3) = (
            CosignatureSigner::generate("w1.example").unwrap(),
            CosignatureSigner::generate("w2.example").unwrap(),
            CosignatureSigner::generate("w3.example").unwrap(),
        );
        bytes.extend(w1.cosign(text).unwrap());
        bytes.extend(w2.cosign(text).unwrap());
        let keys = [w1.vkey(), w2.vkey(), w3.vkey()];
        let two = WitnessPolicy::new(&keys, Some(2)).unwrap();
        assert_eq!(two.check(&bytes).unwrap().len(), 2);
        let all = WitnessPolicy::new(&keys, None).unwrap();
        let e = all.check(&bytes).unwrap_err();
        assert!(
            e.contains("cosigned by 2 of the 3") && e.ends_with("missing: w3.example"),
            "{e}"
        );
        // A cosignature over another checkpoint does not count.
        let mut other = note.to_bytes();
        other.extend(
            w1.cosign(b"log.example/a\n4\nAnQxqwFOp6pZYY1lHKfSFhmsUiXIVU5NYNOQL4kkbWM=\n")
                .unwrap(),
        );
        let e = WitnessPolicy::new(&keys[..1], None)
            .unwrap()
            .check(&other)
            .unwrap_err();
        assert!(
            e.contains("w1.example (its cosignature does not verify)"),
            "{e}"
        );
        assert!(WitnessPolicy::new(&keys[..1], Some(2)).is_err());
    }

    #[test]
    fn only_verifying_lines_by_known_witnesses_are_kept() {
        let text = TEXT;
        let mut bytes = log_signed().to_bytes();
        let (w1, w2, stranger) = (
            CosignatureSigner::generate("w1.example").unwrap(),
            CosignatureSigner::generate("w2.example").unwrap(),
            CosignatureSigner::generate("stranger.example").unwrap(),
        );
        let good = w1.cosign(text).unwrap();
        bytes.extend(&good);
        bytes.extend(&good);
        // w2's line is over another checkpoint; the stranger is not known.
        bytes.extend(
            w2.cosign(b"log.example/a\n4\nAnQxqwFOp6pZYY1lHKfSFhmsUiXIVU5NYNOQL4kkbWM=\n")
                .unwrap(),
        );
        bytes.extend(stranger.cosign(text).unwrap());
        let policy = WitnessPolicy::new(&[w1.vkey(), w2.vkey()], Some(1)).unwrap();
        assert_eq!(
            policy.verified_lines(&bytes),
            vec![("w1.example".to_string(), good)]
        );
        assert!(policy.verified_lines(b"not a note").is_empty());
    }
}

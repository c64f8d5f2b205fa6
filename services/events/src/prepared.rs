//! Signature checks for a process that checks many signatures under few
//! keys (the ledger's sequencer, `clew verify`): a [`PreparedKey`] holds its
//! key's multiples precomputed, as the curve library precomputes those of
//! the base point, so each check reads `[k](−A)` from a table instead of
//! computing it by doubling, and never decompresses `R`.
//!
//! It accepts exactly what `VerifyingKey::verify_strict` accepts (the check
//! the rest of Clew and its outside verifiers apply), and the tests below
//! hold the two against each other on valid, tampered and crafted
//! signatures (small-order and mixed-order points, non-canonical encodings,
//! scalars past the group order).

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsBasepointTable;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use sha2::{Digest as _, Sha512};

use crate::VerifierKey;

/// A verifier key with `−A`'s multiples precomputed (about 30 KiB).
pub struct PreparedKey {
    verifier: VerifierKey,
    /// Whether `A` is of small order: every signature under it is refused
    /// (`verify_strict` refuses them too; a key that parses is never one).
    small_order: bool,
    /// Multiples of `−A`, radix 16, 32 rows of 8: the layout the library
    /// uses for the base point (of radix 16 to 256, radix 16 and 32 were
    /// the fastest here, and 16 is the smallest).
    minus_a: EdwardsBasepointTable,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedKey({})", self.verifier.key_id())
    }
}

impl PreparedKey {
    /// Precomputes `verifier`'s table (tens of microseconds: once a key).
    pub fn new(verifier: VerifierKey) -> Self {
        let point = verifier.verifying_key().to_edwards();
        Self {
            small_order: point.is_small_order(),
            minus_a: EdwardsBasepointTable::create(&-point),
            verifier,
        }
    }

    /// The key prepared.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Whether `signature` (R || S) holds over the message made of `parts`
    /// one after another: RFC 8032 §5.1.7 cofactorless, `[S]B = R + [k]A`
    /// with `k = SHA-512(R || A || M)`, as `verify_strict` checks it.
    pub fn verifies(&self, parts: &[&[u8]], signature: &[u8; 64]) -> bool {
        let (r, s) = signature.split_at(32);
        let Ok(s) = <[u8; 32]>::try_from(s) else {
            return false;
        };
        // S must be below the group order (RFC 8032 §5.1.7 step 1).
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
            return false;
        };
        if self.small_order {
            return false;
        }
        let mut h = Sha512::new();
        h.update(r);
        h.update(self.verifier.verifying_key().as_bytes());
        for part in parts {
            h.update(part);
        }
        let k = Scalar::from_hash(h);
        let expected = ED25519_BASEPOINT_TABLE * &s + &self.minus_a * &k;
        // Compared as encoded, so a non-canonical R never matches; and when
        // R matches it decodes to `expected`, so R is of small order exactly
        // when `expected` is (verify_strict refuses a small-order R).
        expected.compress().as_bytes() == r && !expected.is_small_order()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProducerKey;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use ed25519_dalek::{Signature, Signer as _, SigningKey};

    /// The group order L, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn agree(
        key: &VerifierKey,
        prepared: &PreparedKey,
        message: &[u8],
        sig: &[u8; 64],
        what: &str,
    ) {
        let strict = key
            .verifying_key()
            .verify_strict(message, &Signature::from_bytes(sig))
            .is_ok();
        let (a, b) = message.split_at(message.len() / 3);
        assert_eq!(
            prepared.verifies(&[a, b], sig),
            strict,
            "{what}: the prepared key and verify_strict disagree"
        );
    }

    /// A signature with a chosen nonce point `R = [r]B + T` and scalar
    /// `S = r + k·a (+ extra)`, signed with `secret` as the private scalar
    /// of the key whose point is `public`.
    fn crafted(
        secret: Scalar,
        public: &EdwardsPoint,
        r: Scalar,
        t: EdwardsPoint,
        message: &[u8],
    ) -> [u8; 64] {
        let big_r = (ED25519_BASEPOINT_POINT * r + t).compress();
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(public.compress().as_bytes());
        h.update(message);
        let k = Scalar::from_hash(h);
        let s = r + k * secret;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig
    }

    #[test]
    fn a_prepared_key_accepts_exactly_what_verify_strict_accepts() {
        let producer = ProducerKey::from_seed("test/prepared", [7; 32]).unwrap();
        let key = producer.verifier();
        let prepared = PreparedKey::new(key.clone());
        let signing = SigningKey::from_bytes(&[7; 32]);
        assert_eq!(signing.verifying_key(), *key.verifying_key());
        let a = signing.to_scalar();
        let public = ED25519_BASEPOINT_POINT * a;
        assert_eq!(public.compress().to_bytes(), key.verifying_key().to_bytes());
        let mut accepted = 0;
        for i in 0..64u32 {
            let message: Vec<u8> = (0..(i * 37) % 700).map(|j| (j * 31 + i) as u8).collect();
            let good = signing.sign(&message).to_bytes();
            agree(&key, &prepared, &message, &good, "a valid signature");
            assert!(
                prepared.verifies(&[&message], &good),
                "a valid signature holds"
            );
            accepted += 1;
            // Every single bit of R and S flipped, and the message changed.
            for bit in (0..512).step_by(7) {
                let mut bad = good;
                bad[bit / 8] ^= 1 << (bit % 8);
                agree(
                    &key,
                    &prepared,
                    &message,
                    &bad,
                    &format!("bit {bit} flipped"),
                );
            }
            let mut other = message.clone();
            other.push(1);
            agree(&key, &prepared, &other, &good, "another message");
            // S + L: the same point, a non-canonical scalar (malleability).
            let s = Scalar::from_canonical_bytes(good[32..].try_into().unwrap()).unwrap();
            let mut wide = [0u8; 32];
            let mut carry = 0u16;
            for (j, w) in wide.iter_mut().enumerate() {
                let v = u16::from(s.as_bytes()[j]) + u16::from(L[j]) + carry;
                *w = v as u8;
                carry = v >> 8;
            }
            if carry == 0 {
                let mut bad = good;
                bad[32..].copy_from_slice(&wide);
                agree(&key, &prepared, &message, &bad, "S + L");
                assert!(!prepared.verifies(&[&message], &bad), "S + L is refused");
            }
            let r = Scalar::from(u64::from(i) * 1_000_003 + 11);
            // Mixed-order R: R = [r]B + T for each torsion point T
            // (cofactorless: refused unless T is the identity).
            for (n, t) in EIGHT_TORSION.iter().enumerate() {
                let sig = crafted(a, &public, r, *t, &message);
                agree(&key, &prepared, &message, &sig, &format!("R + torsion {n}"));
                assert_eq!(
                    prepared.verifies(&[&message], &sig),
                    n == 0,
                    "R + torsion {n}"
                );
            }
            // Small-order R itself, with S = k·a (so [S]B − [k]A = identity).
            for (n, t) in EIGHT_TORSION.iter().enumerate() {
                let sig = crafted(a, &public, Scalar::ZERO, *t, &message);
                agree(
                    &key,
                    &prepared,
                    &message,
                    &sig,
                    &format!("small-order R {n}"),
                );
                assert!(!prepared.verifies(&[&message], &sig), "small-order R {n}");
            }
        }
        assert_eq!(accepted, 64);
    }

    #[test]
    fn non_canonical_encodings_of_r_are_refused_as_verify_strict_refuses_them() {
        let producer = ProducerKey::from_seed("test/prepared", [9; 32]).unwrap();
        let key = producer.verifier();
        let prepared = PreparedKey::new(key.clone());
        let message = b"non-canonical R";
        let good = SigningKey::from_bytes(&[9; 32]).sign(message).to_bytes();
        // y + p for each y whose sum stays below 2^255 (p = 2^255 - 19:
        // low byte 0xed, then 0xff, top byte 0x7f), p itself, and all ones.
        let plus_p = |y: u8| {
            let mut b = [0xffu8; 32];
            b[0] = 0xed + y;
            b[31] = 0x7f;
            b
        };
        let mut encodings: Vec<[u8; 32]> = (0..19u8).map(plus_p).collect();
        encodings.push([0xff; 32]);
        for e in encodings {
            for sign in [0u8, 0x80] {
                let mut r = e;
                r[31] = (r[31] & 0x7f) | sign;
                let mut sig = good;
                sig[..32].copy_from_slice(&r);
                agree(
                    &key,
                    &prepared,
                    message,
                    &sig,
                    &format!("R = {}", hex::encode(r)),
                );
                assert!(!prepared.verifies(&[message], &sig));
            }
        }
    }

    #[test]
    fn a_key_of_mixed_order_is_held_to_the_same_equation() {
        // A = [a]B + T (T of order 8): a key that parses as a point of not
        // small order. Signatures made with a hold only when [k]T is the
        // identity, for both checks alike.
        let a = Scalar::from(123_456_789u64);
        let t = EIGHT_TORSION[1];
        let public = ED25519_BASEPOINT_POINT * a + t;
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public.compress().to_bytes())
            .expect("a point");
        let key = VerifierKey::from_verifying_key("test/mixed", verifying);
        let prepared = PreparedKey::new(key.clone());
        let mut held = 0;
        for i in 0..64u64 {
            let message = i.to_le_bytes();
            let sig = crafted(
                a,
                &public,
                Scalar::from(i + 5),
                EdwardsPoint::default(),
                &message,
            );
            agree(
                &key,
                &prepared,
                &message,
                &sig,
                &format!("mixed-order key, message {i}"),
            );
            held += usize::from(prepared.verifies(&[&message], &sig));
        }
        // About one in eight k are multiples of 8: some hold, most not.
        assert!(held > 0 && held < 64, "{held} of 64 held");
        // A small-order key: everything refused.
        let weak = ed25519_dalek::VerifyingKey::from_bytes(&t.compress().to_bytes()).unwrap();
        let key = VerifierKey::from_verifying_key("test/weak", weak);
        let prepared = PreparedKey::new(key.clone());
        let sig = crafted(
            Scalar::ZERO,
            &t,
            Scalar::from(3u8),
            EdwardsPoint::default(),
            b"m",
        );
        agree(&key, &prepared, b"m", &sig, "small-order key");
        assert!(!prepared.verifies(&[b"m"], &sig));
    }
}

//! Signature checks for a process that checks many signatures under few
//! keys (the ledger's sequencer): a [`PreparedKey`] holds its key's
//! multiples precomputed, as the base point's are, so a check is a sum of
//! table entries — no doublings — and never decompresses `R`.
//!
//! Both scalars of `[S]B + [k](−A)` are written in signed digits of 8 bits
//! (32 digits in −128..128), and each digit adds (or subtracts) one entry of
//! a table of 32 rows × 128 multiples: `[j]·256^i·P` for `j` in 1..=128.
//! That is at most 64 point additions a check, against about 250 doublings
//! and 70 additions for the library's double-base multiplication (or 128
//! additions from its radix-16 tables, each entry found by a constant-time
//! look-up, which a check of public values does not need). Before adding,
//! a check reads the entries it will add, so their cache misses overlap
//! instead of queueing one by one. A table is 640 KiB:
//! the base point's is made once a process, a key's at its first check,
//! and at most [`WIDE_KEYS_AT_MOST`] keys hold one at once; a key beyond
//! them is checked with the library's variable-time double-base
//! multiplication.
//!
//! It accepts exactly what `VerifyingKey::verify_strict` accepts (the check
//! the rest of Clew and its outside verifiers apply), and the tests below
//! hold it, by either path, against `verify_strict` on valid, tampered and
//! crafted signatures (small-order and mixed-order points, non-canonical
//! encodings, scalars past the group order).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::Identity as _;
use sha2::{Digest as _, Sha512};

use crate::VerifierKey;

/// How many keys of a process hold a table of their own at once (640 KiB
/// each, so at most 40 MiB); the keys first checked get them, and a key's
/// table is given back when the key is dropped.
pub const WIDE_KEYS_AT_MOST: usize = 64;

/// Keys of this process holding a table.
static WIDE_KEYS_HELD: AtomicUsize = AtomicUsize::new(0);

/// How many keys of this process hold a table now (for an operator's
/// gauge: at [`WIDE_KEYS_AT_MOST`], further keys are checked more slowly).
pub fn keys_holding_tables() -> usize {
    WIDE_KEYS_HELD.load(Ordering::Relaxed)
}

/// The base point's table, made at the first check.
static BASEPOINT: LazyLock<WideTable> = LazyLock::new(|| WideTable::new(&ED25519_BASEPOINT_POINT));

/// Signed digits of 8 bits: 32 of them cover every scalar below 2^254
/// (every reduced scalar is below 2^253).
const ROWS: usize = 32;
/// Entries a row: the multiples 1..=128 (a negative digit subtracts).
const ENTRIES: usize = 128;

/// `rows[i][j] = [j + 1]·256^i·P`.
struct WideTable {
    rows: Vec<[EdwardsPoint; ENTRIES]>,
}

impl WideTable {
    /// 32 × 129 additions: a few milliseconds.
    fn new(point: &EdwardsPoint) -> Self {
        let mut rows = Vec::with_capacity(ROWS);
        let mut base = *point;
        for _ in 0..ROWS {
            let mut row = [EdwardsPoint::identity(); ENTRIES];
            let mut multiple = base;
            for entry in row.iter_mut() {
                *entry = multiple;
                multiple += base;
            }
            // 256·base: the 128th multiple doubled.
            base = row[ENTRIES - 1] + row[ENTRIES - 1];
            rows.push(row);
        }
        Self { rows }
    }

    /// The entry digit `d` of row `i` adds, if any.
    fn entry(&self, i: usize, d: i16) -> Option<&EdwardsPoint> {
        let j = usize::from(d.unsigned_abs()).checked_sub(1)?;
        self.rows.get(i)?.get(j)
    }

    /// Reads every entry `digits` will add, so their cache misses are
    /// fetched side by side before the additions wait on any of them.
    fn fetch(&self, digits: &[i16; ROWS]) {
        for (i, d) in digits.iter().enumerate() {
            if let Some(e) = self.entry(i, *d) {
                std::hint::black_box(*e);
            }
        }
    }

    /// `acc + [scalar]P` for the scalar written as `digits`.
    fn add_multiple(&self, acc: &mut EdwardsPoint, digits: &[i16; ROWS]) {
        for (i, d) in digits.iter().enumerate() {
            if let Some(e) = self.entry(i, *d) {
                if *d > 0 {
                    *acc += e;
                } else {
                    *acc -= e;
                }
            }
        }
    }
}

/// `scalar` in signed digits of 8 bits, least significant first:
/// `scalar = Σ digits[i]·256^i` with each digit in −128..128; `None` for a
/// scalar whose top digit would carry past the 32nd (none below 2^254, so
/// no reduced scalar).
fn signed_digits(scalar: &Scalar) -> Option<[i16; ROWS]> {
    let mut digits = [0i16; ROWS];
    let mut carry = 0i16;
    for (d, byte) in digits.iter_mut().zip(scalar.as_bytes()) {
        let v = i16::from(*byte) + carry;
        carry = i16::from(v >= 128);
        *d = v - (carry << 8);
    }
    (carry == 0).then_some(digits)
}

/// Counts one more of `held` if fewer than `at_most` are held.
fn claim(held: &AtomicUsize, at_most: usize) -> bool {
    held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n < at_most).then_some(n + 1)
    })
    .is_ok()
}

/// A verifier key with `−A`'s multiples precomputed at its first check.
pub struct PreparedKey {
    verifier: VerifierKey,
    /// Whether `A` is of small order: every signature under it is refused
    /// (`verify_strict` refuses them too; a key that parses is never one).
    small_order: bool,
    minus_a: EdwardsPoint,
    /// `−A`'s table, or `None` while [`WIDE_KEYS_AT_MOST`] keys held theirs.
    table: OnceLock<Option<Box<WideTable>>>,
    /// The count of keys holding a table, and its most.
    held: &'static AtomicUsize,
    at_most: usize,
}

impl Drop for PreparedKey {
    fn drop(&mut self) {
        if let Some(Some(_)) = self.table.get() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedKey({})", self.verifier.key_id())
    }
}

impl PreparedKey {
    /// The key, its table left to its first check.
    pub fn new(verifier: VerifierKey) -> Self {
        Self::counted(verifier, &WIDE_KEYS_HELD, WIDE_KEYS_AT_MOST)
    }

    /// The key, its table counted in `held` against `at_most`.
    fn counted(verifier: VerifierKey, held: &'static AtomicUsize, at_most: usize) -> Self {
        let point = verifier.verifying_key().to_edwards();
        Self {
            small_order: point.is_small_order(),
            minus_a: -point,
            table: OnceLock::new(),
            held,
            at_most,
            verifier,
        }
    }

    /// The key prepared.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// `−A`'s table, made now if this is the key's first check and fewer
    /// than [`WIDE_KEYS_AT_MOST`] keys have one.
    fn table(&self) -> Option<&WideTable> {
        self.table
            .get_or_init(|| {
                claim(self.held, self.at_most).then(|| Box::new(WideTable::new(&self.minus_a)))
            })
            .as_deref()
    }

    /// Whether `signature` (R || S) holds over the message made of `parts`
    /// one after another: RFC 8032 §5.1.7 cofactorless, `[S]B = R + [k]A`
    /// with `k = SHA-512(R || A || M)`, as `verify_strict` checks it.
    pub fn verifies(&self, parts: &[&[u8]], signature: &[u8; 64]) -> bool {
        self.verifies_by(parts, signature, self.table())
    }

    /// [`PreparedKey::verifies`], summing `[S]B + [k](−A)` from `table`
    /// and the base point's, or without one by the library's variable-time
    /// double-base multiplication.
    fn verifies_by(
        &self,
        parts: &[&[u8]],
        signature: &[u8; 64],
        table: Option<&WideTable>,
    ) -> bool {
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
        let expected = match table.zip(signed_digits(&s)).zip(signed_digits(&k)) {
            Some(((table, s_digits), k_digits)) => {
                let basepoint = &*BASEPOINT;
                basepoint.fetch(&s_digits);
                table.fetch(&k_digits);
                let mut sum = EdwardsPoint::identity();
                basepoint.add_multiple(&mut sum, &s_digits);
                table.add_multiple(&mut sum, &k_digits);
                sum
            }
            None => EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &self.minus_a, &s),
        };
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
        let table = prepared.table();
        assert!(table.is_some(), "{what}: the key has a table of its own");
        for (path, table) in [("tables", table), ("library", None)] {
            assert_eq!(
                prepared.verifies_by(&[a, b], sig, table),
                strict,
                "{what}: the prepared key ({path}) and verify_strict disagree"
            );
        }
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
        assert!(prepared.table().is_some(), "the key has a table of its own");
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

    #[test]
    fn a_table_sum_is_the_scalar_multiple() {
        let table = WideTable::new(&ED25519_BASEPOINT_POINT);
        let minus_one = -Scalar::ONE;
        let mut scalars = vec![
            Scalar::ZERO,
            Scalar::ONE,
            Scalar::from(127u8),
            Scalar::from(128u8),
            Scalar::from(255u8),
            Scalar::from(0x8080_8080_8080_8080u64),
            minus_one,
            minus_one - Scalar::from(u64::MAX),
        ];
        let mut h = Sha512::new();
        for i in 0..200u32 {
            h.update(i.to_le_bytes());
            scalars.push(Scalar::from_hash(h.clone()));
        }
        for s in scalars {
            let digits = signed_digits(&s).expect("a reduced scalar has 32 digits");
            assert!(digits.iter().all(|d| (-128..128).contains(d)));
            let mut sum = EdwardsPoint::identity();
            table.fetch(&digits);
            table.add_multiple(&mut sum, &digits);
            assert_eq!(
                sum.compress(),
                (ED25519_BASEPOINT_POINT * s).compress(),
                "[{}]B",
                hex::encode(s.as_bytes())
            );
        }
    }

    #[test]
    fn no_more_keys_hold_a_table_than_allowed_and_a_dropped_key_gives_its_back() {
        static HELD: AtomicUsize = AtomicUsize::new(0);
        let signing: Vec<SigningKey> = (0..3u8)
            .map(|i| SigningKey::from_bytes(&[20 + i; 32]))
            .collect();
        let keys: Vec<PreparedKey> = signing
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let v =
                    VerifierKey::from_verifying_key(&format!("test/held/{i}"), s.verifying_key());
                PreparedKey::counted(v, &HELD, 2)
            })
            .collect();
        let check = |k: &PreparedKey, s: &SigningKey| {
            let good = s.sign(b"m").to_bytes();
            let mut bad = good;
            bad[3] ^= 4;
            k.verifies(&[b"m"], &good) && !k.verifies(&[b"m"], &bad)
        };
        // Unchecked keys hold none; the first two checked get theirs.
        assert_eq!(HELD.load(Ordering::Relaxed), 0);
        assert!(check(&keys[0], &signing[0]) && check(&keys[1], &signing[1]));
        assert_eq!(HELD.load(Ordering::Relaxed), 2);
        // The third is refused one and checked by the library's path, alike.
        assert!(check(&keys[2], &signing[2]));
        assert!(keys[0].table().is_some() && keys[2].table().is_none());
        assert_eq!(HELD.load(Ordering::Relaxed), 2);
        // Dropping a key holding a table gives it back; one holding none not.
        let mut keys = keys;
        drop(keys.remove(2));
        assert_eq!(HELD.load(Ordering::Relaxed), 2);
        drop(keys.remove(0));
        assert_eq!(HELD.load(Ordering::Relaxed), 1);
        let v = VerifierKey::from_verifying_key("test/held/again", signing[2].verifying_key());
        let again = PreparedKey::counted(v, &HELD, 2);
        assert!(check(&again, &signing[2]) && again.table().is_some());
        assert_eq!(HELD.load(Ordering::Relaxed), 2);
    }
}

//! Offline verification of a whole ledger from its stored bytes alone.
//!
//! Trusts nothing the ledger computed: every leaf is decoded and its signature
//! checked against the key registry as replayed from the leaves themselves;
//! every Merkle hash is recomputed from the leaves and compared with the stored
//! one; every checkpoint's signature is checked with the ledger's verifier key,
//! its root compared with the recomputed root, and each checkpoint proven
//! consistent with the next from the stored hashes.

use std::collections::HashMap;
use std::path::Path;

use clew_events::proto::{event::Body, Role};
use clew_events::VerifierKey;
use rayon::prelude::*;
use tlog_tiles::{
    check_tree, prove_tree, record_hash, split_stored_hash_index, stored_hash_count,
    stored_hash_index, stored_hashes_for_record_hash, tree_hash, Hash,
};

use crate::store::{hash_value, keys, u64_value, MemoryHashes, StoredHashes};
use crate::{checkpoint, LEDGER_DB_DIR};

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    /// A leaf is missing, undecodable, badly signed or inconsistent.
    #[error("leaf {index}: {problem}")]
    Leaf {
        /// Leaf index.
        index: u64,
        /// What is wrong.
        problem: String,
    },
    /// A stored Merkle hash differs from the one recomputed from the leaves.
    #[error("stored hash {index} (level {level}, node {node}): {problem}")]
    Hash {
        /// Stored-hash index.
        index: u64,
        /// Tree level.
        level: u8,
        /// Node index within the level.
        node: u64,
        /// What is wrong.
        problem: String,
    },
    /// A checkpoint is badly signed, has the wrong root, or is inconsistent.
    #[error("checkpoint at tree size {size}: {problem}")]
    Checkpoint {
        /// Tree size the checkpoint is stored under.
        size: u64,
        /// What is wrong.
        problem: String,
    },
    /// The ledger could not be read at all.
    #[error("cannot read the ledger: {0}")]
    Unreadable(String),
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Leaves checked.
    pub leaves: u64,
    /// Stored hashes checked.
    pub hashes: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The ledger's verifier key.
    pub verifier_key: String,
}

struct KeyLife {
    verifier: VerifierKey,
    registered: u64,
    revoked: Option<u64>,
}

const CHUNK: u64 = 8192;

/// Verifies the ledger in `data_dir`. When `expected_vkey` is given the ledger
/// must be signed by exactly that key. `progress(done, total)` is called as
/// leaves are checked.
pub fn verify_ledger(
    data_dir: &Path,
    expected_vkey: Option<&str>,
    progress: &dyn Fn(u64, u64),
) -> Result<VerifyReport, VerifyFailure> {
    let unreadable = |e: &dyn std::fmt::Display| VerifyFailure::Unreadable(e.to_string());
    let db_path = data_dir.join(LEDGER_DB_DIR);
    if !db_path.exists() {
        return Err(VerifyFailure::Unreadable(format!(
            "{} does not exist",
            db_path.display()
        )));
    }
    let db =
        crate::store::open_sled(&sled::Config::new().path(&db_path)).map_err(|e| unreadable(&e))?;
    let tree = db.open_tree("ledger").map_err(|e| unreadable(&e))?;
    let get = |k: &[u8]| tree.get(k).map_err(|e| unreadable(&e));

    let vkey = get(keys::LEDGER_VKEY)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .ok_or_else(|| VerifyFailure::Unreadable("no ledger verifier key stored".into()))?;
    let vkey = match expected_vkey {
        Some(expected) if expected.trim() != vkey => {
            return Err(VerifyFailure::Checkpoint {
                size: 0,
                problem: format!("ledger claims key {vkey}, expected {}", expected.trim()),
            })
        }
        Some(expected) => expected.trim().to_string(),
        None => vkey,
    };
    let size = match get(keys::SIZE)? {
        Some(v) => u64_value(&v).map_err(|e| unreadable(&e))?,
        None => 0,
    };

    // 1. Leaves: decode, replay the key registry, check signatures, recompute hashes.
    let mut registry: HashMap<String, KeyLife> = HashMap::new();
    let mut hashes = MemoryHashes(Vec::with_capacity((2 * size) as usize));
    let mut start = 0;
    while start < size {
        let end = (start + CHUNK).min(size);
        let leaves: Vec<(u64, Vec<u8>)> = (start..end)
            .map(|i| match get(&keys::leaf(i))? {
                Some(v) => Ok((i, v.to_vec())),
                None => Err(VerifyFailure::Leaf {
                    index: i,
                    problem: "missing".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        let opened: Vec<_> = leaves
            .par_iter()
            .map(|(i, bytes)| {
                let o = clew_events::open(bytes).map_err(|e| VerifyFailure::Leaf {
                    index: *i,
                    problem: e.to_string(),
                })?;
                if o.canonical != *bytes {
                    return Err(VerifyFailure::Leaf {
                        index: *i,
                        problem: "stored bytes are not the canonical envelope encoding".into(),
                    });
                }
                Ok(o)
            })
            .collect::<Result<_, _>>()?;
        // Registry changes in this chunk, in order.
        for (i, o) in (start..end).zip(&opened) {
            match o.body() {
                Body::PrincipalRegistered(p) if p.verifier_key.is_empty() && i > 0 => {}
                Body::PrincipalRegistered(p) => {
                    let verifier =
                        VerifierKey::parse(&p.verifier_key).map_err(|e| VerifyFailure::Leaf {
                            index: i,
                            problem: e.to_string(),
                        })?;
                    if i == 0
                        && (verifier.key_id() != o.key_id()
                            || !p.roles.contains(&(Role::Admin as i32)))
                    {
                        return Err(VerifyFailure::Leaf {
                            index: 0,
                            problem: "genesis is not a self-signed admin registration".into(),
                        });
                    }
                    registry
                        .entry(verifier.key_id().to_string())
                        .or_insert(KeyLife {
                            verifier,
                            registered: i,
                            revoked: None,
                        });
                }
                Body::KeyRevoked(k) => {
                    if let Some(life) = registry.get_mut(&k.key_id) {
                        life.revoked.get_or_insert(i);
                    }
                }
                _ => {}
            }
        }
        // Signatures, in parallel: the key must be registered before the leaf
        // (or be the genesis key signing itself) and not revoked before it.
        opened.par_iter().enumerate().try_for_each(|(offset, o)| {
            let i = start + offset as u64;
            let fail = |problem: String| VerifyFailure::Leaf { index: i, problem };
            let life = registry
                .get(o.key_id())
                .ok_or_else(|| fail(format!("signed by unregistered key {}", o.key_id())))?;
            if life.registered > i || (life.registered == i && i != 0) {
                return Err(fail(format!(
                    "signed by key {} before it was registered",
                    o.key_id()
                )));
            }
            if let Some(r) = life.revoked {
                if r < i {
                    return Err(fail(format!(
                        "signed by key {} revoked at leaf {r}",
                        o.key_id()
                    )));
                }
            }
            o.verify_signature(&life.verifier)
                .map_err(|e| fail(e.to_string()))
        })?;
        // Dedupe index and Merkle hashes, in order.
        for ((i, bytes), o) in leaves.iter().zip(&opened) {
            match get(&keys::event(&o.event.event_id))? {
                Some(v) if u64_value(&v).ok() == Some(*i) => {}
                _ => {
                    return Err(VerifyFailure::Leaf {
                        index: *i,
                        problem: format!(
                            "event {} is not indexed to this leaf (duplicate or lost)",
                            o.event.event_id
                        ),
                    })
                }
            }
            let new =
                stored_hashes_for_record_hash(*i, record_hash(bytes), &hashes).map_err(|e| {
                    VerifyFailure::Leaf {
                        index: *i,
                        problem: e.to_string(),
                    }
                })?;
            hashes.0.extend(new);
        }
        progress(end, size);
        start = end;
    }

    // 2. Stored hashes equal the recomputed ones, and there are no extras.
    let expected_count = stored_hash_count(size);
    let mut seen = 0u64;
    for item in tree.scan_prefix(b"h") {
        let (k, v) = item.map_err(|e| unreadable(&e))?;
        let leaf = u64_value(&k[1..]).map_err(|e| unreadable(&e))?;
        let first = stored_hash_index(0, leaf);
        if v.len() % 32 != 0 || v.is_empty() {
            let (level, node) = split_stored_hash_index(first);
            return Err(VerifyFailure::Hash {
                index: first,
                level,
                node,
                problem: "hash group is not a list of 32-byte hashes".into(),
            });
        }
        for (j, stored) in v.chunks(32).enumerate() {
            let index = first + j as u64;
            let (level, node) = split_stored_hash_index(index);
            let problem = |p: &str| VerifyFailure::Hash {
                index,
                level,
                node,
                problem: p.to_string(),
            };
            let stored = hash_value(stored).map_err(|_| problem("not a 32-byte hash"))?;
            match hashes.0.get(index as usize) {
                Some(h) if *h == stored => {}
                Some(_) => return Err(problem("differs from the hash recomputed from the leaves")),
                None => return Err(problem("is beyond the tree")),
            }
            seen += 1;
        }
    }
    if seen != expected_count {
        return Err(VerifyFailure::Unreadable(format!(
            "{seen} stored hashes for {size} leaves, expected {expected_count}"
        )));
    }

    // 3. Checkpoints: signature, root, and consistency with the next one.
    let stored = StoredHashes(&tree);
    let mut previous: Option<(u64, Hash)> = None;
    let mut checkpoints = 0;
    for item in tree.scan_prefix(keys::CHECKPOINTS) {
        let (k, note) = item.map_err(|e| unreadable(&e))?;
        let at = u64_value(&k[1..]).map_err(|e| unreadable(&e))?;
        let fail = |problem: String| VerifyFailure::Checkpoint { size: at, problem };
        let cp = checkpoint::parse(&note, &vkey).map_err(|e| fail(e.to_string()))?;
        if cp.size != at {
            return Err(fail(format!("note says size {}", cp.size)));
        }
        if at > size {
            return Err(fail(format!("beyond the tree size {size}")));
        }
        let root = tree_hash(at, &hashes).map_err(|e| fail(e.to_string()))?;
        if root != cp.root {
            return Err(fail(
                "root hash differs from the root recomputed from the leaves".into(),
            ));
        }
        if let Some((old_size, old_root)) = previous {
            let proof = prove_tree(at, old_size, &stored).map_err(|e| fail(e.to_string()))?;
            check_tree(&proof, at, cp.root, old_size, old_root).map_err(|_| {
                fail(format!(
                    "not consistent with the checkpoint at size {old_size}"
                ))
            })?;
        }
        previous = Some((at, cp.root));
        checkpoints += 1;
    }
    match previous {
        Some((last, _)) if last == size => {}
        _ if size == 0 => {}
        _ => {
            return Err(VerifyFailure::Checkpoint {
                size,
                problem: "the latest leaves are not covered by a checkpoint".into(),
            })
        }
    }
    Ok(VerifyReport {
        leaves: size,
        hashes: seen,
        checkpoints,
        verifier_key: vkey,
    })
}

//! A synthetic national event stream for benchmarks and tests: realistic
//! signed events (~1 KB each) from several producers, every reference valid.

use clew_events::proto::{event::Body, Role};
use clew_events::{sample, ProducerKey};
use prost::Message;
use rayon::prelude::*;

/// Number of hospital trusts in the synthetic nation.
pub const SITES: u64 = 200;

/// The keys that sign the synthetic stream.
#[derive(Debug, Clone)]
pub struct Producers {
    /// Admin (registers principals and sites).
    pub admin: ProducerKey,
    /// Admin principal id.
    pub admin_id: String,
    /// Ingest producers, signing round-robin.
    pub ingest: Vec<ProducerKey>,
}

impl Producers {
    /// `n` deterministic ingest keys beside the given admin.
    pub fn new(admin: ProducerKey, admin_id: &str, n: usize) -> Self {
        let ingest = (0..n)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[0] = i as u8;
                // Name and seed are fixed; this cannot fail.
                ProducerKey::from_seed(&format!("ingest-{i}"), seed).expect("valid key name")
            })
            .collect();
        Self {
            admin,
            admin_id: admin_id.to_string(),
            ingest,
        }
    }

    /// Registrations of the ingest principals (signed by the admin).
    pub fn registrations(&self) -> Vec<Vec<u8>> {
        self.ingest
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let body = sample::principal(&format!("ingest-{i}"), k, &[Role::Ingest]);
                seal(&self.admin, &self.admin_id, body)
            })
            .collect()
    }
}

fn seal(key: &ProducerKey, actor: &str, body: Body) -> Vec<u8> {
    clew_events::seal(key, actor, body, None, None)
        // Synthetic bodies are valid by construction.
        .expect("synthetic event is valid")
        .encode_to_vec()
}

/// Body of synthetic event `i` in a stream of `total` (after registrations).
///
/// Order: 200 sites, then datasets (a fifth of the stream, at most 20,000),
/// then dataset versions interleaved with transforms (every 97th) and
/// training runs (every 499th) that cite earlier versions.
pub fn body(i: u64, total: u64) -> Body {
    let datasets = (total / 5).clamp(1, 20_000);
    if i < SITES {
        return sample::site(i);
    }
    let i = i - SITES;
    if i < datasets {
        return sample::dataset(i, i % SITES);
    }
    let k = i - datasets;
    let d = k % datasets;
    if k >= datasets && k % 97 == 96 {
        return sample::transform(
            &format!("tf-{k}"),
            vec![
                sample::dataset_version_id(d, 1),
                sample::dataset_version_id((d + 1) % datasets, 1),
            ],
            vec![],
        );
    }
    if k >= datasets && k % 499 == 498 {
        return sample::training_run(
            &format!("run-{k}"),
            &format!("mv-{k}"),
            &sample::dataset_version_id(d, 1),
            &sample::dataset_version_id((d + 1) % datasets, 1),
            &sample::dataset_version_id((d + 2) % datasets, 1),
        );
    }
    let v = k / datasets + 1;
    let derived = if v > 1 {
        vec![sample::dataset_version_id(d, 1)]
    } else {
        vec![]
    };
    sample::dataset_version(d, v, derived)
}

/// Signed envelopes for synthetic events `range` of a `total`-event stream,
/// generated in parallel. Sites are signed by the admin, the rest by the
/// ingest producers in turn.
pub fn events(p: &Producers, range: std::ops::Range<u64>, total: u64) -> Vec<Vec<u8>> {
    range
        .into_par_iter()
        .map(|i| {
            let body = body(i, total);
            if i < SITES {
                seal(&p.admin, &p.admin_id, body)
            } else {
                let idx = (i as usize) % p.ingest.len();
                seal(&p.ingest[idx], &format!("ingest-{idx}"), body)
            }
        })
        .collect()
}

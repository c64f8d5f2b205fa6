//! A synthetic national event stream for benchmarks and tests: realistic
//! signed events (~1 KB each) from several producers, every reference valid.

use clew_events::proto::{event::Body, Role};
use clew_events::{sample, ProducerKey};
use prost::Message;
use rayon::prelude::*;

/// Number of hospital trusts in the synthetic nation.
pub const SITES: u64 = sample::STREAM_SITES;

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

/// Body of synthetic event `i` in a stream of `total` (see [`sample::stream_body`]).
pub fn body(i: u64, total: u64) -> Body {
    sample::stream_body(i, total)
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

/// Layout of the synthetic national catalogue for `datasets` datasets:
/// 200 sites; the datasets; five versions each (v1 raw, v2..v5 each derived
/// from the one before by a recorded transform); then ten training runs per
/// dataset, each producing a model version, a validation and a deployment.
/// That is 200 + 50 x datasets nodes and as many events: 20,000 datasets make
/// about a million. Dataset version `ds-000000@1.0` (the hub) is the test set
/// of every 80th run, so about 10,000 nodes lie downstream of it.
#[derive(Debug, Clone, Copy)]
pub struct NationalCatalogue {
    /// Number of datasets.
    pub datasets: u64,
}

/// Subject of the hub dataset version.
pub const HUB: &str = "dataset-version/ds-000000@1.0";

impl NationalCatalogue {
    /// Total number of events.
    pub fn events(&self) -> u64 {
        SITES + self.datasets * 50
    }

    /// Number of training runs.
    pub fn runs(&self) -> u64 {
        self.datasets * 10
    }

    /// Body of event `i`; `true` when the admin signs it.
    pub fn body(&self, i: u64) -> (Body, bool) {
        let n = self.datasets;
        if i < SITES {
            return (sample::site(i), true);
        }
        let i = i - SITES;
        if i < n {
            return (sample::dataset(i, i % SITES), false);
        }
        let i = i - n;
        if i < n {
            return (sample::dataset_version(i, 1, vec![]), false);
        }
        let i = i - n;
        if i < 8 * n {
            let round = 2 + i / (2 * n);
            let d = (i % (2 * n)) / 2;
            let prev = sample::dataset_version_id(d, round - 1);
            return if i.is_multiple_of(2) {
                (sample::dataset_version(d, round, vec![prev]), false)
            } else {
                let id = format!("tf-{d}-{round}");
                (
                    sample::transform(&id, vec![prev], vec![sample::dataset_version_id(d, round)]),
                    false,
                )
            };
        }
        let i = i - 8 * n;
        let (k, slot) = (i / 4, i % 4);
        let pick = |m: u64, salt: u64| (k.wrapping_mul(m).wrapping_add(salt)) % n;
        let site = sample::site_id(k % SITES);
        let (run, mv, val, dep) = (
            format!("run-{k}"),
            format!("mv-{k}"),
            format!("val-{k}"),
            format!("dep-{k}"),
        );
        let body = match slot {
            0 => {
                let test = if k % 80 == 0 {
                    sample::dataset_version_id(0, 1)
                } else {
                    sample::dataset_version_id(pick(1_299_709, 2), 5)
                };
                sample::training_run(
                    &run,
                    &mv,
                    &sample::dataset_version_id(pick(7919, 0), 5),
                    &sample::dataset_version_id(pick(104_729, 1), 5),
                    &test,
                )
            }
            1 => sample::model_version(&mv, &run),
            2 => sample::validation(
                &val,
                &mv,
                &sample::dataset_version_id(pick(15_485_863, 3), 5),
                &site,
                true,
            ),
            _ => {
                let live = k % 10 != 9;
                let status = if live {
                    clew_events::proto::DeploymentStatus::Live
                } else {
                    clew_events::proto::DeploymentStatus::Shadow
                };
                sample::deployment(
                    &dep,
                    &mv,
                    &site,
                    status,
                    if live { vec![val] } else { vec![] },
                )
            }
        };
        (body, false)
    }

    /// Signed envelopes for events `range`, generated in parallel.
    pub fn envelopes(&self, p: &Producers, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
        range
            .into_par_iter()
            .map(|i| {
                let (body, admin) = self.body(i);
                if admin {
                    seal(&p.admin, &p.admin_id, body)
                } else {
                    let idx = (i as usize) % p.ingest.len();
                    seal(&p.ingest[idx], &format!("ingest-{idx}"), body)
                }
            })
            .collect()
    }
}

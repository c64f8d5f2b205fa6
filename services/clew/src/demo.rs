//! `clew demo`: a realistic national scenario recorded through the same
//! signed-event path as everything else.
//!
//! Five hospital trusts contribute chest X-ray and CT datasets, signing their
//! own events with their own keys (submitted as partner envelopes are). The
//! national platform's model team records, through the API's service key, a
//! de-identification transform, an annotation transform and a train /
//! validation / held-back test split; two training runs produce model versions
//! with model cards; external validation runs at two trusts with subgroup
//! metrics; a deployment goes shadow → live; then one trust's source dataset
//! version is withdrawn (identifiable data found) and the impact reaches the
//! live deployment.
//!
//! The scenario is data: `data/demo-scenario.json`, one step per event, each
//! the proto3 JSON of an event body (`proto/clew/v1/events.proto`) with who
//! records it — `"signedBy": "service"` goes through the API's service key
//! with `actor` as the actor, `"signedBy": "actor"` is signed with the
//! actor's own key (made in `keys/demo/` on first use; `{key:<actor>}` in the
//! data stands for its verifier key). This module only loads and records it.
//!
//! A dataset version's `"{manifest}"` stands for the digest of its series
//! manifest, which is put into the blob store before the version is
//! published (the ledger cites only content it holds). The demo has no image
//! files, so its manifests are summary-level: one series entry per modality
//! and scanner of the version's imaging summary, carrying that share of the
//! instance count, with no file list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clew_api::TokenStore;
use clew_events::proto::{self, event::Body};
use clew_events::ProducerKey;
use clew_node::{Node, Outcome};
use prost::Message;
use serde::Deserialize;

use crate::datadir::DataDir;
use crate::keyfiles;

/// The scenario (see the module overview).
const SCENARIO: &str = include_str!("../data/demo-scenario.json");

/// The withdrawn source version.
pub const WITHDRAWN: &str = "northgate-cxr@1.0";

/// One step of the scenario as written in the data file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Step {
    actor: String,
    signed_by: SignedBy,
    event: serde_json::Value,
}

/// Who signs a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SignedBy {
    /// The API's service key, for the actor.
    Service,
    /// The actor's own key.
    Actor,
}

/// The scenario as written: each step's event still proto3 JSON.
fn steps() -> Result<Vec<Step>> {
    serde_json::from_str(SCENARIO).context("the demo scenario")
}

/// Actors of the scenario that sign their own events.
fn self_signing_actors(steps: &[Step]) -> BTreeSet<String> {
    steps
        .iter()
        .filter(|s| s.signed_by == SignedBy::Actor)
        .map(|s| s.actor.clone())
        .collect()
}

/// Each step's event body, `{key:<actor>}` replaced by that actor's verifier
/// key and `{in-days:<n>}` by the time `n` days from now.
fn bodies(steps: Vec<Step>, keys: &BTreeMap<String, ProducerKey>) -> Result<Vec<(Step, Body)>> {
    steps
        .into_iter()
        .enumerate()
        .map(|(i, mut step)| {
            fill_placeholders(&mut step.event, keys);
            let event: proto::Event = serde_json::from_value(step.event.take())
                .with_context(|| format!("demo step {i}: not an event body"))?;
            let body = event
                .body
                .with_context(|| format!("demo step {i}: no event body"))?;
            Ok((step, body))
        })
        .collect()
}

/// Replaces every string `{key:<actor>}` in `value` with the actor's
/// verifier key, and `{in-days:<n>}` with the RFC 3339 time `n` days from now
/// (whole seconds), so dates like a grant's expiry stay relative to the day
/// the demo runs.
fn fill_placeholders(value: &mut serde_json::Value, keys: &BTreeMap<String, ProducerKey>) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            let actor = s.strip_prefix("{key:").and_then(|r| r.strip_suffix('}'));
            let days = s
                .strip_prefix("{in-days:")
                .and_then(|r| r.strip_suffix('}'))
                .and_then(|n| n.parse::<i64>().ok());
            if let Some(key) = actor.and_then(|a| keys.get(a)) {
                *s = key.verifier().to_text();
            } else if let Some(days) = days {
                let now = clew_events::now_timestamp().seconds;
                *s = clew_ledger::audit::rfc3339(now + days * 86_400);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_placeholders(v, keys)),
        Value::Object(map) => map.values_mut().for_each(|v| fill_placeholders(v, keys)),
        _ => {}
    }
}

/// Whether the demo is already recorded in this data directory.
pub fn recorded(node: &Node) -> Result<bool> {
    Ok(node
        .catalog()
        .node(&format!("dataset-version/{WITHDRAWN}"))?
        .is_some())
}

/// Records the scenario, each version's manifest put into `manifests` (the
/// store the node's ledger cites from) first; returns (events recorded,
/// tokens written per principal that acts through the API).
pub async fn record(
    dir: &DataDir,
    node: &Node,
    tokens: &TokenStore,
    manifests: &clew_blobs::BlobStore,
) -> Result<(usize, BTreeMap<String, PathBuf>)> {
    let key_dir = dir.keys().join("demo");
    let origin = node.ledger().origin().to_string();
    let steps = steps()?;
    let mut keys = BTreeMap::new();
    for actor in self_signing_actors(&steps) {
        let path = key_dir.join(format!("{actor}.key"));
        let key = if path.exists() {
            keyfiles::read_producer(&path)?
        } else {
            let site = actor.trim_end_matches("-gateway");
            keyfiles::generate(&key_dir, &actor, &format!("{origin}/{site}"))?.2
        };
        keys.insert(actor, key);
    }
    let all = bodies(steps, &keys)?;
    // People with tokens: principals registered without a key of their own.
    let people: Vec<String> = all
        .iter()
        .filter_map(|(_, body)| match body {
            Body::PrincipalRegistered(p) if p.verifier_key.is_empty() => {
                Some(p.principal_id.clone())
            }
            _ => None,
        })
        .collect();
    let pb = crate::progress_bar(all.len() as u64, "demo");
    let mut n = 0;
    for (step, mut body) in all {
        let kind = clew_events::kind_of(&body).as_str_name();
        if let Body::DatasetVersionPublished(v) = &mut body {
            let manifest = demo_manifest(v);
            v.manifest_digest = manifests
                .put(manifest.canonical_bytes().into())
                .await
                .with_context(|| format!("storing the manifest of {}@{}", v.dataset_id, v.version))?
                .digest;
        }
        let outcome = match step.signed_by {
            SignedBy::Service => node.record(&step.actor, body, None).await?,
            SignedBy::Actor => {
                let key = keys
                    .get(&step.actor)
                    .with_context(|| format!("no key for {}", step.actor))?;
                let env = clew_events::seal(key, &step.actor, body, None, None)?;
                node.submit(env.encode_to_vec()).await?
            }
        };
        match outcome {
            Outcome::Accepted(_) => n += 1,
            // Already there from an interrupted earlier run.
            Outcome::Rejected(r) if r.reason == proto::RejectionReason::Conflict => {}
            Outcome::Rejected(r) => bail!("demo step {kind} was refused: {}", r.detail),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let token_dir = dir.root().join("demo-tokens");
    std::fs::create_dir_all(&token_dir).with_context(|| token_dir.display().to_string())?;
    let mut written = BTreeMap::new();
    for id in people {
        let path = token_dir.join(format!("{id}.token"));
        if !path.exists() {
            crate::local::write_secret(&path, &tokens.issue(&id)?)?;
        }
        written.insert(id, path);
    }
    Ok((n, written))
}

/// The summary-level manifest of a demo version (see the module overview):
/// deterministic, so a re-run cites the same digest.
fn demo_manifest(v: &proto::DatasetVersionPublished) -> clew_ingest::Manifest {
    use clew_ingest::manifest::ManifestSeries;
    use clew_ingest::{Manifest, MANIFEST_FORMAT};
    let summary = v.imaging_summary.clone().unwrap_or_default();
    let scanners = if summary.manufacturers.is_empty() {
        vec![proto::ManufacturerModel::default()]
    } else {
        summary.manufacturers.clone()
    };
    let groups: Vec<(String, proto::ManufacturerModel)> = summary
        .modalities
        .iter()
        .flat_map(|m| scanners.iter().map(move |s| (m.clone(), s.clone())))
        .collect();
    let n = groups.len().max(1) as u64;
    // "2.25.<integer>" UIDs (PS3.5 B.2), derived from the version and group.
    let uid = |label: &str| {
        let d = clew_blobs::digest_of(format!("{}@{} {label}", v.dataset_id, v.version).as_bytes());
        let hex = d.trim_start_matches("sha256:");
        format!(
            "2.25.{}",
            u128::from_str_radix(&hex[..30], 16).unwrap_or_default()
        )
    };
    let series = groups
        .into_iter()
        .enumerate()
        .map(|(k, (modality, scanner))| ManifestSeries {
            study_instance_uid: uid(&format!("study {k}")),
            series_instance_uid: uid(&format!("series {k}")),
            modality,
            body_part_examined: summary
                .body_parts_examined
                .first()
                .cloned()
                .unwrap_or_default(),
            manufacturer: scanner.manufacturer,
            manufacturer_model_name: scanner.manufacturer_model_name,
            slice_thickness_mm: summary.slice_thickness_min_mm,
            study_date: summary.study_date_from.clone(),
            instance_count: summary.number_of_instances / n
                + u64::from((k as u64) < summary.number_of_instances % n),
            instances: Vec::new(),
        })
        .collect();
    Manifest {
        format: MANIFEST_FORMAT.into(),
        source: None,
        series,
    }
}

/// The demo's people with their tokens (`demo-tokens/<principal>.token`),
/// for the web pages' one-click sign-in.
pub fn principals(dir: &DataDir) -> Result<Vec<clew_web::DemoPrincipal>> {
    let token_dir = dir.root().join("demo-tokens");
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&token_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| token_dir.display().to_string()),
    };
    for entry in entries {
        let path = entry?.path();
        let Some(principal) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".token"))
        else {
            continue;
        };
        let token = std::fs::read_to_string(&path)
            .with_context(|| path.display().to_string())?
            .trim()
            .to_string();
        out.push(clew_web::DemoPrincipal {
            principal: principal.to_string(),
            token,
        });
    }
    out.sort_by(|a, b| a.principal.cmp(&b.principal));
    Ok(out)
}

/// Example queries to try, with the token files to use.
pub fn examples(addr: &str, admin_token: &std::path::Path, dir: &DataDir) -> String {
    let tok = |who: &str| dir.root().join("demo-tokens").join(format!("{who}.token"));
    format!(
        r#"Try (tokens are in {tokens}):

  # Find de-identified chest imaging, with facet counts
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {researcher})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ search(input: {{text: \"chest\", filters: [{{facet: \"modality\", values: [\"DX\"]}}]}}) {{ total hits {{ subject title }} facets {{ name values {{ value count }} }} }} }}"}}'

  # Which data made the live deployment? (governance)
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {governance})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ lineage(subject: \"deployment/riverside-cxr-triage\", direction: UPSTREAM, depth: 10) {{ nodes {{ subject label affected }} edges {{ from relation to }} }} }}"}}'

  # What does the withdrawal of {withdrawn} affect?
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {governance})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ impact(datasetVersion: \"{withdrawn}\") {{ liveDeployments affected {{ subject status }} }} }}"}}'

  # Ada's access request, step by step, and who may use the national CT collection (governance)
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {researcher})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ myAccessRequests {{ id state transitions {{ state actor reason }} }} }}"}}'
  curl -s http://{addr}/graphql -H "Authorization: Bearer $(cat {governance})" \
    -H 'content-type: application/json' \
    -d '{{"query":"{{ datasetAccess(datasetId: \"nccid-ct-deid\", from: \"2026-01-01T00:00:00Z\", to: \"2030-01-01T00:00:00Z\") {{ holdersNow {{ principal projectId until }} }} }}"}}'

  # The public data-use register (no token needed)
  curl -s http://{addr}/data-uses

  # Prove it: the latest checkpoint, and an inclusion proof of the withdrawal
  curl -s http://{addr}/checkpoint -H "Authorization: Bearer $(cat {admin})"

Or open http://{addr}/ in a browser: the web catalogue, where the demo's
people sign in with one click; GraphiQL is at http://{addr}/graphql once
signed in (queries run as you).
"#,
        tokens = dir.root().join("demo-tokens").display(),
        researcher = tok("ada-researcher").display(),
        governance = tok("governance-board").display(),
        admin = admin_token.display(),
        withdrawn = WITHDRAWN,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_parses_and_every_self_signing_actor_gets_a_key() {
        let steps = steps().unwrap();
        let keys: BTreeMap<String, ProducerKey> = self_signing_actors(&steps)
            .into_iter()
            .map(|a| {
                let k = ProducerKey::generate(&format!("demo/{a}")).unwrap();
                (a, k)
            })
            .collect();
        assert_eq!(keys.len(), 5, "five trusts sign their own events");
        let steps = bodies(steps, &keys).unwrap();
        assert!(steps.len() > 50, "{} steps", steps.len());
        assert!(steps.iter().all(|(_, b)| match b {
            Body::PrincipalRegistered(p) => !p.verifier_key.contains("{key:"),
            _ => true,
        }));
        assert!(steps.iter().any(|(_, b)| matches!(
            b,
            Body::DatasetVersionWithdrawn(w) if w.dataset_version_id == WITHDRAWN
        )));
    }
}

//! The catalogue over a real ledger, sled database and tantivy index:
//! lineage on a hand-built graph with known answers, withdrawal propagation,
//! as-of answers, search relevance and facets, visibility, pagination,
//! rebuild equivalence and a restart in the middle of projection.

use std::collections::BTreeSet;

use clew_catalog::{
    Catalog, Direction, KeptEdges, Range, Relation, SearchRequest, SortOrder, Visibility, FACETS,
};
use clew_events::proto::{self, event::Body, RejectionReason as R, Role};
use clew_events::{sample, seal, ProducerKey};
use clew_ledger::{BatchReceipt, Ledger, LedgerOptions, Submission};
use prost::Message;

struct World {
    dir: tempfile::TempDir,
    ledger: Ledger,
    admin: ProducerKey,
    ingest: ProducerKey,
    offset: u64,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = ProducerKey::generate("test.clew.example/ledger")
            .unwrap()
            .to_signer_text();
        let admin = ProducerKey::generate("admin").unwrap();
        let ledger = Ledger::create(
            &dir.path().join("ledger"),
            &key,
            &admin,
            "admin",
            LedgerOptions::default(),
        )
        .unwrap();
        let ingest = ProducerKey::generate("ingest").unwrap();
        let mut w = World {
            dir,
            ledger,
            admin,
            ingest,
            offset: 0,
        };
        let reg = sample::principal("ingest", &w.ingest, &[Role::Ingest]);
        w.admin_submit(vec![reg]);
        w
    }

    fn submit_as(&mut self, key: &ProducerKey, actor: &str, bodies: Vec<Body>) -> BatchReceipt {
        let subs = bodies
            .into_iter()
            .map(|b| {
                self.offset += 1;
                Submission::received(
                    self.offset,
                    seal(key, actor, b, None, None).unwrap().encode_to_vec(),
                )
            })
            .collect();
        self.ledger.sequence("test", subs).unwrap()
    }

    fn admin_submit(&mut self, bodies: Vec<Body>) -> BatchReceipt {
        let admin = self.admin.clone();
        let r = self.submit_as(&admin, "admin", bodies);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        r
    }

    fn submit(&mut self, bodies: Vec<Body>) -> BatchReceipt {
        let ingest = self.ingest.clone();
        let r = self.submit_as(&ingest, "ingest", bodies);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        r
    }

    fn catalog(&self, name: &str) -> Catalog {
        let c = Catalog::open(&self.dir.path().join(name)).unwrap();
        c.catch_up(&self.ledger, &|_, _| {}).unwrap();
        c
    }
}

fn site(id: &str, name: &str) -> Body {
    Body::SiteRegistered(proto::SiteRegistered {
        site_id: id.into(),
        name: name.into(),
        kind: proto::SiteKind::HospitalTrust as i32,
        organisation_code: String::new(),
        country: "GB".into(),
        region: String::new(),
    })
}

fn dataset(
    id: &str,
    site: &str,
    title: &str,
    description: &str,
    access: proto::AccessLevel,
    tags: &[&str],
) -> Body {
    Body::DatasetRegistered(proto::DatasetRegistered {
        dataset_id: id.into(),
        title: title.into(),
        description: description.into(),
        custodian_site_id: site.into(),
        access_level: access as i32,
        licence: "CC-BY-4.0".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    })
}

#[allow(clippy::too_many_arguments)]
fn version(
    ds: &str,
    v: &str,
    derived: &[&str],
    modality: &str,
    maker: &str,
    slice: (f64, f64),
    dates: (&str, &str),
    studies: u64,
) -> Body {
    Body::DatasetVersionPublished(proto::DatasetVersionPublished {
        dataset_id: ds.into(),
        version: v.into(),
        // One manifest per version: the ledger refuses the same content twice.
        manifest_digest: {
            use sha2::Digest;
            format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{ds}@{v}")))
            )
        },
        imaging_summary: Some(proto::ImagingSummary {
            modalities: vec![modality.into()],
            body_parts_examined: vec!["CHEST".into()],
            manufacturers: vec![proto::ManufacturerModel {
                manufacturer: maker.into(),
                manufacturer_model_name: "X".into(),
            }],
            number_of_studies: studies,
            number_of_series: studies * 2,
            number_of_instances: studies * 100,
            study_date_from: dates.0.into(),
            study_date_to: dates.1.into(),
            slice_thickness_min_mm: Some(slice.0),
            slice_thickness_max_mm: Some(slice.1),
            deidentification_methods: vec![proto::CodedConcept {
                code_value: "113106".into(),
                coding_scheme_designator: "DCM".into(),
                code_meaning: "Retain Longitudinal Temporal Information Full Dates Option".into(),
            }],
            patient_identity_removed: true,
            number_of_patients: studies,
        }),
        was_derived_from: derived.iter().map(|d| d.to_string()).collect(),
        release_notes: String::new(),
    })
}

/// Registers the two hospital trusts every hand-built world uses.
fn two_sites(w: &mut World) {
    w.admin_submit(vec![
        site("site-a", "Royal Brompton"),
        site("site-b", "Leeds Teaching Hospitals"),
    ]);
}

/// The hand-built graph: two sites, a raw and a de-identified version, a
/// diamond (A@3 and A@4 both from A@2, both used by run-1), a model, a
/// validation and two deployments.
fn lineage_world() -> World {
    let mut w = World::new();
    two_sites(&mut w);
    w.submit(vec![
        dataset(
            "ds-a",
            "site-a",
            "Chest CT cohort",
            "CT",
            proto::AccessLevel::Open,
            &["ct"],
        ),
        dataset(
            "ds-b",
            "site-b",
            "Chest X-ray cohort",
            "DX",
            proto::AccessLevel::Open,
            &["dx"],
        ),
        version(
            "ds-a",
            "1",
            &[],
            "CT",
            "SIEMENS",
            (1.0, 1.0),
            ("20200101", "20201231"),
            10,
        ),
        version(
            "ds-b",
            "1",
            &[],
            "DX",
            "GE",
            (0.0, 0.0),
            ("20200101", "20201231"),
            10,
        ),
    ]);
    w.submit(vec![version(
        "ds-a",
        "2",
        &["ds-a@1"],
        "CT",
        "SIEMENS",
        (1.0, 1.0),
        ("20200101", "20201231"),
        10,
    )]);
    w.submit(vec![
        sample::transform("tf-deid", vec!["ds-a@1".into()], vec!["ds-a@2".into()]),
        version(
            "ds-a",
            "3",
            &["ds-a@2"],
            "CT",
            "SIEMENS",
            (1.0, 1.0),
            ("20200101", "20201231"),
            5,
        ),
        version(
            "ds-a",
            "4",
            &["ds-a@2"],
            "CT",
            "SIEMENS",
            (1.0, 1.0),
            ("20200101", "20201231"),
            5,
        ),
        sample::training_run("run-1", "mv-1", "ds-a@3", "ds-a@4", "ds-b@1"),
        sample::model_version("mv-1", "run-1"),
        sample::validation("val-1", "mv-1", "ds-b@1", "site-b", true),
        sample::deployment(
            "dep-1",
            "mv-1",
            "site-b",
            proto::DeploymentStatus::Live,
            vec!["val-1".into()],
        ),
        sample::deployment(
            "dep-2",
            "mv-1",
            "site-a",
            proto::DeploymentStatus::Shadow,
            vec![],
        ),
    ]);
    w
}

fn subjects(answer: &clew_catalog::LineageAnswer) -> BTreeSet<String> {
    answer.nodes.iter().map(|n| n.subject.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn lineage_up_and_down_a_hand_built_graph_with_a_diamond() {
    let w = lineage_world();
    let c = w.catalog("catalog");

    let one_hop = c
        .lineage("deployment/dep-1", Direction::Upstream, 1, None)
        .unwrap();
    assert_eq!(
        subjects(&one_hop),
        set(&[
            "deployment/dep-1",
            "model-version/mv-1",
            "site/site-b",
            "validation/val-1"
        ])
    );
    let relations: BTreeSet<_> = one_hop
        .edges
        .iter()
        .map(|e| (e.to.clone(), e.relation))
        .collect();
    assert!(relations.contains(&("validation/val-1".to_string(), Relation::WasInformedBy)));
    assert!(relations.contains(&("model-version/mv-1".to_string(), Relation::Used)));

    let all = c
        .lineage("deployment/dep-1", Direction::Upstream, 20, None)
        .unwrap();
    assert_eq!(
        subjects(&all),
        set(&[
            "deployment/dep-1",
            "model-version/mv-1",
            "site/site-b",
            "validation/val-1",
            "training-run/run-1",
            "dataset-version/ds-a@3",
            "dataset-version/ds-a@4",
            "dataset-version/ds-b@1",
            "dataset-version/ds-a@2",
            "dataset-version/ds-a@1",
            "transform/tf-deid",
            "dataset/ds-a",
            "dataset/ds-b",
            "site/site-a",
            "principal/ingest",
        ])
    );
    assert_eq!(
        all.nodes.len(),
        subjects(&all).len(),
        "the diamond's apex appears once"
    );
    let roles: BTreeSet<_> = all
        .edges
        .iter()
        .filter(|e| e.from == "training-run/run-1" && e.relation == Relation::Used)
        .map(|e| (e.to.clone(), e.role.clone().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            ("dataset-version/ds-a@3", "train"),
            ("dataset-version/ds-a@4", "validation"),
            ("dataset-version/ds-b@1", "test")
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    );
    let a2 = all
        .nodes
        .iter()
        .find(|n| n.subject == "dataset-version/ds-a@2")
        .unwrap();
    assert_eq!(a2.depth, 4, "dep-1 -> mv-1 -> run-1 -> ds-a@3 -> ds-a@2");

    let down = c
        .lineage("dataset-version/ds-a@1", Direction::Downstream, 20, None)
        .unwrap();
    assert_eq!(
        subjects(&down),
        set(&[
            "dataset-version/ds-a@1",
            "dataset-version/ds-a@2",
            "transform/tf-deid",
            "dataset-version/ds-a@3",
            "dataset-version/ds-a@4",
            "training-run/run-1",
            "model-version/mv-1",
            "validation/val-1",
            "deployment/dep-1",
            "deployment/dep-2",
        ])
    );

    // "Did this deployed model ever see data from site A?"
    let path = c
        .path("deployment/dep-1", "site/site-a", None)
        .unwrap()
        .expect("a path exists");
    let chain: Vec<_> = path.nodes.iter().map(|n| n.subject.as_str()).collect();
    assert_eq!(chain.first(), Some(&"deployment/dep-1"));
    assert_eq!(chain.last(), Some(&"site/site-a"));
    assert_eq!(chain.len(), path.edges.len() + 1);
    // dep-1 -> mv-1 -> run-1 -> ds-a@3 (or @4) -> dataset/ds-a -> site/site-a
    assert_eq!(chain.len(), 6, "{chain:?}");
    assert_eq!(chain[4], "dataset/ds-a");
    let reverse = c
        .path("site/site-a", "deployment/dep-1", None)
        .unwrap()
        .unwrap();
    assert_eq!(reverse.nodes.len(), 6);
    assert!(c
        .path("dataset-version/ds-b@1", "dataset-version/ds-a@1", None)
        .unwrap()
        .is_none());
}

#[test]
fn cycles_are_refused_when_they_would_be_written() {
    let mut w = lineage_world();
    let ingest = w.ingest.clone();
    for (used, generated) in [("ds-a@2", "ds-a@1"), ("ds-a@3", "ds-a@3")] {
        let r = w.submit_as(
            &ingest,
            "ingest",
            vec![sample::transform(
                "tf-loop",
                vec![used.into()],
                vec![generated.into()],
            )],
        );
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].reason, R::InvalidPayload);
        assert!(
            r.rejected[0].detail.contains("cyclic"),
            "{}",
            r.rejected[0].detail
        );
    }
    let r = w.submit_as(
        &ingest,
        "ingest",
        vec![version(
            "ds-a",
            "9",
            &["ds-a@9"],
            "CT",
            "X",
            (1.0, 1.0),
            ("20200101", "20200101"),
            1,
        )],
    );
    assert_eq!(
        r.rejected[0].reason,
        R::DanglingReference,
        "a version cannot derive from itself"
    );
}

#[test]
fn a_withdrawal_propagates_downstream_and_as_of_answers_see_before_and_after() {
    let mut w = lineage_world();
    let before = w.ledger.size();
    let r = w.submit(vec![Body::DatasetVersionWithdrawn(
        proto::DatasetVersionWithdrawn {
            dataset_version_id: "ds-a@2".into(),
            reason: proto::WithdrawalReason::IdentifiableDataFound as i32,
            detail: "burned-in names found in 3 series".into(),
        },
    )]);
    let withdrawal_leaf = r.accepted[0].leaf_index;
    let c = w.catalog("catalog");

    // Search leaves the withdrawn version out unless asked for it; asked,
    // it is there and counted under status "withdrawn".
    let default = hits(&c, text(""));
    assert!(
        !default.contains(&"dataset-version/ds-a@2".to_string()),
        "{default:?}"
    );
    assert!(
        default.contains(&"dataset-version/ds-a@3".to_string()),
        "{default:?}"
    );
    let asked = c
        .search(&SearchRequest {
            include_withdrawn: true,
            ..text("")
        })
        .unwrap();
    assert!(
        asked
            .hits
            .iter()
            .any(|h| h.subject == "dataset-version/ds-a@2"),
        "{:?}",
        asked.hits
    );
    assert_eq!(asked.total, default.len() + 1);
    assert!(
        asked.facets["status"].contains(&("withdrawn".to_string(), 1)),
        "{:?}",
        asked.facets["status"]
    );

    let impact = c.impact("dataset-version/ds-a@2", None).unwrap();
    assert_eq!(impact.live_deployments, 1);
    assert_eq!(
        impact.affected[0].subject, "deployment/dep-1",
        "live deployments first"
    );
    assert_eq!(impact.affected[0].status.as_deref(), Some("LIVE"));
    assert_eq!(
        impact
            .affected
            .iter()
            .map(|n| n.subject.clone())
            .collect::<BTreeSet<_>>(),
        set(&[
            "deployment/dep-1",
            "deployment/dep-2",
            "model-version/mv-1",
            "validation/val-1",
            "training-run/run-1",
            "dataset-version/ds-a@3",
            "dataset-version/ds-a@4",
        ])
    );
    assert!(impact
        .affected
        .iter()
        .all(|n| n.affected && n.affected_by[0].leaf == withdrawal_leaf));

    // Every answer reports affected nodes as affected; unrelated ones are not.
    let up = c
        .lineage("deployment/dep-1", Direction::Upstream, 20, None)
        .unwrap();
    let get = |a: &clew_catalog::LineageAnswer, s: &str| {
        a.nodes.iter().find(|n| n.subject == s).unwrap().clone()
    };
    assert!(get(&up, "deployment/dep-1").affected);
    assert!(get(&up, "dataset-version/ds-a@2").affected);
    assert_eq!(
        get(&up, "dataset-version/ds-a@2").ended_leaf,
        Some(withdrawal_leaf)
    );
    assert!(!get(&up, "dataset-version/ds-b@1").affected);
    assert!(
        !get(&up, "dataset-version/ds-a@1").affected,
        "upstream of the withdrawal is not affected"
    );

    // As of the tree before the withdrawal, nothing was affected.
    let then = c
        .lineage("deployment/dep-1", Direction::Upstream, 20, Some(before))
        .unwrap();
    assert!(then.nodes.iter().all(|n| !n.affected), "{:?}", then.nodes);
    assert_eq!(get(&then, "dataset-version/ds-a@2").ended_leaf, None);
    // As of before the deployment existed, it is not found.
    let dep1_leaf = c.node("deployment/dep-1").unwrap().unwrap().created_leaf;
    assert!(c
        .lineage("deployment/dep-1", Direction::Upstream, 1, Some(dep1_leaf))
        .is_err());
    assert!(c
        .lineage(
            "deployment/dep-1",
            Direction::Upstream,
            1,
            Some(dep1_leaf + 1)
        )
        .is_ok());

    // A later training run on a version derived from the withdrawn one is born affected.
    drop(c);
    w.submit(vec![sample::training_run(
        "run-2", "mv-2", "ds-a@3", "ds-a@4", "ds-b@1",
    )]);
    let c = w.catalog("catalog");
    assert!(!c
        .node("training-run/run-2")
        .unwrap()
        .unwrap()
        .affected_by
        .is_empty());

    let history = c.history("dataset-version/ds-a@2").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].kind, "EVENT_KIND_DATASET_VERSION_WITHDRAWN");
    assert_eq!(history[1].leaf, withdrawal_leaf);
}

/// Four datasets with known content for search.
fn search_world() -> World {
    let mut w = World::new();
    two_sites(&mut w);
    w.submit(vec![
        dataset(
            "ds-1",
            "site-a",
            "Chest CT pneumonia cohort",
            "Thin-slice CT with lung nodules annotated.",
            proto::AccessLevel::Open,
            &["covid", "chest"],
        ),
        dataset(
            "ds-2",
            "site-b",
            "Chest radiograph tuberculosis screening",
            "Screening programme radiographs.",
            proto::AccessLevel::Restricted,
            &["tb"],
        ),
        dataset(
            "ds-3",
            "site-a",
            "Head CT stroke",
            "Non-contrast CT for haemorrhage detection; includes chest imaging rarely.",
            proto::AccessLevel::Open,
            &["stroke"],
        ),
        dataset(
            "ds-4",
            "site-b",
            "Screening cohort",
            "Low-dose CT for lung cancer screening.",
            proto::AccessLevel::Controlled,
            &["oncology"],
        ),
    ]);
    w.submit(vec![
        version(
            "ds-1",
            "1",
            &[],
            "CT",
            "SIEMENS",
            (0.625, 1.25),
            ("20200301", "20211231"),
            1200,
        ),
        version(
            "ds-2",
            "1",
            &[],
            "DX",
            "GE MEDICAL SYSTEMS",
            (0.0, 0.0),
            ("20190101", "20191231"),
            5000,
        ),
        version(
            "ds-3",
            "1",
            &[],
            "CT",
            "Philips",
            (5.0, 5.0),
            ("20180101", "20181231"),
            300,
        ),
        version(
            "ds-4",
            "1",
            &[],
            "CT",
            "SIEMENS",
            (1.0, 1.0),
            ("20220101", "20221231"),
            800,
        ),
    ]);
    w
}

fn everyone() -> Visibility {
    Visibility {
        all: true,
        granted_datasets: vec![],
    }
}

fn hits(c: &Catalog, req: SearchRequest) -> Vec<String> {
    c.search(&req)
        .unwrap()
        .hits
        .into_iter()
        .map(|h| h.subject)
        .collect()
}

fn text(t: &str) -> SearchRequest {
    SearchRequest {
        text: t.into(),
        visibility: everyone(),
        ..Default::default()
    }
}

#[test]
fn search_matches_all_terms_phrases_and_typos_with_title_boost() {
    let w = search_world();
    let c = w.catalog("catalog");
    assert_eq!(hits(&c, text("pneumonia")), vec!["dataset-version/ds-1@1"]);
    assert_eq!(
        hits(&c, text("pnuemonia")),
        vec!["dataset-version/ds-1@1"],
        "one transposition"
    );
    assert_eq!(
        hits(&c, text("tuberculsis")),
        vec!["dataset-version/ds-2@1"],
        "one deletion"
    );
    assert!(
        hits(&c, text("ct chst")).is_empty()
            || !hits(&c, text("chst")).contains(&"dataset-version/ds-1@1".to_string()),
        "short words need the exact spelling"
    );
    assert!(
        hits(&c, text("stroke pneumonia")).is_empty(),
        "all terms must match"
    );
    assert_eq!(
        hits(&c, text("\"lung cancer\"")),
        vec!["dataset-version/ds-4@1"]
    );
    assert!(
        hits(&c, text("\"cancer lung\"")).is_empty(),
        "a phrase keeps its order"
    );
    // "chest" is in ds-1's title and tags, in ds-2's title, only in ds-3's
    // description, and ds-4 reaches it through its body part examined (free
    // text reaches what the images are, as tags do).
    let chest = hits(&c, text("chest"));
    assert_eq!(chest.len(), 4, "{chest:?}");
    assert!(chest.contains(&"dataset-version/ds-4@1".to_string()));
    let at = |s: &str| chest.iter().position(|h| h == s).unwrap_or(usize::MAX);
    assert!(
        at("dataset-version/ds-3@1") > at("dataset-version/ds-1@1")
            && at("dataset-version/ds-3@1") > at("dataset-version/ds-2@1"),
        "a description-only match ranks below title matches: {chest:?}"
    );
    assert_eq!(
        chest[0], "dataset-version/ds-1@1",
        "title and tags outrank title alone: {chest:?}"
    );
    let r = c.search(&text("nodules")).unwrap();
    assert!(
        r.hits[0].snippet.contains("<b>nodules</b>"),
        "{}",
        r.hits[0].snippet
    );
}

#[test]
fn facet_counts_match_the_filtered_result_set() {
    let w = search_world();
    let c = w.catalog("catalog");
    let mut req = SearchRequest {
        visibility: everyone(),
        ..Default::default()
    };
    req.filters.insert("modality".into(), vec!["CT".into()]);
    let r = c.search(&req).unwrap();
    assert_eq!(r.total, 3);
    assert_eq!(r.facets["modality"], vec![("CT".to_string(), 3)]);
    assert_eq!(
        r.facets["manufacturer"],
        vec![("SIEMENS".to_string(), 2), ("Philips".to_string(), 1)]
    );
    assert_eq!(
        r.facets["site"],
        vec![
            ("Royal Brompton".to_string(), 2),
            ("Leeds Teaching Hospitals".to_string(), 1)
        ]
    );
    let years: Vec<String> = r.facets["year"].iter().map(|(y, _)| y.clone()).collect();
    assert!(
        years.contains(&"2021".to_string()) && !years.contains(&"2019".to_string()),
        "{years:?}"
    );
    for (facet, values) in &r.facets {
        for (value, n) in values {
            let mut narrowed = req.clone();
            narrowed.filters.entry(facet.clone()).or_default().clear();
            narrowed.filters.get_mut(facet).unwrap().push(value.clone());
            if facet != "modality" {
                narrowed
                    .filters
                    .insert("modality".into(), vec!["CT".into()]);
            }
            assert_eq!(
                c.search(&narrowed).unwrap().total as u64,
                *n,
                "{facet}={value}"
            );
        }
    }
    // Ranges: thin slices (some series <= 2 mm) and study dates overlapping 2020.
    let mut thin = req.clone();
    thin.slice_thickness_mm = Range {
        min: None,
        max: Some(2.0),
    };
    assert_eq!(c.search(&thin).unwrap().total, 2);
    let mut in_2020 = SearchRequest {
        visibility: everyone(),
        ..Default::default()
    };
    in_2020.study_date = Range {
        min: Some(20200101),
        max: Some(20201231),
    };
    assert_eq!(hits(&c, in_2020), vec!["dataset-version/ds-1@1"]);
    let mut big = SearchRequest {
        visibility: everyone(),
        ..Default::default()
    };
    big.studies = Range {
        min: Some(1000),
        max: None,
    };
    assert_eq!(c.search(&big).unwrap().total, 2);
    let mut bad = req.clone();
    bad.filters.insert("colour".into(), vec!["red".into()]);
    assert!(
        c.search(&bad).is_err(),
        "unknown facets are refused by name"
    );
}

#[test]
fn restricted_datasets_stay_invisible_even_in_facet_counts_without_a_grant() {
    let w = search_world();
    let c = w.catalog("catalog");
    let researcher = SearchRequest {
        visibility: Visibility::default(),
        ..Default::default()
    };
    let r = c.search(&researcher).unwrap();
    assert_eq!(r.total, 2, "only the open ds-1 and ds-3");
    assert_eq!(r.facets["access_level"], vec![("open".to_string(), 2)]);
    assert!(!r.facets["manufacturer"]
        .iter()
        .any(|(m, _)| m == "GE MEDICAL SYSTEMS"));
    let mut tb = text("tuberculosis");
    tb.visibility = Visibility::default();
    assert_eq!(c.search(&tb).unwrap().total, 0);
    tb.visibility.granted_datasets = vec!["ds-2".into()];
    assert_eq!(hits(&c, tb), vec!["dataset-version/ds-2@1"]);
}

#[test]
fn recency_sort_and_cursor_pages_stay_stable_while_events_arrive() {
    let mut w = search_world();
    let c = w.catalog("catalog");
    let mut req = SearchRequest {
        sort: SortOrder::Recency,
        limit: 1,
        visibility: everyone(),
        ..Default::default()
    };
    let first = c.search(&req).unwrap();
    assert_eq!(
        first.hits[0].subject, "dataset-version/ds-4@1",
        "newest first"
    );
    let mut seen = vec![first.hits[0].subject.clone()];
    let mut cursor = first.next_cursor.clone();
    // A new version arrives between pages.
    drop(c);
    w.submit(vec![version(
        "ds-1",
        "2",
        &["ds-1@1"],
        "CT",
        "SIEMENS",
        (1.0, 1.0),
        ("20220101", "20221231"),
        10,
    )]);
    let c = w.catalog("catalog");
    while let Some(cur) = cursor {
        req.cursor = Some(cur);
        let page = c.search(&req).unwrap();
        seen.extend(page.hits.iter().map(|h| h.subject.clone()));
        cursor = page.next_cursor;
    }
    assert_eq!(
        seen,
        vec![
            "dataset-version/ds-4@1",
            "dataset-version/ds-3@1",
            "dataset-version/ds-2@1",
            "dataset-version/ds-1@1"
        ],
        "the paged view is the one of the first page"
    );
    req.cursor = None;
    assert_eq!(
        c.search(&req).unwrap().hits[0].subject,
        "dataset-version/ds-1@2",
        "a fresh search sees it"
    );
    req.cursor = Some("garbage".into());
    assert!(c.search(&req).is_err());
}

fn fixed_answers(c: &Catalog) -> String {
    let mut out = Vec::new();
    for q in ["chest", "pneumonia", "\"lung cancer\"", "cohort", ""] {
        let mut r = text(q);
        r.limit = 50;
        let resp = c.search(&r).unwrap();
        out.push(
            serde_json::to_string(&(
                resp.total,
                &resp.facets,
                resp.hits
                    .iter()
                    .map(|h| (&h.subject, h.leaf))
                    .collect::<Vec<_>>(),
            ))
            .unwrap(),
        );
    }
    for s in [
        "deployment/dep-1",
        "dataset-version/ds-a@1",
        "dataset-version/ds-000003@1.0",
    ] {
        if c.node(s).unwrap().is_some() {
            for d in [Direction::Upstream, Direction::Downstream] {
                out.push(serde_json::to_string(&c.lineage(s, d, 10, None).unwrap()).unwrap());
            }
        }
    }
    out.push(serde_json::to_string(&c.impact("dataset-version/ds-a@2", None).unwrap()).unwrap());
    out.push(serde_json::to_string(&c.history("dataset-version/ds-a@2").unwrap()).unwrap());
    out.join("\n")
}

/// A withdrawal of `dataset_version` for consent withdrawn.
fn withdrawal(dataset_version: &str) -> Body {
    Body::DatasetVersionWithdrawn(proto::DatasetVersionWithdrawn {
        dataset_version_id: dataset_version.into(),
        reason: proto::WithdrawalReason::ConsentWithdrawn as i32,
        detail: String::new(),
    })
}

/// A catalogue of `w` made in `fresh` and closed: its directory, and its
/// fixed answers and every node, to compare against once it is reopened.
fn closed_fresh_catalogue(w: &World) -> (std::path::PathBuf, (String, String)) {
    let fresh = w.catalog("fresh");
    let expected = (fixed_answers(&fresh), every_node(&fresh));
    drop(fresh);
    (w.dir.path().join("fresh"), expected)
}

/// Lineage world plus a few thousand synthetic events and a withdrawal.
fn big_world() -> World {
    let mut w = lineage_world();
    let admin = w.admin.clone();
    let total = 3000;
    let bodies: Vec<Body> = (0..total).map(|i| sample::stream_body(i, total)).collect();
    let (sites, rest): (Vec<_>, Vec<_>) = bodies
        .into_iter()
        .enumerate()
        .partition(|(i, _)| (*i as u64) < 200);
    w.submit_as(&admin, "admin", sites.into_iter().map(|(_, b)| b).collect());
    for chunk in rest.chunks(500) {
        w.submit(chunk.iter().map(|(_, b)| b.clone()).collect());
    }
    w.submit(vec![withdrawal("ds-a@2")]);
    w
}

#[test]
fn a_rebuilt_catalogue_answers_exactly_like_the_live_one() {
    let w = big_world();
    let live = w.catalog("live");
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(live.applied().unwrap(), w.ledger.size());
    assert_eq!(rebuilt.applied().unwrap(), w.ledger.size());
    assert_eq!(fixed_answers(&live), fixed_answers(&rebuilt));
}

#[test]
fn a_restart_in_the_middle_of_projection_ends_in_the_same_state() {
    let w = big_world();
    let straight = w.catalog("straight");
    let dir = w.dir.path().join("interrupted");
    {
        let c = Catalog::open(&dir).unwrap();
        // Apply part of the ledger, then "crash" (drop without finishing).
        let half = w.ledger.size() / 2;
        let leaves: Vec<Vec<u8>> = (0..half).map(|i| w.ledger.leaf(i).unwrap()).collect();
        c.apply(0, &leaves).unwrap();
        // Re-applying an overlapping range is harmless.
        c.apply(half - 10, &leaves[(half - 10) as usize..]).unwrap();
        assert_eq!(c.applied().unwrap(), half);
    }
    let resumed = Catalog::open(&dir).unwrap();
    resumed.catch_up(&w.ledger, &|_, _| {}).unwrap();
    let (a, b) = (fixed_answers(&straight), fixed_answers(&resumed));
    assert!(a == b, "answers differ after a restart");
}

#[test]
fn a_person_is_found_by_name_and_a_scanner_by_maker_and_model() {
    let mut w = search_world();
    let okafor = ProducerKey::generate("okafor").unwrap();
    w.admin_submit(vec![sample::principal(
        "dr-okafor",
        &okafor,
        &[Role::Ingest],
    )]);
    let r = w.submit_as(
        &okafor,
        "dr-okafor",
        vec![
            dataset(
                "ds-9",
                "site-a",
                "Knee MRI",
                "Knee cartilage.",
                proto::AccessLevel::Open,
                &[],
            ),
            version(
                "ds-9",
                "1",
                &[],
                "MR",
                "SIEMENS",
                (3.0, 3.0),
                ("20230101", "20231231"),
                40,
            ),
        ],
    );
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let c = w.catalog("catalog");
    assert_eq!(hits(&c, text("okafor")), vec!["dataset-version/ds-9@1"]);
    let r = c.search(&text("")).unwrap();
    assert_eq!(
        r.facets["manufacturer_model"],
        vec![
            ("SIEMENS X".to_string(), 3),
            ("GE MEDICAL SYSTEMS X".to_string(), 1),
            ("Philips X".to_string(), 1)
        ]
    );
    let mut req = text("");
    req.filters
        .insert("manufacturer_model".into(), vec!["philips x".into()]);
    assert_eq!(hits(&c, req), vec!["dataset-version/ds-3@1"]);
}

#[test]
fn a_search_answers_the_same_with_its_facets_counted_by_tantivys_terms_aggregations() {
    let mut w = search_world();
    // A version scanned on two models of one maker counts once for it.
    let Body::DatasetVersionPublished(mut two) = version(
        "ds-1",
        "2",
        &["ds-1@1"],
        "CT",
        "SIEMENS",
        (1.0, 1.0),
        ("20220101", "20221231"),
        10,
    ) else {
        unreachable!()
    };
    if let Some(summary) = two.imaging_summary.as_mut() {
        summary.manufacturers.push(proto::ManufacturerModel {
            manufacturer: "SIEMENS".into(),
            manufacturer_model_name: "Y".into(),
        });
    }
    w.submit(vec![Body::DatasetVersionPublished(two)]);
    let c = w.catalog("catalog");
    let mut filtered = text("");
    filtered
        .filters
        .insert("modality".into(), vec!["CT".into()]);
    let mut granted = text("chest");
    granted.visibility = Visibility {
        all: false,
        granted_datasets: vec!["ds-2".into()],
    };
    for req in [
        text(""),
        text("chest"),
        filtered,
        granted,
        text("nothing-matches-this"),
    ] {
        let ours = c.search(&req).unwrap();
        let peer = c.search_by_aggregation(&req).unwrap();
        assert_eq!(ours, peer, "{:?}", req.text);
        assert_eq!(peer.facets.len(), FACETS.len());
    }
    let all = c.search(&text("")).unwrap();
    assert_eq!(
        all.facets["manufacturer"][0],
        ("SIEMENS".to_string(), 3),
        "each result once: {:?}",
        all.facets["manufacturer"]
    );
}

/// The catalogue's sled database in `dir`, opened as the catalogue does
/// (waiting for a just-closed handle's lock).
fn open_sled(dir: &std::path::Path) -> sled::Db {
    clew_ledger::store::open_sled(&sled::Config::new().path(dir.join("catalog.db"))).unwrap()
}

/// Rewrites a catalogue's node records (`n` subject) and history entries
/// (`h` subject 0 leaf) as the JSON objects formats 1 and 2 stored, its
/// walk records one to a value, and sets its format marker to `marker`
/// (format 1 had none).
fn rewrite_records_as_json(dir: &std::path::Path, marker: Option<u8>) {
    // Those formats kept one walk record a value.
    rewrite_walks_as_format_4(dir);
    let (nodes, entries): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
        let db = open_sled(dir);
        let tree = db.open_tree("catalog").unwrap();
        let keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            tree.scan_prefix(prefix)
                .keys()
                .map(|k| k.unwrap().to_vec())
                .collect()
        };
        (keys(b"n"), keys(b"h"))
    };
    let mut batch = sled::Batch::default();
    {
        let c = Catalog::open(dir).unwrap();
        for k in &nodes {
            let node = c
                .node(std::str::from_utf8(&k[1..]).unwrap())
                .unwrap()
                .unwrap();
            batch.insert(k.clone(), serde_json::to_vec(&node).unwrap());
        }
        for k in &entries {
            let (subject, leaf) = k[1..].split_at(k.len() - 10);
            let leaf = u64::from_be_bytes(leaf[1..].try_into().unwrap());
            let entry = c
                .history(std::str::from_utf8(subject).unwrap())
                .unwrap()
                .into_iter()
                .find(|e| e.leaf == leaf)
                .unwrap();
            batch.insert(k.clone(), serde_json::to_vec(&entry).unwrap());
        }
    }
    match marker {
        Some(m) => batch.insert(&b"mformat"[..], &[m]),
        None => batch.remove(&b"mformat"[..]),
    }
    let db = open_sled(dir);
    db.open_tree("catalog").unwrap().apply_batch(batch).unwrap();
    db.flush().unwrap();
    assert!(
        nodes.len() > 3000 && !entries.is_empty(),
        "{} nodes, {} history entries",
        nodes.len(),
        entries.len()
    );
}

/// Every node of the catalogue, as JSON, by type.
fn every_node(c: &Catalog) -> String {
    clew_catalog::NODE_TYPES
        .iter()
        .map(|t| serde_json::to_string(&c.nodes_of_type(t).unwrap()).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites a catalogue's state into format 1, the layout of every
/// catalogue made before walk records: records as JSON, each edge kept a
/// second time under its target (`i` to 0 relation-code from →
/// `{"created_leaf":…,"role":…}`), no walk records (`w…`), no format marker.
fn rewrite_as_format_1(dir: &std::path::Path) {
    rewrite_records_as_json(dir, None);
    let db = open_sled(dir);
    let tree = db.open_tree("catalog").unwrap();
    let mut batch = sled::Batch::default();
    let mut edges = 0;
    for item in tree.scan_prefix(b"n") {
        let (_, v) = item.unwrap();
        let node: clew_catalog::NodeRecord = serde_json::from_slice(&v).unwrap();
        for e in &node.out {
            let mut k = vec![b'i'];
            k.extend_from_slice(e.to.as_bytes());
            k.push(0);
            k.push(e.relation as u8);
            k.extend_from_slice(node.subject().as_bytes());
            let mut record = serde_json::json!({ "created_leaf": e.created_leaf });
            if let Some(role) = &e.role {
                record["role"] = role.clone().into();
            }
            batch.insert(k, serde_json::to_vec(&record).unwrap());
            edges += 1;
        }
    }
    let mut walks = 0;
    for item in tree.scan_prefix(b"w") {
        batch.remove(item.unwrap().0);
        walks += 1;
    }
    batch.remove(&b"mformat"[..]);
    tree.apply_batch(batch).unwrap();
    db.flush().unwrap();
    assert!(
        edges > 3000 && walks > 3000,
        "{edges} edges, {walks} walk records"
    );
}

/// Records version 9 of ds-a, derived from ds-a@1.
fn add_ds_a_9(w: &mut World) {
    w.submit(vec![version(
        "ds-a",
        "9",
        &["ds-a@1"],
        "CT",
        "SIEMENS",
        (1.0, 1.0),
        ("20200101", "20201231"),
        5,
    )]);
}

#[test]
fn a_catalogue_of_format_1_is_upgraded_on_open_and_answers_as_before() {
    let mut w = big_world();
    let fresh = w.catalog("fresh");
    let expected = fixed_answers(&fresh);
    drop(fresh);
    let dir = w.dir.path().join("fresh");
    rewrite_as_format_1(&dir);

    let upgraded = Catalog::open(&dir).unwrap();
    assert_eq!(fixed_answers(&upgraded), expected);
    drop(upgraded);
    {
        let db = open_sled(&dir);
        let tree = db.open_tree("catalog").unwrap();
        assert_eq!(
            tree.scan_prefix(b"i").count(),
            0,
            "format 1's in-edge keys remain"
        );
        assert!(tree.scan_prefix(b"w").count() > 3000);
        assert_eq!(tree.get(b"mformat").unwrap().as_deref(), Some(&[6u8][..]));
    }

    // It goes on projecting after the upgrade, and walks see the new edges.
    add_ds_a_9(&mut w);
    let reopened = w.catalog("fresh");
    let down = reopened
        .lineage("dataset-version/ds-a@1", Direction::Downstream, 1, None)
        .unwrap();
    assert!(subjects(&down).contains("dataset-version/ds-a@9"));
    assert_eq!(
        fixed_answers(&reopened),
        fixed_answers(
            &Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap()
        )
    );
}

#[test]
fn a_catalogue_of_format_2_is_read_as_it_is_and_its_records_rewritten_as_they_change() {
    let mut w = big_world();
    let (dir, expected) = closed_fresh_catalogue(&w);
    rewrite_records_as_json(&dir, Some(2));

    let json_records = || {
        let db = open_sled(&dir);
        let tree = db.open_tree("catalog").unwrap();
        let n = tree
            .scan_prefix(b"n")
            .values()
            .filter(|v| v.as_ref().unwrap().first() == Some(&b'{'))
            .count();
        (n, tree.get(b"mformat").unwrap().map(|v| v.to_vec()))
    };
    let before = json_records().0;
    let opened = Catalog::open(&dir).unwrap();
    assert_eq!((fixed_answers(&opened), every_node(&opened)), expected);
    drop(opened);
    let (after_open, marker) = json_records();
    assert_eq!(after_open, before, "opening rewrites nothing");
    assert_eq!(marker, Some(vec![6u8]));

    // A new version (a new record) and a withdrawal of ds-a@1, which
    // changes ds-a@1 and marks what depends on it: those are stored anew.
    add_ds_a_9(&mut w);
    w.submit(vec![withdrawal("ds-a@1")]);
    let reopened = w.catalog("fresh");
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(
        (fixed_answers(&reopened), every_node(&reopened)),
        (fixed_answers(&rebuilt), every_node(&rebuilt))
    );
    drop(reopened);
    let (after_change, _) = json_records();
    assert!(
        after_change < before,
        "{after_change} JSON node records of {before} after a change"
    );
    assert_eq!(
        stored_node(&dir, "dataset-version/ds-a@1")[0],
        4,
        "a changed record is stored compressed"
    );
}

/// The stored value of `subject`'s node record.
fn stored_node(dir: &std::path::Path, subject: &str) -> Vec<u8> {
    let key = [b"n", subject.as_bytes()].concat();
    let db = open_sled(dir);
    let value = db.open_tree("catalog").unwrap().get(key).unwrap();
    value.expect("a node record").to_vec()
}

/// Subjects whose walk records mark them ended or affected (flag 2 of the
/// first byte).
fn marked_subjects(dir: &std::path::Path) -> BTreeSet<String> {
    let db = open_sled(dir);
    let tree = db.open_tree("catalog").unwrap();
    walk_records(&tree)
        .0
        .into_iter()
        .filter(|(_, v)| v[0] & 2 != 0)
        .map(|(k, _)| String::from_utf8(k[9..].to_vec()).unwrap())
        .collect()
}

/// The format marker a catalogue's state carries.
fn format_marker(dir: &std::path::Path) -> Option<Vec<u8>> {
    let db = open_sled(dir);
    let marker = db.open_tree("catalog").unwrap().get(b"mformat").unwrap();
    marker.map(|v| v.to_vec())
}

/// A sled key and its value.
type KeyValue = (Vec<u8>, Vec<u8>);

/// Every walk record a catalogue stores, as `(key, value)` of a single
/// record (formats 2–4): a group's records (format 5: first byte 0x80, then
/// per record its key and its value, each a LEB128 length and the bytes)
/// taken apart, a single record as it is; and the keys they were read from.
fn walk_records(tree: &sled::Tree) -> (Vec<KeyValue>, Vec<Vec<u8>>) {
    fn take(b: &[u8]) -> (&[u8], &[u8]) {
        let (mut n, mut at) = (0usize, 0);
        loop {
            let byte = b[at];
            n |= usize::from(byte & 0x7f) << (7 * at);
            at += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        b[at..].split_at(n)
    }
    let mut records = Vec::new();
    let mut stored = Vec::new();
    for item in tree.scan_prefix(b"w") {
        let (k, v) = item.unwrap();
        stored.push(k.to_vec());
        if v[0] != 0x80 {
            records.push((k.to_vec(), v.to_vec()));
            continue;
        }
        let mut rest = &v[1..];
        while !rest.is_empty() {
            let (key, after) = take(rest);
            let (value, after) = take(after);
            records.push((key.to_vec(), value.to_vec()));
            rest = after;
        }
    }
    (records, stored)
}

/// Rewrites a catalogue's walk records as format 4 kept them, one sled
/// value a record under its own key, with the marker 4; returns how many
/// groups it took apart.
fn rewrite_walks_as_format_4(dir: &std::path::Path) -> usize {
    // Formats up to 5 had no dictionary.
    rewrite_nodes_without_dictionary(dir);
    let db = open_sled(dir);
    let tree = db.open_tree("catalog").unwrap();
    let (records, stored) = walk_records(&tree);
    let groups = stored.len();
    let mut batch = sled::Batch::default();
    for k in stored {
        batch.remove(k);
    }
    for (k, v) in records {
        batch.insert(k, v);
    }
    batch.insert(&b"mformat"[..], &[4u8]);
    tree.apply_batch(batch).unwrap();
    db.flush().unwrap();
    groups
}

/// Every stored node record's value, in key order.
fn node_values(dir: &std::path::Path) -> Vec<sled::IVec> {
    open_sled(dir)
        .open_tree("catalog")
        .unwrap()
        .scan_prefix(b"n")
        .values()
        .map(|v| v.unwrap())
        .collect()
}

/// Rewrites every node record compressed with one of the catalogue's
/// dictionaries (first byte 5) as a frame of its own (first byte 4), as
/// formats 4 and 5 kept them, and removes the dictionaries; returns how many
/// records it rewrote.
fn rewrite_nodes_without_dictionary(dir: &std::path::Path) -> usize {
    let db = open_sled(dir);
    let tree = db.open_tree("catalog").unwrap();
    let mut by_id = std::collections::HashMap::new();
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(b"mnode-dictionary/") {
        let (k, dictionary) = item.unwrap();
        let id = zstd::zstd_safe::get_dict_id_from_dict(&dictionary).unwrap();
        by_id.insert(id, dictionary.to_vec());
        batch.remove(k);
    }
    let mut rewritten = 0;
    for item in tree.scan_prefix(b"n") {
        let (k, v) = item.unwrap();
        if v[0] == 5 {
            let id = zstd::zstd_safe::get_dict_id_from_frame(&v[1..]).unwrap();
            let message = zstd::bulk::Decompressor::with_dictionary(&by_id[&id])
                .unwrap()
                .decompress(&v[1..], 1 << 20)
                .unwrap();
            let mut own = vec![4u8];
            own.extend(zstd::bulk::compress(&message, 1).unwrap());
            batch.insert(k, own);
            rewritten += 1;
        }
    }
    tree.apply_batch(batch).unwrap();
    db.flush().unwrap();
    rewritten
}

/// Rewrites a catalogue as format 3 kept it: every compressed node record
/// (first byte 4: a zstd frame) uncompressed (first byte 3, then the
/// message), no walk record marking what is ended or affected, the marker
/// 3; returns how many node records it rewrote.
fn rewrite_records_as_format_3(dir: &std::path::Path) -> usize {
    rewrite_walks_as_format_4(dir);
    let db = open_sled(dir);
    let tree = db.open_tree("catalog").unwrap();
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(b"w") {
        let (k, v) = item.unwrap();
        if v[0] & 2 != 0 {
            if v[0] == 2 && v.len() == 1 {
                batch.remove(k);
            } else {
                let mut unmarked = v.to_vec();
                unmarked[0] &= !2;
                batch.insert(k, unmarked);
            }
        }
    }
    let mut rewritten = 0;
    for item in tree.scan_prefix(b"n") {
        let (k, v) = item.unwrap();
        if v[0] == 4 {
            let mut plain = vec![3u8];
            plain.extend(zstd::stream::decode_all(&v[1..]).unwrap());
            batch.insert(k, plain);
            rewritten += 1;
        }
    }
    batch.insert(&b"mformat"[..], &[3u8]);
    tree.apply_batch(batch).unwrap();
    db.flush().unwrap();
    rewritten
}

#[test]
fn a_catalogue_of_format_3_is_read_as_it_is_and_its_records_compressed_as_they_change() {
    let mut w = big_world();
    let (dir, expected) = closed_fresh_catalogue(&w);
    // Format 5 as it was: each compressed record a frame of its own.
    rewrite_nodes_without_dictionary(&dir);
    let node_bytes = || -> (usize, usize, usize) {
        let values = node_values(&dir);
        (
            values.iter().map(|v| v.len()).sum(),
            values.iter().filter(|v| v[0] == 3).count(),
            values.iter().filter(|v| v[0] == 4).count(),
        )
    };
    let (compressed_bytes, _, compressed) = node_bytes();
    assert!(compressed > 1000, "{compressed} node records compressed");
    let marked = marked_subjects(&dir);
    assert!(
        marked.contains("dataset-version/ds-a@2") && marked.len() > 1,
        "{marked:?}"
    );
    let rewritten = rewrite_records_as_format_3(&dir);
    assert_eq!(rewritten, compressed);
    assert!(marked_subjects(&dir).is_empty());
    let (plain_bytes, plain, none) = node_bytes();
    assert_eq!(none, 0);
    assert!(
        compressed_bytes * 10 < plain_bytes * 9,
        "compressed node records take {compressed_bytes} bytes, uncompressed {plain_bytes}"
    );

    let opened = Catalog::open(&dir).unwrap();
    assert_eq!((fixed_answers(&opened), every_node(&opened)), expected);
    // An affected version, to derive a new one from below.
    let affected = opened
        .nodes_of_type("dataset-version")
        .unwrap()
        .into_iter()
        .find(|n| !n.affected_by.is_empty() && n.ended_leaf.is_none())
        .expect("a dataset version downstream of ds-a@2");
    drop(opened);
    assert_eq!(node_bytes().1, plain, "opening rewrites no node record");
    assert_eq!(
        marked_subjects(&dir),
        marked,
        "opening marks what is ended or affected"
    );
    assert_eq!(format_marker(&dir), Some(vec![6u8]));

    // A withdrawal changes ds-a@1 and what depends on it: those are stored
    // compressed, and the catalogue answers as one rebuilt from the ledger.
    // A version derived from the affected one, in a batch of its own, is
    // affected too: the mark made on open is what has it read.
    w.submit(vec![withdrawal("ds-a@1")]);
    let (ds, _) = affected.id.split_once('@').unwrap();
    w.submit(vec![version(
        ds,
        "77",
        &[affected.id.as_str()],
        "CT",
        "SIEMENS",
        (1.0, 1.0),
        ("20200101", "20201231"),
        5,
    )]);
    let reopened = w.catalog("fresh");
    let derived = reopened
        .node(&format!("dataset-version/{ds}@77"))
        .unwrap()
        .expect("the derived version");
    let upstream = reopened.node(&affected.subject()).unwrap().unwrap();
    assert!(upstream.affected_by.len() >= affected.affected_by.len());
    let set = |a: &[clew_catalog::Affect]| a.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(set(&derived.affected_by), set(&upstream.affected_by));
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(
        (fixed_answers(&reopened), every_node(&reopened)),
        (fixed_answers(&rebuilt), every_node(&rebuilt))
    );
    drop(reopened);
    assert_eq!(
        stored_node(&dir, "dataset-version/ds-a@1")[0],
        4,
        "a changed record is stored compressed"
    );
    assert!(
        node_bytes().1 < plain,
        "changed records are still uncompressed"
    );
}

#[test]
fn a_catalogue_of_format_4_reads_its_single_walk_records_and_groups_new_ones() {
    let mut w = big_world();
    let (dir, expected) = closed_fresh_catalogue(&w);
    let count = |dir: &std::path::Path| {
        let db = open_sled(dir);
        let tree = db.open_tree("catalog").unwrap();
        let (records, stored) = walk_records(&tree);
        (records, stored.len())
    };
    let (records, groups) = count(&dir);
    assert!(
        records.len() > 3000 && groups * 20 < records.len(),
        "{} walk records stored as {groups} values",
        records.len()
    );
    assert_eq!(rewrite_walks_as_format_4(&dir), groups);
    let (singles, stored) = count(&dir);
    assert_eq!((&singles, stored), (&records, records.len()));

    let opened = Catalog::open(&dir).unwrap();
    assert_eq!((fixed_answers(&opened), every_node(&opened)), expected);
    drop(opened);
    assert_eq!(
        count(&dir),
        (records.clone(), records.len()),
        "opening rewrites no walk record"
    );

    // New records go into groups beside the single ones, and the walks see
    // both.
    add_ds_a_9(&mut w);
    w.submit(vec![withdrawal("ds-a@1")]);
    let reopened = w.catalog("fresh");
    let down = reopened
        .lineage("dataset-version/ds-a@1", Direction::Downstream, 1, None)
        .unwrap();
    assert!(subjects(&down).contains("dataset-version/ds-a@9"));
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(
        (fixed_answers(&reopened), every_node(&reopened)),
        (fixed_answers(&rebuilt), every_node(&rebuilt))
    );
    drop(reopened);
    let (after, _) = count(&dir);
    assert!(after.len() > records.len());
    let groups = open_sled(&dir)
        .open_tree("catalog")
        .unwrap()
        .scan_prefix(b"w")
        .values()
        .filter(|v| v.as_ref().unwrap()[0] == 0x80)
        .count();
    assert!(groups >= 1, "the new walk records are not grouped");
    assert_eq!(format_marker(&dir), Some(vec![6u8]));
    // Opened afresh, the graph loaded from singles and groups walks alike.
    drop(rebuilt);
    let again = Catalog::open(&dir).unwrap();
    let rebuilt = Catalog::open(&w.dir.path().join("rebuilt")).unwrap();
    assert_eq!(fixed_answers(&again), fixed_answers(&rebuilt));
}

#[test]
fn a_catalogue_of_an_unknown_format_is_refused_with_what_to_do() {
    let w = lineage_world();
    drop(w.catalog("c"));
    let dir = w.dir.path().join("c");
    {
        let db = open_sled(&dir);
        db.open_tree("catalog")
            .unwrap()
            .insert(b"mformat", &[9u8])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Catalog::open(&dir).unwrap_err().to_string();
    assert!(
        err.contains("format") && err.contains("clew reindex"),
        "{err}"
    );
}

#[test]
fn a_node_the_gate_refuses_is_neither_shown_nor_crossed() {
    let w = lineage_world();
    let c = w.catalog("c");
    let hide = |s: &str| s != "dataset-version/ds-a@2";
    let gate = clew_catalog::Admit::Only(&hide);
    let all = c
        .lineage("dataset-version/ds-a@1", Direction::Downstream, 10, None)
        .unwrap();
    assert!(subjects(&all).contains("dataset-version/ds-a@3"));
    let gated = c
        .lineage_within(
            "dataset-version/ds-a@1",
            Direction::Downstream,
            10,
            None,
            gate,
        )
        .unwrap();
    // ds-a@3 and everything after it is reached only through ds-a@2.
    assert_eq!(
        subjects(&gated),
        set(&["dataset-version/ds-a@1", "transform/tf-deid"])
    );
    assert!(gated
        .edges
        .iter()
        .all(|e| e.from != "dataset-version/ds-a@2" && e.to != "dataset-version/ds-a@2"));
    // Keeping only parents reaches the same nodes, with no edge list.
    for (kept, edges) in [(KeptEdges::All, 1), (KeptEdges::Parents, 0)] {
        let reach = c
            .reach(
                "dataset-version/ds-a@1",
                Direction::Downstream,
                10,
                None,
                gate,
                kept,
            )
            .unwrap();
        assert_eq!((reach.len(), reach.edge_count()), (2, edges), "{kept:?}");
    }
    // Refused as a start: exactly as if it did not exist.
    let hidden = c
        .lineage_within("dataset-version/ds-a@2", Direction::Upstream, 1, None, gate)
        .unwrap_err()
        .to_string();
    let absent = c
        .lineage("dataset-version/ds-a@99", Direction::Upstream, 1, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        hidden.replace("ds-a@2", "X"),
        absent.replace("ds-a@99", "X")
    );
    assert!(c
        .impact_within("dataset-version/ds-a@2", None, gate)
        .is_err());
}

#[test]
fn the_access_epoch_moves_with_grants_and_registrations_not_with_lineage() {
    let mut w = World::new();
    two_sites(&mut w);
    let c = w.catalog("c");
    let catch_up = |w: &World, c: &Catalog| {
        c.catch_up(&w.ledger, &|_, _| {}).unwrap();
        c.access_epoch()
    };
    let before = c.access_epoch();
    // Lineage only: a dataset and its version change nobody's access.
    w.submit(vec![dataset(
        "ds-e",
        "site-a",
        "Epoch CT",
        "chest CT",
        proto::AccessLevel::Restricted,
        &[],
    )]);
    assert_eq!(catch_up(&w, &c), before, "a dataset registration");
    // A person and a grant each do, once applied.
    let rita = ProducerKey::generate("rita").unwrap();
    w.admin_submit(vec![sample::principal("rita", &rita, &[Role::Researcher])]);
    let registered = catch_up(&w, &c);
    assert_ne!(registered, before, "a principal registration");
    w.admin_submit(vec![Body::AccessGranted(proto::AccessGranted {
        grant_id: "grant-e".into(),
        grantee: Some(proto::access_granted::Grantee::PrincipalId("rita".into())),
        dataset_id: "ds-e".into(),
        purpose: "audit".into(),
        expires_at: None,
        request_id: String::new(),
        conditions: vec![],
        dataset_version_ids: vec![],
    })]);
    assert_eq!(c.access_epoch(), registered, "not before it is applied");
    let granted = catch_up(&w, &c);
    assert_ne!(granted, registered, "a grant");
    let held = c.grants_held_by("principal:rita", i64::MAX / 2).unwrap();
    assert_eq!(held.len(), 1, "the grant is readable once the epoch moved");
}

#[test]
fn a_catalogue_trains_a_dictionary_for_its_node_records_and_reads_them_after_reopening() {
    let mut w = big_world();
    let (dir, expected) = closed_fresh_catalogue(&w);
    let node_bytes = || -> (usize, usize, usize) {
        let values = node_values(&dir);
        let dictionaries = open_sled(&dir)
            .open_tree("catalog")
            .unwrap()
            .scan_prefix(b"mnode-dictionary/")
            .count();
        (
            values.iter().map(|v| v.len()).sum(),
            values.iter().filter(|v| v[0] == 5).count(),
            dictionaries,
        )
    };
    // The first chunk held thousands of dataset versions: a dictionary was
    // trained from them and stored, and they are made with it.
    let (with_bytes, with_dictionary, stored) = node_bytes();
    assert!(stored >= 1, "no dictionary stored");
    assert!(
        with_dictionary > 2000,
        "{with_dictionary} records made with the dictionary"
    );
    assert_eq!(format_marker(&dir), Some(vec![6u8]));
    let reopened = Catalog::open(&dir).unwrap();
    assert_eq!((fixed_answers(&reopened), every_node(&reopened)), expected);
    drop(reopened);

    // The same records as format 5 kept them, each a frame of its own,
    // take more than twice the bytes.
    assert_eq!(rewrite_nodes_without_dictionary(&dir), with_dictionary);
    let (own_bytes, none, stored) = node_bytes();
    assert_eq!((none, stored), (0, 0));
    assert!(
        with_bytes * 2 < own_bytes,
        "with the dictionary {with_bytes} bytes, without {own_bytes}"
    );
    // A catalogue of format 5 opens as it is and answers as before; its
    // marker moves to 6, and what it records next reads back.
    let db = open_sled(&dir);
    db.open_tree("catalog")
        .unwrap()
        .insert(b"mformat", &[5u8])
        .unwrap();
    db.flush().unwrap();
    drop(db);
    let opened = Catalog::open(&dir).unwrap();
    assert_eq!((fixed_answers(&opened), every_node(&opened)), expected);
    add_ds_a_9(&mut w);
    opened.catch_up(&w.ledger, &|_, _| {}).unwrap();
    assert!(opened.node("dataset-version/ds-a@9").unwrap().is_some());
    drop(opened);
    assert_eq!(format_marker(&dir), Some(vec![6u8]));
    let again = Catalog::open(&dir).unwrap();
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(fixed_answers(&again), fixed_answers(&rebuilt));
    assert_eq!(every_node(&again), every_node(&rebuilt));
}

#[test]
fn a_catalogue_fed_small_chunks_trains_a_dictionary_once_they_add_up() {
    let w = big_world();
    let dir = w.dir.path().join("small-chunks");
    let live = Catalog::open(&dir).unwrap();
    let size = w.ledger.size();
    // Chunks of 100 events, as a live node's batches come: none alone holds
    // the records a dictionary is trained from.
    let mut first = 0;
    while first < size {
        let end = (first + 100).min(size);
        live.apply(first, &w.ledger.leaves(first..end).unwrap())
            .unwrap();
        first = end;
    }
    let rebuilt = Catalog::rebuild(&w.dir.path().join("rebuilt"), &w.ledger, &|_, _| {}).unwrap();
    assert_eq!(fixed_answers(&live), fixed_answers(&rebuilt));
    assert_eq!(every_node(&live), every_node(&rebuilt));
    drop(live);
    let stored = open_sled(&dir)
        .open_tree("catalog")
        .unwrap()
        .scan_prefix(b"mnode-dictionary/")
        .count();
    assert!(stored >= 1, "no dictionary trained from small chunks");
    let values = node_values(&dir);
    let with_dictionary = values.iter().filter(|v| v[0] == 5).count();
    assert!(
        with_dictionary > 500,
        "{with_dictionary} of {} records made with a dictionary",
        values.len()
    );
    // Records made before it and with it read back after reopening.
    let reopened = Catalog::open(&dir).unwrap();
    assert_eq!(every_node(&reopened), every_node(&rebuilt));
}

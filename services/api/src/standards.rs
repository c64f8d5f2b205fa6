//! The catalogue out in the vocabularies partner portals harvest:
//! DCAT-AP 3 / HealthDCAT-AP JSON-LD for the catalogue and for each dataset.
//! (W3C PROV-JSON for lineage answers lives with the lineage query in the
//! schema module, which owns the visible-lineage rules.)
//!
//! Everything is built from the catalogue as the caller may see it: a
//! dataset the viewer may not see is not in the catalogue document, and its
//! own document answers as if it did not exist.

use serde_json::{json, Value};

use clew_catalog::{Direction, NodeRecord};

use crate::access::Viewer;
use crate::ApiError;
use clew_node::Node;

/// The JSON-LD context of every DCAT document (DCAT-AP 3, HealthDCAT-AP).
pub fn dcat_context(base: &str) -> Value {
    json!({
        "dcat": "http://www.w3.org/ns/dcat#",
        "dct": "http://purl.org/dc/terms/",
        "foaf": "http://xmlns.com/foaf/0.1/",
        "vcard": "http://www.w3.org/2006/vcard/ns#",
        "prov": "http://www.w3.org/ns/prov#",
        "xsd": "http://www.w3.org/2001/XMLSchema#",
        "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
        "adms": "http://www.w3.org/ns/adms#",
        "spdx": "http://spdx.org/rdf/terms#",
        "healthdcatap": "http://healthdataportal.eu/ns/health#",
        "dcatap": "http://data.europa.eu/r5r/",
        "skos": "http://www.w3.org/2004/02/skos/core#",
        "clew": format!("{base}/ns#"),
    })
}

// DCAT-AP 3: dct:accessRights from the EU access-right authority table.
fn access_rights(level: &str) -> &'static str {
    match level {
        "ACCESS_LEVEL_OPEN" => {
            "http://publications.europa.eu/resource/authority/access-right/PUBLIC"
        }
        "ACCESS_LEVEL_RESTRICTED" => {
            "http://publications.europa.eu/resource/authority/access-right/RESTRICTED"
        }
        _ => "http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC",
    }
}

fn s(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn count(v: &Value, key: &str) -> u64 {
    // proto3 JSON writes 64-bit integers as strings.
    match v.get(key) {
        Some(Value::String(t)) => t.parse().unwrap_or(0),
        Some(n) => n.as_u64().unwrap_or(0),
        None => 0,
    }
}

/// A licence as DCAT-AP 3 wants it: an IRI of a `dct:LicenseDocument`
/// (an SPDX licence page for an SPDX identifier, else one of Clew's).
fn licence_document(base: &str, licence: &str) -> Value {
    let spdx_like = !licence.is_empty()
        && licence
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+".contains(&b));
    let iri = if spdx_like {
        format!("https://spdx.org/licenses/{licence}")
    } else {
        let slug: String = licence
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{base}/licences/{slug}")
    };
    json!({"@id": iri, "@type": "dct:LicenseDocument", "rdfs:label": licence})
}

/// What a dataset and each of its versions share: publisher, contact point,
/// keywords, theme, access rights and the HealthDCAT-AP properties.
struct Shared {
    publisher: Value,
    contact: Value,
    keywords: Value,
    access_rights: Value,
    licence: Value,
    hdab: Value,
}

/// A SKOS concept with its label (DCAT-AP 3's range for themes and types).
fn concept(iri: &str, label: &str) -> Value {
    json!({"@id": iri, "@type": "skos:Concept", "skos:prefLabel": label})
}

impl Shared {
    fn apply(&self, out: &mut Value) {
        out["dct:publisher"] = self.publisher.clone();
        out["dcat:contactPoint"] = self.contact.clone();
        out["dcat:keyword"] = self.keywords.clone();
        out["dcat:theme"] = concept(
            "http://publications.europa.eu/resource/authority/data-theme/HEAL",
            "Health",
        );
        out["dct:accessRights"] = self.access_rights.clone();
        // HealthDCAT-AP: the category (medical imaging), the legislation the
        // dataset falls under (EHDS, Regulation (EU) 2025/327), the health
        // data access body, and the dataset type.
        out["healthdcatap:healthCategory"] = concept(
            "clew:health-category/medical-imaging",
            "Medical imaging data",
        );
        out["dcatap:applicableLegislation"] = json!({
            "@id": "http://data.europa.eu/eli/reg/2025/327/oj",
            "@type": "http://data.europa.eu/eli/ontology#LegalResource",
        });
        out["healthdcatap:hdab"] = self.hdab.clone();
        out["dct:type"] = concept(
            "clew:dataset-type/dicom-imaging",
            "DICOM imaging collection",
        );
    }
}

fn version_resource(
    base: &str,
    dataset_iri: &str,
    v: &NodeRecord,
    viewer: &Viewer,
    catalog: &clew_catalog::Catalog,
    shared: &Shared,
) -> Value {
    let a = v.attributes();
    let id = &v.id;
    let iri = format!("{base}/dataset-versions/{id}");
    let summary = a.get("imagingSummary").cloned().unwrap_or(Value::Null);
    let mut out = json!({
        "@id": iri,
        "@type": "dcat:Dataset",
        "dct:identifier": id,
        "dcat:version": s(&a, "version"),
        "dcat:isVersionOf": {"@id": dataset_iri},
        "dct:title": v.label,
        "dct:description": s(&a, "releaseNotes"),
        "dct:issued": {"@value": v.created_by.time, "@type": "xsd:dateTime"},
        "dcat:distribution": {
            "@id": format!("{iri}/manifest"),
            "@type": "dcat:Distribution",
            "dcat:accessURL": {"@id": format!("{iri}/manifest")},
            "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/application/json", "@type": "dct:MediaType"},
            // DCAT-AP 3 §Distribution.format: a dct:MediaTypeOrExtent from the EU file-type table.
            "dct:format": {"@id": "http://publications.europa.eu/resource/authority/file-type/JSON", "@type": "dct:MediaTypeOrExtent"},
            "clew:manifestFormat": "clew.dicom-series-manifest/1",
            "dct:license": shared.licence.clone(),
            // SPDX 2.3 Checksum: checksumValue is an xsd:hexBinary.
            "spdx:checksum": {
                "@type": "spdx:Checksum",
                "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
                "spdx:checksumValue": {
                    "@value": s(&a, "manifestDigest").trim_start_matches("sha256:"),
                    "@type": "xsd:hexBinary",
                },
            },
        },
        // DCAT-AP 3 provenance: the ledger leaf that recorded the version.
        "dct:provenance": {
            "@type": "dct:ProvenanceStatement",
            "rdfs:label": format!(
                "Published by {} as leaf {} of the Clew ledger (event {}); its inclusion proof is at {base}/receipt/{}",
                v.created_by.actor, v.created_by.leaf, v.created_by.event_id, v.created_by.leaf
            ),
        },
        "clew:leafIndex": v.created_by.leaf,
        "clew:manifestDigest": s(&a, "manifestDigest"),
        // Only the versions the viewer may see: a hidden one is not named.
        "prov:wasDerivedFrom": a.get("wasDerivedFrom").and_then(Value::as_array).map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .filter(|x| viewer.subject_visible(catalog, &format!("dataset-version/{x}")))
                .map(|x| json!({"@id": format!("{base}/dataset-versions/{x}")}))
                .collect::<Vec<_>>()
        }).unwrap_or_default(),
    });
    shared.apply(&mut out);
    if v.ended_leaf.is_some() {
        out["adms:status"] = json!({"@id": "http://purl.org/adms/status/Withdrawn"});
        out["clew:withdrawnAtLeaf"] = json!(v.ended_leaf);
    }
    if summary.is_object() {
        let strings = |k: &str| -> Vec<Value> {
            summary
                .get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        // HealthDCAT-AP: records (instances) and unique individuals (patients).
        out["healthdcatap:numberOfRecords"] = json!({"@value": count(&summary, "numberOfInstances"), "@type": "xsd:nonNegativeInteger"});
        out["healthdcatap:numberOfUniqueIndividuals"] = json!({"@value": count(&summary, "numberOfPatients"), "@type": "xsd:nonNegativeInteger"});
        out["clew:numberOfStudies"] = json!(count(&summary, "numberOfStudies"));
        out["clew:numberOfSeries"] = json!(count(&summary, "numberOfSeries"));
        out["clew:modality"] = json!(strings("modalities"));
        out["clew:bodyPartExamined"] = json!(strings("bodyPartsExamined"));
        out["clew:manufacturerModel"] = json!(strings("manufacturers")
            .iter()
            .map(
                |m| format!("{} {}", s(m, "manufacturer"), s(m, "manufacturerModelName"))
                    .trim()
                    .to_string()
            )
            .collect::<Vec<_>>());
        out["clew:deidentificationMethod"] = json!(strings("deidentificationMethods")
            .iter()
            .map(|c| format!("{} {}", s(c, "codeValue"), s(c, "codeMeaning")))
            .collect::<Vec<_>>());
        out["clew:patientIdentityRemoved"] = json!(summary
            .get("patientIdentityRemoved")
            .and_then(Value::as_bool)
            .unwrap_or(false));
        if let (Some(lo), Some(hi)) = (
            summary.get("sliceThicknessMinMm").and_then(Value::as_f64),
            summary.get("sliceThicknessMaxMm").and_then(Value::as_f64),
        ) {
            out["clew:sliceThicknessMinMm"] = json!(lo);
            out["clew:sliceThicknessMaxMm"] = json!(hi);
        }
        let (from, to) = (s(&summary, "studyDateFrom"), s(&summary, "studyDateTo"));
        if from.len() == 8 && to.len() == 8 {
            let date = |d: &str| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]);
            out["dct:temporal"] = json!({
                "@type": "dct:PeriodOfTime",
                "dcat:startDate": {"@value": date(&from), "@type": "xsd:date"},
                "dcat:endDate": {"@value": date(&to), "@type": "xsd:date"},
            });
        }
    }
    out
}

/// One dataset and its versions, as DCAT-AP 3 / HealthDCAT-AP JSON-LD (no context).
fn dataset_resource(
    node: &Node,
    viewer: &Viewer,
    base: &str,
    ds: &NodeRecord,
) -> Result<Value, ApiError> {
    let catalog = node.catalog();
    let a = ds.attributes();
    let iri = format!("{base}/datasets/{}", ds.id);
    let site_id = s(&a, "custodianSiteId");
    let site = catalog.node(&format!("site/{site_id}"))?;
    let site_name = site
        .as_ref()
        .map(|n| n.label.clone())
        .unwrap_or_else(|| site_id.clone());
    let publisher = json!({
        "@id": format!("{base}/sites/{site_id}"),
        "@type": "foaf:Agent",
        "foaf:name": site_name,
        "dct:identifier": site_id,
    });
    let shared = Shared {
        publisher: publisher.clone(),
        contact: json!({
            "@id": format!("{base}/sites/{site_id}#custodian"),
            "@type": ["vcard:Organization", "vcard:Kind"],
            "vcard:fn": format!("Data custodian, {site_name}"),
            "vcard:hasURL": {"@id": format!("{base}/sites/{site_id}")},
        }),
        keywords: a.get("tags").cloned().unwrap_or(json!([])),
        access_rights: json!({"@id": access_rights(&s(&a, "accessLevel")), "@type": "dct:RightsStatement"}),
        licence: licence_document(base, &s(&a, "licence")),
        // The platform's governance decides access: it is the access body.
        hdab: json!({
            "@id": format!("{base}/catalog#access-body"),
            "@type": "foaf:Agent",
            "foaf:name": format!("Data access governance of {}", node.ledger().origin()),
        }),
    };
    let versions = catalog
        .lineage(&ds.subject(), Direction::Downstream, 1, None)?
        .nodes
        .into_iter()
        .filter(|n| n.node_type == "dataset-version" && viewer.subject_visible(catalog, &n.subject))
        .map(|n| catalog.node(&n.subject))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    let latest = versions.iter().max_by_key(|v| v.created_leaf);
    let records: u64 = latest
        .map(|v| {
            count(
                v.attributes().get("imagingSummary").unwrap_or(&Value::Null),
                "numberOfInstances",
            )
        })
        .unwrap_or(0);
    let mut out = json!({
        "@id": iri,
        "@type": "dcat:Dataset",
        "dct:identifier": ds.id,
        "dct:title": s(&a, "title"),
        "dct:description": s(&a, "description"),
        "dcat:version": latest.map(|v| s(&v.attributes(), "version")).unwrap_or_default(),
        "dct:issued": {"@value": ds.created_by.time, "@type": "xsd:dateTime"},
        "healthdcatap:numberOfRecords": {"@value": records, "@type": "xsd:nonNegativeInteger"},
        "dct:provenance": {
            "@type": "dct:ProvenanceStatement",
            "rdfs:label": format!(
                "Registered by {} as leaf {} of the Clew ledger (event {})",
                ds.created_by.actor, ds.created_by.leaf, ds.created_by.event_id
            ),
        },
        "clew:leafIndex": ds.created_by.leaf,
        // The latest version's distribution, by reference: it is described
        // once, under its version (one checksum per distribution).
        "dcat:distribution": latest.map(|v| json!({"@id": format!("{base}/dataset-versions/{}/manifest", v.id)})),
        "dcat:hasVersion": versions.iter().map(|v| version_resource(base, &iri, v, viewer, catalog, &shared)).collect::<Vec<_>>(),
    });
    shared.apply(&mut out);
    Ok(out)
}

/// The catalogue as the viewer may see it.
pub fn dcat_catalog(node: &Node, viewer: &Viewer, base: &str) -> Result<Value, ApiError> {
    let catalog = node.catalog();
    let datasets = catalog
        .nodes_of_type("dataset")?
        .into_iter()
        .filter(|d| viewer.node_visible(catalog, d))
        .map(|d| dataset_resource(node, viewer, base, &d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({
        "@context": dcat_context(base),
        "@id": format!("{base}/catalog"),
        "@type": "dcat:Catalog",
        "dct:title": "Clew provenance catalogue",
        "dct:description": "Medical-imaging datasets, their versions and their provenance, each backed by a signed, verifiable ledger.",
        "dct:publisher": {"@type": "foaf:Agent", "foaf:name": node.ledger().origin()},
        "dcat:themeTaxonomy": {"@id": "http://publications.europa.eu/resource/authority/data-theme", "@type": "skos:ConceptScheme", "dct:title": "Data theme"},
        "dcat:dataset": datasets,
    }))
}

/// One dataset, as the viewer may see it (absent when it may not).
pub fn dcat_dataset(node: &Node, viewer: &Viewer, base: &str, id: &str) -> Result<Value, ApiError> {
    let catalog = node.catalog();
    let subject = format!("dataset/{id}");
    let ds = catalog
        .node(&subject)?
        .filter(|d| viewer.node_visible(catalog, d))
        .ok_or_else(|| ApiError::NotFound(format!("no dataset {id}")))?;
    let mut doc = dataset_resource(node, viewer, base, &ds)?;
    doc["@context"] = dcat_context(base);
    Ok(doc)
}

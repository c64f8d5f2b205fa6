//! Search over dataset versions and model versions (tantivy).
//!
//! Documents are a pure function of the projected entity state, keyed by
//! subject: rebuilding one is delete-then-add, so re-applying is harmless.
//! Each commit carries the applied leaf count as its payload.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, FacetCollector, MultiCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, PhraseQuery, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{
    Facet, FacetOptions, Field, IndexRecordOption, Schema, Value, FAST, STORED, STRING, TEXT,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    doc, DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

use crate::graph::NodeRecord;
use crate::CatalogError;

/// Facets offered, in the order answers list them.
pub const FACETS: &[&str] = &[
    "modality",
    "body_part",
    "manufacturer",
    "manufacturer_model",
    "site",
    "access_level",
    "deidentification",
    "licence",
    "year",
    "entity_type",
    "status",
];

#[derive(Clone)]
struct Fields {
    subject: Field,
    entity_type: Field,
    dataset_id: Field,
    access: Field,
    title: Field,
    tags: Field,
    description: Field,
    leaf: Field,
    slice_min: Field,
    slice_max: Field,
    date_from: Field,
    date_to: Field,
    studies: Field,
    series: Field,
    /// Every facet in one field, as `/<facet>/<value>` (e.g. `/modality/CT`):
    /// one term dictionary and one column per segment instead of one per
    /// facet, which each commit and merge would build, and one collector
    /// counts them all.
    facet: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        subject: b.add_text_field("subject", STRING | STORED),
        entity_type: b.add_text_field("entity_type_raw", STRING),
        dataset_id: b.add_text_field("dataset_id", STRING | STORED),
        access: b.add_text_field("access", STRING),
        title: b.add_text_field("title", TEXT | STORED),
        tags: b.add_text_field("tags", TEXT | STORED),
        description: b.add_text_field("description", TEXT | STORED),
        // Numbers are only ever filtered by range, which tantivy answers
        // from a fast field (`RangeQuery` on a fast field): no term
        // dictionary of their own, which every commit and merge would build.
        leaf: b.add_u64_field("leaf", FAST | STORED),
        slice_min: b.add_f64_field("slice_min", FAST),
        slice_max: b.add_f64_field("slice_max", FAST),
        date_from: b.add_u64_field("date_from", FAST),
        date_to: b.add_u64_field("date_to", FAST),
        studies: b.add_u64_field("studies", FAST | STORED),
        series: b.add_u64_field("series", FAST),
        facet: b.add_facet_field(FACET_FIELD, FacetOptions::default()),
    };
    (b.build(), fields)
}

/// The name of the field holding every facet.
const FACET_FIELD: &str = "facet";

/// Who is asking, for visibility: restricted and controlled datasets are
/// only visible with an access grant naming them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Visibility {
    /// See everything (governance).
    pub all: bool,
    /// Datasets the caller holds a live access grant for.
    pub granted_datasets: Vec<String>,
}

/// An inclusive range; either end may be open.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Range<T> {
    /// Lower bound.
    pub min: Option<T>,
    /// Upper bound.
    pub max: Option<T>,
}

/// Result order.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SortOrder {
    /// Best match first.
    #[default]
    Relevance,
    /// Most recently published first.
    Recency,
}

/// A search.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchRequest {
    /// Words (all must match, longer words tolerate typos) and "quoted phrases".
    pub text: String,
    /// Facet filters: facet name → accepted values (OR within, AND across).
    pub filters: BTreeMap<String, Vec<String>>,
    /// Slice thickness (mm): versions with some series in the range.
    pub slice_thickness_mm: Range<f64>,
    /// Study date (YYYYMMDD): versions whose study dates overlap the range.
    pub study_date: Range<u64>,
    /// Number of studies.
    pub studies: Range<u64>,
    /// Number of series.
    pub series: Range<u64>,
    /// Include withdrawn dataset versions (default: no).
    pub include_withdrawn: bool,
    /// Order.
    pub sort: SortOrder,
    /// Page size (default 20, at most 200).
    pub limit: usize,
    /// Cursor from a previous page.
    pub cursor: Option<String>,
    /// Who is asking.
    pub visibility: Visibility,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// Subject (`dataset-version/…` or `model-version/…`).
    pub subject: String,
    /// Title.
    pub title: String,
    /// Relevance score (0 when sorted by recency).
    pub score: f32,
    /// Leaf that published it.
    pub leaf: u64,
    /// Highlighted snippet (HTML `<b>` marks) of the description.
    pub snippet: String,
    /// Highlighted title.
    pub title_snippet: String,
}

/// Facet value counts over the whole filtered result set.
pub type FacetCounts = BTreeMap<String, Vec<(String, u64)>>;

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// Matches in total (all pages).
    pub total: usize,
    /// This page.
    pub hits: Vec<SearchHit>,
    /// Facet counts.
    pub facets: FacetCounts,
    /// Cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// How deep paging may go: results past this offset are not served (narrow
/// the search instead). Every paging value is bounded, so no request can
/// make the collector reserve more than `(MAX_OFFSET + MAX_LIMIT)` slots.
pub const MAX_OFFSET: usize = 10_000;
/// Largest page.
pub const MAX_LIMIT: usize = 200;
/// Longest search text, in characters.
pub const MAX_TEXT_CHARS: usize = 1_000;
/// Most words (and quoted-phrase words) in one search.
pub const MAX_WORDS: usize = 32;
/// Longest word that may match with typos; longer words match exactly.
pub const MAX_FUZZY_WORD_CHARS: usize = 24;
/// Most words of one search that get typo tolerance (each costs a
/// Levenshtein automaton per field); the rest match exactly.
pub const MAX_FUZZY_WORDS: usize = 4;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    /// Only documents published before this leaf: new events do not shift pages.
    before_leaf: u64,
    offset: usize,
}

impl Cursor {
    /// Decodes a cursor a client sent back: only what this catalogue issues
    /// (base64url JSON of exactly these fields), with every value in bounds.
    fn decode(text: &str) -> Result<Self, CatalogError> {
        let refused = || CatalogError::BadRequest("cursor is not one this catalogue issued".into());
        if text.len() > 128 {
            return Err(refused());
        }
        let c: Cursor = B64
            .decode(text)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(refused)?;
        if c.offset == 0 || c.offset > MAX_OFFSET || c.before_leaf == 0 {
            return Err(refused());
        }
        Ok(c)
    }
}

/// The search index.
pub struct SearchIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

impl SearchIndex {
    /// Opens or creates the index in `dir`.
    pub fn open(dir: &Path, writer_bytes: usize) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| CatalogError::Setup(format!("{}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let mut mmap = tantivy::directory::MmapDirectory::open(dir)?;
        // The index is derived state: one made with another schema (an
        // earlier Clew's) is emptied here, and the catalogue rebuilds its
        // documents on open (`indexed_up_to` is then 0).
        if Index::exists(&mmap).map_err(tantivy::TantivyError::from)?
            && Index::open(mmap.clone())?.schema() != schema
        {
            tracing::warn!(
                dir = %dir.display(),
                "the search index was made with another schema; rebuilding it"
            );
            drop(mmap);
            std::fs::remove_dir_all(dir)
                .and_then(|()| std::fs::create_dir_all(dir))
                .map_err(|e| CatalogError::Setup(format!("{}: {e}", dir.display())))?;
            mmap = tantivy::directory::MmapDirectory::open(dir)?;
        }
        let index = Index::open_or_create(mmap, schema)?;
        let writer = index.writer_with_num_threads(1, writer_bytes)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            writer: Mutex::new(writer),
            reader,
            fields,
        })
    }

    /// Applied-leaf count stored with the last commit (0 for a new index).
    pub fn indexed_up_to(&self) -> Result<u64, CatalogError> {
        Ok(self
            .index
            .load_metas()?
            .payload
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// Replaces the documents of `nodes` (with their dataset and site) and
    /// commits with `applied` as payload.
    pub fn upsert(
        &self,
        docs: Vec<(String, Option<TantivyDocument>)>,
        applied: u64,
    ) -> Result<(), CatalogError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| CatalogError::Corrupt("index writer poisoned".into()))?;
        for (subject, doc) in docs {
            w.delete_term(Term::from_field_text(self.fields.subject, &subject));
            if let Some(doc) = doc {
                w.add_document(doc)?;
            }
        }
        let mut commit = w.prepare_commit()?;
        commit.set_payload(&applied.to_string());
        commit.commit()?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Deletes every document (before a rebuild).
    pub fn clear(&self) -> Result<(), CatalogError> {
        let mut w = self
            .writer
            .lock()
            .map_err(|_| CatalogError::Corrupt("index writer poisoned".into()))?;
        w.delete_all_documents()?;
        let mut commit = w.prepare_commit()?;
        commit.set_payload("0");
        commit.commit()?;
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    /// Builds the search document of a dataset version or model version
    /// from its record and its parsed `attributes`. `dataset` and `site` are
    /// the version's dataset (with its attributes parsed: the versions of a
    /// dataset share them) and custodian site.
    pub fn document(
        &self,
        node: &NodeRecord,
        attributes: &serde_json::Value,
        dataset: Option<(&NodeRecord, &serde_json::Value)>,
        site: Option<&NodeRecord>,
    ) -> Option<TantivyDocument> {
        let f = &self.fields;
        let a = attributes;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let mut d = TantivyDocument::default();
        d.add_text(f.subject, node.subject());
        d.add_u64(f.leaf, node.created_leaf);
        add_facet(&mut d, f, "entity_type", &node.node_type);
        let status = if node.ended_leaf.is_some() {
            "withdrawn"
        } else if !node.affected_by.is_empty() {
            "affected"
        } else {
            "current"
        };
        add_facet(&mut d, f, "status", status);
        match node.node_type.as_str() {
            "dataset-version" => {
                let no_attributes = serde_json::Value::Null;
                let ds = dataset.map_or(&no_attributes, |(_, a)| a);
                let access = s(&ds["accessLevel"])
                    .trim_start_matches("ACCESS_LEVEL_")
                    .to_lowercase();
                let summary = &a["imagingSummary"];
                let strings = |v: &serde_json::Value| -> Vec<String> {
                    v.as_array()
                        .map(|x| x.iter().map(&s).collect())
                        .unwrap_or_default()
                };
                let mut facets: Vec<(&str, String)> = vec![
                    ("access_level", access.clone()),
                    ("licence", s(&ds["licence"])),
                ];
                if let Some(site) = site {
                    facets.push(("site", site.label.clone()));
                }
                facets.extend(
                    strings(&summary["modalities"])
                        .into_iter()
                        .map(|m| ("modality", m)),
                );
                facets.extend(
                    strings(&summary["bodyPartsExamined"])
                        .into_iter()
                        .map(|m| ("body_part", m)),
                );
                if let Some(ms) = summary["manufacturers"].as_array() {
                    facets.extend(ms.iter().map(|m| ("manufacturer", s(&m["manufacturer"]))));
                    // A scanner is its maker and model together (DICOM
                    // (0008,0070) and (0008,1090)): a model name alone is
                    // not unique across makers.
                    facets.extend(ms.iter().map(|m| {
                        let (maker, model) =
                            (s(&m["manufacturer"]), s(&m["manufacturerModelName"]));
                        (
                            "manufacturer_model",
                            format!("{maker} {model}").trim().to_string(),
                        )
                    }));
                }
                if let Some(codes) = summary["deidentificationMethods"].as_array() {
                    facets.extend(
                        codes
                            .iter()
                            .map(|c| ("deidentification", s(&c["codeMeaning"]))),
                    );
                }
                let from = s(&summary["studyDateFrom"]);
                let to = s(&summary["studyDateTo"]);
                if let (Ok(y0), Ok(y1)) = (
                    from.get(..4).unwrap_or("").parse::<u32>(),
                    to.get(..4).unwrap_or("").parse::<u32>(),
                ) {
                    for y in y0..=y1.min(y0 + 50) {
                        facets.push(("year", y.to_string()));
                    }
                }
                // Each value once per document (a version scanned on two
                // models of one maker is one SIEMENS result, not two).
                facets.sort();
                facets.dedup();
                for (name, value) in &facets {
                    add_facet(&mut d, f, name, value);
                }
                d.add_text(f.entity_type, "dataset-version");
                d.add_text(f.access, &access);
                d.add_text(f.dataset_id, s(&a["datasetId"]));
                d.add_text(f.title, &node.label);
                for t in strings(&ds["tags"]) {
                    d.add_text(f.tags, t);
                }
                // Free text reaches what the images are: modality, body part,
                // manufacturer and model ("siemens", "SOMATOM").
                for v in strings(&summary["modalities"])
                    .into_iter()
                    .chain(strings(&summary["bodyPartsExamined"]))
                {
                    d.add_text(f.tags, v);
                }
                if let Some(ms) = summary["manufacturers"].as_array() {
                    for m in ms {
                        d.add_text(f.tags, s(&m["manufacturer"]));
                        d.add_text(f.tags, s(&m["manufacturerModelName"]));
                    }
                }
                d.add_text(
                    f.description,
                    format!("{} {}", s(&ds["description"]), s(&a["releaseNotes"])),
                );
                // Who is behind it: whoever registered the dataset and this
                // version, found by their name as a governance officer knows it.
                for person in [
                    dataset.map(|(d, _)| &d.created_by.actor),
                    Some(&node.created_by.actor),
                ]
                .into_iter()
                .flatten()
                {
                    d.add_text(f.tags, person);
                }
                if let Some(v) = summary["sliceThicknessMinMm"].as_f64() {
                    d.add_f64(f.slice_min, v);
                }
                if let Some(v) = summary["sliceThicknessMaxMm"].as_f64() {
                    d.add_f64(f.slice_max, v);
                }
                if let Ok(v) = from.parse() {
                    d.add_u64(f.date_from, v);
                }
                if let Ok(v) = to.parse() {
                    d.add_u64(f.date_to, v);
                }
                let num = |v: &serde_json::Value| {
                    v.as_str()
                        .and_then(|x| x.parse().ok())
                        .or(v.as_u64())
                        .unwrap_or(0)
                };
                d.add_u64(f.studies, num(&summary["numberOfStudies"]));
                d.add_u64(f.series, num(&summary["numberOfSeries"]));
            }
            "model-version" => {
                d.add_text(f.entity_type, "model-version");
                // Model metadata is open to every role.
                d.add_text(f.access, "open");
                add_facet(&mut d, f, "access_level", "open");
                d.add_text(f.title, &node.label);
                // Its owner (who registered it), by name.
                d.add_text(f.tags, &node.created_by.actor);
                let card = &a["modelCard"];
                d.add_text(
                    f.description,
                    format!(
                        "{} {} {} {}",
                        s(&card["intendedUse"]),
                        s(&card["limitations"]),
                        s(&card["outOfScopeUse"]),
                        s(&card["regulatoryClass"])
                    ),
                );
            }
            _ => return None,
        }
        Some(d)
    }

    /// The query of a search: its text, the caller's visibility, facet
    /// filters, ranges and the cursor's pinned view; and whether it has text.
    fn query(
        &self,
        req: &SearchRequest,
        searcher: &tantivy::Searcher,
        cursor: &Cursor,
    ) -> Result<(Box<dyn Query>, bool), CatalogError> {
        let f = &self.fields;
        let mut must: Vec<Box<dyn Query>> = Vec::new();
        let text = self.text_query(&req.text, searcher)?;
        let has_text = text.is_some();
        must.push(text.unwrap_or_else(|| Box::new(AllQuery)));
        // Visibility first: nothing below can count what the caller may not see.
        if !req.visibility.all {
            let mut visible: Vec<(Occur, Box<dyn Query>)> =
                vec![(Occur::Should, term_query(f.access, "open"))];
            for ds in &req.visibility.granted_datasets {
                visible.push((Occur::Should, term_query(f.dataset_id, ds)));
            }
            must.push(Box::new(BooleanQuery::new(visible)));
        }
        for (name, values) in &req.filters {
            if !FACETS.contains(&name.as_str()) {
                return Err(CatalogError::BadRequest(format!(
                    "unknown facet {name:?}; facets are {FACETS:?}"
                )));
            }
            if values.len() > MAX_WORDS {
                return Err(CatalogError::BadRequest(format!(
                    "facet {name:?} is filtered by {} values; at most {MAX_WORDS}",
                    values.len()
                )));
            }
            let any: Vec<(Occur, Box<dyn Query>)> =
                facet_values_matching(searcher, f.facet, name, values)?
                    .into_iter()
                    .map(|facet| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_facet(f.facet, &facet),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Should, q)
                    })
                    .collect();
            if !any.is_empty() {
                must.push(Box::new(BooleanQuery::new(any)));
            }
        }
        // Withdrawn versions are left out of what the other clauses match (a
        // MustNot beside them), not intersected as "every document but the
        // withdrawn" — which would be one more docset to seek into.
        let withdrawn: Option<Box<dyn Query>> = (!req.include_withdrawn).then(|| {
            Box::new(TermQuery::new(
                Term::from_facet(f.facet, &Facet::from_path(["status", "withdrawn"])),
                IndexRecordOption::Basic,
            )) as Box<dyn Query>
        });
        // Overlap of [slice_min, slice_max] with the requested range.
        if let Some(max) = req.slice_thickness_mm.max {
            must.push(range_f64(f.slice_min, None, Some(max)));
        }
        if let Some(min) = req.slice_thickness_mm.min {
            must.push(range_f64(f.slice_max, Some(min), None));
        }
        if let Some(max) = req.study_date.max {
            must.push(range_u64(f.date_from, None, Some(max)));
        }
        if let Some(min) = req.study_date.min {
            must.push(range_u64(f.date_to, Some(min), None));
        }
        if req.studies != Range::default() {
            must.push(range_u64(f.studies, req.studies.min, req.studies.max));
        }
        if req.series != Range::default() {
            must.push(range_u64(f.series, req.series.min, req.series.max));
        }
        if cursor.before_leaf != u64::MAX {
            must.push(range_u64(
                f.leaf,
                None,
                Some(cursor.before_leaf.saturating_sub(1)),
            ));
        }
        let query: Box<dyn Query> = Box::new(BooleanQuery::new(
            must.into_iter()
                .map(|q| (Occur::Must, q))
                .chain(withdrawn.map(|q| (Occur::MustNot, q)))
                .collect(),
        ));
        Ok((query, has_text))
    }

    /// The same search with its facets counted the way tantivy recommends:
    /// a fast-field terms aggregation over the facet field's column, in the
    /// same single pass as the top documents and the count, instead of a
    /// `FacetCollector`; the same query, hits, snippets and cursor. Not served: it
    /// is the peer `clew-bench catalog` holds [`SearchIndex::search`]
    /// against, and a test checks both answer the same.
    pub fn search_by_aggregation(
        &self,
        req: &SearchRequest,
    ) -> Result<SearchResponse, CatalogError> {
        self.search_counting(req, Counting::Aggregations)
    }

    /// Runs a search.
    pub fn search(&self, req: &SearchRequest) -> Result<SearchResponse, CatalogError> {
        self.search_counting(req, Counting::Collectors)
    }

    fn search_counting(
        &self,
        req: &SearchRequest,
        counting: Counting,
    ) -> Result<SearchResponse, CatalogError> {
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let limit = if req.limit == 0 {
            20
        } else {
            req.limit.min(MAX_LIMIT)
        };
        let cursor: Cursor = match &req.cursor {
            Some(c) => Cursor::decode(c)?,
            None => Cursor {
                before_leaf: u64::MAX,
                offset: 0,
            },
        };

        let (query, has_text) = self.query(req, &searcher, &cursor)?;

        let mut multi = MultiCollector::new();
        let count = multi.add_collector(Count);
        let facet_handles = FacetHandles::add(counting, &mut multi)?;
        let top = TopDocs::with_limit(limit + 1).and_offset(cursor.offset);
        let (hits, total, facets): (Vec<(f32, DocAddress)>, usize, FacetCounts) = match req.sort {
            SortOrder::Relevance => {
                // Ties are broken by recency, so the order never depends on how
                // the index happens to be split into segments.
                let h = multi.add_collector(top.tweak_score(|segment: &tantivy::SegmentReader| {
                    let leaf = segment.fast_fields().u64("leaf").ok();
                    move |doc: tantivy::DocId, score: tantivy::Score| {
                        (score, leaf.as_ref().and_then(|c| c.first(doc)).unwrap_or(0))
                    }
                }));
                let mut fruits = searcher.search(&*query, &multi)?;
                let hits = h
                    .extract(&mut fruits)
                    .into_iter()
                    .map(|((score, _), a)| (score, a))
                    .collect();
                let total = count.extract(&mut fruits);
                let facets = facet_handles.extract(&mut fruits);
                (hits, total, facets)
            }
            SortOrder::Recency => {
                let h = multi.add_collector(top.order_by_fast_field::<u64>("leaf", Order::Desc));
                let mut fruits = searcher.search(&*query, &multi)?;
                let hits = h
                    .extract(&mut fruits)
                    .into_iter()
                    .map(|(_, a)| (0.0f32, a))
                    .collect();
                let total = count.extract(&mut fruits);
                let facets = facet_handles.extract(&mut fruits);
                (hits, total, facets)
            }
        };

        let snippets = if has_text {
            let mut d = SnippetGenerator::create(&searcher, &*query, f.description)?;
            d.set_max_num_chars(200);
            let t = SnippetGenerator::create(&searcher, &*query, f.title)?;
            Some((d, t))
        } else {
            None
        };
        // The last page deep paging serves: past it, narrow the search.
        let more = hits.len() > limit && cursor.offset + limit < MAX_OFFSET;
        let mut out = Vec::new();
        let mut max_leaf = 0;
        for (score, addr) in hits.into_iter().take(limit) {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let leaf = doc
                .get_first(f.leaf)
                .and_then(|v| v.as_u64())
                .unwrap_or_default();
            max_leaf = max_leaf.max(leaf);
            let (snippet, title_snippet) = match &snippets {
                Some((d, t)) => (
                    d.snippet_from_doc(&doc).to_html(),
                    t.snippet_from_doc(&doc).to_html(),
                ),
                None => (String::new(), String::new()),
            };
            out.push(SearchHit {
                subject: text(f.subject),
                title: text(f.title),
                score,
                leaf,
                snippet,
                title_snippet,
            });
        }
        let next_cursor = more.then(|| {
            let before = if cursor.before_leaf == u64::MAX {
                // Pin the first page's view: later pages ignore newer documents.
                searcher_max_leaf(&searcher).unwrap_or(max_leaf) + 1
            } else {
                cursor.before_leaf
            };
            let c = Cursor {
                before_leaf: before,
                offset: cursor.offset + limit,
            };
            B64.encode(serde_json::to_vec(&c).unwrap_or_default())
        });
        Ok(SearchResponse {
            total,
            hits: out,
            facets,
            next_cursor,
        })
    }

    /// Parses the user's text into a query: every word must match (title,
    /// tags or description, boosted in that order; a word the index does not
    /// know, of five letters or more, also matches with one typo, nine or
    /// more with two), and every
    /// "quoted phrase" must match as a phrase.
    fn text_query(
        &self,
        text: &str,
        searcher: &tantivy::Searcher,
    ) -> Result<Option<Box<dyn Query>>, CatalogError> {
        let f = &self.fields;
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(CatalogError::BadRequest(format!(
                "search text is over {MAX_TEXT_CHARS} characters; search for fewer words"
            )));
        }
        let all_words = text.split('"').map(|p| tokens(p).len()).sum::<usize>();
        if all_words > MAX_WORDS {
            return Err(CatalogError::BadRequest(format!(
                "search text has {all_words} words; at most {MAX_WORDS} are searched for"
            )));
        }
        let mut fuzzy_words = 0usize;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (i, part) in text.split('"').enumerate() {
            let words = tokens(part);
            if words.is_empty() {
                continue;
            }
            if i % 2 == 1 && words.len() > 1 {
                let phrase: Vec<(Occur, Box<dyn Query>)> = [f.title, f.tags, f.description]
                    .iter()
                    .map(|field| {
                        let terms = words
                            .iter()
                            .map(|w| Term::from_field_text(*field, w))
                            .collect();
                        (
                            Occur::Should,
                            Box::new(PhraseQuery::new(terms)) as Box<dyn Query>,
                        )
                    })
                    .collect();
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(phrase))));
                continue;
            }
            for w in words {
                let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                let fields = [(f.title, 3.0f32), (f.tags, 2.0), (f.description, 1.0)];
                // Typo tolerance is for words the index does not know: a word
                // that is in the index matches exactly, which spares the
                // Levenshtein automaton (the costliest part of a search over
                // a national catalogue).
                let mut known = false;
                for (field, _) in fields {
                    known |= searcher.doc_freq(&Term::from_field_text(field, &w))? > 0;
                }
                // The automaton's size grows with the word, and one is built
                // per field: typo tolerance is bounded in words and length.
                let letters = w.chars().count();
                let fuzzy = !known
                    && (5..=MAX_FUZZY_WORD_CHARS).contains(&letters)
                    && fuzzy_words < MAX_FUZZY_WORDS;
                if fuzzy {
                    fuzzy_words += 1;
                }
                for (field, boost) in fields {
                    let term = Term::from_field_text(field, &w);
                    any.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(term_query_t(term.clone()), boost)),
                    ));
                    let distance = match letters {
                        _ if !fuzzy => 0,
                        0..=4 => 0,
                        5..=8 => 1,
                        _ => 2,
                    };
                    if distance > 0 {
                        // A typo match counts for less than the exact word.
                        any.push((
                            Occur::Should,
                            Box::new(BoostQuery::new(
                                Box::new(FuzzyTermQuery::new(term, distance, true)),
                                boost * 0.5,
                            )),
                        ));
                    }
                }
                clauses.push((Occur::Must, Box::new(BooleanQuery::new(any))));
            }
        }
        Ok((!clauses.is_empty()).then(|| Box::new(BooleanQuery::new(clauses)) as Box<dyn Query>))
    }
}

/// The indexed values of facet `name` equal to one of `wanted`, ignoring
/// case ("ct" finds "CT"); a value the index does not hold is kept as given
/// (it matches nothing). Each term is `/<name>/<value>`.
fn facet_values_matching(
    searcher: &tantivy::Searcher,
    field: Field,
    name: &str,
    wanted: &[String],
) -> Result<Vec<Facet>, CatalogError> {
    let lower: BTreeMap<String, &String> = wanted.iter().map(|w| (w.to_lowercase(), w)).collect();
    let mut found: BTreeMap<String, Facet> = BTreeMap::new();
    let mut matched: std::collections::BTreeSet<String> = Default::default();
    // The children of `/<name>` are the encoded terms between `<name>\0`
    // and `<name>\1` (tantivy separates a facet's levels with a 0 byte).
    let parent = Facet::from_path([name]);
    let (first, after) = (
        format!("{}\0", parent.encoded_str()),
        format!("{}\u{1}", parent.encoded_str()),
    );
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let mut terms = inverted
            .terms()
            .range()
            .ge(&first)
            .lt(&after)
            .into_stream()
            .map_err(|e| CatalogError::Search(e.into()))?;
        while terms.advance() {
            let Ok(facet) = Facet::from_encoded(terms.key().to_vec()) else {
                continue;
            };
            let Some(value) = facet.to_path().last().map(|v| v.to_lowercase()) else {
                continue;
            };
            if lower.contains_key(&value) {
                matched.insert(value);
                found.insert(facet.to_path_string(), facet);
            }
        }
    }
    for (l, original) in &lower {
        if !matched.contains(l) {
            let facet = Facet::from_path([name.to_string(), original.to_string()]);
            found.insert(facet.to_path_string(), facet);
        }
    }
    Ok(found.into_values().collect())
}

fn add_facet(d: &mut TantivyDocument, f: &Fields, name: &str, value: &str) {
    if !value.is_empty() && FACETS.contains(&name) {
        d.add_facet(f.facet, Facet::from_path([name, value]));
    }
}

/// Lower-cased alphanumeric words, as tantivy's default tokenizer makes them.
fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn term_query(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

fn term_query_t(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
}

fn bound<T>(v: Option<T>, make: impl Fn(T) -> Term) -> Bound<Term> {
    match v {
        Some(v) => Bound::Included(make(v)),
        None => Bound::Unbounded,
    }
}

fn range_u64(field: Field, min: Option<u64>, max: Option<u64>) -> Box<dyn Query> {
    Box::new(RangeQuery::new(
        bound(min, |v| Term::from_field_u64(field, v)),
        bound(max, |v| Term::from_field_u64(field, v)),
    ))
}

fn range_f64(field: Field, min: Option<f64>, max: Option<f64>) -> Box<dyn Query> {
    Box::new(RangeQuery::new(
        bound(min, |v| Term::from_field_f64(field, v)),
        bound(max, |v| Term::from_field_f64(field, v)),
    ))
}

/// How a search counts its facets.
#[derive(Clone, Copy)]
enum Counting {
    /// One `FacetCollector` over the facet field, counting the children of
    /// each facet (what Clew serves).
    Collectors,
    /// A fast-field terms aggregation over the facet field's column
    /// (tantivy's recommendation; the benchmark's peer).
    Aggregations,
}

enum FacetHandles {
    Collectors(tantivy::collector::FruitHandle<tantivy::collector::FacetCounts>),
    Aggregations(
        tantivy::collector::FruitHandle<tantivy::aggregation::agg_result::AggregationResults>,
    ),
}

impl FacetHandles {
    /// Adds the collectors of `counting` to `multi`.
    fn add(counting: Counting, multi: &mut MultiCollector<'_>) -> Result<Self, CatalogError> {
        Ok(match counting {
            Counting::Collectors => {
                let mut c = FacetCollector::for_field(FACET_FIELD);
                for name in FACETS {
                    c.add_facet(Facet::from_path([*name]));
                }
                Self::Collectors(multi.add_collector(c))
            }
            Counting::Aggregations => {
                let aggs: tantivy::aggregation::agg_req::Aggregations =
                    serde_json::from_value(serde_json::json!({
                        FACET_FIELD: { "terms": { "field": FACET_FIELD, "size": 10_000 * FACETS.len() } }
                    }))
                    .map_err(|e| CatalogError::Corrupt(format!("facet aggregations: {e}")))?;
                Self::Aggregations(multi.add_collector(
                    tantivy::aggregation::AggregationCollector::from_aggs(aggs, Default::default()),
                ))
            }
        })
    }

    /// The counts, every facet named (counted or not), each facet's values
    /// by count, then name.
    fn extract(self, fruits: &mut tantivy::collector::MultiFruit) -> FacetCounts {
        use tantivy::aggregation::agg_result::{AggregationResult, BucketResult};
        use tantivy::aggregation::Key;
        match self {
            Self::Collectors(handle) => {
                let counts = handle.extract(fruits);
                FACETS
                    .iter()
                    .map(|name| {
                        let values = counts
                            .get(Facet::from_path([*name]))
                            .filter(|(_, n)| *n > 0)
                            .filter_map(|(facet, n)| Some((facet.to_path().get(1)?.to_string(), n)))
                            .collect();
                        (name.to_string(), by_count(values))
                    })
                    .collect()
            }
            Self::Aggregations(handle) => {
                let mut values: BTreeMap<&str, Vec<(String, u64)>> =
                    FACETS.iter().map(|name| (*name, Vec::new())).collect();
                for (_, result) in handle.extract(fruits).0 {
                    let AggregationResult::BucketResult(BucketResult::Terms { buckets, .. }) =
                        result
                    else {
                        continue;
                    };
                    for b in buckets {
                        // The column holds each facet's encoded path: `<name>\0<value>`.
                        let Key::Str(path) = b.key else { continue };
                        let Some((name, value)) = path.split_once('\0') else {
                            continue;
                        };
                        if let Some(v) = values.get_mut(name) {
                            v.push((value.to_string(), b.doc_count));
                        }
                    }
                }
                values
                    .into_iter()
                    .map(|(name, v)| (name.to_string(), by_count(v)))
                    .collect()
            }
        }
    }
}

/// A facet's values by count, then name: the order answers list them in.
fn by_count(mut values: Vec<(String, u64)>) -> Vec<(String, u64)> {
    values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    values
}

/// The highest leaf any document of `searcher` was applied at, read off each
/// segment's column statistics (no document is visited: scanning every
/// document for it once cost a quarter of a loaded server's CPU). A deleted
/// document counts too; it was applied before anything added after it, so
/// the bound still leaves every later document out.
fn searcher_max_leaf(searcher: &tantivy::Searcher) -> Option<u64> {
    searcher
        .segment_readers()
        .iter()
        .filter(|segment| segment.num_docs() > 0)
        .filter_map(|segment| segment.fast_fields().u64("leaf").ok())
        .map(|leaf| leaf.max_value())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_made_with_another_schema_is_emptied_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("search");
        std::fs::create_dir_all(&path).unwrap();
        // An earlier Clew's index: a schema without today's fields, one
        // document, committed at leaf 7.
        let mut b = Schema::builder();
        let subject = b.add_text_field("subject", STRING | STORED);
        let old = Index::create_in_dir(&path, b.build()).unwrap();
        let mut w: IndexWriter = old.writer_with_num_threads(1, 15 << 20).unwrap();
        w.add_document(tantivy::doc!(subject => "dataset-version/d@1"))
            .unwrap();
        let mut commit = w.prepare_commit().unwrap();
        commit.set_payload("7");
        commit.commit().unwrap();
        drop(w);
        drop(old);

        let index = SearchIndex::open(&path, 15 << 20).unwrap();
        assert_eq!(index.indexed_up_to().unwrap(), 0, "rebuilt from nothing");
        assert_eq!(index.index.schema(), schema().0);
        assert_eq!(index.reader.searcher().num_docs(), 0);
        // Opened again with the same schema, it is kept as it is.
        index.upsert(Vec::new(), 9).unwrap();
        drop(index);
        assert_eq!(
            SearchIndex::open(&path, 15 << 20)
                .unwrap()
                .indexed_up_to()
                .unwrap(),
            9
        );
    }
}

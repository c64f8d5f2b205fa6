//! The search page (`/`): one box (typo-tolerant, as the API is), facets
//! with counts, highlighted results, and paging by the API's cursor, which
//! pins the ledger size of the first page so pages stay stable while events
//! arrive.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::json;

use super::{html, Chrome};
use crate::answers::{SearchAnswer, SEARCH};
use crate::session::SignedIn;
use crate::text::{self, Piece};
use crate::{Web, WebError};

/// Results per page.
const PAGE: u32 = 20;

/// What the search form asks, from the query string.
#[derive(Default)]
struct Asked {
    q: String,
    /// `facet=value` pairs.
    filters: Vec<(String, String)>,
    recency: bool,
    withdrawn: bool,
    thick_min: String,
    thick_max: String,
    cursor: Option<String>,
}

impl Asked {
    fn parse(raw: Option<&str>) -> Result<Self, WebError> {
        let mut a = Asked::default();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "q" => a.q = v.into_owned(),
                "f" => {
                    let (facet, value) = v.split_once('=').ok_or_else(|| {
                        WebError::BadRequest(format!("the filter {v:?} is not facet=value"))
                    })?;
                    a.filters.push((facet.to_string(), value.to_string()));
                }
                "sort" => a.recency = v == "recency",
                "withdrawn" => a.withdrawn = v == "1",
                "thick_min" => a.thick_min = v.trim().to_string(),
                "thick_max" => a.thick_max = v.trim().to_string(),
                "cursor" => a.cursor = Some(v.into_owned()).filter(|c| !c.is_empty()),
                _ => {}
            }
        }
        Ok(a)
    }

    fn millimetres(value: &str, name: &str) -> Result<Option<f64>, WebError> {
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                WebError::BadRequest(format!(
                    "the {name} slice thickness {value:?} is not a number of millimetres"
                ))
            })
    }

    /// The API's `SearchInput`.
    fn input(&self) -> Result<serde_json::Value, WebError> {
        let mut facets: Vec<(String, Vec<String>)> = Vec::new();
        for (facet, value) in &self.filters {
            match facets.iter_mut().find(|(f, _)| f == facet) {
                Some((_, values)) => values.push(value.clone()),
                None => facets.push((facet.clone(), vec![value.clone()])),
            }
        }
        let filters: Vec<_> = facets
            .into_iter()
            .map(|(facet, values)| json!({ "facet": facet, "values": values }))
            .collect();
        Ok(json!({
            "text": self.q,
            "filters": filters,
            "sliceThicknessMm": {
                "min": Self::millimetres(&self.thick_min, "smallest")?,
                "max": Self::millimetres(&self.thick_max, "largest")?,
            },
            "includeWithdrawn": self.withdrawn,
            "sort": if self.recency { "RECENCY" } else { "RELEVANCE" },
            "limit": PAGE,
            "cursor": self.cursor,
        }))
    }

    /// This search's query string without the cursor, plus `extra`.
    fn link(&self, extra: &[(&str, &str)]) -> String {
        let mut params: Vec<(&str, String)> = vec![("q", self.q.clone())];
        params.extend(self.filters.iter().map(|(f, v)| ("f", format!("{f}={v}"))));
        if self.recency {
            params.push(("sort", "recency".into()));
        }
        if self.withdrawn {
            params.push(("withdrawn", "1".into()));
        }
        if !self.thick_min.is_empty() {
            params.push(("thick_min", self.thick_min.clone()));
        }
        if !self.thick_max.is_empty() {
            params.push(("thick_max", self.thick_max.clone()));
        }
        let mut pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.extend_from_slice(extra);
        text::link("/", &pairs)
    }
}

struct Hit {
    link: String,
    kind: &'static str,
    title: Vec<Piece>,
    snippet: Vec<Piece>,
}

struct FacetBox {
    label: &'static str,
    values: Vec<FacetChoice>,
}

struct FacetChoice {
    /// The checkbox's value, `facet=value`.
    param: String,
    value: String,
    count: String,
    checked: bool,
    /// Unique element id (label association, WCAG 1.3.1).
    id: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    chrome: Chrome,
    q: String,
    recency: bool,
    withdrawn: bool,
    thick_min: String,
    thick_max: String,
    total: String,
    hits: Vec<Hit>,
    facets: Vec<FacetBox>,
    next: Option<String>,
    first: Option<String>,
}

/// `GET /`.
pub(crate) async fn page(
    State(web): State<Web>,
    who: SignedIn,
    RawQuery(raw): RawQuery,
) -> Result<Response, WebError> {
    let asked = Asked::parse(raw.as_deref())?;
    let answer: SearchAnswer = web
        .ask(&who.viewer, SEARCH, json!({ "input": asked.input()? }))
        .await?;
    let r = answer.search;
    let hits = r
        .hits
        .into_iter()
        .map(|h| Hit {
            link: text::entity_link(&h.subject),
            kind: text::kind_label(text::kind_of(&h.subject)),
            title: if h.title_snippet.is_empty() {
                vec![Piece {
                    text: h.title,
                    hit: false,
                }]
            } else {
                text::highlight(&h.title_snippet)
            },
            snippet: text::highlight(&h.snippet),
        })
        .collect();
    let mut n = 0;
    let facets = r
        .facets
        .into_iter()
        .filter(|f| !f.values.is_empty())
        .map(|f| FacetBox {
            label: text::facet_label(&f.name),
            values: f
                .values
                .into_iter()
                .map(|v| {
                    n += 1;
                    let checked = asked
                        .filters
                        .iter()
                        .any(|(name, value)| *name == f.name && *value == v.value);
                    FacetChoice {
                        param: format!("{}={}", f.name, v.value),
                        value: v.value,
                        count: text::count(v.count),
                        checked,
                        id: format!("facet-{n}"),
                    }
                })
                .collect(),
        })
        .collect();
    let next = r
        .next_cursor
        .as_deref()
        .map(|c| asked.link(&[("cursor", c)]));
    let first = asked.cursor.is_some().then(|| asked.link(&[]));
    html(&SearchPage {
        chrome: Chrome::of(&who, "search"),
        q: asked.q.clone(),
        recency: asked.recency,
        withdrawn: asked.withdrawn,
        thick_min: asked.thick_min.clone(),
        thick_max: asked.thick_max.clone(),
        total: text::count(r.total),
        hits,
        facets,
        next,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_becomes_the_api_search_input() {
        let a = Asked::parse(Some(
            "q=chest&f=modality%3DCT&f=modality%3DDX&f=site%3DRiverside&thick_max=2.5&sort=recency",
        ))
        .unwrap();
        let input = a.input().unwrap();
        assert_eq!(input["text"], "chest");
        assert_eq!(input["filters"][0]["facet"], "modality");
        assert_eq!(input["filters"][0]["values"], json!(["CT", "DX"]));
        assert_eq!(input["filters"][1]["values"], json!(["Riverside"]));
        assert_eq!(input["sliceThicknessMm"]["max"], 2.5);
        assert_eq!(input["sliceThicknessMm"]["min"], serde_json::Value::Null);
        assert_eq!(input["sort"], "RECENCY");
        // The next page's link keeps every choice and adds the cursor.
        let next = a.link(&[("cursor", "c1")]);
        assert_eq!(
            next,
            "/?q=chest&f=modality%3DCT&f=modality%3DDX&f=site%3DRiverside&sort=recency&thick_max=2.5&cursor=c1"
        );
    }

    #[test]
    fn a_filter_or_thickness_that_cannot_be_is_named() {
        let e = Asked::parse(Some("f=modality")).err().unwrap();
        assert!(e.to_string().contains("\"modality\" is not facet=value"));
        let a = Asked::parse(Some("thick_min=thin")).unwrap();
        assert!(a.input().err().unwrap().to_string().contains("\"thin\""));
    }
}

//! Words the pages show: highlighted search snippets as plain text pieces,
//! people's names for entity kinds, facets, roles and event kinds, and links
//! built with every value percent-encoded.

/// A piece of a highlighted snippet: text, and whether it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub text: String,
    pub hit: bool,
}

/// A search snippet (the escaped HTML with `<b>` marks the search index
/// makes) as text pieces, so templates escape every character themselves and
/// no markup of the answer ever reaches a page as markup.
pub(crate) fn highlight(snippet: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = snippet;
    while !rest.is_empty() {
        let (before, hit, after) = match rest.find("<b>") {
            Some(start) => {
                let inner = &rest[start + 3..];
                match inner.find("</b>") {
                    Some(end) => (&rest[..start], Some(&inner[..end]), &inner[end + 4..]),
                    None => (rest, None, ""),
                }
            }
            None => (rest, None, ""),
        };
        if !before.is_empty() {
            pieces.push(Piece {
                text: unescape(before),
                hit: false,
            });
        }
        if let Some(h) = hit {
            pieces.push(Piece {
                text: unescape(h),
                hit: true,
            });
        }
        rest = after;
    }
    pieces
}

/// The five entities the index escapes (`&`, `<`, `>`, `"`, `'`), back to
/// characters.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A person's name for an entity type.
pub(crate) fn kind_label(kind: &str) -> &'static str {
    match kind {
        "site" => "Site",
        "dataset" => "Dataset",
        "dataset-version" => "Dataset version",
        "transform" => "Transform",
        "training-run" => "Training run",
        "model-version" => "Model version",
        "validation" => "Validation",
        "deployment" => "Deployment",
        "principal" => "Person or service",
        "access-grant" => "Access grant",
        "project" => "Project",
        _ => "Entity",
    }
}

/// The id part of a subject (`<type>/<id>`); the whole text if it has no type.
pub(crate) fn id_of(subject: &str) -> &str {
    subject.split_once('/').map_or(subject, |(_, id)| id)
}

/// The type part of a subject (`<type>/<id>`).
pub(crate) fn kind_of(subject: &str) -> &str {
    subject.split_once('/').map_or("", |(k, _)| k)
}

/// A person's name for a search facet.
pub(crate) fn facet_label(facet: &str) -> &'static str {
    match facet {
        "modality" => "Modality",
        "body_part" => "Body part",
        "manufacturer" => "Manufacturer",
        "manufacturer_model" => "Scanner (manufacturer and model)",
        "site" => "Site",
        "access_level" => "Access level",
        "deidentification" => "De-identification",
        "licence" => "Licence",
        "year" => "Year",
        "entity_type" => "Kind",
        "status" => "Status",
        _ => "Other",
    }
}

/// `ROLE_GOVERNANCE` → `governance`.
pub(crate) fn role_label(role: &str) -> String {
    role.trim_start_matches("ROLE_")
        .to_lowercase()
        .replace('_', " ")
}

/// `DATASET_VERSION_PUBLISHED` → `Dataset version published`.
pub(crate) fn event_label(kind: &str) -> String {
    let words = kind
        .trim_start_matches("EVENT_KIND_")
        .to_lowercase()
        .replace('_', " ");
    let mut c = words.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => words,
    }
}

/// `ACCESS_LEVEL_CONTROLLED` → `controlled`; any enum value without its prefix.
pub(crate) fn enum_label(value: &str, prefix: &str) -> String {
    value
        .trim_start_matches(prefix)
        .to_lowercase()
        .replace('_', " ")
}

/// `20200301` → `2020-03-01` (DICOM DA, PS3.5 §6.2); anything else as it is.
pub(crate) fn dicom_date(da: &str) -> String {
    if da.len() == 8 && da.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &da[..4], &da[4..6], &da[6..])
    } else {
        da.to_string()
    }
}

/// `2026-12-03T19:57:14.966162131+00:00` → `2026-12-03 19:57 UTC`.
pub(crate) fn when(rfc3339: &str) -> String {
    if rfc3339.len() >= 16 && rfc3339.as_bytes().get(10) == Some(&b'T') {
        let tz = if rfc3339.ends_with("+00:00") || rfc3339.ends_with('Z') {
            " UTC"
        } else {
            ""
        };
        format!("{} {}{tz}", &rfc3339[..10], &rfc3339[11..16])
    } else {
        rfc3339.to_string()
    }
}

/// 64770 → `64,770`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A path with a query string, every value percent-encoded
/// (application/x-www-form-urlencoded, WHATWG URL §5).
pub(crate) fn link(path: &str, params: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    }
}

/// The page of an entity.
pub(crate) fn entity_link(subject: &str) -> String {
    match subject.split_once('/') {
        Some((kind, id)) => format!("/entity/{}/{}", encode_segment(kind), encode_segment(id)),
        None => link("/", &[("q", subject)]),
    }
}

/// A path segment, percent-encoded but for RFC 3986 §2.3's unreserved
/// characters and `@` (common in version ids).
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snippet_becomes_text_pieces_and_markup_in_it_stays_text() {
        let p = highlight("cxr-<b>pneumonia</b>-triage &lt;img src=x onerror=alert(1)&gt; &amp;");
        assert_eq!(
            p,
            vec![
                Piece {
                    text: "cxr-".into(),
                    hit: false
                },
                Piece {
                    text: "pneumonia".into(),
                    hit: true
                },
                Piece {
                    text: "-triage <img src=x onerror=alert(1)> &".into(),
                    hit: false
                },
            ]
        );
        // An unclosed mark is text too.
        assert_eq!(highlight("a <b>b")[0].text, "a <b>b");
        assert!(highlight("").is_empty());
    }

    #[test]
    fn names_people_read() {
        assert_eq!(role_label("ROLE_GOVERNANCE"), "governance");
        assert_eq!(
            event_label("DATASET_VERSION_PUBLISHED"),
            "Dataset version published"
        );
        assert_eq!(
            enum_label("ACCESS_LEVEL_CONTROLLED", "ACCESS_LEVEL_"),
            "controlled"
        );
        assert_eq!(dicom_date("20200301"), "2020-03-01");
        assert_eq!(when("2026-12-03T19:57:14.96+00:00"), "2026-12-03 19:57 UTC");
        assert_eq!(count(64770), "64,770");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000_000), "1,000,000");
    }

    #[test]
    fn links_encode_what_they_carry() {
        assert_eq!(
            entity_link("dataset-version/a b@1.0"),
            "/entity/dataset-version/a%20b@1.0"
        );
        assert_eq!(
            entity_link("x/../../sign-out"),
            "/entity/x/..%2F..%2Fsign-out"
        );
        assert_eq!(
            link(
                "/lineage",
                &[("subject", "model-version/m&1"), ("depth", "3")]
            ),
            "/lineage?subject=model-version%2Fm%261&depth=3"
        );
    }
}

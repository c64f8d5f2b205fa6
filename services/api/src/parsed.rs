//! Parsed GraphQL documents by their text, shared by every request: clients
//! and the web pages send the same few documents again and again, and
//! parsing one (a PEG parser, GraphQL October 2021 §2) costs several times
//! more than copying the document it makes. Everything after parsing — the
//! depth and directive limits, validation, complexity — runs on every
//! request as before.

use std::sync::{Arc, Mutex};

use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// The documents most recently parsed, bounded in count and in text size.
#[derive(Debug)]
pub struct ParsedDocuments {
    docs: Mutex<LruCache<String, Arc<ExecutableDocument>>>,
}

impl Default for ParsedDocuments {
    fn default() -> Self {
        Self {
            docs: crate::access::bounded(Self::CAPACITY),
        }
    }
}

impl ParsedDocuments {
    /// Documents kept.
    pub const CAPACITY: usize = 256;
    /// Longest text kept (longer ones are parsed each time): with the
    /// capacity, a bound of a few MiB however hostile the texts.
    pub const MAX_TEXT: usize = 8 * 1024;

    /// `request` with its document attached, from the cache or parsed now
    /// and kept. A text that does not parse is neither kept nor attached:
    /// executing the request parses it again and answers with the error.
    pub fn prepare(&self, mut request: async_graphql::Request) -> async_graphql::Request {
        if request.query.len() > Self::MAX_TEXT {
            return request;
        }
        let cached = self
            .docs
            .lock()
            .ok()
            .and_then(|mut docs| docs.get(&request.query).cloned());
        match cached {
            // Copied outside the lock: requests on other threads wait only
            // for the lookup.
            Some(doc) => request.set_parsed_query(ExecutableDocument::clone(&doc)),
            None => {
                if let Ok(doc) = request.parsed_query() {
                    let doc = Arc::new(doc.clone());
                    if let Ok(mut docs) = self.docs.lock() {
                        docs.put(request.query.clone(), doc);
                    }
                }
            }
        }
        request
    }

    /// Documents kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.docs.lock().map_or(0, |d| d.len())
    }

    /// Whether none is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};

    struct Query;

    #[Object]
    impl Query {
        async fn twice(&self, n: i32) -> i32 {
            n * 2
        }
    }

    #[tokio::test]
    async fn a_kept_document_answers_as_a_freshly_parsed_one() {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let parsed = ParsedDocuments::default();
        let text = "query($n: Int!) { twice(n: $n) }";
        let run = |n: i32| {
            parsed.prepare(async_graphql::Request::new(text).variables(
                async_graphql::Variables::from_json(serde_json::json!({ "n": n })),
            ))
        };
        let first = schema.execute(run(2)).await;
        assert_eq!(parsed.len(), 1, "the first request's document is kept");
        let second = schema.execute(run(21)).await;
        assert_eq!(parsed.len(), 1, "the second request found it");
        assert_eq!(
            first.data.into_json().unwrap(),
            serde_json::json!({ "twice": 4 })
        );
        assert_eq!(
            second.data.into_json().unwrap(),
            serde_json::json!({ "twice": 42 })
        );
    }

    #[tokio::test]
    async fn a_text_that_does_not_parse_is_not_kept_and_still_answers_its_error() {
        let schema = Schema::new(Query, EmptyMutation, EmptySubscription);
        let parsed = ParsedDocuments::default();
        let r = schema
            .execute(parsed.prepare(async_graphql::Request::new("{ twice(n: ")))
            .await;
        assert!(parsed.is_empty());
        // The parser's own message, with where the text broke off.
        assert!(
            r.errors[0].message.contains("expected value") && !r.errors[0].locations.is_empty(),
            "{:?}",
            r.errors
        );
    }

    #[tokio::test]
    async fn long_texts_are_parsed_each_time_and_the_count_is_bounded() {
        let parsed = ParsedDocuments::default();
        let long = format!("{{ twice(n: 1) }}{}", " ".repeat(ParsedDocuments::MAX_TEXT));
        let _ = parsed.prepare(async_graphql::Request::new(long));
        assert!(parsed.is_empty(), "a text over the bound is not kept");
        for i in 0..ParsedDocuments::CAPACITY + 10 {
            let _ = parsed.prepare(async_graphql::Request::new(format!(
                "{{ a{i}: twice(n: 1) }}"
            )));
        }
        assert_eq!(parsed.len(), ParsedDocuments::CAPACITY);
    }
}

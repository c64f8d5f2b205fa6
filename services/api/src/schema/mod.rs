//! The GraphQL schema: queries over the catalogue and the ledger, one
//! mutation per event kind, and subscriptions to the sequenced stream.
//!
//! Every resolver starts from the request's [`crate::access::Viewer`]; nothing is returned
//! that it may not see (see [`crate::access`]). Mutation inputs are the
//! proto3 JSON mapping of the event bodies in `proto/clew/v1/events.proto`
//! (the wire contract partners already use), checked field by field —
//! unknown fields are refused — then signed by the server's service key with
//! the caller as the actor.
//!
//! One module per concern: [`types`] (outputs), [`inputs`], [`query`],
//! [`mutation`], [`subscription`]; [`context`] is what resolvers share.

mod context;
mod inputs;
mod mutation;
mod query;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::Schema;

use crate::access::DatasetAccess;
use crate::TokenStore;
use clew_node::Node;
use mutation::MutationRoot;
use query::QueryRoot;
use subscription::SubscriptionRoot;

/// The served schema.
pub type ClewSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Limits a query must stay within.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Deepest selection nesting.
    pub depth: usize,
    /// Most fields (weighted) in one query.
    pub complexity: usize,
}

/// Builds the schema over a running node.
pub fn build_schema(
    node: Arc<Node>,
    tokens: Arc<TokenStore>,
    access: Arc<DatasetAccess>,
    limits: QueryLimits,
) -> ClewSchema {
    limited(limits)
        .data(node)
        .data(tokens)
        .data(access)
        .finish()
}

/// The schema that answers introspection-only queries (the standard
/// `getIntrospectionQuery`, GraphiQL's Docs pane): they nest deeper than
/// user queries may (TypeRef's `ofType` chain), but reach no catalogue data,
/// so they are counted apart, as other servers do — with their own bounds.
pub fn build_introspection_schema(
    node: Arc<Node>,
    tokens: Arc<TokenStore>,
    access: Arc<DatasetAccess>,
) -> ClewSchema {
    limited(QueryLimits {
        depth: 24,
        complexity: 20_000,
    })
    .data(node)
    .data(tokens)
    .data(access)
    .finish()
}

/// Whether every operation of `query` selects only `__schema`, `__type` and
/// `__typename` at its top (what [`build_introspection_schema`] answers).
pub fn is_introspection(query: &str) -> bool {
    use async_graphql::parser::types::{DocumentOperations, Selection};
    // Most queries never name the introspection fields: no second parse.
    if !query.contains("__schema") && !query.contains("__type") {
        return false;
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return false;
    };
    let ops: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(m) => m.values().collect(),
    };
    !ops.is_empty()
        && ops.iter().all(|op| {
            !op.node.selection_set.node.items.is_empty()
                && op
                    .node
                    .selection_set
                    .node
                    .items
                    .iter()
                    .all(|s| match &s.node {
                        Selection::Field(f) => {
                            matches!(
                                f.node.name.node.as_str(),
                                "__schema" | "__type" | "__typename"
                            )
                        }
                        _ => false,
                    })
        })
}

fn limited(
    limits: QueryLimits,
) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot::default(), MutationRoot, SubscriptionRoot)
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        .limit_recursive_depth(32)
        .limit_directives(16)
}

/// The SDL of the schema as served (checked into `schema/clew.graphql`).
pub fn sdl() -> String {
    Schema::build(QueryRoot::default(), MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Value;

    /// Limits refuse a query before any resolver runs (no node is needed).
    #[tokio::test]
    async fn depth_and_complexity_limits_refuse_before_resolving() {
        let schema = limited(QueryLimits {
            depth: 4,
            complexity: 50,
        })
        .finish();
        let deep = "{ search { hits { entity { upstream { from } } } } }";
        let r = schema.execute(deep).await;
        assert!(r.data == Value::Null, "nothing resolved");
        assert!(
            r.errors[0].message.contains("nested too deep"),
            "{:?}",
            r.errors
        );
        let wide = format!(
            "{{ {} }}",
            (0..60)
                .map(|i| format!("a{i}: me {{ principal }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let r = schema.execute(wide.as_str()).await;
        assert!(
            r.errors[0].message.contains("too complex"),
            "{:?}",
            r.errors
        );
    }
}

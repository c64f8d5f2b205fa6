//! The subscription root: the sequenced stream and new checkpoints over
//! graphql-transport-ws, each delivered event filtered and redacted for a
//! viewer re-resolved per batch.

use std::collections::VecDeque;
use std::sync::Arc;

use async_graphql::{Context, Json, Subscription};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use clew_events::proto;
use futures_util::Stream;

use super::context::*;
use super::inputs::*;
use super::types::*;
use crate::access::{DatasetAccess, Session, Viewer};
use crate::read::{body_json, kind_name, EventRef};
use clew_node::Node;

pub(crate) struct SubscriptionGauge(prometheus::IntGauge);

impl SubscriptionGauge {
    fn new(g: &prometheus::IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for SubscriptionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) struct Filter {
    kinds: Option<Vec<proto::EventKind>>,
    subject: Option<String>,
    dataset: Option<String>,
}

impl Filter {
    fn mentions_dataset(value: &serde_json::Value, dataset: &str) -> bool {
        match value {
            serde_json::Value::String(s) => {
                s == dataset || s.strip_prefix(dataset).is_some_and(|r| r.starts_with('@'))
            }
            serde_json::Value::Array(a) => a.iter().any(|v| Self::mentions_dataset(v, dataset)),
            serde_json::Value::Object(o) => o.values().any(|v| Self::mentions_dataset(v, dataset)),
            _ => false,
        }
    }
}

pub(crate) fn deliver(
    node: &Node,
    viewer: &Viewer,
    filter: &Filter,
    index: u64,
    leaf: &[u8],
) -> Option<SequencedEvent> {
    let opened = clew_events::open(leaf).ok()?;
    let kind = opened.kind();
    if let Some(kinds) = &filter.kinds {
        if !kinds.contains(&kind) {
            return None;
        }
    }
    if let Some(s) = &filter.subject {
        if &opened.event.subject != s {
            return None;
        }
    }
    if !viewer.subject_visible(node.catalog(), &opened.event.subject) {
        return None;
    }
    let mut payload = body_json(opened.body());
    let redacted = viewer.redact(node.catalog(), &mut payload);
    // After redaction: a hidden dataset is not mentioned, so filtering by
    // its id finds exactly what filtering by an id never used finds.
    if let Some(d) = &filter.dataset {
        let own = opened.event.subject == format!("dataset/{d}")
            || opened
                .event
                .subject
                .starts_with(&format!("dataset-version/{d}@"));
        if !own && !Filter::mentions_dataset(&payload, d) {
            return None;
        }
    }
    let time = opened
        .event
        .time
        .as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Some(SequencedEvent {
        event: EventRef {
            leaf_index: index,
            event_id: opened.event.event_id.clone(),
            kind: kind_name(kind.as_str_name()),
            actor: opened.event.actor.clone(),
            time,
        },
        subject: opened.event.subject.clone(),
        payload: Json(payload),
        envelope: (!redacted).then(|| B64.encode(leaf)),
    })
}

/// Subscriptions (graphql-transport-ws at /graphql/ws).
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Sequenced events the caller may see, filtered by kind, subject or
    /// dataset (the dataset, its versions and events that cite them); from
    /// `fromLeaf` (default: the next one sequenced) onwards, in leaf order.
    async fn events(
        &self,
        ctx: &Context<'_>,
        kinds: Option<Vec<EventKind>>,
        subject: Option<String>,
        dataset: Option<String>,
        from_leaf: Option<u64>,
    ) -> Result<impl Stream<Item = SequencedEvent>> {
        let (node, viewer) = parts(ctx)?;
        let (node, viewer) = (node.clone(), viewer.clone());
        let session = ctx.data_opt::<Arc<Session>>().cloned();
        let access = ctx.data::<Arc<DatasetAccess>>()?.clone();
        let filter = Filter {
            kinds: kinds.map(|k| k.into_iter().map(EventKind::to_proto).collect()),
            subject,
            dataset,
        };
        let watch = node.applied();
        let current = *watch.borrow();
        let next = from_leaf.unwrap_or(current.size().unwrap_or(0));
        let gauge = SubscriptionGauge::new(&node.metrics().subscriptions);
        let state = (
            node,
            (viewer, session, access),
            filter,
            watch,
            next,
            VecDeque::new(),
            gauge,
        );
        Ok(futures_util::stream::unfold(
            state,
            |(
                node,
                (mut viewer, session, access),
                filter,
                mut watch,
                mut next,
                mut buffer,
                gauge,
            )| async move {
                loop {
                    if let Some(ev) = buffer.pop_front() {
                        let state = (
                            node,
                            (viewer, session, access),
                            filter,
                            watch,
                            next,
                            buffer,
                            gauge,
                        );
                        return Some((ev, state));
                    }
                    let Some(applied) = watch.borrow_and_update().size().filter(|a| *a > next)
                    else {
                        watch.changed().await.ok()?;
                        continue;
                    };
                    // Who is asking is decided again for every batch: a
                    // revoked token ends the stream, a revoked grant hides
                    // what it granted from the next event on.
                    if let Some(s) = &session {
                        viewer = Arc::new(s.viewer(
                            node.catalog(),
                            access.clone(),
                            node.access_time(),
                        )?);
                    }
                    let end = applied.min(next + 256);
                    let leaves = node.ledger().leaves(next..end).ok()?;
                    for (i, leaf) in (next..end).zip(leaves) {
                        if let Some(ev) = deliver(&node, &viewer, &filter, i, &leaf) {
                            buffer.push_back(ev);
                        }
                    }
                    next = end;
                }
            },
        ))
    }

    /// Every new checkpoint, as it is signed, and again each time a witness
    /// cosigns it (its note then carries the cosignatures, C2SP
    /// tlog-cosignature).
    async fn checkpoints(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Checkpoint>> {
        let (node, _) = parts(ctx)?;
        let node = node.clone();
        let session = ctx.data_opt::<Arc<Session>>().cloned();
        let watch = node.applied();
        let mut cosigned = node.ledger().watch_cosignatures();
        cosigned.mark_unchanged();
        let seen = node.checkpoint().ok().map(|cp| cp.note);
        let gauge = SubscriptionGauge::new(&node.metrics().subscriptions);
        Ok(futures_util::stream::unfold(
            (node, (watch, cosigned), seen, (gauge, session)),
            |(node, (mut watch, mut cosigned), seen, (gauge, session))| async move {
                loop {
                    tokio::select! {
                        r = watch.changed() => r.ok()?,
                        r = cosigned.changed() => r.ok()?,
                    }
                    if watch.borrow_and_update().size().is_none() {
                        continue;
                    }
                    cosigned.mark_unchanged();
                    let Ok(cp) = node.checkpoint() else { continue };
                    if seen.as_ref() == Some(&cp.note) {
                        continue;
                    }
                    if session.as_ref().is_some_and(|s| !s.valid()) {
                        return None;
                    }
                    let state = (
                        node,
                        (watch, cosigned),
                        Some(cp.note.clone()),
                        (gauge, session),
                    );
                    return Some((Checkpoint::from(&cp), state));
                }
            },
        ))
    }
}

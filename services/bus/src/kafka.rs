//! The Kafka bus (librdkafka through rdkafka).
//!
//! - Producers are idempotent with `acks=all` (`enable.idempotence=true`):
//!   the client's own retries neither duplicate nor reorder a partition.
//!   Calls block until every record's delivery report is in.
//! - Inbound submissions are keyed by the signing key id and partitioned with
//!   `murmur2_random`, the Java client's partitioner, so producers in any
//!   language put one key on the same partition.
//! - The outbound streams are single-partition topics (one total order each),
//!   kept forever (`retention.ms=-1`): partners replay them from offset 0.
//! - Readers never use group-managed positions. The sequencer *assigns*
//!   itself every inbound partition at the offsets stored in its ledger (it is
//!   the single writer; a group rebalance could only move a partition to a
//!   process that does not own the ledger); it re-reads topic metadata every
//!   [`PARTITION_REFRESH`] and assigns partitions added since. Followers
//!   assign the three outbound partitions at the offsets they stored.
//!   `enable.auto.commit=false`; offsets are committed to the group only as a
//!   lag gauge for operators.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::codec::{decode, encode, stream_of};
use crate::{
    Bus, BusError, FollowFrom, Follower, InboundReader, InboundRecord, OutboundWriter, Outgoing,
    Published, Stream,
};

/// How often the sequencer looks for partitions added to the inbound topic.
pub const PARTITION_REFRESH: Duration = Duration::from_secs(30);

/// Topic names. Defaults: `clew.submitted`, `clew.sequenced`,
/// `clew.checkpoints`, `clew.rejected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Inbound: submitted envelopes (proto `Envelope`), keyed by key id.
    pub submitted: String,
    /// Outbound: ledger entries (proto `SequencedEntry`), key = leaf index.
    pub sequenced: String,
    /// Outbound: signed checkpoints (proto `CheckpointRecord`), key = tree size.
    pub checkpoints: String,
    /// Outbound: refused submissions (proto `RejectedSubmission`), key = rejection index.
    pub rejected: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("clew")
    }
}

impl Topics {
    /// `<prefix>.submitted`, `<prefix>.sequenced`, `<prefix>.checkpoints`, `<prefix>.rejected`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            submitted: format!("{prefix}.submitted"),
            sequenced: format!("{prefix}.sequenced"),
            checkpoints: format!("{prefix}.checkpoints"),
            rejected: format!("{prefix}.rejected"),
        }
    }

    fn of(&self, stream: Stream) -> &str {
        match stream {
            Stream::Sequenced => &self.sequenced,
            Stream::Checkpoints => &self.checkpoints,
            Stream::Rejected => &self.rejected,
        }
    }
}

/// How to reach and lay out the Kafka bus.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// Topic names.
    pub topics: Topics,
    /// Partitions of the inbound topic when Clew creates it.
    pub inbound_partitions: i32,
    /// Replication factor of topics Clew creates.
    pub replication: i32,
    /// Create missing topics at connect (needs the broker's permission).
    pub create_topics: bool,
    /// Further librdkafka properties for every client (security, timeouts…).
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Defaults for `bootstrap`: default topics, 3 inbound partitions,
    /// replication 1, topics created when missing.
    pub fn new(bootstrap: &str) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            topics: Topics::default(),
            inbound_partitions: 3,
            replication: 1,
            create_topics: true,
            properties: Vec::new(),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("client.id", "clew");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn producer_config(&self) -> ClientConfig {
        let mut c = self.client();
        // Idempotent producer: acks=all, bounded in-flight, no duplicates or
        // reordering from the client's retries.
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "300000");
        c
    }

    fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("enable.partition.eof", "false");
        c
    }
}

/// The Kafka bus.
#[derive(Clone)]
pub struct KafkaBus {
    config: Arc<KafkaConfig>,
    producer: Arc<ThreadedProducer<Tallying>>,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("bootstrap", &self.config.bootstrap)
            .field("topics", &self.config.topics)
            .finish()
    }
}

impl KafkaBus {
    /// Connects, creating missing topics when configured to, and checks that
    /// all four topics exist.
    pub fn connect(config: KafkaConfig) -> Result<Self, BusError> {
        if config.create_topics {
            create_topics(&config)?;
        }
        let producer = new_producer(&config)?;
        let bus = Self {
            config: Arc::new(config),
            producer: Arc::new(producer),
        };
        bus.partitions(&bus.config.topics.submitted)?;
        for s in Stream::ALL {
            bus.partitions(bus.config.topics.of(s))?;
        }
        Ok(bus)
    }

    /// The configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Partition ids of `topic` (an error when it does not exist).
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, BusError> {
        let consumer: BaseConsumer = self.config.consumer_config("clew-metadata").create()?;
        partitions_of(&consumer, topic)
    }
}

fn partitions_of<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, BusError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(BusError::Setup(format!("topic {topic} does not exist")));
    };
    if let Some(e) = t.error() {
        return Err(BusError::Setup(format!(
            "topic {topic}: {}",
            RDKafkaErrorCode::from(e)
        )));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    if ids.is_empty() {
        return Err(BusError::Setup(format!("topic {topic} has no partitions")));
    }
    Ok(ids)
}

fn create_topics(config: &KafkaConfig) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let rf = || TopicReplication::Fixed(config.replication);
    let t = &config.topics;
    let mut topics = vec![NewTopic::new(&t.submitted, config.inbound_partitions, rf())];
    for name in [&t.sequenced, &t.checkpoints, &t.rejected] {
        // The ledger's public history: kept forever, one total order.
        topics.push(NewTopic::new(name, 1, rf()).set("retention.ms", "-1"));
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(topics.iter(), &opts))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BusError::Setup(format!(
                    "cannot create topic {name}: {code}"
                )))
            }
        }
    }
    Ok(())
}

/// Counts outstanding deliveries of one call and remembers the first failure.
#[derive(Default)]
struct Tally {
    state: Mutex<(usize, Option<String>)>,
    done: Condvar,
}

impl Tally {
    fn add(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += 1;
        }
    }

    fn finish(&self, error: Option<String>) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = s.0.saturating_sub(1);
            if s.1.is_none() {
                s.1 = error;
            }
        }
        self.done.notify_all();
    }

    fn wait(&self) -> Result<(), BusError> {
        let mut s = self
            .state
            .lock()
            .map_err(|_| BusError::Kafka("delivery tally poisoned".into()))?;
        while s.0 > 0 {
            s = self
                .done
                .wait(s)
                .map_err(|_| BusError::Kafka("delivery tally poisoned".into()))?;
        }
        match s.1.take() {
            Some(e) => Err(BusError::Kafka(e)),
            None => Ok(()),
        }
    }
}

/// Producer context: routes each delivery report to the tally of its call.
struct Tallying;

impl ClientContext for Tallying {}

impl ProducerContext for Tallying {
    type DeliveryOpaque = Arc<Tally>;

    fn delivery(&self, result: &DeliveryResult<'_>, tally: Arc<Tally>) {
        tally.finish(result.as_ref().err().map(|(e, _)| e.to_string()));
    }
}

fn new_producer(config: &KafkaConfig) -> Result<ThreadedProducer<Tallying>, BusError> {
    Ok(config.producer_config().create_with_context(Tallying)?)
}

/// Sends every record and waits for all delivery reports.
fn send_all(
    producer: &ThreadedProducer<Tallying>,
    records: impl Iterator<Item = (String, String, Vec<u8>, Option<i32>)>,
) -> Result<(), BusError> {
    let tally = Arc::new(Tally::default());
    for (topic, key, payload, partition) in records {
        tally.add();
        let mut record = BaseRecord::with_opaque_to(&topic, tally.clone())
            .key(&key)
            .payload(&payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    tally.finish(Some(e.to_string()));
                    break;
                }
            }
        }
    }
    let result = tally.wait();
    if let Some((code, reason)) = producer.client().fatal_error() {
        return Err(BusError::Kafka(format!(
            "the producer hit a fatal error ({code}): {reason}"
        )));
    }
    result
}

impl Bus for KafkaBus {
    fn describe(&self) -> String {
        format!(
            "kafka at {} (topics {}, {}, {}, {})",
            self.config.bootstrap,
            self.config.topics.submitted,
            self.config.topics.sequenced,
            self.config.topics.checkpoints,
            self.config.topics.rejected
        )
    }

    fn submit(&self, records: &[(&str, &[u8])]) -> Result<(), BusError> {
        let topic = &self.config.topics.submitted;
        send_all(
            &self.producer,
            records
                .iter()
                .map(|(k, b)| (topic.clone(), k.to_string(), b.to_vec(), None)),
        )
    }

    fn inbound(
        &self,
        start: &(dyn Fn(&str) -> u64 + Sync),
    ) -> Result<Box<dyn InboundReader>, BusError> {
        let consumer: BaseConsumer = self.config.consumer_config("clew-sequencer").create()?;
        let topic = self.config.topics.submitted.clone();
        let mut next = BTreeMap::new();
        for p in partitions_of(&consumer, &topic)? {
            next.insert(p, start(&source_name(&topic, p)));
        }
        let mut reader = KafkaInbound {
            consumer,
            topic,
            next,
            refreshed: Instant::now(),
        };
        reader.assign()?;
        Ok(Box::new(reader))
    }

    fn outbound(&self) -> Result<Box<dyn OutboundWriter>, BusError> {
        Ok(Box::new(KafkaOutbound {
            producer: new_producer(&self.config)?,
            topics: self.config.topics.clone(),
        }))
    }

    fn ends(&self) -> Result<FollowFrom, BusError> {
        let consumer: BaseConsumer = self.config.consumer_config("clew-metadata").create()?;
        let end = |s: Stream| -> Result<u64, BusError> {
            let (_, high) =
                consumer.fetch_watermarks(self.config.topics.of(s), 0, Duration::from_secs(15))?;
            Ok(high.max(0) as u64)
        };
        Ok(FollowFrom {
            sequenced: end(Stream::Sequenced)?,
            checkpoints: end(Stream::Checkpoints)?,
            rejected: end(Stream::Rejected)?,
        })
    }

    fn follow(&self, group: &str, from: FollowFrom) -> Result<Box<dyn Follower>, BusError> {
        let consumer: BaseConsumer = self.config.consumer_config(group).create()?;
        let mut tpl = TopicPartitionList::new();
        for s in Stream::ALL {
            tpl.add_partition_offset(
                self.config.topics.of(s),
                0,
                Offset::Offset(from.of(s) as i64),
            )?;
        }
        consumer.assign(&tpl)?;
        Ok(Box::new(KafkaFollower {
            consumer,
            topics: self.config.topics.clone(),
        }))
    }
}

/// Up to `max` messages, waiting at most `timeout` for the first, each mapped
/// by `take` (None: skip it). Transport errors are retried inside the client:
/// they are logged, and what was read so far is returned.
fn poll_batch<T>(
    consumer: &BaseConsumer,
    max: usize,
    timeout: Duration,
    what: &str,
    mut take: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<Option<T>, BusError>,
) -> Result<Vec<T>, BusError> {
    let mut out = Vec::new();
    let mut wait = timeout;
    while out.len() < max {
        match consumer.poll(wait) {
            None => break,
            Some(Ok(m)) => out.extend(take(&m)?),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "{what}");
                break;
            }
        }
        wait = Duration::ZERO;
    }
    Ok(out)
}

/// The inbound source name of one Kafka partition.
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}:{partition}")
}

struct KafkaInbound {
    consumer: BaseConsumer,
    topic: String,
    /// Next offset per partition (what the sequencer has been handed).
    next: BTreeMap<i32, u64>,
    refreshed: Instant,
}

impl KafkaInbound {
    fn assign(&mut self) -> Result<(), BusError> {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in &self.next {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*offset as i64))?;
        }
        self.consumer.assign(&tpl)?;
        Ok(())
    }

    fn refresh_partitions(&mut self) {
        self.refreshed = Instant::now();
        let Ok(found) = partitions_of(&self.consumer, &self.topic) else {
            return;
        };
        let added: Vec<i32> = found
            .into_iter()
            .filter(|p| !self.next.contains_key(p))
            .collect();
        if added.is_empty() {
            return;
        }
        for p in &added {
            // Created after this reader opened: the ledger has never read it.
            self.next.insert(*p, 0);
        }
        tracing::info!(topic = %self.topic, partitions = ?added, "inbound partitions added");
        if let Err(e) = self.assign() {
            tracing::warn!(error = %e, "cannot assign the added inbound partitions");
        }
    }
}

impl InboundReader for KafkaInbound {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<InboundRecord>, BusError> {
        if self.refreshed.elapsed() >= PARTITION_REFRESH {
            self.refresh_partitions();
        }
        let next = &mut self.next;
        poll_batch(&self.consumer, max, timeout, "inbound consumer", |m| {
            let offset = m.offset().max(0) as u64;
            next.insert(m.partition(), offset + 1);
            Ok(Some(InboundRecord {
                source: source_name(m.topic(), m.partition()),
                offset,
                bytes: m.payload().unwrap_or_default().to_vec(),
            }))
        })
    }

    fn consumed(&mut self, positions: &[(String, u64)]) {
        let mut tpl = TopicPartitionList::new();
        for (source, next) in positions {
            if let Some(p) = source
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<i32>().ok())
            {
                let _ = tpl.add_partition_offset(&self.topic, p, Offset::Offset(*next as i64));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "committing inbound lag offsets");
            }
        }
    }
}

struct KafkaOutbound {
    producer: ThreadedProducer<Tallying>,
    topics: Topics,
}

impl OutboundWriter for KafkaOutbound {
    fn publish(&mut self, records: &[Outgoing]) -> Result<(), BusError> {
        let topics = &self.topics;
        send_all(
            &self.producer,
            records.iter().map(|r| {
                let key = match r {
                    Outgoing::Sequenced(e) => e.leaf_index,
                    Outgoing::Checkpoint(c) => c.tree_size,
                    Outgoing::Rejected(r) => r.rejection_index,
                };
                (
                    topics.of(stream_of(r)).to_string(),
                    key.to_string(),
                    encode(r),
                    Some(0),
                )
            }),
        )
    }
}

struct KafkaFollower {
    consumer: BaseConsumer,
    topics: Topics,
}

impl Follower for KafkaFollower {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Published>, BusError> {
        let topics = &self.topics;
        poll_batch(&self.consumer, max, timeout, "follower consumer", |m| {
            let Some(stream) = Stream::ALL.into_iter().find(|s| topics.of(*s) == m.topic()) else {
                return Ok(None);
            };
            let offset = m.offset().max(0) as u64;
            decode(stream, offset, m.payload().unwrap_or_default()).map(Some)
        })
    }

    fn consumed(&mut self, positions: &FollowFrom) {
        let mut tpl = TopicPartitionList::new();
        for s in Stream::ALL {
            let _ = tpl.add_partition_offset(
                self.topics.of(s),
                0,
                Offset::Offset(positions.of(s) as i64),
            );
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "committing follower lag offsets");
        }
    }
}

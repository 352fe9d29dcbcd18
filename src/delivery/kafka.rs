//! The Kafka transport (rskafka): one client per sink, shared by its delivery workers, made on
//! first use and made again after a connection failure. A record counts as delivered only once
//! the partition's leader answers the produce request sent with `acks = -1` (every in-sync
//! replica has it); its outcome goes to the one retry policy ([`super::retry::Tries`]).
//!
//! Every record carries one event and its `Idempotency-Key` header, the same across restarts:
//! rskafka has no idempotent producer, so a record whose ack was lost is written again and
//! consumers drop copies by that header. Records go to partition `murmur2(key) % partitions`,
//! as Kafka's Java client places keyed records, so one key keeps its order with `concurrency: 1`.

use super::Outcomes;
use super::retry::{Attempt, Patience, Tries};
use crate::config::{KafkaEncoding, SaslMechanism};
use crate::record::Record;
use crate::sink::Sink;
use crate::sink::kafka::Kafka;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record as KafkaRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Topics whose partition clients a producer keeps at most; past it they are all dropped (a
/// topic template that renders ever new names must not grow memory without bound).
const MAX_TOPICS: usize = 256;

/// A sink's connection to Kafka, made on first use.
pub struct Producer {
    brokers: Vec<String>,
    /// The brokers, for reasons.
    shown: String,
    /// Trusted roots (webpki plus `ca_file`), when the sink uses TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<SaslConfig>,
    timeout: Duration,
    /// The sink's name, for the client id.
    sink: String,
    client: Mutex<Option<Arc<Client>>>,
    /// Each topic's partition clients (one per partition, by number), found on first use.
    topics: Mutex<HashMap<String, Arc<Vec<Arc<PartitionClient>>>>>,
}

impl Producer {
    /// Checks what can be checked before connecting (the CA file); an error names the key.
    pub fn new(sink: &str, bus: &Kafka) -> Result<Producer, (&'static str, String)> {
        let tls = match bus.tls {
            true => Some(Arc::new(tls_config(bus)?)),
            false => None,
        };
        let sasl = bus.sasl.as_ref().map(|(mechanism, user, password)| {
            let c = Credentials::new(user.clone(), password.expose().to_string());
            match mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(c),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(c),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(c),
            }
        });
        Ok(Producer {
            brokers: bus.brokers.clone(),
            shown: bus.shown.clone(),
            tls,
            sasl,
            timeout: bus.timeout,
            sink: sink.to_string(),
            client: Mutex::new(None),
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// The client, connecting on first use. rskafka's own retries end at three quarters of
    /// `timeout`, so an attempt that cannot connect (refused, a login or a certificate refused)
    /// ends with that reason rather than with the attempt's own timeout.
    async fn client(&self) -> Result<Arc<Client>, KafkaError> {
        let mut held = self.client.lock().await;
        if let Some(client) = &*held {
            return Ok(client.clone());
        }
        let backoff = rskafka::BackoffConfig {
            deadline: Some(self.timeout * 3 / 4),
            max_backoff: Duration::from_millis(500),
            ..Default::default()
        };
        let mut builder = ClientBuilder::new(self.brokers.clone())
            .client_id(format!("flagtail-{}", self.sink))
            .backoff_config(backoff);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone());
        }
        if let Some(sasl) = &self.sasl {
            builder = builder.sasl_config(sasl.clone());
        }
        let client = Arc::new(builder.build().await?);
        *held = Some(client.clone());
        Ok(client)
    }

    /// `topic`'s partition clients; `Ok(None)` when the cluster has no such topic.
    async fn partitions(
        &self,
        topic: &str,
    ) -> Result<Option<Arc<Vec<Arc<PartitionClient>>>>, KafkaError> {
        if let Some(found) = self.topics.lock().await.get(topic) {
            return Ok(Some(found.clone()));
        }
        let client = self.client().await?;
        let listed = client.list_topics().await?;
        let Some(numbers) = listed.into_iter().find(|t| t.name == topic) else {
            return Ok(None);
        };
        let mut clients = Vec::new();
        for number in numbers.partitions {
            let p = client
                .partition_client(topic, number, UnknownTopicHandling::Error)
                .await?;
            clients.push(Arc::new(p));
        }
        let clients = Arc::new(clients);
        let mut topics = self.topics.lock().await;
        if topics.len() >= MAX_TOPICS {
            topics.clear();
        }
        topics.insert(topic.to_string(), clients.clone());
        Ok(Some(clients))
    }

    /// Forgets the client and its partitions after a failure: the next attempt starts afresh.
    async fn forget(&self) {
        *self.client.lock().await = None;
        self.topics.lock().await.clear();
    }

    /// Writes one record to `topic` and waits for its ack, within `timeout`; connecting and
    /// finding the topic first have their own bound (rskafka's retries end before `timeout`,
    /// with the last error, say a refused login; the bound is for a broker that never answers).
    async fn produce(&self, topic: &str, record: KafkaRecord) -> Attempt {
        let key = record.key.clone().unwrap_or_default();
        let at = &self.shown;
        let bound = self.timeout * 2 + Duration::from_secs(1);
        let partitions = match tokio::time::timeout(bound, self.partitions(topic)).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return missing_topic(at, topic),
            Ok(Err(e)) => return self.failed(topic, &e).await,
            Err(_) => {
                self.forget().await;
                let within = humantime::format_duration(bound);
                let reason = format!("Kafka {at}: no metadata for {topic} within {within}");
                return Attempt::Retry { reason };
            }
        };
        let n = (murmur2(&key) & 0x7fff_ffff) as usize % partitions.len().max(1);
        let Some(partition) = partitions.get(n) else {
            return missing_topic(at, topic);
        };
        let write = partition.produce(vec![record], Compression::NoCompression);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(_)) => Attempt::Delivered { status: None },
            Ok(Err(e)) => self.failed(topic, &e).await,
            Err(_) => {
                self.forget().await;
                Attempt::Retry {
                    reason: format!(
                        "Kafka {at}: no ack for a record to {topic} within {}",
                        humantime::format_duration(self.timeout)
                    ),
                }
            }
        }
    }

    /// What a client error comes to; a connection worth another try is opened afresh.
    async fn failed(&self, topic: &str, e: &KafkaError) -> Attempt {
        let attempt = classify(&self.shown, topic, e);
        if matches!(attempt, Attempt::Retry { .. }) {
            self.forget().await;
        }
        attempt
    }

    /// `check --connect`: reaches the cluster's metadata (failing at once if it cannot) and
    /// names each topic's partitions; sends nothing.
    pub async fn check(&self, topics: &[String]) -> Result<Vec<String>, String> {
        // rskafka's retries end before `timeout` for connecting and again for the metadata, with
        // the last error (a refused login, say); this bound is for a broker that never answers.
        let bound = self.timeout * 2 + Duration::from_secs(1);
        let listed =
            tokio::time::timeout(bound, async { self.client().await?.list_topics().await })
                .await
                .map_err(|_| format!("no metadata within {}", humantime::format_duration(bound)))?
                .map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for topic in topics {
            match listed.iter().find(|t| &t.name == topic) {
                Some(t) => found.push(format!(
                    "topic {topic}: {} partition(s)",
                    t.partitions.len()
                )),
                None => return Err(format!("topic {topic} does not exist")),
            }
        }
        Ok(found)
    }
}

/// A topic the cluster does not have (or without partitions): dead-lettered, replayed by itself.
fn missing_topic(at: &str, topic: &str) -> Attempt {
    Attempt::Final {
        reason: format!(
            "Kafka {at}: topic {topic} does not exist (or has no partitions); create it, then `flagtail replay`"
        ),
        retryable: true,
    }
}

/// The TLS config of `bus`: the webpki roots and `ca_file`, and its client certificate if any
/// (the webhooks' own TLS setup: errors name `ca_file`, `cert_file` or `key_file`).
fn tls_config(bus: &Kafka) -> Result<rustls::ClientConfig, (&'static str, String)> {
    super::http::client_config(bus.ca_file.as_deref(), bus.client_cert.as_ref())
}

/// What a failed produce means: refusals sending again cannot change are final; the rest (the
/// broker away, a leader moving, not enough replicas) are tried again.
fn classify(at: &str, topic: &str, e: &KafkaError) -> Attempt {
    let reason = format!("Kafka {at}: {topic}: {e}");
    let KafkaError::ServerError { protocol_error, .. } = e else {
        return Attempt::Retry { reason };
    };
    match protocol_error {
        ProtocolError::MessageTooLarge
        | ProtocolError::RecordListTooLarge
        | ProtocolError::InvalidTopicException
        | ProtocolError::TopicAuthorizationFailed
        | ProtocolError::InvalidRecord
        | ProtocolError::CorruptMessage => Attempt::Final {
            reason,
            retryable: false,
        },
        ProtocolError::UnknownTopicOrPartition => Attempt::Final {
            reason,
            retryable: true,
        },
        _ => Attempt::Retry { reason },
    }
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c): the default
/// partitioner's hash of a record key.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// One event of a group, ready to produce.
struct Message {
    /// Its record's place in the group.
    at: usize,
    topic: String,
    key: Vec<u8>,
    /// Its record's idempotency key: the same whatever group it travels in.
    id: String,
    value: Vec<u8>,
}

/// Delivers `records` as one Kafka record each, one after the other (so one key's records keep
/// their order), each retried under the sink's policy.
pub async fn deliver(
    sink: &Sink,
    bus: &Kafka,
    producer: &Producer,
    records: &[Arc<Record>],
    stop: &CancellationToken,
    patience: Patience<'_>,
) -> Outcomes {
    let (ready, mut outcomes) = prepare(sink, bus, records).await;
    for m in &ready {
        let mut tries = Tries::new(sink, &m.id, patience, &records[m.at..m.at + 1]);
        let result = loop {
            let paced = match &sink.pace {
                Some(pace) => pace.wait(stop).await,
                None => true,
            };
            if !paced || stop.is_cancelled() {
                break super::Result::Abandoned;
            }
            let record = kafka_record(bus, m, &records[m.at].source.name);
            let attempt = producer.produce(&m.topic, record).await;
            if let Some(done) = tries.settle(attempt, stop).await {
                break done;
            }
        };
        outcomes.push((m.at..m.at + 1, result));
    }
    outcomes.sort_by_key(|(range, _)| range.start);
    outcomes
}

/// Each record's topic, key and value; those that cannot be made are outcomes already.
async fn prepare(sink: &Sink, bus: &Kafka, records: &[Arc<Record>]) -> (Vec<Message>, Outcomes) {
    let places = bus.places(records).await;
    let values = match bus.encoding {
        KafkaEncoding::Json => match sink.renderer.render_each_bounded(records).await {
            Ok(bodies) => bodies,
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        },
        KafkaEncoding::Protobuf => records
            .iter()
            .map(|r| Ok(crate::sink::protobuf::encode_event(&r.event)))
            .collect(),
    };
    let (mut ready, mut failed) = (Vec::new(), Vec::new());
    for (at, (place, value)) in std::iter::zip(places, values).enumerate() {
        match (place, value) {
            (Ok((topic, key)), Ok(value)) => ready.push(Message {
                at,
                topic,
                key,
                id: records[at].key(),
                value,
            }),
            (Err(e), _) | (_, Err(e)) => failed.push((at..at + 1, super::render_failed(e))),
        }
    }
    (ready, failed)
}

/// The record of `m` for this attempt: signed now, with flagtail's headers (as a webhook's, in
/// their canonical form) and `Flagtail-Source`.
fn kafka_record(bus: &Kafka, m: &Message, source: &str) -> KafkaRecord {
    let signed = crate::sink::signed_headers(
        &bus.headers,
        bus.signer.as_ref(),
        &m.value,
        &m.id,
        crate::sink::unix_now(),
    );
    let mut headers = BTreeMap::new();
    for (name, value) in &signed {
        if name == ::http::header::USER_AGENT {
            continue;
        }
        headers.insert(
            super::nats::canonical(name.as_str()),
            value.as_bytes().to_vec(),
        );
    }
    headers.insert("Flagtail-Source".into(), source.as_bytes().to_vec());
    KafkaRecord {
        key: Some(m.key.clone()),
        value: Some(m.value.clone()),
        headers,
        timestamp: chrono::DateTime::from_timestamp_millis(unix_millis()).unwrap_or_default(),
    }
}

/// Now, in milliseconds since the Unix epoch (a record's timestamp).
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn murmur2_matches_kafkas_java_client() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(super::murmur2(b"21") as i32, -973932308);
        assert_eq!(super::murmur2(b"foobar") as i32, -790332482);
        assert_eq!(
            super::murmur2(b"a-little-bit-long-string") as i32,
            -985981536
        );
        assert_eq!(
            super::murmur2(b"a-little-bit-longer-string") as i32,
            -1486304829
        );
        assert_eq!(
            super::murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(super::murmur2(b"abc") as i32, 479470107);
    }
}

//! Reading the saga topics as an operator's tool does: without a consumer group (partitions
//! are assigned, never subscribed, so nothing is committed and no service's group is
//! touched), from a point in time to the end, or live from the end.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::CliError;

/// How long a broker may take to answer before the CLI calls it unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// One record, as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

pub struct Reader {
    consumer: BaseConsumer,
}

/// Adds the `KAFKA_CLIENT_*` properties of the environment to `config`, last, so they win
/// over the CLI's own settings, as the services do: a broker that wants SASL or TLS from them
/// wants it from the CLI too.
fn with_client_properties(config: &mut ClientConfig) -> &mut ClientConfig {
    for (property, value) in shared_events::topics::client_properties(std::env::vars()) {
        config.set(property, value);
    }
    config
}

impl Reader {
    /// A client of `bootstrap`, checked by asking the broker for its topics: an unreachable
    /// broker is reported here, once, instead of as a hang.
    pub fn connect(bootstrap: &str) -> Result<Reader, CliError> {
        let consumer: BaseConsumer = with_client_properties(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap)
                // Assigned partitions only, but librdkafka wants a group ID for a consumer.
                .set("group.id", "saga-cli")
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("enable.partition.eof", "false")
                .set("socket.timeout.ms", "5000")
                .set("log_level", "0"),
        )
        .create()
        .map_err(|e| CliError::Kafka(e.to_string()))?;
        consumer
            .fetch_metadata(None, BROKER_TIMEOUT)
            .map_err(|e| CliError::Unreachable(format!("Kafka at {bootstrap}: {e}")))?;
        Ok(Reader { consumer })
    }

    /// The partitions of `topic`; an unknown topic is an error naming it.
    fn partitions(&self, topic: &str) -> Result<Vec<i32>, CliError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .map_err(|e| CliError::Unreachable(e.to_string()))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(CliError::NoTopic(topic.to_owned()));
        }
        Ok(partitions)
    }

    /// Every record of `topics` from `since` (or the beginning) up to the end as it is now.
    pub fn read(
        &self,
        topics: &[String],
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Record>, CliError> {
        let mut start = TopicPartitionList::new();
        let mut ends = Vec::new();
        for topic in topics {
            for partition in self.partitions(topic)? {
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
                    .map_err(|e| CliError::Unreachable(e.to_string()))?;
                if high > low {
                    // A time here is looked up below; without one, from the first offset
                    // still on the broker.
                    let offset = match since {
                        Some(at) => Offset::Offset(at.timestamp_millis()),
                        None => Offset::Offset(low),
                    };
                    start
                        .add_partition_offset(topic, partition, offset)
                        .map_err(|e| CliError::Kafka(e.to_string()))?;
                    ends.push((topic.clone(), partition, high));
                }
            }
        }
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        // A time becomes, per partition, the first offset at or after it (or the end).
        let start = if since.is_some() {
            let by_time = self
                .consumer
                .offsets_for_times(start, BROKER_TIMEOUT)
                .map_err(|e| CliError::Unreachable(e.to_string()))?;
            let mut resolved = TopicPartitionList::new();
            for element in by_time.elements() {
                let offset = match element.offset() {
                    Offset::Offset(n) => Offset::Offset(n),
                    // Nothing at or after the time: start at the end, so read nothing.
                    _ => Offset::End,
                };
                resolved
                    .add_partition_offset(element.topic(), element.partition(), offset)
                    .map_err(|e| CliError::Kafka(e.to_string()))?;
            }
            resolved
        } else {
            start
        };
        let mut waiting: Vec<(String, i32, i64)> = Vec::new();
        for element in start.elements() {
            let end = ends
                .iter()
                .find(|(t, p, _)| t == element.topic() && *p == element.partition())
                .map_or(0, |(_, _, high)| *high);
            if let Offset::Offset(n) = element.offset()
                && n < end
            {
                waiting.push((element.topic().to_owned(), element.partition(), end));
            }
        }
        self.consumer
            .assign(&start)
            .map_err(|e| CliError::Kafka(e.to_string()))?;
        let mut records = Vec::new();
        let mut quiet = Duration::ZERO;
        while !waiting.is_empty() {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    quiet = Duration::ZERO;
                    let record = to_record(&message);
                    waiting.retain(|(t, p, end)| {
                        !(t == &record.topic && *p == record.partition && record.offset + 1 >= *end)
                    });
                    records.push(record);
                }
                Some(Err(error)) => return Err(CliError::Kafka(error.to_string())),
                None => {
                    quiet += Duration::from_millis(200);
                    if quiet > BROKER_TIMEOUT * 2 {
                        return Err(CliError::Unreachable(
                            "Kafka stopped answering while the topics were read".to_owned(),
                        ));
                    }
                }
            }
        }
        Ok(records)
    }

    /// Calls `each` with every record that arrives on `topics` from now on, until it returns
    /// `false`.
    pub fn follow(
        &self,
        topics: &[String],
        mut each: impl FnMut(Record) -> bool,
    ) -> Result<(), CliError> {
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            for partition in self.partitions(topic)? {
                assignment
                    .add_partition_offset(topic, partition, Offset::End)
                    .map_err(|e| CliError::Kafka(e.to_string()))?;
            }
        }
        self.consumer
            .assign(&assignment)
            .map_err(|e| CliError::Kafka(e.to_string()))?;
        loop {
            match self.consumer.poll(Duration::from_millis(500)) {
                Some(Ok(message)) if !each(to_record(&message)) => return Ok(()),
                Some(Ok(_)) | None => {}
                Some(Err(error)) => return Err(CliError::Kafka(error.to_string())),
            }
        }
    }
}

fn to_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        headers,
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}

/// Remembers the delivery report of the one record [`republish`] sends.
#[derive(Default)]
struct Delivery(Mutex<Option<Result<(), String>>>);

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let outcome = result.as_ref().map(|_| ()).map_err(|(e, _)| e.to_string());
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }
}

/// Publishes `record`'s key, headers and value to `topic` and waits for Kafka's
/// acknowledgement (idempotent producer, `acks=all`, as the services publish). Headers named
/// `dlq_*` (added when the record was dead-lettered) are left behind.
pub fn republish(bootstrap: &str, topic: &str, record: &Record) -> Result<(), CliError> {
    let producer: ThreadedProducer<Delivery> = with_client_properties(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .set("log_level", "0"),
    )
    .create_with_context(Delivery::default())
    .map_err(|e| CliError::Kafka(e.to_string()))?;
    let mut headers = OwnedHeaders::new();
    for (key, value) in record
        .headers
        .iter()
        .filter(|(key, _)| !key.starts_with("dlq_"))
    {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: Some(value.as_str()),
        });
    }
    let mut out = BaseRecord::to(topic)
        .payload(&record.payload)
        .headers(headers);
    if let Some(key) = &record.key {
        out = out.key(key.as_str());
    }
    producer
        .send(out)
        .map_err(|(e, _)| CliError::Kafka(e.to_string()))?;
    producer
        .flush(Duration::from_secs(15))
        .map_err(|e| CliError::Kafka(format!("the record was not acknowledged: {e}")))?;
    let reported = producer
        .context()
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    match reported {
        Some(Ok(())) => Ok(()),
        Some(Err(error)) => Err(CliError::Kafka(format!(
            "Kafka refused the record: {error}"
        ))),
        None => Err(CliError::Kafka("no delivery report from Kafka".to_owned())),
    }
}

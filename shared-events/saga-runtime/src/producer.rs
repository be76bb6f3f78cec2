//! The services' Kafka producer: rdkafka's `BaseProducer`, a thread that serves its delivery
//! reports, and a future per record that resolves with the record's delivery report.
//!
//! rdkafka's `FutureProducer` is the same thing, but its thread polls in rounds of 100 ms and,
//! in rdkafka 0.39, spins through the last millisecond of every round: `BaseProducer::poll`
//! polls again until its deadline, and hands librdkafka the time left rounded *down* to whole
//! milliseconds, so under a millisecond before the deadline it polls with a timeout of 0,
//! which returns at once. That was about 0.9% of a core per producer, idle or busy (two
//! producers per service, six on the stack). Here a round lasts [`SERVE_ROUND`], so the spin
//! is one part in several thousand of the thread's time. A delivery report is served as soon
//! as librdkafka queues it either way: the poll blocks on librdkafka's queue, not on a timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::Client;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage, Timestamp, ToBytes};
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureRecord, Producer, ProducerContext,
};
use rdkafka::util::Timeout;
use tokio::sync::oneshot;

use crate::kafka::QuietErrors;

/// How long one poll of the serving thread lasts. A dropped producer is released by its
/// thread at the end of the round, so this is also how long a dropped producer (a replaced
/// one, or a test's) keeps its connections.
pub const SERVE_ROUND: Duration = Duration::from_secs(5);

/// How long `send` waits before it offers a record again to a full local queue.
const QUEUE_FULL_RETRY: Duration = Duration::from_millis(100);

/// The process's producer; clones share one librdkafka client.
#[derive(Clone)]
pub struct SagaProducer {
    served: Arc<Served>,
}

/// The producer and the flag that ends its serving thread when the last clone is dropped.
struct Served {
    producer: Arc<BaseProducer<QuietErrors>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        // The thread sees the flag at the end of its round and drops its handle on the
        // producer, the last one: rdkafka then purges and flushes what is left.
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl ProducerContext for QuietErrors {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, reply: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, message)) => Err((error.clone(), message.detach())),
        };
        // The sender's future may have been dropped (a cancelled send): nobody to tell.
        let _ = reply.send(owned);
    }
}

impl SagaProducer {
    pub fn new(config: &ClientConfig, context: QuietErrors) -> Result<Self, KafkaError> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let stop = Arc::new(AtomicBool::new(false));
        let serving = Arc::clone(&producer);
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("kafka deliveries".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    serving.poll(SERVE_ROUND);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("cannot start its thread: {e}")))?;
        Ok(Self {
            served: Arc::new(Served { producer, stop }),
        })
    }

    pub fn client(&self) -> &Client<QuietErrors> {
        self.served.producer.client()
    }

    /// Queues `record` and waits for its delivery report. While librdkafka's local queue is
    /// full, the record is offered again every 100 ms until `queue_timeout` has passed.
    pub async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: impl Into<Timeout>,
    ) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        let queue_timeout = queue_timeout.into();
        let (reply, delivered) = oneshot::channel();
        let mut queued = BaseRecord {
            topic: record.topic,
            partition: record.partition,
            payload: record.payload,
            key: record.key,
            timestamp: record.timestamp,
            headers: record.headers,
            delivery_opaque: Box::new(reply),
        };
        loop {
            match self.served.producer.send(queued) {
                Ok(()) => break,
                Err((error, refused))
                    if error == KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        && match queue_timeout {
                            Timeout::Never => true,
                            Timeout::After(limit) => started.elapsed() < limit,
                        } =>
                {
                    queued = refused;
                    tokio::time::sleep(QUEUE_FULL_RETRY).await;
                }
                Err((error, refused)) => return Err((error, unsent(refused))),
            }
        }
        // librdkafka reports every queued record, purged ones included, so the sender is only
        // dropped unanswered if the producer is torn down underneath it.
        let topic = record.topic;
        match delivered.await {
            Ok(result) => result,
            Err(_) => Err((
                KafkaError::Canceled,
                OwnedMessage::new(
                    None,
                    None,
                    topic.to_owned(),
                    Timestamp::NotAvailable,
                    -1,
                    -1,
                    None,
                ),
            )),
        }
    }
}

/// The record librdkafka refused, as the message a failed delivery reports.
fn unsent<K, P, D>(record: BaseRecord<'_, K, P, D>) -> OwnedMessage
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    D: rdkafka::util::IntoOpaque,
{
    OwnedMessage::new(
        record.payload.map(|p| p.to_bytes().to_vec()),
        record.key.map(|k| k.to_bytes().to_vec()),
        record.topic.to_owned(),
        record
            .timestamp
            .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
        record.partition.unwrap_or(-1),
        -1,
        record.headers,
    )
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use rdkafka::message::Message;

    use super::*;

    /// A producer with room for one record, whose broker never answers (nothing listens on
    /// the discard port), so what it queues stays queued.
    fn producer_with_room_for_one() -> Result<SagaProducer, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("queue.buffering.max.messages", "1")
            .set("message.timeout.ms", "60000");
        SagaProducer::new(&config, QuietErrors::default())
    }

    #[tokio::test]
    async fn a_full_queue_is_offered_the_record_until_the_queue_timeout_then_refuses_it()
    -> Result<(), Box<dyn std::error::Error>> {
        let producer = producer_with_room_for_one()?;
        let first = producer.send(
            FutureRecord::<str, str>::to("saga-test").payload("first"),
            Timeout::Never,
        );
        tokio::pin!(first);
        // Polled once, the first record is queued, and waits for a broker that never comes.
        assert!(first.as_mut().now_or_never().is_none());

        let limit = Duration::from_millis(300);
        let started = Instant::now();
        let second = producer
            .send(
                FutureRecord::to("saga-test").key("saga").payload("second"),
                limit,
            )
            .await;
        let Err((error, refused)) = second else {
            return Err("a full queue took the record".into());
        };
        assert_eq!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
        );
        assert!(
            started.elapsed() >= limit,
            "refused before its queue timeout"
        );
        assert_eq!(refused.topic(), "saga-test");
        assert_eq!(refused.key(), Some(&b"saga"[..]));
        assert_eq!(refused.payload(), Some(&b"second"[..]));
        Ok(())
    }
}

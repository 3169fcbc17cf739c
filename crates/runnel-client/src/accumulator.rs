//! One partition's records waiting to be sent, gathered into batches.
//!
//! A batch is closed when the next record would take it past the batch
//! size, or when it is full; an open batch is sent once it has waited the
//! linger time, or at once when a flush asks for its records. Pure: the
//! caller passes the time in and does the sending, so batching is tested
//! without a clock or a network.
//!
//! An idempotent producer numbers each partition's records with a
//! [`Sequencer`] as it seals a batch for its first send: the sequence and
//! the bytes are fixed from then on, so every retry carries the same
//! ones and the leader can recognise a batch it already holds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_api::ProducerIdentity;
use runnel_wire::batch::BATCH_HEADER_LEN;
use runnel_wire::{BatchEncoder, Compression, RecordHeader, WireError};

/// Most bytes a record adds to a batch besides its key, value and headers:
/// its length, attributes, timestamp and offset deltas, key and value
/// lengths and header count, each varint at its widest.
const RECORD_OVERHEAD_BYTES: usize = 5 + 1 + 10 + 5 + 5 + 5 + 5;
/// Most bytes a header adds besides its key and value: their lengths.
const HEADER_OVERHEAD_BYTES: usize = 10;

/// Bytes a record takes in an uncompressed batch, at most.
pub(crate) fn record_size(key: Option<&[u8]>, value: &[u8], headers: &[RecordHeader]) -> usize {
    let headers: usize = headers
        .iter()
        .map(|header| {
            HEADER_OVERHEAD_BYTES + header.key.len() + header.value.as_ref().map_or(0, Vec::len)
        })
        .sum();
    RECORD_OVERHEAD_BYTES + key.map_or(0, <[u8]>::len) + value.len() + headers
}

/// A record as handed to the accumulator.
#[derive(Debug, Clone)]
pub(crate) struct RecordParts {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<RecordHeader>,
}

/// A batch to send, with the ticket of each of its records in order
/// (whatever the caller needs to report each record's outcome).
#[derive(Debug)]
pub(crate) struct ReadyBatch<T> {
    pub encoder: BatchEncoder,
    pub tickets: Vec<T>,
    /// When its first record arrived: the delivery timeout counts from
    /// here.
    pub opened_at: Instant,
}

#[derive(Debug)]
struct OpenBatch<T> {
    encoder: BatchEncoder,
    tickets: Vec<T>,
    size_bytes: usize,
    opened_at: Instant,
    /// Sequence number (see [`Accumulator::appended`]) of its first record.
    first_sequence: u64,
}

/// What the partition's sender should do next.
#[derive(Debug)]
pub(crate) enum Next<T> {
    Send(ReadyBatch<T>),
    /// An open batch is lingering until then.
    WaitUntil(Instant),
    /// Nothing is waiting.
    Idle,
}

#[derive(Debug)]
pub(crate) struct Accumulator<T> {
    batch_size: usize,
    compression: Compression,
    open: Option<OpenBatch<T>>,
    /// Closed batches, oldest first.
    ready: VecDeque<ReadyBatch<T>>,
    /// Records ever appended; the next record's sequence number.
    appended: u64,
    /// Records with a sequence number below this are sent without
    /// lingering: a flush is waiting for them.
    flush_below: u64,
}

impl<T> Accumulator<T> {
    pub fn new(batch_size: usize, compression: Compression) -> Accumulator<T> {
        Accumulator {
            batch_size,
            compression,
            open: None,
            ready: VecDeque::new(),
            appended: 0,
            flush_below: 0,
        }
    }

    /// Adds a record. Returns whether the sender must be woken: a batch
    /// was opened (its linger starts) or closed (it can go).
    pub fn append(&mut self, now: Instant, record: RecordParts, ticket: T) -> bool {
        let size = record_size(record.key.as_deref(), &record.value, &record.headers);
        let mut wake = false;
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.size_bytes + size > self.batch_size)
        {
            self.close_open();
            wake = true;
        }
        let compression = self.compression;
        let first_sequence = self.appended;
        let open = self.open.get_or_insert_with(|| {
            wake = true;
            OpenBatch {
                encoder: BatchEncoder::new(compression),
                tickets: Vec::new(),
                size_bytes: BATCH_HEADER_LEN,
                opened_at: now,
                first_sequence,
            }
        });
        open.encoder.push(
            record.timestamp,
            record.key.as_deref(),
            Some(&record.value),
            &record.headers,
        );
        open.tickets.push(ticket);
        open.size_bytes += size;
        self.appended += 1;
        if open.size_bytes >= self.batch_size {
            self.close_open();
            wake = true;
        }
        wake
    }

    /// Sends every record appended so far without lingering. Returns how
    /// many records have been appended, for the caller to wait on.
    pub fn request_flush(&mut self) -> u64 {
        self.flush_below = self.appended;
        self.appended
    }

    /// The next batch to send, or how long to wait for one. With
    /// `draining` (the producer is closing) nothing lingers.
    pub fn next(&mut self, now: Instant, linger: Duration, draining: bool) -> Next<T> {
        if let Some(batch) = self.ready.pop_front() {
            return Next::Send(batch);
        }
        let Some(open) = &self.open else {
            return Next::Idle;
        };
        let deadline = open.opened_at + linger;
        if draining || open.first_sequence < self.flush_below || now >= deadline {
            self.close_open();
            return match self.ready.pop_front() {
                Some(batch) => Next::Send(batch),
                None => Next::Idle,
            };
        }
        Next::WaitUntil(deadline)
    }

    /// Takes every record waiting, in closed and open batches, oldest
    /// first, leaving the accumulator empty: for failing them unsent.
    pub fn take_all(&mut self) -> Vec<T> {
        self.close_open();
        self.ready
            .drain(..)
            .flat_map(|batch| batch.tickets)
            .collect()
    }

    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.ready.push_back(ReadyBatch {
                encoder: open.encoder,
                tickets: open.tickets,
                opened_at: open.opened_at,
            });
        }
    }
}

/// Numbers the batches of one partition for an idempotent producer:
/// the producer id and epoch, and the sequence number of each batch's
/// first record, counting records from 0 in each epoch.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// `None` once the epochs of the producer id are used up: a new id
    /// from the SC is needed.
    identity: Option<ProducerIdentity>,
    next_sequence: i32,
}

impl Sequencer {
    pub fn new(identity: ProducerIdentity) -> Sequencer {
        Sequencer {
            identity: Some(identity),
            next_sequence: 0,
        }
    }

    /// Whether [`Sequencer::start_identity`] must be called before the
    /// next batch is sealed.
    pub fn needs_identity(&self) -> bool {
        self.identity.is_none()
    }

    /// Numbers batches under a new producer id from 0.
    pub fn start_identity(&mut self, identity: ProducerIdentity) {
        self.identity = Some(identity);
        self.next_sequence = 0;
    }

    /// Stamps the producer and the next sequence number into the batch and
    /// encodes it. The sequence moves past its records only if it
    /// encodes: a batch that is never sent leaves no gap.
    ///
    /// Panics without an identity (see [`Sequencer::needs_identity`]).
    pub fn seal(&mut self, mut encoder: BatchEncoder) -> Result<Bytes, WireError> {
        let identity = self
            .identity
            .expect("a sequencer seals only with a producer identity");
        let records = i32::try_from(encoder.record_count())
            .expect("a batch holds far fewer records than i32::MAX");
        encoder.set_producer(
            identity.producer_id,
            identity.producer_epoch,
            self.next_sequence,
        );
        let bytes = encoder.finish()?;
        self.next_sequence = sequence_after(self.next_sequence, records);
        Ok(Bytes::from(bytes))
    }

    /// Starts a new sequence after a batch failed. Its sequence numbers
    /// were given and it may or may not be stored, so the next batch can
    /// neither reuse them (the leader could take it for the failed one)
    /// nor skip them (a gap): the producer moves to the next epoch of its
    /// id, where sequences start at 0 again. Kafka's idempotent producer
    /// does the same; ids are never given out twice, so no other producer
    /// is fenced by it. After the last epoch a new id is needed.
    pub fn restart(&mut self) {
        self.identity = self.identity.and_then(|identity| {
            let producer_epoch = identity.producer_epoch.checked_add(1)?;
            Some(ProducerIdentity {
                producer_epoch,
                ..identity
            })
        });
        self.next_sequence = 0;
    }
}

/// The sequence number `increment` after `sequence`, wrapping from
/// `i32::MAX` to 0 as Kafka's do.
fn sequence_after(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

#[cfg(test)]
mod tests {
    use runnel_wire::{DecodeLimits, RecordBatch};

    use super::*;

    fn record(value: &str) -> RecordParts {
        RecordParts {
            timestamp: 1_700_000_000_000,
            key: None,
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: Vec::new(),
        }
    }

    fn sent<T: std::fmt::Debug>(next: Next<T>) -> ReadyBatch<T> {
        match next {
            Next::Send(batch) => batch,
            other => panic!("expected a batch to send, got {other:?}"),
        }
    }

    /// Values of a batch, decoded from its encoding.
    fn values(batch: ReadyBatch<u32>) -> Vec<String> {
        let bytes = batch.encoder.finish().expect("encode");
        let (decoded, _) = RecordBatch::decode(&bytes, DecodeLimits::default()).expect("decode");
        decoded
            .records
            .into_iter()
            .map(|record| String::from_utf8(record.value.expect("value")).expect("utf-8"))
            .collect()
    }

    #[test]
    fn a_batch_lingers_then_goes() {
        let start = Instant::now();
        let linger = Duration::from_millis(5);
        let mut accumulator = Accumulator::new(16 << 10, Compression::None);
        assert!(matches!(accumulator.next(start, linger, false), Next::Idle));
        assert!(
            accumulator.append(start, record("a"), 0),
            "a new batch wakes the sender"
        );
        assert!(
            !accumulator.append(start, record("b"), 1),
            "a growing batch does not"
        );
        match accumulator.next(start, linger, false) {
            Next::WaitUntil(deadline) => assert_eq!(deadline, start + linger),
            other => panic!("expected to linger, got {other:?}"),
        }
        let batch = sent(accumulator.next(start + linger, linger, false));
        assert_eq!(batch.tickets, [0, 1]);
        assert_eq!(values(batch), ["a", "b"]);
        assert!(matches!(
            accumulator.next(start + linger, linger, false),
            Next::Idle
        ));
    }

    #[test]
    fn batches_close_at_the_batch_size() {
        let now = Instant::now();
        let linger = Duration::from_secs(60);
        let one = record_size(None, b"0123456789", &[]);
        // Room for the header and exactly three records.
        let mut accumulator = Accumulator::new(BATCH_HEADER_LEN + 3 * one, Compression::None);
        for ticket in 0..7 {
            accumulator.append(now, record("0123456789"), ticket);
        }
        let first = sent(accumulator.next(now, linger, false));
        assert_eq!(first.tickets, [0, 1, 2]);
        let second = sent(accumulator.next(now, linger, false));
        assert_eq!(second.tickets, [3, 4, 5]);
        assert!(
            matches!(accumulator.next(now, linger, false), Next::WaitUntil(_)),
            "the last record lingers in an open batch"
        );
        let encoded = first.encoder.finish().expect("encode");
        assert!(encoded.len() <= BATCH_HEADER_LEN + 3 * one);
    }

    #[test]
    fn a_record_larger_than_the_batch_size_goes_alone() {
        let now = Instant::now();
        let linger = Duration::from_secs(60);
        let mut accumulator = Accumulator::new(200, Compression::None);
        accumulator.append(now, record("small"), 0);
        accumulator.append(now, record(&"x".repeat(500)), 1);
        accumulator.append(now, record("after"), 2);
        assert_eq!(sent(accumulator.next(now, linger, false)).tickets, [0]);
        assert_eq!(sent(accumulator.next(now, linger, false)).tickets, [1]);
        assert!(matches!(
            accumulator.next(now, linger, false),
            Next::WaitUntil(_)
        ));
    }

    #[test]
    fn a_flush_sends_what_was_appended_before_it_without_lingering() {
        let now = Instant::now();
        let linger = Duration::from_secs(60);
        let mut accumulator = Accumulator::new(16 << 10, Compression::None);
        accumulator.append(now, record("a"), 0);
        accumulator.append(now, record("b"), 1);
        assert_eq!(accumulator.request_flush(), 2);
        assert_eq!(sent(accumulator.next(now, linger, false)).tickets, [0, 1]);
        accumulator.append(now, record("c"), 2);
        assert!(
            matches!(accumulator.next(now, linger, false), Next::WaitUntil(_)),
            "records after the flush linger again"
        );
        assert_eq!(
            sent(accumulator.next(now, linger, true)).tickets,
            [2],
            "draining sends at once"
        );
        assert_eq!(accumulator.request_flush(), 3);
    }

    #[test]
    fn take_all_empties_closed_and_open_batches_in_order() {
        let now = Instant::now();
        let linger = Duration::from_secs(60);
        let one = record_size(None, b"0123456789", &[]);
        let mut accumulator = Accumulator::new(BATCH_HEADER_LEN + 2 * one, Compression::None);
        for ticket in 0..5 {
            accumulator.append(now, record("0123456789"), ticket);
        }
        assert_eq!(accumulator.take_all(), [0, 1, 2, 3, 4]);
        assert!(matches!(accumulator.next(now, linger, true), Next::Idle));
        accumulator.append(now, record("0123456789"), 5);
        assert_eq!(
            sent(accumulator.next(now, linger, true)).tickets,
            [5],
            "records after it batch as usual"
        );
    }

    #[test]
    fn batches_carry_keys_headers_and_timestamps() {
        let now = Instant::now();
        let mut accumulator = Accumulator::new(16 << 10, Compression::None);
        let header = RecordHeader {
            key: b"trace".to_vec(),
            value: Some(b"42".to_vec()),
        };
        accumulator.append(
            now,
            RecordParts {
                timestamp: 1_000,
                key: Some(Bytes::from_static(b"k")),
                value: Bytes::from_static(b"v"),
                headers: vec![header.clone()],
            },
            0u32,
        );
        accumulator.append(
            now,
            RecordParts {
                timestamp: 1_005,
                key: None,
                value: Bytes::from_static(b"w"),
                headers: Vec::new(),
            },
            1,
        );
        let batch = sent(accumulator.next(now, Duration::ZERO, false));
        let bytes = batch.encoder.finish().expect("encode");
        let (decoded, _) = RecordBatch::decode(&bytes, DecodeLimits::default()).expect("decode");
        let first = &decoded.records[0];
        assert_eq!(first.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(first.headers, [header]);
        assert_eq!(decoded.timestamp_of(first), 1_000);
        assert_eq!(decoded.timestamp_of(&decoded.records[1]), 1_005);
        assert_eq!(decoded.records[1].offset_delta, 1);
    }

    fn encoder(records: usize) -> BatchEncoder {
        let mut encoder = BatchEncoder::new(Compression::None);
        for index in 0..records {
            encoder.push(1_000 + index as i64, None, Some(b"v"), &[]);
        }
        encoder
    }

    /// Producer id, epoch and base sequence of a sealed batch.
    fn numbering(bytes: &[u8]) -> (i64, i16, i32) {
        let (decoded, _) = RecordBatch::decode(bytes, DecodeLimits::default()).expect("decode");
        let header = decoded.header;
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        )
    }

    const IDENTITY: ProducerIdentity = ProducerIdentity {
        producer_id: 77,
        producer_epoch: 0,
    };

    #[test]
    fn sealed_batches_number_records_consecutively() {
        let mut sequencer = Sequencer::new(IDENTITY);
        let sealed: Vec<_> = [3, 1, 2]
            .into_iter()
            .map(|records| numbering(&sequencer.seal(encoder(records)).expect("seal")))
            .collect();
        assert_eq!(sealed, [(77, 0, 0), (77, 0, 3), (77, 0, 4)]);
    }

    #[test]
    fn sequences_wrap_from_the_largest_to_zero() {
        let mut sequencer = Sequencer::new(IDENTITY);
        sequencer.next_sequence = i32::MAX - 1;
        let first = sequencer.seal(encoder(3)).expect("seal");
        assert_eq!(numbering(&first).2, i32::MAX - 1);
        let second = sequencer.seal(encoder(1)).expect("seal");
        assert_eq!(numbering(&second).2, 1, "MAX - 1, MAX, 0, then 1");
    }

    #[test]
    fn a_restart_moves_to_the_next_epoch_from_zero() {
        let mut sequencer = Sequencer::new(IDENTITY);
        sequencer.seal(encoder(5)).expect("seal");
        sequencer.restart();
        assert!(!sequencer.needs_identity());
        let bytes = sequencer.seal(encoder(1)).expect("seal");
        assert_eq!(numbering(&bytes), (77, 1, 0));
    }

    #[test]
    fn after_the_last_epoch_a_new_producer_id_is_needed() {
        let mut sequencer = Sequencer::new(ProducerIdentity {
            producer_id: 77,
            producer_epoch: i16::MAX,
        });
        sequencer.seal(encoder(2)).expect("seal");
        sequencer.restart();
        assert!(sequencer.needs_identity());
        sequencer.start_identity(ProducerIdentity {
            producer_id: 78,
            producer_epoch: 0,
        });
        let bytes = sequencer.seal(encoder(1)).expect("seal");
        assert_eq!(numbering(&bytes), (78, 0, 0));
    }
}

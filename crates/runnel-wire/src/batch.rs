//! Kafka RecordBatch v2: the header at fixed positions, the records as
//! varint-framed entries, optionally compressed as one block.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset             (i64, outside the CRC)
//!      8     4  batch_length            (i32, bytes after this field)
//!     12     4  partition_leader_epoch  (i32, outside the CRC)
//!     16     1  magic                   (i8, always 2)
//!     17     4  crc                     (u32, CRC-32C of bytes 21..end)
//!     21     2  attributes              (i16)
//!     23     4  last_offset_delta       (i32)
//!     27     8  base_timestamp          (i64, ms)
//!     35     8  max_timestamp           (i64, ms)
//!     43     8  producer_id             (i64, -1 if none)
//!     51     2  producer_epoch          (i16)
//!     53     4  base_sequence           (i32)
//!     57     4  record_count            (i32)
//!     61     -  records (compressed as one block when a codec is set)
//! ```
//! All integers big-endian. The leader rewrites base offset and leader epoch
//! in place; both sit outside the CRC, so the batch stays valid.

use runnel_types::{LeaderEpoch, Offset};

use bytes::Bytes;

use crate::WireError;
use crate::compression::{self, Compression};
use crate::varint::{get_varint, get_varlong, put_varint, put_varlong, varint_len, varlong_len};

/// Size of the fixed header, up to the first record.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batch_length` counts: base offset and the length itself.
pub const LOG_OVERHEAD: usize = 12;
/// The only record batch version Runnel reads and writes.
pub const MAGIC: i8 = 2;
/// Where the CRC-covered bytes begin.
const CRC_START: usize = 21;
const MAGIC_POSITION: usize = 16;
const CRC_POSITION: usize = 17;
const LEADER_EPOCH_POSITION: usize = 12;

/// Attribute bits after the three codec bits.
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;

/// Smallest encoded record: length, attributes, timestamp and offset deltas,
/// key and value lengths, header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

/// Producer id of a batch from a producer that is not idempotent.
pub const NO_PRODUCER_ID: i64 = -1;

/// The fixed-size front of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header from the front of `bytes` and checks that its length
    /// and magic are plausible. It does not check the CRC: see
    /// [`verify_crc`].
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, WireError> {
        let Some(fixed) = bytes.first_chunk::<BATCH_HEADER_LEN>() else {
            return Err(WireError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: bytes.len(),
            });
        };
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(field(fixed, 0)),
            batch_length: i32::from_be_bytes(field(fixed, 8)),
            partition_leader_epoch: i32::from_be_bytes(field(fixed, 12)),
            magic: fixed[MAGIC_POSITION] as i8,
            crc: u32::from_be_bytes(field(fixed, CRC_POSITION)),
            attributes: i16::from_be_bytes(field(fixed, 21)),
            last_offset_delta: i32::from_be_bytes(field(fixed, 23)),
            base_timestamp: i64::from_be_bytes(field(fixed, 27)),
            max_timestamp: i64::from_be_bytes(field(fixed, 35)),
            producer_id: i64::from_be_bytes(field(fixed, 43)),
            producer_epoch: i16::from_be_bytes(field(fixed, 51)),
            base_sequence: i32::from_be_bytes(field(fixed, 53)),
            record_count: i32::from_be_bytes(field(fixed, 57)),
        };
        if header.magic != MAGIC {
            return Err(WireError::BadMagic(header.magic));
        }
        if (header.batch_length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
            return Err(WireError::BadBatchLength(header.batch_length));
        }
        // Neither field is covered by the CRC: their sum must not overflow
        // wherever a batch's next offset is computed.
        if header
            .base_offset
            .checked_add(i64::from(header.last_offset_delta))
            .and_then(|last| last.checked_add(1))
            .is_none()
        {
            return Err(WireError::OffsetOverflow {
                base_offset: header.base_offset,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// Absolute timestamp of a record of this batch with the given
    /// timestamp delta: the batch's max timestamp when the broker stamps
    /// append time, else the base timestamp plus the delta.
    pub fn record_timestamp(&self, timestamp_delta: i64) -> i64 {
        if self.is_log_append_time() {
            self.max_timestamp
        } else {
            self.base_timestamp.wrapping_add(timestamp_delta)
        }
    }

    /// Bytes the whole batch occupies, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset)
    }

    /// Offset of the last record the batch covers.
    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset + i64::from(self.last_offset_delta))
    }

    /// The offset right after this batch.
    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.partition_leader_epoch)
    }

    pub fn compression(&self) -> Result<Compression, WireError> {
        Compression::from_id((self.attributes & 0b111) as u8)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    fn write(&self, out: &mut [u8; BATCH_HEADER_LEN]) {
        out[0..8].copy_from_slice(&self.base_offset.to_be_bytes());
        out[8..12].copy_from_slice(&self.batch_length.to_be_bytes());
        out[12..16].copy_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out[16] = self.magic as u8;
        out[17..21].copy_from_slice(&self.crc.to_be_bytes());
        out[21..23].copy_from_slice(&self.attributes.to_be_bytes());
        out[23..27].copy_from_slice(&self.last_offset_delta.to_be_bytes());
        out[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        out[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        out[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        out[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        out[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        out[57..61].copy_from_slice(&self.record_count.to_be_bytes());
    }
}

fn field<const N: usize>(bytes: &[u8; BATCH_HEADER_LEN], at: usize) -> [u8; N] {
    bytes[at..at + N]
        .try_into()
        .expect("field lies inside the fixed header")
}

/// Total length of the batch at the front of `bytes`, read from its length
/// field, or `None` if fewer than [`LOG_OVERHEAD`] bytes are there.
pub fn peek_total_len(bytes: &[u8]) -> Option<Result<usize, WireError>> {
    let length = i32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
    if (length as i64) < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i64 {
        return Some(Err(WireError::BadBatchLength(length)));
    }
    Some(Ok(length as usize + LOG_OVERHEAD))
}

/// CRC-32C over the covered part of a whole batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c(&batch[CRC_START..])
}

/// CRC-32C (Castagnoli), the checksum of Kafka's batches, which Runnel also
/// uses for its own files.
pub fn crc32c(bytes: &[u8]) -> u32 {
    // crc-fast folds with carry-less multiplication, about four times the
    // speed of the SSE4.2 `crc32` instruction loop here: on the append path
    // the check would otherwise cost as much as a fifth of a page-cache
    // write (docs/benchmarks.md).
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// Checks the stored CRC of a whole batch (exactly one batch, header
/// included) against its contents.
pub fn verify_crc(batch: &[u8]) -> Result<(), WireError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(WireError::Truncated {
            needed: BATCH_HEADER_LEN,
            available: batch.len(),
        });
    }
    let stored = u32::from_be_bytes(batch[CRC_POSITION..CRC_START].try_into().expect("4 bytes"));
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(WireError::CrcMismatch { stored, computed });
    }
    Ok(())
}

/// Rewrites the base offset of an encoded batch; the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], offset: Offset) {
    batch[0..8].copy_from_slice(&offset.0.to_be_bytes());
}

/// Rewrites the leader epoch of an encoded batch; the CRC stays valid.
pub fn set_leader_epoch(batch: &mut [u8], epoch: LeaderEpoch) {
    batch[LEADER_EPOCH_POSITION..LEADER_EPOCH_POSITION + 4].copy_from_slice(&epoch.0.to_be_bytes());
}

/// A header of a record, as Kafka defines it: a key and an optional value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One record inside a batch. Its offset and timestamp are deltas from the
/// batch's base offset and base timestamp.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
}

/// A record's fields borrowed from wherever they are, for encoding
/// without copying them into a [`Record`] first.
#[derive(Clone, Copy, Debug)]
struct RecordView<'a> {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: &'a [RecordHeader],
}

impl RecordView<'_> {
    fn body_len(&self) -> usize {
        let bytes_len = |bytes: Option<&[u8]>| match bytes {
            Some(bytes) => varint_len(bytes.len() as i32) + bytes.len(),
            None => varint_len(-1),
        };
        let headers: usize = self
            .headers
            .iter()
            .map(|header| {
                varint_len(header.key.len() as i32)
                    + header.key.len()
                    + bytes_len(header.value.as_deref())
            })
            .sum();
        1 + varlong_len(self.timestamp_delta)
            + varint_len(self.offset_delta)
            + bytes_len(self.key)
            + bytes_len(self.value)
            + varint_len(self.headers.len() as i32)
            + headers
    }

    /// Appends the record: its length, then its body.
    fn encode(&self, out: &mut Vec<u8>) {
        fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
            match bytes {
                Some(bytes) => {
                    put_varint(out, bytes.len() as i32);
                    out.extend_from_slice(bytes);
                }
                None => put_varint(out, -1),
            }
        }
        put_varint(out, self.body_len() as i32);
        out.push(self.attributes as u8);
        put_varlong(out, self.timestamp_delta);
        put_varint(out, self.offset_delta);
        put_bytes(out, self.key);
        put_bytes(out, self.value);
        put_varint(out, self.headers.len() as i32);
        for header in self.headers {
            put_varint(out, header.key.len() as i32);
            out.extend_from_slice(&header.key);
            put_bytes(out, header.value.as_deref());
        }
    }
}

impl Record {
    fn view(&self) -> RecordView<'_> {
        RecordView {
            attributes: self.attributes,
            timestamp_delta: self.timestamp_delta,
            offset_delta: self.offset_delta,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &self.headers,
        }
    }

    fn body_len(&self) -> usize {
        self.view().body_len()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.view().encode(out)
    }
}

/// A record as the walk reads it: its key, value and headers are still the
/// bytes of the records section.
#[derive(Debug)]
struct RecordRef<'a> {
    attributes: i8,
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Headers<'a>,
}

impl<'a> RecordRef<'a> {
    /// Reads and checks one record from the front of `input`, advancing it.
    /// Builds nothing: its headers are checked here and left in place.
    fn read(input: &mut &'a [u8], index: i32) -> Result<RecordRef<'a>, WireError> {
        let malformed = |reason| WireError::MalformedRecord { index, reason };
        let length = get_varint(input)?;
        let length = usize::try_from(length).map_err(|_| malformed("negative record length"))?;
        if length > input.len() {
            return Err(malformed("record length runs past the batch"));
        }
        let (mut body, rest) = input.split_at(length);
        *input = rest;
        let (&attributes, after) = body.split_first().ok_or(malformed("empty record"))?;
        body = after;
        let timestamp_delta = get_varlong(&mut body)?;
        let offset_delta = get_varint(&mut body)?;
        let key = take_nullable(&mut body, Field::Key).map_err(malformed)?;
        let value = take_nullable(&mut body, Field::Value).map_err(malformed)?;
        let header_count = get_varint(&mut body)?;
        let header_count =
            usize::try_from(header_count).map_err(|_| malformed("negative header count"))?;
        // Each header takes at least two bytes, so the count cannot make a
        // decoder reserve more than the record holds.
        if header_count > body.len() / 2 {
            return Err(malformed("header count exceeds the record size"));
        }
        // Nothing may follow the headers, so from here the body is theirs.
        let header_bytes = body;
        for _ in 0..header_count {
            take_header(&mut body).map_err(malformed)?;
        }
        if !body.is_empty() {
            return Err(malformed("bytes left over after the headers"));
        }
        Ok(RecordRef {
            attributes: attributes as i8,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers: Headers {
                count: header_count,
                bytes: header_bytes,
            },
        })
    }
}

/// The headers of a record that [`RecordRef::read`] has checked, left in
/// place until a decoder copies them out.
#[derive(Clone, Copy, Debug)]
struct Headers<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl Headers<'_> {
    fn to_vec(self) -> Vec<RecordHeader> {
        let mut bytes = self.bytes;
        (0..self.count)
            .map(|_| {
                let (key, value) =
                    take_header(&mut bytes).expect("the record walk checked every header");
                RecordHeader {
                    key: key.to_vec(),
                    value: value.map(<[u8]>::to_vec),
                }
            })
            .collect()
    }
}

/// One record header: a key that must not be null, then a nullable value.
fn take_header<'a>(input: &mut &'a [u8]) -> Result<(&'a [u8], Option<&'a [u8]>), &'static str> {
    let key = take_nullable(input, Field::HeaderKey)?.ok_or("header key is null")?;
    let value = take_nullable(input, Field::HeaderValue)?;
    Ok((key, value))
}

/// The length-prefixed fields of a record, named in errors.
#[derive(Clone, Copy, Debug)]
enum Field {
    Key,
    Value,
    HeaderKey,
    HeaderValue,
}

impl Field {
    fn length_too_long(self) -> &'static str {
        match self {
            Field::Key => "key length varint is too long",
            Field::Value => "value length varint is too long",
            Field::HeaderKey => "header key length varint is too long",
            Field::HeaderValue => "header value length varint is too long",
        }
    }

    fn length_negative(self) -> &'static str {
        match self {
            Field::Key => "key length is negative but not -1 (null)",
            Field::Value => "value length is negative but not -1 (null)",
            Field::HeaderKey => "header key length is negative but not -1 (null)",
            Field::HeaderValue => "header value length is negative but not -1 (null)",
        }
    }

    fn past_end(self) -> &'static str {
        match self {
            Field::Key => "key length runs past the record",
            Field::Value => "value length runs past the record",
            Field::HeaderKey => "header key length runs past the record",
            Field::HeaderValue => "header value length runs past the record",
        }
    }
}

/// Length that marks a null key, value or header value.
const NULL_LENGTH: i32 = -1;

/// A varint length (-1 for null) followed by that many bytes. Kafka's
/// writers use no other negative length, so any other one means the record
/// is corrupt, and rejecting it gives every accepted batch one meaning.
fn take_nullable<'a>(input: &mut &'a [u8], field: Field) -> Result<Option<&'a [u8]>, &'static str> {
    let length = get_varint(input).map_err(|error| match error {
        WireError::Truncated { .. } => field.past_end(),
        _ => field.length_too_long(),
    })?;
    if length == NULL_LENGTH {
        return Ok(None);
    }
    let length = usize::try_from(length).map_err(|_| field.length_negative())?;
    if length > input.len() {
        return Err(field.past_end());
    }
    let (bytes, rest) = input.split_at(length);
    *input = rest;
    Ok(Some(bytes))
}

/// A decoded batch: its header and its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}

/// Limits applied while decoding bytes from a peer or a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest records section a compressed batch may expand to.
    pub max_decompressed_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: 64 << 20,
        }
    }
}

impl RecordBatch {
    /// Decodes exactly one batch from the front of `bytes` and returns it
    /// with the number of bytes it took. Verifies length, magic, CRC, codec,
    /// and that the records fill the batch and match its record count.
    pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<(RecordBatch, usize), WireError> {
        let (header, records_section, total) = open_batch(bytes, limits)?;
        let records = decode_records(&header, records_section.as_ref(), |record| Record {
            attributes: record.attributes,
            timestamp_delta: record.timestamp_delta,
            offset_delta: record.offset_delta,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers.to_vec(),
        })?;
        Ok((RecordBatch { header, records }, total))
    }

    /// Makes every check [`RecordBatch::decode`] makes, through the same
    /// code, and returns the batch's length, but builds no records: an
    /// uncompressed batch is read in place, a compressed one decompressed
    /// within `limits` into one buffer. For a receiver that stores batches
    /// as they came and must only know that any consumer can decode them;
    /// decoding would cost it a record list it throws away.
    pub fn validate(bytes: &[u8], limits: DecodeLimits) -> Result<usize, WireError> {
        RecordBatch::validate_counted(bytes, limits).map(|(total, _)| total)
    }

    /// [`RecordBatch::validate`], also answering how many bytes the
    /// batch's records decompressed to (0 when stored uncompressed), for a
    /// receiver that bounds the decompression of many batches together.
    pub fn validate_counted(
        bytes: &[u8],
        limits: DecodeLimits,
    ) -> Result<(usize, usize), WireError> {
        let (header, records_section, total) = open_batch(bytes, limits)?;
        let decompressed = match &records_section {
            Section::Stored(_) => 0,
            Section::Decompressed(records) => records.len(),
        };
        let mut walk = RecordWalk::new(&header, records_section.as_ref())?;
        while walk.next_record()?.is_some() {}
        Ok((total, decompressed))
    }

    /// Encodes the batch. `batch_length`, `crc` and `record_count` are
    /// computed from the contents; every other header field is written as
    /// given.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let codec = self.header.compression()?;
        let records_len: usize = self
            .records
            .iter()
            .map(|record| {
                let body = record.body_len();
                varint_len(body as i32) + body
            })
            .sum();
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + records_len);
        out.resize(BATCH_HEADER_LEN, 0);
        for record in &self.records {
            record.encode(&mut out);
        }
        seal(out, &self.header, self.records.len(), codec)
    }

    /// Absolute timestamp of a record of this batch.
    pub fn timestamp_of(&self, record: &Record) -> i64 {
        self.header.record_timestamp(record.timestamp_delta)
    }
}

/// The records section of a batch, as stored or decompressed.
enum Section<'a> {
    Stored(&'a [u8]),
    Decompressed(Vec<u8>),
}

impl AsRef<[u8]> for Section<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Section::Stored(bytes) => bytes,
            Section::Decompressed(bytes) => bytes,
        }
    }
}

/// Checks the batch at the front of `bytes` (length, CRC, record count)
/// and returns its header, its records section (decompressed within
/// `limits`) and its total length.
fn open_batch(
    bytes: &[u8],
    limits: DecodeLimits,
) -> Result<(BatchHeader, Section<'_>, usize), WireError> {
    let header = BatchHeader::parse(bytes)?;
    let total = header.total_len();
    let batch = bytes.get(..total).ok_or(WireError::Truncated {
        needed: total,
        available: bytes.len(),
    })?;
    verify_crc(batch)?;
    if header.record_count < 0 {
        return Err(WireError::BadRecordCount(header.record_count));
    }
    let codec = header.compression()?;
    let stored = &batch[BATCH_HEADER_LEN..];
    let section = if codec == Compression::None {
        Section::Stored(stored)
    } else {
        Section::Decompressed(compression::decompress(
            codec,
            stored,
            limits.max_decompressed_bytes,
        )?)
    };
    Ok((header, section, total))
}

/// Decodes every record of a records section, each through `convert`.
fn decode_records<'a, R>(
    header: &BatchHeader,
    input: &'a [u8],
    mut convert: impl FnMut(RecordRef<'a>) -> R,
) -> Result<Vec<R>, WireError> {
    let mut walk = RecordWalk::new(header, input)?;
    let mut records = Vec::with_capacity(walk.expected_count());
    while let Some(record) = walk.next_record()? {
        records.push(convert(record));
    }
    Ok(records)
}

/// Reads the records of a records section in order, checking each, and at
/// the end that their number is the header's record count. Decoding and
/// validation read records only through it, so they cannot disagree on
/// which batches are valid.
struct RecordWalk<'a> {
    input: &'a [u8],
    record_count: i32,
    records_read: i32,
}

impl<'a> RecordWalk<'a> {
    /// Refuses a record count the section is too short to hold.
    fn new(header: &BatchHeader, input: &'a [u8]) -> Result<RecordWalk<'a>, WireError> {
        let capacity = input.len() / MIN_RECORD_LEN;
        if header.record_count as usize > capacity {
            return Err(WireError::RecordCountMismatch {
                header: header.record_count,
                actual: capacity as i32,
            });
        }
        Ok(RecordWalk {
            input,
            record_count: header.record_count,
            records_read: 0,
        })
    }

    /// The header's record count. Every record takes at least
    /// [`MIN_RECORD_LEN`] bytes, so it is no more than the section can hold
    /// and safe to reserve for.
    fn expected_count(&self) -> usize {
        self.record_count as usize
    }

    /// The next record, or `None` once the section has ended after exactly
    /// the header's count. Callers stop at the first error. Each record
    /// takes at least two bytes, so the walk ends.
    fn next_record(&mut self) -> Result<Option<RecordRef<'a>>, WireError> {
        if self.input.is_empty() {
            if self.records_read != self.record_count {
                return Err(WireError::RecordCountMismatch {
                    header: self.record_count,
                    actual: self.records_read,
                });
            }
            return Ok(None);
        }
        if self.records_read == self.record_count {
            return Err(WireError::TrailingBytes(self.input.len()));
        }
        let record = RecordRef::read(&mut self.input, self.records_read)?;
        self.records_read += 1;
        Ok(Some(record))
    }
}

/// A record whose key and value share the memory of the frame it came in
/// (or of its batch's decompressed records): decoding copies no record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRecord {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A batch decoded into [`SharedRecord`]s, with every check
/// [`RecordBatch::decode`] makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedBatch {
    pub header: BatchHeader,
    pub records: Vec<SharedRecord>,
}

impl SharedBatch {
    /// Decodes the batch at the front of `bytes`; returns it and its
    /// length.
    pub fn decode(bytes: &Bytes, limits: DecodeLimits) -> Result<(SharedBatch, usize), WireError> {
        let (header, section, total) = open_batch(bytes, limits)?;
        let buffer = match section {
            Section::Stored(stored) => bytes.slice_ref(stored),
            Section::Decompressed(records) => Bytes::from(records),
        };
        let records = decode_records(&header, &buffer, |record| SharedRecord {
            attributes: record.attributes,
            timestamp_delta: record.timestamp_delta,
            offset_delta: record.offset_delta,
            key: record.key.map(|key| buffer.slice_ref(key)),
            value: record.value.map(|value| buffer.slice_ref(value)),
            headers: record.headers.to_vec(),
        })?;
        Ok((SharedBatch { header, records }, total))
    }

    /// Absolute timestamp of a record of this batch.
    pub fn timestamp_of(&self, record: &SharedRecord) -> i64 {
        self.header.record_timestamp(record.timestamp_delta)
    }
}

/// Completes a batch whose records follow a reserved header in `out`:
/// compresses them with `codec`, then writes the header (`batch_length`,
/// `crc` and `record_count` computed, every other field from `header`).
fn seal(
    mut out: Vec<u8>,
    header: &BatchHeader,
    record_count: usize,
    codec: Compression,
) -> Result<Vec<u8>, WireError> {
    if codec != Compression::None {
        let compressed = compression::compress(codec, &out[BATCH_HEADER_LEN..]);
        out.truncate(BATCH_HEADER_LEN);
        out.extend_from_slice(&compressed);
    }
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| WireError::TooLarge(out.len()))?;
    let record_count = i32::try_from(record_count).map_err(|_| WireError::TooLarge(out.len()))?;
    let header = BatchHeader {
        batch_length,
        magic: MAGIC,
        crc: 0,
        record_count,
        ..*header
    };
    let fixed: &mut [u8; BATCH_HEADER_LEN] = (&mut out[..BATCH_HEADER_LEN])
        .try_into()
        .expect("header slice");
    header.write(fixed);
    let crc = compute_crc(&out);
    out[CRC_POSITION..CRC_START].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Encodes a batch record by record as a producer adds them, writing each
/// straight into the batch's buffer: no record is kept or copied twice.
/// The encoding is exactly [`BatchBuilder`]'s.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    header: BatchHeader,
    /// A reserved header, then the records so far, uncompressed.
    out: Vec<u8>,
    record_count: usize,
}

impl BatchEncoder {
    pub fn new(compression: Compression) -> BatchEncoder {
        BatchEncoder {
            header: BatchBuilder::new(compression).header,
            out: vec![0; BATCH_HEADER_LEN],
            record_count: 0,
        }
    }

    /// Appends a record; the first one's timestamp is the batch's base.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader],
    ) {
        if self.record_count == 0 {
            self.header.base_timestamp = timestamp;
            self.header.max_timestamp = timestamp;
        }
        self.header.max_timestamp = self.header.max_timestamp.max(timestamp);
        let offset_delta = self.record_count as i32;
        self.header.last_offset_delta = offset_delta;
        RecordView {
            attributes: 0,
            timestamp_delta: timestamp.wrapping_sub(self.header.base_timestamp),
            offset_delta,
            key,
            value,
            headers,
        }
        .encode(&mut self.out);
        self.record_count += 1;
    }

    /// Marks the batch as coming from an idempotent producer, as
    /// [`BatchBuilder::producer`] does; callable until [`Self::finish`],
    /// so a producer can number a batch when it seals it.
    pub fn set_producer(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.header.producer_id = producer_id;
        self.header.producer_epoch = producer_epoch;
        self.header.base_sequence = base_sequence;
    }

    pub fn record_count(&self) -> usize {
        self.record_count
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes of the batch so far, before compression.
    pub fn encoded_len(&self) -> usize {
        self.out.len()
    }

    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        let codec = self.header.compression()?;
        seal(self.out, &self.header, self.record_count, codec)
    }
}

/// Builds a batch the way producers do: records in order with absolute
/// timestamps, offsets counted from 0, the first timestamp as base.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    header: BatchHeader,
    records: Vec<Record>,
}

impl BatchBuilder {
    pub fn new(compression: Compression) -> BatchBuilder {
        BatchBuilder {
            header: BatchHeader {
                base_offset: 0,
                batch_length: 0,
                partition_leader_epoch: 0,
                magic: MAGIC,
                crc: 0,
                attributes: i16::from(compression.id()),
                last_offset_delta: 0,
                base_timestamp: 0,
                max_timestamp: 0,
                producer_id: NO_PRODUCER_ID,
                producer_epoch: -1,
                base_sequence: -1,
                record_count: 0,
            },
            records: Vec::new(),
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.header.producer_id = producer_id;
        self.header.producer_epoch = producer_epoch;
        self.header.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, transactional: bool) -> Self {
        if transactional {
            self.header.attributes |= TRANSACTIONAL_BIT;
        } else {
            self.header.attributes &= !TRANSACTIONAL_BIT;
        }
        self
    }

    pub fn control(mut self, control: bool) -> Self {
        if control {
            self.header.attributes |= CONTROL_BIT;
        } else {
            self.header.attributes &= !CONTROL_BIT;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<RecordHeader>,
    ) {
        if self.records.is_empty() {
            self.header.base_timestamp = timestamp;
            self.header.max_timestamp = timestamp;
        }
        self.header.max_timestamp = self.header.max_timestamp.max(timestamp);
        let offset_delta = self.records.len() as i32;
        self.header.last_offset_delta = offset_delta;
        self.records.push(Record {
            attributes: 0,
            timestamp_delta: timestamp.wrapping_sub(self.header.base_timestamp),
            offset_delta,
            key,
            value,
            headers,
        });
    }

    pub fn build(self) -> RecordBatch {
        RecordBatch {
            header: self.header,
            records: self.records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer numbers a batch when it seals it, after its records:
    /// the bytes are the builder's with the same producer fields.
    #[test]
    fn the_encoder_stamps_producer_fields_as_the_builder_does() {
        for codec in Compression::ALL {
            let mut builder = BatchBuilder::new(codec).producer(42, 3, 1_000);
            let mut encoder = BatchEncoder::new(codec);
            for index in 0..5i64 {
                encoder.push(1_000 + index, None, Some(b"value"), &[]);
                builder.push(1_000 + index, None, Some(b"value".to_vec()), Vec::new());
            }
            encoder.set_producer(42, 3, 1_000);
            let bytes = encoder.finish().expect("encode");
            assert_eq!(bytes, builder.build().encode().expect("encode"), "{codec}");
            let header = BatchHeader::parse(&bytes).expect("parse");
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (42, 3, 1_000)
            );
            verify_crc(&bytes).expect("the CRC covers the stamped fields");
        }
    }
}

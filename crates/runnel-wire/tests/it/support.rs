//! Helpers shared by the tests: a byte-level batch writer that is
//! independent of the codec under test, and an allocator that measures a
//! closure's peak memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use runnel_wire::batch::{BATCH_HEADER_LEN, LOG_OVERHEAD, compute_crc};

/// Where the CRC sits and where the bytes it covers begin, from the v2 spec.
pub const CRC_POSITION: usize = 17;
pub const CRC_START: usize = 21;
pub const ATTRIBUTES_POSITION: usize = 21;
pub const RECORD_COUNT_POSITION: usize = 57;

/// Appends a zig-zag varint, written here from the Kafka spec rather than
/// taken from the crate, so malformed records can be built by hand.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Builds a whole batch around `section` (the records, already compressed
/// if `attributes` names a codec), with a correct length and CRC.
pub fn frame(attributes: i16, record_count: i32, section: &[u8]) -> Vec<u8> {
    let mut batch = Vec::with_capacity(BATCH_HEADER_LEN + section.len());
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&0i32.to_be_bytes()); // batch length, set below
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    batch.extend_from_slice(&attributes.to_be_bytes());
    batch.extend_from_slice(&(record_count - 1).max(0).to_be_bytes()); // last offset delta
    batch.extend_from_slice(&0i64.to_be_bytes()); // base timestamp
    batch.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&record_count.to_be_bytes());
    assert_eq!(batch.len(), BATCH_HEADER_LEN);
    batch.extend_from_slice(section);
    reframe(&mut batch);
    batch
}

/// Rewrites the length and CRC of a batch after a test edited it, so that
/// decoding gets past the framing checks to the part under test.
pub fn reframe(batch: &mut [u8]) {
    let length = i32::try_from(batch.len() - LOG_OVERHEAD).expect("test batches are small");
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_POSITION..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

/// One record body field: bytes with a varint length, or a raw length with
/// nothing after it, which is how malformed records are spelled.
pub enum Bytes<'a> {
    Some(&'a [u8]),
    Null,
    Length(i64),
}

fn put_bytes(out: &mut Vec<u8>, bytes: &Bytes<'_>) {
    match bytes {
        Bytes::Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
        Bytes::Null => put_varint(out, -1),
        Bytes::Length(length) => put_varint(out, *length),
    }
}

/// Writes a record with the given key, value and header count, and
/// headers as (key, value) fields. The length prefix is the body's true
/// length unless `length` overrides it.
pub fn record(
    key: Bytes<'_>,
    value: Bytes<'_>,
    header_count: i64,
    headers: &[(Bytes<'_>, Bytes<'_>)],
    length: Option<i64>,
) -> Vec<u8> {
    let mut body = vec![0]; // attributes
    put_varint(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_bytes(&mut body, &key);
    put_bytes(&mut body, &value);
    put_varint(&mut body, header_count);
    for (key, value) in headers {
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
    }
    let mut out = Vec::new();
    put_varint(&mut out, length.unwrap_or(body.len() as i64));
    out.extend_from_slice(&body);
    out
}

/// A plain, well-formed record with this value.
pub fn simple_record(value: &[u8]) -> Vec<u8> {
    record(Bytes::Some(b"key"), Bytes::Some(value), 0, &[], None)
}

pub fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex");
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex digit"))
        .collect()
}

thread_local! {
    // Const-initialised and without destructors, so the allocator can touch
    // them at any time without allocating itself.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, plus per-thread accounting while a thread is
/// inside [`peak_allocation`]. Per thread, because tests run in parallel.
pub struct CountingAllocator;

fn account(delta: isize) {
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let live = LIVE_BYTES.get() + delta;
            LIVE_BYTES.set(live);
            PEAK_BYTES.set(PEAK_BYTES.get().max(live));
        }
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the accounting only touches thread-local counters.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: forwarded as received; the caller upholds `alloc`'s rules.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `work` and returns its result with the most bytes it had allocated
/// at once on this thread, through Rust's allocator (memory that C code
/// such as libzstd takes with malloc is not seen).
pub fn peak_allocation<T>(work: impl FnOnce() -> T) -> (T, usize) {
    LIVE_BYTES.set(0);
    PEAK_BYTES.set(0);
    MEASURING.set(true);
    let result = work();
    MEASURING.set(false);
    (result, PEAK_BYTES.get() as usize)
}

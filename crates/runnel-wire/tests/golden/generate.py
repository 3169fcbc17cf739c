#!/usr/bin/env python3
"""Writes golden RecordBatch v2 vectors made by kafka-python, an independent
Kafka implementation, so runnel-wire is checked against bytes it did not
produce itself.

Usage: python3 generate.py [OUTPUT]   (default: vectors.json beside this file)

Every input is fixed (timestamps included), so the uncompressed vectors are
identical on every run; the compressed ones are identical as long as the
codec libraries pinned in requirements.txt are the ones installed.
"""

import functools
import gzip
import json
import os
import sys

import kafka
from kafka import codec
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TRANSACTIONAL_BIT = 0x10
# 2023-11-14T22:13:20Z, in milliseconds.
BASE_TIMESTAMP = 1_700_000_000_000
# Large enough that kafka-python never stops appending on size.
BATCH_SIZE_LIMIT = 16 << 20


def record(offset, timestamp, key, value, headers=()):
    return {
        "offset_delta": offset,
        "timestamp": timestamp,
        "key": key,
        "value": value,
        "headers": list(headers),
    }


def contiguous(entries):
    """Records with offset deltas 0, 1, 2, ... as a producer assigns them."""
    return [record(offset, *entry) for offset, entry in enumerate(entries)]


def filler(length):
    """Compressible bytes. Every vector carries some so that kafka-python
    keeps the requested codec: it sends a batch uncompressed when the codec
    does not make it smaller."""
    return (b"runnel golden vector filler " * (length // 28 + 1))[:length]


def pseudo_text(length, seed):
    """Deterministic text-like bytes: compressible, but not a single repeated
    run, so the codecs emit real literals and back-references."""
    words = [b"offset", b"epoch", b"leader", b"replica", b"segment", b"index",
             b"producer", b"sequence", b"batch", b"record", b"header", b"crc",
             b"stream", b"partition", b"watermark", b"fetch", b"append", b"log"]
    state = seed
    out = bytearray()
    while len(out) < length:
        # A 32-bit linear congruential step: fixed, portable, no library.
        state = (state * 1103515245 + 12345) & 0xFFFFFFFF
        out += words[(state >> 16) % len(words)]
        out += b" " if (state >> 8) & 7 else b"\n"
    return bytes(out[:length])


def cases():
    """(name, records, producer fields, transactional) for every shape we
    want covered; each is generated once per codec."""
    t = BASE_TIMESTAMP
    no_producer = (-1, -1, -1)
    yield "basic", contiguous([
        (t, b"key-0", b"value-0"),
        (t + 1, b"key-1", b"value-1"),
        (t + 2, b"key-2", filler(200)),
    ]), no_producer, False
    yield "nulls_and_empties", contiguous([
        (t, None, b"null key"),
        (t, b"", b"empty key"),
        (t, b"null value", None),
        (t, b"empty value", b""),
        (t, None, None),
        (t, b"", b""),
        (t, b"k", filler(200)),
    ]), no_producer, False
    yield "headers", contiguous([
        (t, b"k0", b"v0", [("trace-id", b"abc123")]),
        (t, b"k1", b"v1", [("nullable", None)]),
        (t, b"k2", b"v2", [("empty", b"")]),
        (t, b"k3", b"v3", [("", b"empty key")]),
        (t, b"k4", b"v4", [("dup", b"first"), ("dup", b"second"), ("other", None),
                           ("dup", b"third")]),
        (t, b"k5", b"v5", [("gr\u00fc\u00dfe-\u65e5\u672c", b"\x00\xff\x80")]),
        (t, b"k6", filler(200), [("long", filler(150))]),
    ]), no_producer, False
    yield "negative_timestamp_deltas", contiguous([
        (t, b"first", filler(120)),
        (t - 1, b"one ms earlier", b"v"),
        (t + 90_000, b"max timestamp", b"v"),
        (t - 86_400_000, b"a day earlier", b"v"),
        (t - 86_400_000 * 365 * 60, b"sixty years earlier", b"v"),
    ]), no_producer, False
    yield "idempotent_producer", contiguous([
        (t, b"k", filler(100)),
        (t + 5, b"k", filler(100)),
    ]), (123_456_789_012, 7, 42), False
    yield "transactional", contiguous([
        (t, b"txn-0", filler(100)),
        (t + 10, b"txn-1", filler(100)),
    ]), (9_000_000_000, 32_000, 2_147_483_000), True
    yield "offset_gaps", [
        # Offset deltas need not be contiguous: compaction leaves gaps.
        record(0, t, b"a", filler(100)),
        record(3, t + 3, b"b", b"v"),
        record(200, t + 200, b"c", b"v"),
    ], no_producer, False
    yield "many_records", contiguous([
        (t + 7 * i, b"key-%d" % i, b"value-%05d-" % i * 3) for i in range(100)
    ]), no_producer, False
    yield "large_value", contiguous([
        # Over 64 KiB: several 32 KiB xerial snappy blocks and several
        # 64 KiB lz4 blocks.
        (t, b"large", pseudo_text(66_000, seed=1)),
        (t + 1, b"after large", b"v"),
    ]), no_producer, False


def build(codec_name, records, producer, transactional):
    producer_id, producer_epoch, base_sequence = producer
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=CODECS[codec_name],
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=BATCH_SIZE_LIMIT,
    )
    for entry in records:
        headers = [(key, value) for key, value in entry["headers"]]
        metadata = builder.append(entry["offset_delta"], timestamp=entry["timestamp"],
                                  key=entry["key"], value=entry["value"], headers=headers)
        assert metadata is not None, "batch_size limit reached"
    return bytes(builder.build())


def expected_header(codec_name, records, producer, transactional):
    """The header fields computed from our inputs and the v2 rules, not read
    back from the bytes, so the vector states what the batch must contain."""
    timestamps = [entry["timestamp"] for entry in records]
    attributes = CODECS[codec_name] | (TRANSACTIONAL_BIT if transactional else 0)
    return {
        "base_offset": 0,
        "partition_leader_epoch": 0,
        "magic": 2,
        "attributes": attributes,
        "last_offset_delta": records[-1]["offset_delta"],
        "base_timestamp": timestamps[0],
        "max_timestamp": max(timestamps),
        "producer_id": producer[0],
        "producer_epoch": producer[1],
        "base_sequence": producer[2],
        "record_count": len(records),
    }


def check_with_kafka_python(batch, header, records):
    """kafka-python's own reader must agree with what we put in; a vector
    that fails here would test nothing."""
    parsed = DefaultRecordBatch(bytearray(batch))
    assert parsed.validate_crc()
    assert parsed.attributes == header["attributes"], (parsed.attributes, header)
    assert parsed.last_offset_delta == header["last_offset_delta"]
    assert parsed.first_timestamp == header["base_timestamp"]
    assert parsed.max_timestamp == header["max_timestamp"]
    assert parsed.producer_id == header["producer_id"]
    assert parsed.producer_epoch == header["producer_epoch"]
    assert parsed.base_sequence == header["base_sequence"]
    assert parsed.records_count == header["record_count"]
    decoded = list(parsed)
    assert len(decoded) == len(records)
    for got, want in zip(decoded, records):
        assert got.offset == want["offset_delta"]
        assert got.timestamp == want["timestamp"]
        assert got.key == want["key"]
        assert got.value == want["value"]
        assert [(k, v) for k, v in got.headers] == list(want["headers"])


def hex_or_null(data):
    return None if data is None else data.hex()


def to_json(name, codec_name, header, records, batch):
    return {
        "name": name,
        "codec": codec_name,
        "header": header,
        "records": [
            {
                "offset_delta": entry["offset_delta"],
                "timestamp": entry["timestamp"],
                "key": hex_or_null(entry["key"]),
                "value": hex_or_null(entry["value"]),
                "headers": [
                    {"key": key.encode("utf-8").hex(), "value": hex_or_null(value)}
                    for key, value in entry["headers"]
                ],
            }
            for entry in records
        ],
        "batch": batch.hex(),
    }


def main():
    default_output = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors.json")
    output = sys.argv[1] if len(sys.argv) > 1 else default_output
    for name, available in [("snappy", codec.has_snappy()), ("lz4", codec.has_lz4()),
                            ("zstd", codec.has_zstd())]:
        if not available:
            sys.exit(f"kafka-python cannot use {name}: pip install -r requirements.txt")
    # gzip stamps the current time into its header unless told otherwise;
    # a fixed mtime keeps the gzip vectors reproducible.
    original_gzip_file = gzip.GzipFile
    gzip.GzipFile = functools.partial(original_gzip_file, mtime=0)
    try:
        vectors = []
        for codec_name in CODECS:
            for case_name, records, producer, transactional in cases():
                batch = build(codec_name, records, producer, transactional)
                header = expected_header(codec_name, records, producer, transactional)
                check_with_kafka_python(batch, header, records)
                vectors.append(to_json(f"{codec_name}_{case_name}", codec_name, header,
                                       records, batch))
    finally:
        gzip.GzipFile = original_gzip_file
    with open(output, "w", encoding="utf-8") as out:
        json.dump(vectors, out, indent=1, sort_keys=True)
        out.write("\n")
    print(f"wrote {len(vectors)} vectors from kafka-python {kafka.__version__} to {output}")


if __name__ == "__main__":
    main()

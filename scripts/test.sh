#!/usr/bin/env bash
# The test command of README.md, and what CI runs (through .ci/run, which
# first installs what this needs: see "Setup" in README.md).
#
# Order: cheap checks first; the test suite last, so its summary closes the
# output.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== golden vectors, written by kafka-python (an independent Kafka implementation)"
vectors="$PWD/target/golden/vectors.json"
mkdir -p "$(dirname "$vectors")"
python3 crates/runnel-wire/tests/golden/generate.py "$vectors"
export RUNNEL_GOLDEN_VECTORS="$vectors"

echo "== fuzz corpus replay (every saved input once, with AddressSanitizer)"
fuzz_target_dir="$PWD/target/fuzz"
(cd crates/runnel-wire && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" decode_batch -- -runs=0)
(cd crates/runnel-log && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" recover_segment -- -runs=0)
(cd crates/runnel-api && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" decode_frame -- -runs=0)
(cd crates/runnel-pki && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" principal -- -runs=0)
(cd crates/runnel-pki && cargo +nightly fuzz run --target-dir "$fuzz_target_dir" csr -- -runs=0)

echo "== benchmark smoke (measures nothing; proves the bench runs)"
cargo bench --locked -p runnel-log --bench append -- --quick

echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast

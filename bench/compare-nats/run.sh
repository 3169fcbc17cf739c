#!/usr/bin/env bash
# Runnel against NATS JetStream on this machine, side by side, in one run.
#
# Usage (from anywhere; root or sudo is needed only to install nats-server):
#
#   bash bench/compare-nats/run.sh
#   COUNT=200000 RUNS=1 RATE=20 bash bench/compare-nats/run.sh     # quick try
#
# Environment (defaults in brackets):
#   RECORD_SIZE [1000]       bytes of each record's value / message payload
#   COUNT [1000000]          records per throughput run (1000000 x 1000 B = 1 GB)
#   RUNS [3]                 runs of every workload; the table shows medians
#   RATE ["20 100"]          e2e rates in MB/s (10^6 bytes of values per second)
#   E2E_SECONDS [10]         how long each e2e run sends
#   FLUSH ["os always"]      Runnel topic flush policies to measure
#   NATS_INFLIGHT [1024]     publishes awaiting their PubAck at once (NATS driver)
#   NATS_CONSUMER [ordered]  consume with an `ordered` push consumer or a `pull` one
#   NATS_SYNC_INTERVAL []    empty: the server's default; else written to the
#                            server config as `jetstream { sync_interval: ... }`
#                            (`always` needs nats-server >= 2.10; Debian 12 ships 2.9)
#   NATS_SERVER [nats-server] the nats-server binary
#   RUNNEL_ARGS []           extra options for every `runnel benchmark` call,
#                            e.g. "--linger 0ms" (see the e2e note below)
#   SKIP_BUILD [0]           1: use the binaries already built
#   STEP_TIMEOUT [600]       seconds any one benchmark step may take
#   RESULTS [bench/compare-nats/results/<UTC time>.jsonl]  raw JSON of every run
#
# What is measured. Everything runs on loopback on this one machine: one
# nats-server (`-js`, store in a fresh temporary directory) and one Runnel
# local cluster (an SC and 1 SPU, data in a fresh temporary RUNNEL_HOME),
# both on the same file system. The clients share the machine's cores with
# the servers, for both systems alike. Each run uses a new stream / topic that
# is deleted afterwards. Runs are interleaved (NATS, Runnel os, Runnel
# always, then again) so that drift hits every system alike.
#
#  - produce MB/s: COUNT records of RECORD_SIZE bytes from one producer to
#    one stream / one partition, no keys, no compression, MB = 10^6 bytes of
#    values. Time runs from the first send to the last acknowledgement.
#      NATS: the driver's `produce`. Stream: file storage, 1 replica,
#      limits retention, no limits. Every message is a JetStream publish
#      whose PubAck is awaited; up to NATS_INFLIGHT are in flight at once
#      (pipelined async publishes, as `nats bench` does). A PubAck means
#      the server has stored the message, as NATS defines it.
#      Runnel: `runnel benchmark consume` (its produce phase): the client
#      library's producer, 1 MiB batches, 5 ms linger, one batch in flight
#      per partition; a record counts when its delivery result (the SPU's
#      acknowledgement) arrives.
#  - consume MB/s: the same COUNT records read back from the first one,
#    time from creating the consumer to the last record.
#      NATS: the driver's `consume` with an ordered push consumer (flow
#      controlled, no acks; faster here than a pull consumer with 1000- or
#      10000-message batches) or, with NATS_CONSUMER=pull, an ephemeral pull
#      consumer with AckNone, 1000 messages per pull request.
#      Runnel: `runnel benchmark consume`'s consume phase (a consumer
#      stream from the beginning; every batch's CRC is checked).
#      Both read data that is still in the page cache.
#  - e2e latency p50/p99 (ms) at each RATE for E2E_SECONDS: a consumer
#    waits at the end of a new stream / topic while one producer sends at
#    the fixed rate (record i is due at start + i * RECORD_SIZE / rate).
#    Each value starts with its send time, taken when the record is handed
#    to the client; latency is the time from then to its delivery to the
#    consumer, in a histogram (HdrHistogram, 1 us .. 1 h, 3 digits), every
#    record counted (no warm-up dropped). The achieved send rate is shown
#    too: a system that cannot keep up falls behind its schedule, and its
#    latencies then include that queueing.
#      NATS: the driver's `e2e`: ordered push consumer, deliver policy new;
#      publishes pipelined as above.
#      Runnel: `runnel benchmark e2e --rate-limit R --duration S`.
#    Note: Runnel's producer holds a record up to its linger (5 ms by
#    default) to fill a batch, while each NATS publish leaves at once, so
#    at low rates Runnel's p50 is about the linger. RUNNEL_ARGS="--linger
#    0ms" measures Runnel without it (and applies to the throughput runs
#    too). NATS's p99 on this machine comes from stalls of 20-40 ms about
#    every 8 MB stored (the file store's block size), visible in its PubAck
#    latency as well; NATS_DRIVER_TRACE=FILE makes the driver's e2e write
#    "send_ns latency_us" per message to see them.
#  - server CPU s/GB: CPU seconds (user + system) the server processes used
#    during a throughput run, per GB of values moved (produced + consumed).
#    NATS: read from /proc for nats-server. Runnel: as `runnel benchmark`
#    reports it for its SC and SPU, when the build reports it.
#
# Durability, and which comparison is apples to apples. nats-server 2.9
# (Debian 12's package) writes each message to the block file (write(2),
# flushed in place for a 1-replica stream) before it sends the PubAck, but
# fsyncs only in the background, every 2 minutes (`sync_interval`, not
# configurable before 2.10; from 2.10 `sync_interval: always` syncs every
# write). So an acknowledged message survives a crash of the process, not
# necessarily one of the OS or a power cut. Runnel's `--flush os` promises
# the same on the write path (written to the page cache before the ack, no
# fsync): **Runnel `--flush os` against NATS's default is the
# apples-to-apples column.** Strictly, NATS also bounds what a power cut
# takes to about 2 minutes, which `os` does not; FLUSH="os interval=120000
# always" adds the closest counterpart (an fsync once 2 minutes have passed
# and at each segment roll). Runnel `--flush always` fsyncs before it
# acknowledges (group commit) and is stronger than anything this NATS
# offers; it is shown to give the cost of that guarantee, not as a like for
# like. (With a NATS >= 2.10 binary and NATS_SYNC_INTERVAL=always, the
# `always` column becomes the like for like one.)
#
# Output: a table of medians with the ratio Runnel / NATS for each Runnel
# flush policy (throughput: > 1 means Runnel is faster; latency: < 1 means
# Runnel is faster), then every run's figures; the raw JSON of every run is
# kept in RESULTS.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

RECORD_SIZE=${RECORD_SIZE:-1000}
COUNT=${COUNT:-1000000}
RUNS=${RUNS:-3}
RATE=${RATE:-"20 100"}
E2E_SECONDS=${E2E_SECONDS:-10}
FLUSH=${FLUSH:-"os always"}
NATS_INFLIGHT=${NATS_INFLIGHT:-1024}
NATS_CONSUMER=${NATS_CONSUMER:-ordered}
NATS_SYNC_INTERVAL=${NATS_SYNC_INTERVAL:-}
NATS_SERVER=${NATS_SERVER:-nats-server}
RUNNEL_ARGS=${RUNNEL_ARGS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
RESULTS=${RESULTS:-$HERE/results/$(date -u +%Y%m%dT%H%M%SZ).jsonl}

RUNNEL=$ROOT/target/release/runnel
# The driver builds into the repository's ignored target/, not under bench/.
DRIVER_TARGET=$ROOT/target/compare-nats-driver
DRIVER=$DRIVER_TARGET/release/nats-bench-driver
# The temporary cluster's own profile, whatever the caller's shell says.
unset RUNNEL_PROFILE

log() { printf '[compare-nats %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# --- Tools -----------------------------------------------------------------

# Debian puts it in /usr/sbin, which a user's PATH may lack.
if ! command -v "$NATS_SERVER" >/dev/null 2>&1 && [[ $NATS_SERVER == nats-server && -x /usr/sbin/nats-server ]]; then
    NATS_SERVER=/usr/sbin/nats-server
fi
if ! command -v "$NATS_SERVER" >/dev/null 2>&1; then
    [[ $NATS_SERVER == nats-server ]] || die "NATS_SERVER=$NATS_SERVER not found"
    log "installing nats-server from Debian"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3 (ports and the report)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
NATS_VERSION=$("$NATS_SERVER" --version 2>&1 | head -1)

if [[ $SKIP_BUILD != 1 ]]; then
    log "building runnel (cargo build --release -p runnel-cli)"
    (cd "$ROOT" && cargo build --release -p runnel-cli --quiet)
    log "building the NATS driver"
    cargo build --release --locked --quiet --manifest-path "$HERE/driver/Cargo.toml" \
        --target-dir "$DRIVER_TARGET"
fi
[[ -x $RUNNEL ]] || die "$RUNNEL is missing"
[[ -x $DRIVER ]] || die "$DRIVER is missing"

RUNNEL_E2E=1
if ! "$RUNNEL" benchmark e2e --help >/dev/null 2>&1; then
    RUNNEL_E2E=0
    log "runnel e2e: not available in this build (those rows will say so)"
fi

# --- Servers ---------------------------------------------------------------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/compare-nats.XXXXXX")
RHOME=$TMP/runnel-home
NATS_PID=
RUNNEL_STARTED=0

cleanup() {
    local status=$?
    set +e
    if [[ -n $NATS_PID ]]; then
        kill "$NATS_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$NATS_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$NATS_PID" 2>/dev/null
        wait "$NATS_PID" 2>/dev/null
    fi
    if [[ $RUNNEL_STARTED == 1 ]]; then
        RUNNEL_HOME=$RHOME timeout 60 "$RUNNEL" cluster delete >>"$TMP/runnel-cluster.log" 2>&1 \
            || log "warning: 'runnel cluster delete' failed; see $TMP (kept)"
    fi
    if [[ $status -ne 0 ]]; then
        log "failed; logs: $TMP/nats.log, $TMP/runnel-cluster.log (kept)"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Five consecutive free loopback ports below the ephemeral range: the
# Runnel cluster takes the first four (SC: P, P+1; SPU 1: P+2, P+3), NATS
# the fifth.
BASE=$(python3 - <<'EOF'
import random, socket, sys
for _ in range(500):
    base = random.randrange(20000, 32000)
    socks = []
    try:
        for port in range(base, base + 5):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no free ports")
EOF
)
NATS_PORT=$((BASE + 4))
NATS_URL=nats://127.0.0.1:$NATS_PORT

NATS_ARGS=(-a 127.0.0.1 -p "$NATS_PORT" -js -sd "$TMP/nats")
if [[ -n $NATS_SYNC_INTERVAL ]]; then
    printf 'jetstream { store_dir: "%s", sync_interval: %s }\n' "$TMP/nats" "$NATS_SYNC_INTERVAL" >"$TMP/nats.conf"
    NATS_ARGS=(-c "$TMP/nats.conf" -a 127.0.0.1 -p "$NATS_PORT" -js)
fi
log "starting $NATS_VERSION on $NATS_URL (store $TMP/nats)"
"$NATS_SERVER" "${NATS_ARGS[@]}" >"$TMP/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 100); do
    grep -q "Server is ready" "$TMP/nats.log" 2>/dev/null && break
    kill -0 "$NATS_PID" 2>/dev/null || { cat "$TMP/nats.log" >&2; die "nats-server exited"; }
    sleep 0.1
done
grep -q "Server is ready" "$TMP/nats.log" || die "nats-server not ready after 10 s"

log "starting a Runnel cluster (1 SPU, base port $BASE, RUNNEL_HOME=$RHOME)"
mkdir -p "$RHOME"
RUNNEL_STARTED=1
RUNNEL_HOME=$RHOME timeout 120 "$RUNNEL" cluster start --spus 1 --base-port "$BASE" \
    >>"$TMP/runnel-cluster.log" 2>&1 || { cat "$TMP/runnel-cluster.log" >&2; die "runnel cluster start failed"; }

# --- Helpers ---------------------------------------------------------------

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
CLK_TCK=$(getconf CLK_TCK)

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    local fields
    fields=$(sed 's/^.*) //' "/proc/$1/stat")
    awk -v t="$CLK_TCK" '{ printf "%.3f", ($12 + $13) / t }' <<<"$fields"
}

# Runs one benchmark step with a time bound; its JSON (last stdout line)
# goes to stdout, its stderr to the terminal only if it fails.
step() {
    local name=$1
    shift
    local out=$TMP/step.out err=$TMP/step.err
    if ! timeout "$STEP_TIMEOUT" "$@" >"$out" 2>"$err"; then
        tail -20 "$err" >&2
        die "$name failed: $*"
    fi
    tail -1 "$out"
}

# The CLI against the temporary cluster (an array, so that timeout can run it).
RUNNEL_CMD=(env "RUNNEL_HOME=$RHOME" "$RUNNEL")

TOTAL_BYTES=$((COUNT * RECORD_SIZE))

# --- Throughput ------------------------------------------------------------

for run in $(seq "$RUNS"); do
    log "throughput run $run/$RUNS: NATS JetStream ($COUNT x $RECORD_SIZE B)"
    before=$(cpu_seconds "$NATS_PID")
    produce=$(step "nats produce" "$DRIVER" produce --url "$NATS_URL" --stream bench --subject bench.data \
        --record-size "$RECORD_SIZE" --count "$COUNT" --batch "$NATS_INFLIGHT")
    consume=$(step "nats consume" "$DRIVER" consume --url "$NATS_URL" --stream bench --count "$COUNT" \
        --consumer "$NATS_CONSUMER")
    after=$(cpu_seconds "$NATS_PID")
    printf '{"system":"nats","kind":"throughput","run":%d,"produce":%s,"consume":%s,"server_cpu_seconds":%s}\n' \
        "$run" "$produce" "$consume" "$(awk -v a="$after" -v b="$before" 'BEGIN { print a - b }')" >>"$RESULTS"
    for flush in $FLUSH; do
        log "throughput run $run/$RUNS: Runnel --flush $flush"
        report=$(step "runnel benchmark consume" "${RUNNEL_CMD[@]}" benchmark consume --record-size "${RECORD_SIZE}B" \
            --total-bytes "${TOTAL_BYTES}B" --flush "$flush" $RUNNEL_ARGS -O json)
        printf '{"system":"runnel-%s","kind":"throughput","run":%d,"report":%s}\n' "$flush" "$run" "$report" >>"$RESULTS"
    done
done

# --- End-to-end latency at fixed rates -------------------------------------

for rate in $RATE; do
    bytes_per_second=$(awk -v r="$rate" 'BEGIN { printf "%d", r * 1000000 }')
    for run in $(seq "$RUNS"); do
        log "e2e $rate MB/s run $run/$RUNS: NATS JetStream (${E2E_SECONDS} s)"
        report=$(step "nats e2e" "$DRIVER" e2e --url "$NATS_URL" --stream e2e --subject e2e.data \
            --rate-bytes-per-second "$bytes_per_second" --record-size "$RECORD_SIZE" \
            --duration-seconds "$E2E_SECONDS" --batch "$NATS_INFLIGHT")
        printf '{"system":"nats","kind":"e2e","rate":%s,"run":%d,"report":%s}\n' "$rate" "$run" "$report" >>"$RESULTS"
        for flush in $FLUSH; do
            if [[ $RUNNEL_E2E != 1 ]]; then
                printf '{"system":"runnel-%s","kind":"e2e","rate":%s,"run":%d,"unavailable":true}\n' \
                    "$flush" "$rate" "$run" >>"$RESULTS"
                continue
            fi
            log "e2e $rate MB/s run $run/$RUNS: Runnel --flush $flush"
            report=$(step "runnel benchmark e2e" "${RUNNEL_CMD[@]}" benchmark e2e --record-size "${RECORD_SIZE}B" \
                --rate-limit "$bytes_per_second" --duration "${E2E_SECONDS}s" --flush "$flush" $RUNNEL_ARGS -O json)
            printf '{"system":"runnel-%s","kind":"e2e","rate":%s,"run":%d,"report":%s}\n' \
                "$flush" "$rate" "$run" "$report" >>"$RESULTS"
        done
    done
done

# --- Report ----------------------------------------------------------------

CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
FS=$(df -PT "$TMP" | awk 'NR == 2 { print $2 " on " $1 }')
RUNNEL_COMMIT=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
ASYNC_NATS=$(awk '/^name = "async-nats"/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$HERE/driver/Cargo.lock")

python3 - "$RESULTS" <<EOF
import json, statistics, sys

FLUSH = "$FLUSH".split()
RATES = "$RATE".split()
SYNC = "$NATS_SYNC_INTERVAL" or "default (2 min background fsync)"
print()
print("Runnel vs NATS JetStream, $(date -u +%Y-%m-%dT%H:%MZ)")
print("machine: $(nproc) CPUs, $CPU_MODEL; $(uname -r); data on $FS")
print("NATS: $NATS_VERSION, file storage, 1 replica, sync: " + SYNC +
      "; driver async-nats $ASYNC_NATS, $NATS_INFLIGHT publishes in flight, $NATS_CONSUMER consumer")
print("Runnel: $RUNNEL_COMMIT, 1 SC + 1 SPU, 1 partition, runnel benchmark defaults (1 MiB batches, 5 ms linger)"
      + (" + $RUNNEL_ARGS" if "$RUNNEL_ARGS" else ""))
print("workload: records of $RECORD_SIZE B; throughput $COUNT records ($TOTAL_BYTES B) per run; "
      "e2e $E2E_SECONDS s per run; $RUNS runs each, medians shown")
print()

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
systems = ["nats"] + ["runnel-" + f for f in FLUSH]

def values(system, kind, metric, rate=None):
    out = []
    for r in rows:
        if r["system"] != system or r["kind"] != kind:
            continue
        if rate is not None and str(r.get("rate")) != rate:
            continue
        v = metric(r)
        if v is not None:
            out.append(v)
    return out

def unavailable(system, kind, rate):
    return any(r.get("unavailable") for r in rows
               if r["system"] == system and r["kind"] == kind and str(r.get("rate")) == rate)

def thr(key_nats, key_runnel):
    def f(r):
        if r["system"] == "nats":
            return r[key_nats[0]][key_nats[1]]
        return r["report"].get(key_runnel)
    return f

def cpu_per_gb(r):
    if r["system"] == "nats":
        moved = r["produce"]["records"] * r["produce"]["record_size"] + r["consume"]["records"] * r["produce"]["record_size"]
        return r["server_cpu_seconds"] / (moved / 1e9)
    return r["report"].get("server_cpu_seconds_per_gb")

def e2e(key):
    def f(r):
        return None if r.get("unavailable") else r["report"].get(key)
    return f

metrics = [
    ("produce MB/s", "throughput", thr(("produce", "mb_per_second"), "produce_mb_per_second"), None),
    ("consume MB/s", "throughput", thr(("consume", "mb_per_second"), "consume_mb_per_second"), None),
    ("server CPU s per GB moved", "throughput", cpu_per_gb, None),
]
for rate in RATES:
    metrics += [
        (f"e2e p50 ms @ {rate} MB/s", "e2e", e2e("e2e_latency_ms_p50"), rate),
        (f"e2e p99 ms @ {rate} MB/s", "e2e", e2e("e2e_latency_ms_p99"), rate),
        (f"e2e achieved MB/s @ {rate} MB/s", "e2e", e2e("produce_mb_per_second"), rate),
    ]

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"

header = ["metric", "NATS JetStream"] + [f"Runnel flush={f}" for f in FLUSH] + [f"{f} / NATS" for f in FLUSH]
table = []
per_run = []
for name, kind, metric, rate in metrics:
    medians = {}
    cells = [name]
    for s in systems:
        vs = values(s, kind, metric, rate)
        per_run.append((name, s, vs))
        if not vs and kind == "e2e" and s != "nats" and unavailable(s, kind, rate):
            medians[s] = None
            cells.append("runnel e2e: not available in this build")
            continue
        medians[s] = statistics.median(vs) if vs else None
        cells.append(fmt(medians[s]))
    for f in FLUSH:
        a, b = medians.get("runnel-" + f), medians.get("nats")
        cells.append(f"{a / b:.2f}" if a is not None and b else "n/a")
    table.append(cells)

widths = [max(len(row[i]) for row in [header] + table) for i in range(len(header))]
def line(cells):
    return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
print(line(header))
print("|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|")
for row in table:
    print(line(row))
print()
print("Ratios are Runnel / NATS: above 1 is faster for MB/s, below 1 is faster (or cheaper) for latency and CPU.")
if "$NATS_SYNC_INTERVAL" == "always":
    print("Like for like: Runnel flush=always (fsync before ack) against NATS sync_interval=always.")
else:
    print("Like for like: Runnel flush=os against NATS (both acknowledge once the data is written to the OS page"
          " cache; neither fsyncs per write). flush=always fsyncs before acknowledging: stronger than this NATS offers.")
print()
print("Every run:")
for name, s, vs in per_run:
    print(f"  {name:34} {s:15} " + ", ".join(fmt(v) for v in vs))
print()
print("raw JSON: " + sys.argv[1])
EOF

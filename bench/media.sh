#!/usr/bin/env bash
# Media benchmark (issue 6, docs/performance.md): N concurrent G.711 calls relayed by
# switchboard, beside a minimal reference relay measured the same way in the same run.
#
#   rtp_load (caller phones) <-RTP-> switchboard <-RTP-> rtp_load (callee phones)
#   rtp_load (caller phones) <-RTP-> reference relay <-RTP-> rtp_load (callee phones)
#
# rtp_load (bench/rtp_load/, built as the example `rtp_load`) registers extension 1001,
# calls it from 1000 N times through switchboard's dialplan, sends 50 packets/s each
# way per call, and measures loss, one-way latency, jitter, relay CPU per packet and
# memory per call; N steps up until loss passes 0.1%.
#
# Usage: bench/media.sh [--wait-quiet SECONDS] [rtp_load run options, e.g.
#                       --calls 100,500,1000 --measure 10]
#        bench/media.sh --help-load    (all rtp_load options)
# Results: a table on stderr, a summary on stdout, bench/results/media-<UTC time>.json
# (also copied to bench/results/media-latest.json).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [[ ${1:-} == --help-load ]]; then
    (cd "$ROOT" && cargo run --release --quiet --example rtp_load -- run --help)
    exit 0
fi
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,17p' "$0"; exit 0; }
WAIT_QUIET=0
if [[ ${1:-} == --wait-quiet ]]; then
    WAIT_QUIET=$2
    shift 2
fi

# Every relayed call holds four sockets in switchboard and two in the reference relay.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
(($(ulimit -n) >= 16384)) || log "warning: only $(ulimit -n) file descriptors; large steps may fail"

WORK=$(mktemp -d /tmp/sb-bench-media.XXXXXX)
SB_PID=
cleanup() {
    if [[ -n $SB_PID ]]; then
        kill "$SB_PID" 2>/dev/null || true
        wait "$SB_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

SB_BIN=$(build_release "$WORK" --bin switchboard)
LOAD_BIN=$(build_release "$WORK" --example rtp_load)

SB_PORT=$(free_port)
ADMIN_PORT=$(free_port)
config=$(write_switchboard_config "$WORK" "$SB_PORT" "$ADMIN_PORT")
start_switchboard "$SB_BIN" "$config" "$WORK/switchboard.log" "$ADMIN_PORT"
log "switchboard pid $SB_PID on udp 127.0.0.1:$SB_PORT"

busy=$(wait_for_quiet "$WAIT_QUIET")
log "other processes use ${busy}% of the CPU"
mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/media-$(date -u +%Y%m%dT%H%M%SZ).json
"$LOAD_BIN" run --switchboard "127.0.0.1:$SB_PORT" --switchboard-pid "$SB_PID" \
    --caller 1000:bench-1000 --callee 1001:bench-1001 --json "$out" "$@" ||
    die "rtp_load failed (switchboard log: $(tail -5 "$WORK/switchboard.log"))"
kill -0 "$SB_PID" 2>/dev/null || die "switchboard died during the run: $(tail -5 "$WORK/switchboard.log")"
cp "$out" "$RESULTS_DIR/media-latest.json"

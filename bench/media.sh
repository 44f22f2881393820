#!/usr/bin/env bash
# Media benchmark (docs/performance.md). Two runs, each against a freshly started
# switchboard:
#
# 1. Relay: N concurrent G.711 calls relayed by switchboard, beside a minimal
#    reference relay measured the same way in the same run.
#      rtp_load (caller phones) <-RTP-> switchboard <-RTP-> rtp_load (callee phones)
#      rtp_load (caller phones) <-RTP-> reference relay <-RTP-> rtp_load (callee phones)
# 2. Transcoding: the callee answers G.722, then (another run) Opus, while the caller
#    stays on PCMU, so switchboard transcodes every call both ways; the phones send
#    speech. Beside it, in the same run, the codec library alone doing the same decode,
#    resample and encode (no sockets, no clock), so the CPU per call can be compared.
#
# rtp_load (bench/rtp_load/, built as the example `rtp_load`) registers extension 1001,
# calls it from 1000 N times through switchboard's dialplan, sends 50 packets/s each
# way per call, and measures loss, one-way latency, jitter, CPU per packet and per
# call, and memory per call; N steps up until loss passes 0.1%.
#
# Usage: bench/media.sh [--wait-quiet SECONDS] [--relay-only | --transcode-only]
#                       [--calls LIST] [--transcode-calls LIST] [--codecs "g722 opus"]
#                       [other rtp_load run options, for every run, e.g. --measure 5]
#        bench/media.sh --help-load    (all rtp_load options)
#   --calls            call counts of the relay run (default rtp_load's: 100 … 3000)
#   --transcode-calls  call counts of the transcoding runs (default: per codec, below)
# Results: a table on stderr, a summary on stdout, per run a JSON file in bench/results/:
# media-<UTC time>.json and media-transcode-<codec>-<UTC time>.json (each also copied
# to its -latest.json).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WAIT_QUIET=0
RUN_RELAY=1
RUN_TRANSCODE=1
RELAY_CALLS=
# Steps per codec: an Opus call costs several times a G.722 one (its encoder).
TRANSCODE_CALLS=
declare -A STEPS=(
    [g722]=25,50,100,200,300,400,500,600,800,1000
    [opus]=10,20,30,40,50,60,70,80,100,120,150
)
CODECS="g722 opus"
EXTRA=()
while (($#)); do
    case $1 in
    --help-load)
        (cd "$ROOT" && cargo run --release --quiet --example rtp_load -- run --help)
        exit 0
        ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
    --relay-only) RUN_TRANSCODE=0; shift ;;
    --transcode-only) RUN_RELAY=0; shift ;;
    --calls) RELAY_CALLS=$2; shift 2 ;;
    --transcode-calls) TRANSCODE_CALLS=$2; shift 2 ;;
    --codecs) CODECS=$2; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
    esac
done

# Every relayed call holds four sockets in switchboard and two in the reference relay.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
(($(ulimit -n) >= 16384)) || log "warning: only $(ulimit -n) file descriptors; large steps may fail"

WORK=$(mktemp -d /tmp/sb-bench-media.XXXXXX)
SB_PID=
stop_sb() {
    if [[ -n $SB_PID ]]; then
        kill "$SB_PID" 2>/dev/null || true
        wait "$SB_PID" 2>/dev/null || true
        SB_PID=
    fi
}
cleanup() {
    stop_sb
    rm -rf "$WORK"
}
trap cleanup EXIT

SB_BIN=$(build_release "$WORK" --bin switchboard)
LOAD_BIN=$(build_release "$WORK" --example rtp_load)
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)

# One run against a switchboard of its own (so memory per call starts from an idle
# process). Arguments: result name, then rtp_load run options.
run_load() {
    local name=$1
    shift
    local run_dir=$WORK/$name
    mkdir -p "$run_dir"
    local sb_port admin_port config
    sb_port=$(free_port)
    admin_port=$(free_port)
    config=$(write_switchboard_config "$run_dir" "$sb_port" "$admin_port")
    start_switchboard "$SB_BIN" "$config" "$run_dir/switchboard.log" "$admin_port"
    log "$name: switchboard pid $SB_PID on udp 127.0.0.1:$sb_port"

    local busy out=$RESULTS_DIR/$name-$STAMP.json
    busy=$(wait_for_quiet "$WAIT_QUIET")
    log "$name: other processes use ${busy}% of the CPU"
    "$LOAD_BIN" run --switchboard "127.0.0.1:$sb_port" --switchboard-pid "$SB_PID" \
        --admin "127.0.0.1:$admin_port" --background-cpu-pct "$busy" \
        --caller 1000:bench-1000 --callee 1001:bench-1001 --json "$out" "$@" ||
        die "rtp_load failed (switchboard log: $(tail -5 "$run_dir/switchboard.log"))"
    kill -0 "$SB_PID" 2>/dev/null || die "switchboard died during the run: $(tail -5 "$run_dir/switchboard.log")"
    stop_sb
    cp "$out" "$RESULTS_DIR/$name-latest.json"
}

if ((RUN_RELAY)); then
    calls=()
    [[ -n $RELAY_CALLS ]] && calls=(--calls "$RELAY_CALLS")
    run_load media "${calls[@]+"${calls[@]}"}" "${EXTRA[@]+"${EXTRA[@]}"}"
fi
if ((RUN_TRANSCODE)); then
    for codec in $CODECS; do
        run_load "media-transcode-$codec" --callee-codec "$codec" \
            --calls "${TRANSCODE_CALLS:-${STEPS[$codec]:-25,50,100,200,300}}" \
            "${EXTRA[@]+"${EXTRA[@]}"}"
    done
fi

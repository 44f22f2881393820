#!/usr/bin/env bash
# Signaling benchmark (issue 6, docs/performance.md): the highest call rate with zero
# failed calls, through switchboard and through a Kamailio stateful proxy, in one run.
#
#   SIPp UAC (ext 1000) -> switchboard (Lua dialplan) -> SIPp UAS registered as 1001
#   SIPp UAC            -> Kamailio (tm, rr)          -> the same SIPp UAS
#
# Each call is INVITE (407 challenge answered, for switchboard) -> 100/180/200 -> ACK
# -> hold -> BYE. For each target and repeat, rates are stepped up; a step passes when
# all of its calls succeed and SIPp really created them at 95% of the rate or more; the
# ramp stops at the first failing step. All traffic is on loopback.
#
# Usage: bench/signaling.sh [--rates "200 400 ..."] [--calls N] [--repeats N]
#                           [--hold-ms MS] [--targets "switchboard kamailio"]
#                           [--wait-quiet SECONDS]   (wait for other load to stop)
# Results: a table on stdout and bench/results/signaling-<UTC time>.json
# (also copied to bench/results/signaling-latest.json).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RATES="400 800 1200 1600 2000 2400 3000 3600 4200 4800"
CALLS=5000
REPEATS=3
HOLD_MS=500
TARGETS="switchboard kamailio"
WAIT_QUIET=0
while (($#)); do
    case $1 in
    --rates) RATES=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

need_tool sipp sip-tester
[[ $TARGETS == *kamailio* ]] && need_tool kamailio kamailio

WORK=$(mktemp -d /tmp/sb-bench-sig.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_WORK:-} ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

UAS_PORT=$(free_port)
SB_PORT=$(free_port)
ADMIN_PORT=$(free_port)
KAM_PORT=$(free_port)
UAC_PORT=$(free_port)
CLK_TCK=$(getconf CLK_TCK)

# ---- the targets ----
declare -A TARGET_ADDR TARGET_PIDS
# switchboard challenges the INVITE (407); the proxy relays it as it is.
declare -A TARGET_SCENARIO=(
    [switchboard]=$ROOT/tests/interop/uac_call.xml
    [kamailio]=$ROOT/bench/sipp/uac_call_proxy.xml
)
if [[ $TARGETS == *switchboard* ]]; then
    SB_BIN=$(build_release "$WORK" --bin switchboard)
    mkdir -p "$WORK/sb"
    config=$(write_switchboard_config "$WORK/sb" "$SB_PORT" "$ADMIN_PORT")
    start_switchboard "$SB_BIN" "$config" "$WORK/sb/switchboard.log" "$ADMIN_PORT"
    PIDS+=("$SB_PID")
    TARGET_ADDR[switchboard]=127.0.0.1:$SB_PORT
    TARGET_PIDS[switchboard]=$SB_PID
    log "switchboard pid $SB_PID on udp 127.0.0.1:$SB_PORT"
fi
if [[ $TARGETS == *kamailio* ]]; then
    mkdir -p "$WORK/kam"
    kamailio -f "$ROOT/bench/kamailio.cfg" -DD -E -l "udp:127.0.0.1:$KAM_PORT" \
        -A "UAS=\"sip:127.0.0.1:$UAS_PORT\"" -Y "$WORK/kam" -P "$WORK/kam/kamailio.pid" \
        -w "$WORK/kam" -m 512 -M 16 -n "${KAMAILIO_CHILDREN:-2}" >"$WORK/kam/kamailio.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 50); do
        [[ -n $(ss -Hlnu "sport = :$KAM_PORT") && -s $WORK/kam/kamailio.pid ]] && break
        sleep 0.1
    done
    # With -DD the process started is the main one, whose children are the workers; the
    # pid file says which it is either way.
    KAM_PID=$(cat "$WORK/kam/kamailio.pid" 2>/dev/null) || true
    [[ -n $KAM_PID ]] && kill -0 "$KAM_PID" 2>/dev/null ||
        die "kamailio did not start: $(tail -5 "$WORK/kam/kamailio.log")"
    [[ $KAM_PID == "${PIDS[-1]}" ]] || PIDS+=("$KAM_PID")
    TARGET_ADDR[kamailio]=127.0.0.1:$KAM_PORT
    TARGET_PIDS[kamailio]=$KAM_PID
    log "kamailio pid $KAM_PID on udp 127.0.0.1:$KAM_PORT"
fi

BACKGROUND_BUSY=$(wait_for_quiet "$WAIT_QUIET")
# A fresh SIPp UAS (registered as 1001 with switchboard) for every ramp: calls left
# half-done by an overloaded step must not fail the next ramp's calls.
UAS_PID=
restart_uas() {
    if [[ -n $UAS_PID ]]; then
        kill "$UAS_PID" 2>/dev/null || true
        while kill -0 "$UAS_PID" 2>/dev/null; do sleep 0.1; done
    fi
    if [[ -n ${TARGET_ADDR[switchboard]:-} ]]; then
        sipp_register "${TARGET_ADDR[switchboard]}" 1001 bench-1001 "$UAS_PORT" ||
            die "SIPp UAS could not register as 1001 with switchboard (log: $(tail -5 "$WORK/sb/switchboard.log"))"
    fi
    UAS_PID=$(sipp_background -sf "$ROOT/tests/interop/uas_answer.xml" -i 127.0.0.1 -p "$UAS_PORT")
    PIDS+=("$UAS_PID")
}

# CPU ticks of a target: the process and, for Kamailio, its worker processes.
target_ticks() {
    local pid=$1 total=0 child
    total=$(cpu_ticks "$pid")
    for child in $(pgrep -P "$pid" || true); do
        total=$((total + $(cpu_ticks "$child")))
    done
    echo "$total"
}

# A named column of the last line of a SIPp statistics CSV.
stat_column() {
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i } END { print $c + 0 }' "$1"
}

# One step: CALLS calls at `rate`; prints a JSON object and returns 1 when it failed.
run_step() {
    local target=$1 rate=$2 repeat=$3
    local stats=$WORK/step.csv pid=${TARGET_PIDS[$target]}
    local created=$WORK/created.log
    rm -f "$stats" "$created"
    local budget=$((CALLS / rate + HOLD_MS / 1000 + 20))
    local ticks0 t0 t1 ticks1
    ticks0=$(target_ticks "$pid")
    t0=$(date +%s%N)
    sipp -sf "${TARGET_SCENARIO[$target]}" -s 1001 -au 1000 -ap bench-1000 \
        -i 127.0.0.1 -p "$UAC_PORT" -r "$rate" -m "$CALLS" -l "$CALLS" -d "$HOLD_MS" \
        -max_invite_retrans 5 -max_non_invite_retrans 5 \
        -timeout "${budget}s" -timeout_error -nostdin "${SIPP_BUFF[@]}" \
        -trace_stat -stf "$stats" -fd 60 -trace_logs -log_file "$created" \
        "${TARGET_ADDR[$target]}" >"$WORK/uac-$target-$repeat-$rate.out" 2>&1 || true
    t1=$(date +%s%N)
    ticks1=$(target_ticks "$pid")
    local ok failed retrans wall_ms achieved cpu_ms
    ok=$(stat_column "$stats" 'SuccessfulCall(C)')
    failed=$((CALLS - ok))
    retrans=$(stat_column "$stats" 'Retransmissions(C)')
    wall_ms=$(((t1 - t0) / 1000000))
    # The rate SIPp really created calls at (it logs each call's creation time in ms).
    achieved=$(awk '{ t = $1 + 0; if (NR == 1) first = t; last = t }
        END { printf "%.0f", (NR > 1 && last > first ? (NR - 1) * 1000 / (last - first) : 0) }' "$created" 2>/dev/null || echo 0)
    cpu_ms=$(((ticks1 - ticks0) * 1000 / CLK_TCK))
    local pass=true
    # A rate SIPp could not generate was not tested.
    if ((failed > 0)) || ((achieved * 100 < rate * 95)); then
        pass=false
    fi
    printf '{"target": "%s", "repeat": %d, "rate": %d, "calls": %d, "successful": %d, "failed": %d, "retransmissions": %d, "wall_ms": %d, "achieved_cps": %d, "server_cpu_ms": %d, "server_cpu_us_per_call": %.1f, "pass": %s}' \
        "$target" "$repeat" "$rate" "$CALLS" "$ok" "$failed" "$retrans" "$wall_ms" "$achieved" \
        "$cpu_ms" "$(awk -v c="$cpu_ms" -v n="$CALLS" 'BEGIN { print c * 1000 / n }')" "$pass"
    log "$target repeat $repeat: $rate cps -> $ok/$CALLS ok, $retrans retransmissions, achieved $achieved cps, server CPU $cpu_ms ms"
    [[ $pass == true ]]
}

STEPS=()
declare -A BEST
for repeat in $(seq 1 "$REPEATS"); do
    for target in $TARGETS; do
        restart_uas
        best=0
        for rate in $RATES; do
            pass=true
            step=$(run_step "$target" "$rate" "$repeat") || pass=false
            kill -0 "${TARGET_PIDS[$target]}" 2>/dev/null || die "$target died during the $rate cps step"
            kill -0 "$UAS_PID" 2>/dev/null || log "warning: the SIPp UAS died during the $rate cps step"
            if [[ $pass == true ]]; then
                best=$rate
                STEPS+=("$step")
                sleep 2
            else
                STEPS+=("$step")
                # Let retransmissions and lingering calls drain before the next ramp.
                sleep 8
                break
            fi
        done
        BEST[$target]+="$best "
    done
done

# ---- report ----
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
printf '%-12s %-28s %s\n' target "best zero-failure cps/repeat" median
summary=()
for target in $TARGETS; do
    med=$(median <<<"${BEST[$target]}")
    printf '%-12s %-28s %s\n' "$target" "${BEST[$target]}" "$med"
    summary+=("\"$target\": {\"best_cps\": [$(tr ' ' '\n' <<<"${BEST[$target]}" | grep -v '^$' | paste -sd,)], \"median_cps\": $med}")
done
ratio=null
if [[ -n ${BEST[switchboard]:-} && -n ${BEST[kamailio]:-} ]]; then
    ratio=$(awk -v s="$(median <<<"${BEST[switchboard]}")" -v k="$(median <<<"${BEST[kamailio]}")" 'BEGIN { printf "%.2f", (k > 0 ? s / k : 0) }')
    echo "switchboard/kamailio (median best cps): ${ratio}x"
fi

mkdir -p "$RESULTS_DIR"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$RESULTS_DIR/signaling-$stamp.json
{
    printf '{\n  "benchmark": "signaling",\n  "time": "%s",\n  "machine": %s,\n' "$stamp" "$(machine_json)"
    printf '  "tools": {"sipp": "%s", "kamailio": "%s"},\n' \
        "$(sipp -v 2>&1 | grep -o 'v[0-9][0-9.]*[0-9]' | head -1)" "$(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p')"
    printf '  "settings": {"rates": [%s], "calls_per_step": %d, "repeats": %d, "hold_ms": %d},\n' \
        "$(tr ' ' ',' <<<"$RATES")" "$CALLS" "$REPEATS" "$HOLD_MS"
    printf '  "background_cpu_pct_before": %d,\n' "$BACKGROUND_BUSY"
    printf '  "summary": {%s},\n' "$(IFS=,; echo "${summary[*]}")"
    printf '  "ratio_switchboard_to_kamailio": %s,\n' "$ratio"
    printf '  "steps": [\n    %s\n  ]\n}\n' "$(printf '%s\n' "${STEPS[@]}" | paste -sd '\t' | sed 's/\t/,\n    /g')"
} >"$out"
cp "$out" "$RESULTS_DIR/signaling-latest.json"
echo "results: $out"

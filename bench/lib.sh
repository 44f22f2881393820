# Shared by bench/signaling.sh and bench/media.sh (sourced, not run).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=$ROOT/bench/results
SIPP_BUFF=(-buff_size 4194304)

die() {
    echo "error: $*" >&2
    exit 1
}

log() {
    printf '[%s] %s\n' "$(date +%T)" "$*" >&2
}

# Installs a Debian package when its binary is missing (non-interactive); fails loudly
# when it still can't be had.
need_tool() {
    local bin=$1 package=$2
    command -v "$bin" >/dev/null 2>&1 && return 0
    log "installing $package (for $bin)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo --non-interactive)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -q >&2 ||
        die "apt-get update failed; install $package yourself"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "$package" >&2 ||
        die "could not install $package, which provides $bin"
    command -v "$bin" >/dev/null 2>&1 || die "$package is installed but $bin is not on PATH"
}

# A loopback port nobody listens on (UDP or TCP), above the kernel's ephemeral range
# (32768-60999) and away from the RTP range the bench gives switchboard.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((61000 + RANDOM % 4000))
        if [[ -z $(ss -Hlnu "sport = :$port") && -z $(ss -Hlnt "sport = :$port") ]]; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# Waits until a TCP port on loopback accepts connections.
wait_tcp() {
    local port=$1 seconds=$2
    for _ in $(seq 1 $((seconds * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Builds a release target and copies it into `dir`, so a later build in a shared
# target directory cannot swap the binary under a running benchmark; prints the copy's
# path. Arguments: dir cargo-target-args... (e.g. --bin switchboard)
build_release() {
    local dir=$1
    shift
    log "building $* (release)"
    (cd "$ROOT" && cargo build --release --quiet "$@") >&2 || die "release build failed: $*"
    local name=${!#} path
    path=$TARGET_DIR/release/$name
    [[ $1 == --example ]] && path=$TARGET_DIR/release/examples/$name
    cp "$path" "$dir/" || die "no binary at $path"
    echo "$dir/$name"
}

# Writes a switchboard config for a bench run: SIP on loopback, extensions 1000 and 1001
# with known passwords and MD5 digest (what SIPp speaks), no request-rate ban.
# Arguments: dir sip_port admin_port [extra TOML]
write_switchboard_config() {
    local dir=$1 sip_port=$2 admin_port=$3 extra=${4:-}
    cat >"$dir/switchboard.toml" <<EOF
[sip]
listen = ["udp:127.0.0.1:$sip_port"]
auth_algorithms = ["MD5"]

[media]
# 20,000 ports: 5,000 calls of two legs with an RTP and an RTCP port each.
rtp_ports = "10000-29999"

[admin]
listen = "127.0.0.1:$admin_port"

[storage]
dir = "$dir/data"

[dialplan]
dir = "$ROOT/dialplans"

[security]
# A load generator sends thousands of requests a second from one address.
max_requests_per_sec = 0
drop_scanner_user_agents = false

[extensions.1000]
password = "bench-1000"
auth_algorithms = ["MD5"]

[extensions.1001]
password = "bench-1001"
auth_algorithms = ["MD5"]
$extra
EOF
    echo "$dir/switchboard.toml"
}

# Starts switchboard in the background; sets SB_PID. Arguments: binary config log_file admin_port
start_switchboard() {
    local bin=$1 config=$2 logfile=$3 admin_port=$4
    "$bin" --log-level "${SB_LOG_LEVEL:-warn}" run --config "$config" >"$logfile" 2>&1 &
    SB_PID=$!
    wait_tcp "$admin_port" 30 || {
        tail -20 "$logfile" >&2
        die "switchboard did not start (log above)"
    }
    kill -0 "$SB_PID" 2>/dev/null || die "switchboard exited at start: $(tail -5 "$logfile")"
}

# Registers a SIPp instance's address as an extension. Arguments: registrar_addr ext password local_port
sipp_register() {
    local registrar=$1 ext=$2 password=$3 port=$4
    sipp -sf "$ROOT/tests/interop/register.xml" -s "$ext" -au "$ext" -ap "$password" \
        -i 127.0.0.1 -p "$port" -m 1 -timeout 10s -timeout_error -nostdin "${SIPP_BUFF[@]}" \
        "$registrar" >/dev/null 2>&1
}

# Starts a background SIPp and prints its pid. SIPp's -bg forks, reports the child's
# pid and exits non-zero even when the child runs, so the pid is what counts.
sipp_background() {
    local out pid
    out=$(sipp "$@" -bg -nostdin "${SIPP_BUFF[@]}" 2>&1) || true
    pid=$(sed -n 's/.*PID=\[\([0-9]*\)\].*/\1/p' <<<"$out")
    sleep 0.2
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || die "sipp did not start: $out"
    echo "$pid"
}

# Machine facts for the JSON results, as a JSON object.
machine_json() {
    local cpu kernel cores
    cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
    cores=$(nproc)
    kernel=$(uname -r)
    printf '{"cpu": "%s", "cores": %s, "kernel": "%s", "memory_mb": %s, "commit": "%s"}' \
        "${cpu//\"/}" "$cores" "$kernel" "$(free -m | awk '/^Mem:/ {print $2}')" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

# Sum of user and system CPU time of a process and its threads, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Busy CPU percentage of the whole machine over `seconds` (all cores: 100 = every core busy).
machine_busy_pct() {
    local seconds=${1:-3} a b
    a=($(head -1 /proc/stat))
    sleep "$seconds"
    b=($(head -1 /proc/stat))
    local total=0 idle i
    for i in 1 2 3 4 5 6 7 8; do
        total=$((total + b[i] - a[i]))
    done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# The figures only mean something on a quiet machine: waits up to `max_wait` seconds
# for other load to fall under 10% of the machine, and says so when it does not.
# Prints the last busy percentage seen (recorded in the results).
wait_for_quiet() {
    local max_wait=${1:-0} waited=0 busy
    busy=$(machine_busy_pct 3)
    while ((busy > 10 && waited < max_wait)); do
        log "machine busy (${busy}% CPU used by others); waiting for quiet"
        sleep 10
        waited=$((waited + 13))
        busy=$(machine_busy_pct 3)
    done
    ((busy <= 10)) || log "warning: ${busy}% of the CPU is used by other processes; figures will be low and noisy"
    echo "$busy"
}

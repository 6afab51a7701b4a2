#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/run.sh - ortoo's benchmark run (issue 3); `make bench` calls it after
# building ./ortoo and build/release/bench/{ortoo-load,ortoo-sink}.  It
# builds nothing itself.
#
# Everything runs on loopback, on free ports (bound to port 0 by a one-line
# Python helper), in a work directory under build/ (the same disk as the
# repository, for ortoo's spool and Postfix's queue alike):
#   - ortoo:      ./ortoo -c DIR init bench.test --dev, [listen] and [server]
#                 rewritten, ./ortoo -c DIR serve   ("not available" if it
#                 does not build or start);
#   - Postfix:    a private instance from Debian's package (its own
#                 config_directory, queue_directory, data_directory), smtpd
#                 on a free port, relaying bench.test to ortoo-sink;
#   - smtp-sink:  Postfix's protocol ceiling (no spool).
# Scenarios: A (accept), E (10,000 idle connections, RSS per connection),
# F (reactors 1 vs 2), K (inbound checks on and off), H (callgrind instructions per accepted
# message), D
# (TLS handshakes, when ortoo's submissions listener answers), C's first part
# (DKIM-signed messages per core through dkim/, ortoo-dkimbench, beside
# `openssl speed`), I (accept throughput of well-behaved clients under a reply
# flood and under slowloris, as a ratio of the same run without attack, and
# ortoo's peak RSS), J (200 sessions x 20 MB at once against the body-memory
# budget), plus a check that ortoo-load drives smtp-sink at least as fast as
# smtp-source.  B, C's second part (signed relay: ortoo against Postfix with a
# private OpenDKIM milter, to the same sink) and G wait for delivery.  Results:
# build/bench/results.jsonl, logs, and BENCHMARKS.md (plots in bench/plots/ unless --quick).
#
# Usage: bash bench/run.sh [--quick]      (QUICK=1 in the environment too)
#        SCENARIOS=I bash bench/run.sh    (only these scenarios, e.g. I, "A I" or
#                                          "gen,A,J"; such a partial run prints its
#                                          figures and leaves BENCHMARKS.md alone;
#                                          `make bench SCENARIOS=I` passes it on)
#        ORTOO_BEFORE=BIN                 (scenario K also runs BIN, an older ortoo
#                                          built from another commit, with checks off
#                                          and on, interleaved with ./ortoo: before and
#                                          after figures from one run)
set -u
set -o pipefail

QUICK=${QUICK:-0}
[[ "${1:-}" == "--quick" ]] && QUICK=1
[[ "$QUICK" == "" ]] && QUICK=0
SCENARIOS=${SCENARIOS:-}

# want NAME: run scenario NAME (C, gen, A, S, D, E, F, K, I, J, H, B, G)?  All of them
# unless SCENARIOS names some.
want() {
    [[ -z "$SCENARIOS" ]] && return 0
    local w
    for w in ${SCENARIOS//,/ }; do
        [[ "$w" == "$1" ]] && return 0
        # "AI" style: single-letter names run together
        [[ ${#1} == 1 && "$w" != gen && "$w" == *"$1"* ]] && return 0
    done
    return 1
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
LOAD=${ORTOO_LOAD:-$ROOT/build/release/bench/ortoo-load}
SINK=${ORTOO_SINK:-$ROOT/build/release/bench/ortoo-sink}
ORTOO=${ORTOO_BIN:-$ROOT/ortoo}
OUT=$ROOT/build/bench
WORK=$(mktemp -d "$ROOT/build/bench-work.XXXXXX")
RESULTS=$OUT/results.jsonl
MD=$ROOT/BENCHMARKS.md
PLOTS=$ROOT/bench/plots
TO=dev@bench.test        # a recipient every target accepts (ortoo: the --dev user)
CONNS=50
PIDS=()
PF=""

mkdir -p "$OUT"
: >"$RESULTS"
chmod 755 "$WORK"

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
    local p
    [[ -n "$PF" ]] && postfix -c "$PF/etc" stop >/dev/null 2>&1
    [[ -n "${PFR:-}" ]] && postfix -c "$PFR/etc" stop >/dev/null 2>&1
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    sleep 0.3
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_port PORT SECONDS: 0 when something accepts on 127.0.0.1:PORT.
wait_port() {
    local port=$1 tries=$(($2 * 10)) i
    for ((i = 0; i < tries; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# stop_pid PID: TERM, wait up to 20 s, then KILL.
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# record SCENARIO TARGET LABEL JSON: one line into results.jsonl.
record() {
    "$PY" - "$1" "$2" "$3" "$4" >>"$RESULTS" <<'EOF'
import json, sys
sc, target, label, raw = sys.argv[1:5]
try:
    d = json.loads(raw)
except Exception:
    d = {"error": raw[:200] if raw else "no output"}
d.update(scenario=sc, target=target, label=label)
print(json.dumps(d))
EOF
}

# load SCENARIO TARGET LABEL PORT ARGS...: run ortoo-load, record its JSON.
load() {
    local sc=$1 target=$2 label=$3 port=$4
    shift 4
    local out
    out=$(timeout 600 "$LOAD" --server "127.0.0.1:$port" --to "$TO" --json "$@" 2>>"$OUT/load.err")
    record "$sc" "$target" "$label" "$out"
    log "$sc $target $label: $(echo "$out" | "$PY" -c 'import json,sys
try:
  d=json.load(sys.stdin); print("%.0f msgs/s  p50 %.2f ms  p99 %.2f ms  ok %d failed %d" % (d["msgs_per_s"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["ok"], d["failed"]))
except Exception: print("no result")')"
}

# ---- machine and versions ----------------------------------------------------------
for tool in "$LOAD" "$SINK"; do
    if [[ ! -x "$tool" ]]; then
        log "missing $tool (run: make bench, or make build/release/bench/<name>)"
        exit 1
    fi
done
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
CORES=$(nproc)
KERNEL=$(uname -r)
DISK=$(df -h "$WORK" | awk 'NR==2 {print $1 " (" $2 ", " $6 ")"}')
DISKMODEL=$(lsblk -ndo NAME,MODEL,ROTA "$(df "$WORK" | awk 'NR==2 {print $1}')" 2>/dev/null | tr -s ' ')
PFVER=$(postconf -d -h mail_version 2>/dev/null || echo "not installed")
ORTOOVER="not built"
[[ -x "$ORTOO" ]] && ORTOOVER=$("$ORTOO" --version 2>&1 | head -1)
OPENSSLVER=$(openssl version 2>/dev/null)
ODKVER=$(opendkim -V 2>/dev/null | head -1 | sed 's/^opendkim: //')
[[ -n "$ODKVER" ]] || ODKVER="not installed"
LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the machine skews every number
log "machine: $CPU, $CORES cores, kernel $KERNEL, disk $DISK $DISKMODEL"

if ((QUICK)); then
    N1=2000      # messages with a new connection each
    N100=5000    # messages with 100 per connection
else
    N1=10000
    N100=20000
fi

# ---- scenario C, first part: DKIM-signed messages per core ------------------------------
# CPU-bound and single-threaded: run first, before any peer is started.  ortoo-dkimbench
# runs `openssl speed -seconds S rsa2048 ed25519` itself, so both come from the same run.
DKB=$(dirname "$LOAD")/ortoo-dkimbench
if ! want C; then
    :
elif [[ -x "$DKB" ]]; then
    record C dkimbench "2KB" "$("$DKB" --seconds $((QUICK ? 1 : 3)) --size 2048 --json 2>>"$OUT/dkimbench.err")"
    log "C dkimbench: $(tail -1 "$RESULTS")"
else
    log "C: $DKB missing (make bench-bins)"
fi

# ---- peers ---------------------------------------------------------------------------
SINK_PORT=$(free_port)
"$SINK" --listen "127.0.0.1:$SINK_PORT" --quiet --counts "$WORK/sink.counts" 2>>"$OUT/sink.err" &
PIDS+=($!)
wait_port "$SINK_PORT" 5 || { log "ortoo-sink did not start"; exit 1; }

SS_PORT=$(free_port)
SS_PID=""
PEERS=0 # Postfix and smtp-sink serve the generator check and scenarios A and S
if want gen || want A || want S; then PEERS=1; fi
if ((PEERS)) && command -v smtp-sink >/dev/null; then
    smtp-sink -u nobody "127.0.0.1:$SS_PORT" 1000 >/dev/null 2>>"$OUT/smtp-sink.err" &
    SS_PID=$!
    PIDS+=($SS_PID)
    wait_port "$SS_PORT" 5 || { log "smtp-sink did not start"; SS_PID=""; }
fi

# Postfix: a private instance; never touches /etc/postfix beyond copying master.cf.
PF_PORT=""
start_postfix() {
    command -v postfix >/dev/null || return 1
    PF=$WORK/postfix
    mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
    chown postfix:postfix "$PF/data"
    cp /etc/postfix/master.cf "$PF/etc/master.cf"
    : >"$PF/etc/main.cf"
    PF_PORT=$(free_port)
    postconf -c "$PF/etc" -e compatibility_level=3.6 \
        "queue_directory=$PF/queue" "data_directory=$PF/data" \
        "maillog_file=$PF/maillog" "maillog_file_prefixes=$PF" \
        inet_interfaces=127.0.0.1 inet_protocols=ipv4 \
        myhostname=pf.bench.test mydomain=bench.test myorigin=bench.test 'mydestination=' \
        relay_domains=bench.test mynetworks=127.0.0.0/8 \
        "relay_transport=smtp:[127.0.0.1]:$SINK_PORT" "default_transport=smtp:[127.0.0.1]:$SINK_PORT" \
        'alias_maps=' 'alias_database=' 'local_recipient_maps=' \
        smtpd_tls_security_level=none smtp_tls_security_level=none \
        biff=no append_dot_mydomain=no qmgr_clog_warn_time=0 \
        'smtpd_client_restrictions=check_client_access static:HOLD' || return 1
    # HOLD: accepted mail is fsync'ed into the hold queue and stays there, so
    # Postfix's delivery of one run does not eat the CPU of the next run
    # (scenario A measures the durable accept; relaying is scenario B's).
    postconf -c "$PF/etc" -M# smtp/inet
    postconf -c "$PF/etc" -M "127.0.0.1:$PF_PORT/inet=127.0.0.1:$PF_PORT inet n - n - - smtpd"
    postconf -c "$PF/etc" -F '*/*/chroot=n'
    postfix -c "$PF/etc" start >>"$OUT/postfix.err" 2>&1 || return 1
    wait_port "$PF_PORT" 15
}
if ((PEERS)) && ! start_postfix; then
    log "Postfix: not available (see $OUT/postfix.err)"
    PF_PORT=""
fi

# ortoo: a generated config dir; returns 1 ("not available") when it cannot start.
ORTOO_PID=""
ORTOO_PORT=""
ORTOO_SUBS_PORT=""
ORTOO_SUB_PORT=""
ORTOO_DIR=""
start_ortoo() { # start_ortoo REACTORS [IO] [WRAPPER...]
    local reactors=$1 io=${2:-auto}
    shift 2 2>/dev/null || shift $#
    [[ -x "$ORTOO" ]] || return 1
    ORTOO_DIR=$WORK/ortoo-$reactors-$io-$RANDOM
    "$ORTOO" -c "$ORTOO_DIR" init bench.test --dev --hostname localhost >>"$OUT/ortoo.err" 2>&1 || return 1
    ORTOO_PORT=$(free_port)
    ORTOO_SUBS_PORT=$(free_port)
    ORTOO_SUB_PORT=$(free_port)
    local sub_port=$ORTOO_SUB_PORT
    mkdir -p "$WORK/spool-$$-$RANDOM"
    "$PY" - "$ORTOO_DIR/ortoo.conf" "$ORTOO_PORT" "$sub_port" "$ORTOO_SUBS_PORT" \
        "$ORTOO_DIR/spool" "$reactors" "$io" <<'EOF' || return 1
import re, sys
path, smtp, sub, subs, spool, reactors, io = sys.argv[1:8]
want = {"listen": {"smtp": "127.0.0.1:" + smtp, "submission": "127.0.0.1:" + sub,
                   "submissions": "127.0.0.1:" + subs},
        "server": {"spool": spool, "reactors": reactors, "io": io, "log_level": "warn",
                   "max_connections": "20000"},
        # No banner delay (early-talker check): the peers do not delay either.
        "smtp": {"greeting_delay": "0"},
        # Every load comes from 127.0.0.1 (scenario E holds 10,000 connections);
        # the attackers of scenario I use 127.0.0.2 and 127.0.0.3.
        "limits": {"connections_per_address": "20000"},
        # Accept-only scenarios keep what they accept (as Postfix's HOLD does);
        # B and G turn delivery on (ORTOO_EXTRA, see below).
        "delivery": {"hold": "on"},
        "local": {"maildir_root": spool + "-maildir"}}
import json, os
if not os.environ.get("ORTOO_EXTRA_CONF"):
    # Accept and relay are measured as Postfix is run: without inbound SPF,
    # DKIM and DMARC checks (scenario K measures them, with its own zone),
    # and lookups never leave the machine (a closed loopback port answers
    # every query that a scenario's own zone does not).
    want["checks"] = {"enabled": "off"}
    want["resolver"] = {"forward": "127.0.0.1@9"}
for sec, kv in json.loads(os.environ.get("ORTOO_EXTRA") or "{}").items():
    want.setdefault(sec, {}).update(kv)
out, section, seen = [], None, set()
def flush(sec):
    for k, v in want.get(sec, {}).items():
        if (sec, k) not in seen:
            out.append("%s = %s" % (k, v))
for line in open(path).read().splitlines():
    m = re.match(r"\s*\[([\w* .-]+)\]", line)
    if m:
        flush(section)
        section = m.group(1)
        out.append(line)
        continue
    m = re.match(r"\s*(\w+)\s*=", line)
    if m and section in want and m.group(1) in want[section]:
        out.append("%s = %s" % (m.group(1), want[section][m.group(1)]))
        seen.add((section, m.group(1)))
        continue
    out.append(line)
flush(section)
for sec in want:
    if not any(l.strip() == "[%s]" % sec for l in out):
        out.append("[%s]" % sec)
        flush(sec)
open(path, "w").write("\n".join(out) + "\n")
EOF
    # B and G: no DKIM signing (scenario C measures it).
    [[ -n "${ORTOO_NO_DKIM:-}" ]] && rm -f "$ORTOO_DIR"/domains/*/dkim/*.key
    # Extra sections for one scenario (K: [resolver] and [checks]).
    [[ -n "${ORTOO_EXTRA_CONF:-}" ]] && cat "$ORTOO_EXTRA_CONF" >>"$ORTOO_DIR/ortoo.conf"
    "$@" "$ORTOO" -c "$ORTOO_DIR" serve >>"$OUT/ortoo.err" 2>&1 &
    ORTOO_PID=$!
    PIDS+=($ORTOO_PID)
    local wait_s=15
    [[ $# -gt 0 ]] && wait_s=60 # under valgrind
    if ! wait_port "$ORTOO_PORT" "$wait_s" || ! kill -0 "$ORTOO_PID" 2>/dev/null; then
        stop_pid "$ORTOO_PID"
        ORTOO_PID=""
        return 1
    fi
    return 0
}
stop_ortoo() {
    [[ -n "$ORTOO_PID" ]] && stop_pid "$ORTOO_PID"
    ORTOO_PID=""
}

ORTOO_OK=0
if ! want A && ! want S && ! want D && ! want E; then
    [[ -x "$ORTOO" ]] && ORTOO_OK=1 # the later scenarios start their own
elif start_ortoo auto auto; then
    ORTOO_OK=1
    log "ortoo: listening on $ORTOO_PORT ($ORTOOVER)"
else
    log "ortoo: not available (see $OUT/ortoo.err)"
fi

# ---- load generator check: ortoo-load vs smtp-source against smtp-sink ------------------
if want gen && [[ -n "$SS_PID" ]]; then
    for mode in new reuse; do
        if [[ $mode == new ]]; then n=$N1; flags=(); pc=1; else n=$N100; flags=(-d); pc=0; fi
        t0=$(date +%s.%N)
        timeout 600 smtp-source "${flags[@]}" -s "$CONNS" -m "$n" -l 2048 -f load@load.test -t "$TO" \
            "127.0.0.1:$SS_PORT" >/dev/null 2>>"$OUT/smtp-source.err"
        rc=$?
        t1=$(date +%s.%N)
        record gen smtp-source "$mode" "$("$PY" -c "
import json; el=$t1-$t0
print(json.dumps({'ok': $n if $rc == 0 else 0, 'elapsed_s': el, 'msgs_per_s': ($n / el) if $rc == 0 else 0, 'rc': $rc}))")"
        log "gen smtp-source $mode: $(tail -1 "$RESULTS" | "$PY" -c 'import json,sys; print("%.0f msgs/s" % json.load(sys.stdin)["msgs_per_s"])')"
        load gen ortoo-load "$mode" "$SS_PORT" --connections "$CONNS" --messages "$n" --size 2048 --per-conn "$pc"
    done
fi

# ---- scenario A: accept ------------------------------------------------------------------
targets=()
[[ $ORTOO_OK == 1 ]] && targets+=("ortoo:$ORTOO_PORT")
[[ -n "$PF_PORT" ]] && targets+=("postfix:$PF_PORT")
[[ -n "$SS_PID" ]] && targets+=("smtp-sink:$SS_PORT")
want A || targets=()
for size in 2048 51200; do
    for pc in 1 100; do
        if [[ $pc == 1 ]]; then n=$N1; else n=$N100; fi
        for tp in "${targets[@]}"; do
            load A "${tp%%:*}" "size=$size per_conn=$pc" "${tp##*:}" \
                --connections "$CONNS" --messages "$n" --size "$size" --per-conn "$pc" --pipelining
        done
    done
done

# ---- plots' data: throughput against connections (not in quick mode) -----------------------
if ((!QUICK)) && want S; then
    targets=()
    [[ $ORTOO_OK == 1 && -n "$ORTOO_PID" ]] && targets+=("ortoo:$ORTOO_PORT")
    [[ -n "$PF_PORT" ]] && targets+=("postfix:$PF_PORT")
    [[ -n "$SS_PID" ]] && targets+=("smtp-sink:$SS_PORT")
    for c in 1 10 50 100; do
        for tp in "${targets[@]}"; do
            n=$((c * 100))
            ((n < 2000)) && n=2000
            load S "${tp%%:*}" "connections=$c" "${tp##*:}" \
                --connections "$c" --messages "$n" --size 2048 --per-conn 100 --pipelining
        done
    done
fi

# ---- scenario D: TLS handshakes on ortoo's submissions listener (when it answers) ------------
# Two kinds of session, each with full and with resumed handshakes, 10 connections, one
# session per connection: "session" = TLS, EHLO, QUIT (the handshake rate itself), and
# "mail" = TLS, EHLO, AUTH PLAIN, one 2 KB message, QUIT (what a submission costs).  Plus
# STARTTLS sessions on 587.  ortoo's own CPU time per session comes from /proc, so the
# server's cost is reported apart from the load generator's (same 2 cores).  ortoo-tlsbench
# then times the handshakes inside ortoo's TLS layer alone (no sockets) and the primitives.
proc_cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
d_load() { # d_load LABEL PORT N ARGS...
    local label=$1 port=$2 n=$3
    shift 3
    local c0 c1 out hz
    hz=$(getconf CLK_TCK)
    c0=$(proc_cpu "$ORTOO_PID")
    out=$(timeout 600 "$LOAD" --server "127.0.0.1:$port" --to "$TO" --json --connections 10 \
        --messages "$n" --per-conn 1 --timeout 10 "$@" 2>>"$OUT/load.err")
    c1=$(proc_cpu "$ORTOO_PID")
    out=$(echo "$out" | "$PY" -c "
import json, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print(''); sys.exit()
ok = max(1, d.get('ok', 0))
d['server_cpu_us'] = ($c1 - $c0) * 1e6 / $hz / ok
d['load_cpu_us'] = (d.get('cpu_user_s', 0) + d.get('cpu_sys_s', 0)) * 1e6 / ok
print(json.dumps(d))")
    record D ortoo "$label" "$out"
    log "D ortoo $label: $(echo "$out" | "$PY" -c 'import json,sys
try:
  d=json.load(sys.stdin); print("%.0f /s  full %d resumed %d  ortoo %.0f us/session  load %.0f us/session" % (d["msgs_per_s"], d["handshakes_full"], d["handshakes_resumed"], d["server_cpu_us"], d["load_cpu_us"]))
except Exception: print("no result")')"
}
if want D && [[ $ORTOO_OK == 1 && -n "$ORTOO_PID" ]]; then
    pw=$(cat "$ORTOO_DIR/dev-password" 2>/dev/null)
    nd=$((QUICK ? 1000 : 4000)) # sessions without mail
    nm=$((QUICK ? 500 : 2000))  # sessions with AUTH and a message
    if [[ -n "$pw" ]] && timeout 5 openssl s_client -connect "127.0.0.1:$ORTOO_SUBS_PORT" </dev/null >/dev/null 2>&1; then
        for res in full resumed; do
            flags=()
            [[ $res == resumed ]] && flags=(--resume)
            d_load "session $res" "$ORTOO_SUBS_PORT" "$nd" --tls --no-mail "${flags[@]}"
            # warm-up, not recorded: the first AUTHs run argon2id (tens of ms each) until
            # ortoo's cache of recent successes holds the password
            timeout 60 "$LOAD" --server "127.0.0.1:$ORTOO_SUBS_PORT" --to "$TO" --json --connections 10 \
                --messages 20 --per-conn 1 --tls --auth "dev@bench.test:$pw" --from dev@bench.test \
                >/dev/null 2>>"$OUT/load.err"
            d_load "mail $res" "$ORTOO_SUBS_PORT" "$nm" --tls --auth "dev@bench.test:$pw" \
                --from dev@bench.test --size 2048 "${flags[@]}"
            d_load "starttls $res" "$ORTOO_SUB_PORT" "$nd" --starttls --no-mail "${flags[@]}"
        done
    fi
    TB=$(dirname "$LOAD")/ortoo-tlsbench
    if [[ -x "$TB" ]]; then
        record D tlsbench "handshake" "$("$TB" --certs "$ORTOO_DIR/certs" --host localhost \
            --count $((QUICK ? 300 : 1000)) --json 2>>"$OUT/load.err")"
        log "D tlsbench: $(tail -1 "$RESULTS")"
    fi
fi
# ---- scenario E: 10,000 idle connections ---------------------------------------------------
E_CONNS=10000
if want E && [[ $ORTOO_OK == 1 && -n "$ORTOO_PID" ]]; then
    rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
    rss0=$(rss_kb "$ORTOO_PID")
    "$LOAD" --server "127.0.0.1:$ORTOO_PORT" --connections "$E_CONNS" --idle 20 --json \
        >"$WORK/e.json" 2>>"$OUT/load.err" &
    epid=$!
    PIDS+=($epid)
    held=0
    for ((i = 0; i < 150; i++)); do # up to 15 s for the connections to open
        held=$(ls "/proc/$ORTOO_PID/fd" 2>/dev/null | wc -l)
        ((held >= E_CONNS)) && break
        sleep 0.1
    done
    sleep 1
    rss1=$(rss_kb "$ORTOO_PID")
    fds=$(ls "/proc/$ORTOO_PID/fd" 2>/dev/null | wc -l)
    wait "$epid"
    record E ortoo "idle=$E_CONNS" "$("$PY" -c "
import json
d = json.load(open('$WORK/e.json')) if open('$WORK/e.json').read().strip() else {}
d.update(rss_before_kb=${rss0:-0}, rss_held_kb=${rss1:-0}, fds_held=$fds,
         rss_per_conn_bytes=(${rss1:-0} - ${rss0:-0}) * 1024 / max(1, d.get('held', 0) or $fds))
print(json.dumps(d))" 2>/dev/null || echo '{}')"
    log "E: $(tail -1 "$RESULTS")"
fi

stop_ortoo

# ---- scenario F: reactors = 1 vs 2 ----------------------------------------------------------
if want F && [[ $ORTOO_OK == 1 ]]; then
    for r in 1 2; do
        if start_ortoo "$r" auto; then
            load F ortoo "reactors=$r" "$ORTOO_PORT" --connections "$CONNS" --messages "$N100" \
                --size 2048 --per-conn 100 --pipelining
            stop_ortoo
        fi
    done
fi

# ---- scenario K: inbound checks (SPF + iprev + DKIM verify + DMARC) ----------------------------
# Mail from outside on port 25 to the local dev@bench.test: one DKIM-signed 2 KB message From
# load@load.test (bench/inbound.py: a DNSSEC-signed zone on a loopback nsd with SPF, the DKIM
# key, DMARC p=reject and the reverse zone), sent to the same server with [checks] enabled =
# off and on.  After the first lookups every answer comes from ortoo's resolver cache: this
# measures what the checks cost in CPU, not DNS latency.  ortoo's CPU per message from /proc.
# With ORTOO_BEFORE, that binary runs the same loads, interleaved (before/after in one run).
# Then the DKIM verification alone: ortoo-dkimbench --verify beside `openssl speed` verify.
k_load() { # k_load MODE [LABEL_PREFIX]
    local c0 c1 hz out qid ar=""
    hz=$(getconf CLK_TCK)
    c0=$(proc_cpu "$ORTOO_PID")
    out=$(timeout 600 "$LOAD" --server "127.0.0.1:$ORTOO_PORT" --to "$TO" --json \
        --connections "$CONNS" --messages "$N100" --per-conn 100 --pipelining \
        --message "$WORK/inbound/msg.eml" --from load@load.test 2>>"$OUT/load.err")
    c1=$(proc_cpu "$ORTOO_PID")
    # One stored message's Authentication-Results: which results did the checks give?
    qid=$("$ORTOO" -c "$ORTOO_DIR" queue list --json 2>/dev/null | head -1 |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
    [[ -n "$qid" ]] && ar=$("$ORTOO" -c "$ORTOO_DIR" queue show "$qid" --raw 2>/dev/null |
        sed -n '/^Authentication-Results:/,/^Received:/p' | tr -d '\r' | tr '\n\t' '  ')
    out=$(echo "$out" | AR="$ar" "$PY" -c "
import json, os, re, sys
try:
    d = json.load(sys.stdin)
except Exception:
    print(''); sys.exit()
d['server_cpu_us'] = ($c1 - $c0) * 1e6 / $hz / max(1, d.get('ok', 0))
d['results'] = sorted(set(re.findall(r'(?<![.\w])(iprev|spf|dkim|dmarc)=(\w+)', os.environ.get('AR', ''))))
print(json.dumps(d))")
    record K ortoo "${2:-}checks=$1" "$out"
    log "K ortoo ${2:-}checks=$1: $(echo "$out" | "$PY" -c 'import json,sys
try:
  d=json.load(sys.stdin); print("%.0f msgs/s  p99 %.2f ms  ortoo %.0f us/msg  ok %d failed %d  %s" % (d["msgs_per_s"], d["latency_ms"]["p99"], d["server_cpu_us"], d["ok"], d["failed"], d["results"]))
except Exception: print("no result")')"
}
if [[ $ORTOO_OK == 1 ]] && want K && "$PY" "$ROOT/bench/inbound.py" "$WORK/inbound" >>"$OUT/inbound.err" 2>&1; then
    PIDS+=("$(cat "$WORK/inbound/nsd.pid")")
    KBINS=("$ORTOO")
    [[ -n "${ORTOO_BEFORE:-}" && -x "${ORTOO_BEFORE:-}" ]] && KBINS=("$ORTOO_BEFORE" "$ORTOO")
    KLOAD0=$(cut -d' ' -f1 /proc/loadavg)
    for mode in off on; do
        for kbin in "${KBINS[@]}"; do
            { cat "$WORK/inbound/resolver.conf"; printf '\n[checks]\nenabled = %s\n' "$mode"; } \
                >"$WORK/inbound/extra.conf"
            prefix=""
            [[ "$kbin" != "$ORTOO" ]] && prefix="before "
            ORTOO_SAVED=$ORTOO
            ORTOO=$kbin
            if ORTOO_EXTRA_CONF=$WORK/inbound/extra.conf start_ortoo auto auto; then
                k_load "$mode" "$prefix"
                stop_ortoo
            fi
            ORTOO=$ORTOO_SAVED
        done
    done
    if [[ -x "$DKB" ]]; then
        record K dkimbench "verify 2KB" "$("$DKB" --verify --seconds $((QUICK ? 1 : 3)) --size 2048 --json 2>>"$OUT/dkimbench.err")"
        log "K dkimbench verify: $(tail -1 "$RESULTS")"
    fi
    log "K: load average at the start ${KLOAD0}, at the end $(cut -d' ' -f1 /proc/loadavg)"
elif want K; then
    log "K: not available (see $OUT/inbound.err)"
fi

# ---- scenario I: well-behaved clients under attack (issue 8) -------------------------------------
# ortoo with its default limits (but connections_per_address, see start_ortoo); ortoo-load
# (50 connections, 2 KB, 100 per connection, pipelining) alone, then while bench/attack.py
# floods (50 connections sending EHLO without reading replies, reopened when ortoo closes
# them) from 127.0.0.2, or slowloris-es (1000 connections, one byte a second) from 127.0.0.3
# (another address: the flood's prefix is still in ortoo's penalty box).  Peak RSS:
# VmHWM reset before each run (/proc/PID/clear_refs) and read after it.
hwm_reset() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null; }
if want I && [[ $ORTOO_OK == 1 ]] && start_ortoo auto auto; then
    IDUR=$((QUICK ? 5 : 15))
    for mode in none flood slowloris; do
        hwm_reset "$ORTOO_PID"
        apid=""
        if [[ $mode != none ]]; then
            nconn=50
            src=127.0.0.2
            [[ $mode == slowloris ]] && nconn=1000 && src=127.0.0.3
            "$PY" "$ROOT/bench/attack.py" --server "127.0.0.1:$ORTOO_PORT" --mode "$mode" \
                --connections "$nconn" --duration $((IDUR + 3)) --source "$src" --json \
                >"$WORK/attack.$mode.json" 2>>"$OUT/attack.err" &
            apid=$!
            PIDS+=($apid)
            sleep 2 # the attack is in place before the measurement starts
        fi
        load I ortoo "attack=$mode" "$ORTOO_PORT" --connections "$CONNS" --duration "$IDUR" \
            --size 2048 --per-conn 100 --pipelining
        [[ -n "$apid" ]] && wait "$apid"
        hwm=$(hwm_kb "$ORTOO_PID")
        record I ortoo "rss attack=$mode" "$("$PY" -c "
import json
try:
    a = json.load(open('$WORK/attack.$mode.json'))
except Exception:
    a = {}
print(json.dumps({'vm_hwm_kb': ${hwm:-0}, 'attack': a}))" 2>/dev/null || echo '{}')"
        log "I rss attack=$mode: $(tail -1 "$RESULTS")"
    done
    stop_ortoo
fi

# ---- scenario J: the body-memory budget (issue 7 part 4) ------------------------------------------
# 200 sessions (50 with QUICK) each send one 20 MB message at once to ortoo with its default
# body_memory (256 MiB) and max_message_size 25M; half declare SIZE=.  Every message must end
# in 250 (and be listed by `ortoo queue list`) or 452; the peak RSS must stay under the stated
# bound: body_memory + 96 MiB (the reactors' io_uring receive buffers, 16 MiB each, and the
# sessions' bounded input buffers).
if want J && [[ $ORTOO_OK == 1 ]] && start_ortoo auto auto; then
    JN=$((QUICK ? 50 : 200))
    out=$(timeout 900 "$PY" "$ROOT/bench/body_budget.py" --server "127.0.0.1:$ORTOO_PORT" \
        --pid "$ORTOO_PID" --sessions "$JN" --size 20000000 --to "$TO" --ortoo "$ORTOO" \
        --config "$ORTOO_DIR" --json --timeout 600 2>>"$OUT/budget.err")
    record J ortoo "sessions=$JN size=20MB" "$out"
    log "J: $(tail -1 "$RESULTS")"
    stop_ortoo
fi

# ---- scenario H: callgrind instructions per accepted message -----------------------------------
if want H && [[ $ORTOO_OK == 1 ]] && command -v valgrind >/dev/null; then
    # Two runs, N and 3N messages on one connection; (I(3N) - I(N)) / 2N
    # cancels start-up, shutdown and the connection's own cost.
    HN=$((QUICK ? 200 : 1000))
    declare -A IR=()
    for m in 1 3; do
        cg=$WORK/callgrind.$m.out
        if start_ortoo 1 epoll valgrind --tool=callgrind "--callgrind-out-file=$cg" --trace-children=no; then
            timeout 300 "$LOAD" --server "127.0.0.1:$ORTOO_PORT" --to "$TO" --connections 1 \
                --messages $((HN * m)) --size 2048 --per-conn 0 --timeout 60 --json >"$WORK/h.$m.json" 2>>"$OUT/load.err"
            stop_ortoo
            IR[$m]=$(awk '/^(summary|totals):/ {print $2; exit}' "$cg" 2>/dev/null)
        fi
    done
    if [[ -n "${IR[1]:-}" && -n "${IR[3]:-}" ]]; then
        record H ortoo "2KB callgrind" "{\"instructions_per_message\": $(((IR[3] - IR[1]) / (2 * HN))), \"ir_n\": ${IR[1]}, \"ir_3n\": ${IR[3]}, \"n\": $HN}"
        log "H: $(tail -1 "$RESULTS")"
    fi
fi

# ---- scenarios B and G: relay end to end, and a deferral storm (issue 9) -----------------------
# B: messages submitted and relayed to ortoo-sink with STARTTLS, until the last one is at the
# sink.  ortoo takes them on submission (STARTTLS, AUTH, 50 connections, 100 messages each,
# pipelining) and routes every domain to the sink ([routes] * = [127.0.0.1]:port, STARTTLS
# opportunistic, DKIM keys removed: signing is scenario C's).  The same load with
# [delivery] hold = on is ortoo's accept-only rate in the same run.  Postfix: a second private
# instance (no HOLD) relaying to the same sink with smtp_tls_security_level = may; its
# clients may relay from 127.0.0.0/8 without TLS or AUTH (a lighter load than ortoo's).
# CPU per message: ortoo's from /proc; Postfix's is its master's own and reaped children's
# time plus its live processes'.  G: the sink answers 450 to 30% of recipients
# (rules: "* tempfail=0.3"), [delivery] retry = 1s; the time until every message is at the
# sink, and each recipient (one per message) counted in the sink's --log.
sink_count() { # sink_count PID COUNTS_FILE: "messages connections tempfail dkim" of the sink
    # (pure bash: this runs every 50 ms while a relay drains, on the same 2 cores)
    local line m=0 c=0 f=0 d=0
    kill -USR1 "$1" 2>/dev/null
    sleep 0.05
    while read -r line; do
        [[ $line == total* ]] || continue
        [[ $line =~ messages=([0-9]+) ]] && m=${BASH_REMATCH[1]}
        [[ $line =~ connections=([0-9]+) ]] && c=${BASH_REMATCH[1]}
        [[ $line =~ tempfail=([0-9]+) ]] && f=${BASH_REMATCH[1]}
        [[ $line =~ dkim=([0-9]+) ]] && d=${BASH_REMATCH[1]}
        break
    done <"$2" 2>/dev/null
    echo "$m $c $f $d"
}
pf_cpu() { # Postfix's CPU ticks: master (self + reaped children) + live daemons
    local m=$1 t=0 p
    [[ -n "$m" ]] || { echo 0; return; }
    t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$m/stat" 2>/dev/null || echo 0)
    for p in $(pgrep -P "$m"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
# relay_run SC TARGET LABEL PORT N SINK_PID SINK_COUNTS CPU_FN CPU_ARG LOAD_ARGS...
relay_run() {
    local sc=$1 target=$2 label=$3 port=$4 n=$5 spid=$6 scounts=$7 cpufn=$8 cpuarg=$9
    shift 9
    local m0 c0 f0 d0 cpu0 cpu1 scpu0 scpu1 t0 t1 out ok m c f d hz
    hz=$(getconf CLK_TCK)
    read -r m0 c0 f0 d0 <<<"$(sink_count "$spid" "$scounts")"
    cpu0=$($cpufn "$cpuarg")
    scpu0=$(ortoo_ticks "$spid")
    t0=$(date +%s.%N)
    out=$(timeout 900 "$LOAD" --server "127.0.0.1:$port" --json --connections "$CONNS" \
        --messages "$n" --per-conn 100 --pipelining --to-domain relay.test "$@" 2>>"$OUT/load.err")
    ok=$(echo "$out" | "$PY" -c 'import json,sys
try: print(json.load(sys.stdin)["ok"])
except Exception: print(0)')
    local deadline=$(($(date +%s) + 900))
    [[ $sc == B-accept ]] && deadline=0 # delivery held: nothing to wait for
    while :; do
        read -r m c f d <<<"$(sink_count "$spid" "$scounts")"
        ((m - m0 >= ok)) && break
        (($(date +%s) >= deadline)) && break
        sleep 0.05
    done
    t1=$(date +%s.%N)
    cpu1=$($cpufn "$cpuarg")
    scpu1=$(ortoo_ticks "$spid")
    record "$sc" "$target" "$label" "$(echo "$out" | "$PY" -c "
import json, os, sys
try:
    d = json.load(sys.stdin)
except Exception:
    d = {'error': 'no load result'}
ok, el = $ok, $t1 - $t0
d['accept_msgs_per_s'] = d.get('msgs_per_s')
d['delivered'] = $m - $m0
d['msgs_per_s'] = ok / el if ok and el > 0 else 0
d['drain_s'] = el
d['cpu_us_per_msg'] = ($cpu1 - $cpu0) * 1e6 / $hz / max(1, ok)
d['sink_cpu_us_per_msg'] = ($scpu1 - $scpu0) * 1e6 / $hz / max(1, ok) # the receiver's share of the cores
d['connections'] = $c - $c0
d['deferrals'] = $f - $f0
d['dkim_signed'] = $d - $d0 # messages that reached the sink with a DKIM-Signature field
d['loadavg'] = os.getloadavg()
print(json.dumps(d))")"
    log "$sc $target $label: $(tail -1 "$RESULTS" | "$PY" -c 'import json,sys
d=json.load(sys.stdin); print("%.0f msgs/s to the sink (accept %.0f/s), %d of %d delivered (%d signed) in %.2f s, %.0f us CPU/msg, %d connections, load %.2f" % (d.get("msgs_per_s",0), d.get("accept_msgs_per_s") or 0, d.get("delivered",0), d.get("ok",0), d.get("dkim_signed",0), d.get("drain_s",0), d.get("cpu_us_per_msg",0), d.get("connections",0), d.get("loadavg",[0])[0]))')"
}
ortoo_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# ortoo's 2 KB runs are long enough (about 10 s each) for a sustained rate and a
# relay/accept ratio that a scheduling hiccup does not swing; Postfix, 30 times
# slower, relays fewer (BPF2, BPF100: its counts).  BN2=N etc. in the environment
# override them.
BN2=${BN2:-$((QUICK ? 5000 : 100000))}   # 2 KB messages
BN100=${BN100:-$((QUICK ? 1000 : 5000))}  # 100 KB messages
BPF2=${BPF2:-$((QUICK ? 2500 : 10000))}
BPF100=${BPF100:-$((QUICK ? 500 : 2500))}
RSINK_PID=""
RSINK_PORT=$(free_port)
RSINK_DIR=$WORK/relay-sink
mkdir -p "$RSINK_DIR"
if want B || want G || want C; then
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=sink.bench.test \
    -keyout "$RSINK_DIR/key.pem" -out "$RSINK_DIR/cert.pem" >/dev/null 2>&1
"$SINK" --listen "127.0.0.1:$RSINK_PORT" --quiet --counts "$RSINK_DIR/counts" \
    --cert "$RSINK_DIR/cert.pem" --key "$RSINK_DIR/key.pem" 2>>"$OUT/sink.err" &
RSINK_PID=$!
PIDS+=($RSINK_PID)
wait_port "$RSINK_PORT" 5 || { log "B: the relay sink did not start"; RSINK_PID=""; }
fi

b_ortoo() { # b_ortoo HOLD EXTRA_JSON: start ortoo for B/G; sets ORTOO_PID, B_PW
    local extra=$2
    ORTOO_EXTRA=$(printf '{"delivery": {"hold": "%s", "tls": "opportunistic"}, "routes": {"*": "[127.0.0.1]:%s"}, "auth": {"max_failures": "1000000", "account_max_failures": "1000000"}%s}' \
        "$1" "$RSINK_PORT" "$extra")
    export ORTOO_EXTRA ORTOO_NO_DKIM=1
    local rc=0
    start_ortoo auto auto || rc=1
    unset ORTOO_EXTRA ORTOO_NO_DKIM
    ((rc == 0)) || return 1
    B_PW=$(cat "$ORTOO_DIR/dev-password" 2>/dev/null)
    # warm-up (not recorded): the password check is cached after the first AUTH; to the
    # local user, so that nothing of it reaches the sink
    timeout 60 "$LOAD" --server "127.0.0.1:$ORTOO_SUB_PORT" --starttls --auth "dev@bench.test:$B_PW" \
        --from dev@bench.test --to dev@bench.test --connections 2 --messages 4 --json \
        >/dev/null 2>>"$OUT/load.err"
    sleep 0.5
}

# 2 KB: BROUNDS rounds of accept-only then relay, one pair after the other, so
# that each relay/accept ratio compares runs seconds apart; the report takes the
# round with the median ratio and lists them all (runs minutes apart differ by up
# to 30% on a shared VM).  Rounds after the first are labelled "size=2048 rK".
BROUNDS=${BROUNDS:-$((QUICK ? 1 : 3))}
if want B && [[ $ORTOO_OK == 1 && -n "$RSINK_PID" ]]; then
    for size in 2048 102400; do
        if [[ $size == 2048 ]]; then n=$BN2 rounds=$BROUNDS; else n=$BN100 rounds=1; fi
        for ((round = 1; round <= rounds; round++)); do
            label="size=$size"
            ((round > 1)) && label+=" r$round"
            for hold in on off; do
                if b_ortoo "$hold" ""; then
                    sc=B
                    [[ $hold == on ]] && sc=B-accept
                    relay_run "$sc" ortoo "$label" "$ORTOO_SUB_PORT" "$n" "$RSINK_PID" "$RSINK_DIR/counts" \
                        ortoo_ticks "$ORTOO_PID" --size "$size" --starttls --auth "dev@bench.test:$B_PW" \
                        --from dev@bench.test
                    stop_ortoo
                else
                    log "B: ortoo did not start"
                fi
            done
        done
    done
fi

# Postfix relaying (no HOLD) to the same sink.
PFR=""
PFR_PORT=""
start_postfix_relay() { # start_postfix_relay NAME [SETTING=VALUE...]: sets PFR, PFR_PORT
    command -v postfix >/dev/null || return 1
    PFR=$WORK/$1
    shift
    mkdir -p "$PFR/etc" "$PFR/queue" "$PFR/data"
    chown postfix:postfix "$PFR/data"
    cp /etc/postfix/master.cf "$PFR/etc/master.cf"
    : >"$PFR/etc/main.cf"
    PFR_PORT=$(free_port)
    postconf -c "$PFR/etc" -e compatibility_level=3.6 \
        "queue_directory=$PFR/queue" "data_directory=$PFR/data" \
        "maillog_file=$PFR/maillog" "maillog_file_prefixes=$PFR" \
        inet_interfaces=127.0.0.1 inet_protocols=ipv4 \
        myhostname=pfr.bench.test mydomain=bench.test myorigin=bench.test 'mydestination=' \
        relay_domains=relay.test mynetworks=127.0.0.0/8 \
        "relay_transport=smtp:[127.0.0.1]:$RSINK_PORT" "default_transport=smtp:[127.0.0.1]:$RSINK_PORT" \
        'alias_maps=' 'alias_database=' 'local_recipient_maps=' \
        smtpd_tls_security_level=none smtp_tls_security_level=may \
        biff=no append_dot_mydomain=no qmgr_clog_warn_time=0 "$@" || return 1
    postconf -c "$PFR/etc" -M# smtp/inet
    postconf -c "$PFR/etc" -M "127.0.0.1:$PFR_PORT/inet=127.0.0.1:$PFR_PORT inet n - n - - smtpd"
    postconf -c "$PFR/etc" -F '*/*/chroot=n'
    postfix -c "$PFR/etc" start >>"$OUT/postfix.err" 2>&1 || return 1
    wait_port "$PFR_PORT" 15
}
if want B && [[ -n "$RSINK_PID" ]] && start_postfix_relay postfix-relay; then
    PFR_MASTER=$(cat "$PFR/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
    for size in 2048 102400; do
        if [[ $size == 2048 ]]; then n=$BPF2; else n=$BPF100; fi
        relay_run B postfix "size=$size" "$PFR_PORT" "$n" "$RSINK_PID" "$RSINK_DIR/counts" \
            pf_cpu "$PFR_MASTER" --size "$size"
    done
    postfix -c "$PFR/etc" stop >/dev/null 2>&1
    PFR=""
elif want B; then
    log "B: the relaying Postfix is not available (see $OUT/postfix.err)"
fi

# ---- scenario C, second part: signed relay, ortoo vs Postfix + OpenDKIM (issue 10) -------------
# Both take the same load from a trusted client on their port 25 (127.0.0.0/8: ortoo's [relay]
# trusted_networks, Postfix's mynetworks; no TLS, no AUTH): 2 KB messages From
# dev@bench.test to relay.test, $CONNS connections, 100 messages each, pipelining; both
# relay to B's sink with STARTTLS.  ortoo signs every message with the RSA-2048 key that
# `ortoo init` made (cli_dkim_keygen, as `ortoo dkim keygen`).  Postfix hands every message
# to a private opendkim (Mode s, the same key copied, relaxed/relaxed, rsa-sha256; inet
# socket on a free loopback port; milter_default_action = tempfail, so that a milter
# failure cannot pass mail unsigned).  The sink counts the messages that arrive with a
# DKIM-Signature field: the report shows it beside the delivered count.  Postfix's CPU per
# message includes opendkim's.
ODK_PID=""
ODK_PORT=""
start_opendkim() { # start_opendkim KEYFILE SELECTOR: a private milter; sets ODK_PID, ODK_PORT
    command -v opendkim >/dev/null || return 1
    local d=$WORK/opendkim
    mkdir -p "$d"
    # RequireSafeKeys (the default): a key only its owner may read.  opendkim also refuses a
    # config or key below a directory that others may write (/tmp): WORK is under build/.
    install -m 600 "$1" "$d/key.pem" || return 1
    ODK_PORT=$(free_port)
    cat >"$d/opendkim.conf" <<EOF2
Syslog no
Background no
AutoRestart no
Mode s
Domain bench.test
Selector $2
KeyFile $d/key.pem
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
OversignHeaders From
InternalHosts 127.0.0.1
Socket inet:$ODK_PORT@127.0.0.1
PidFile $d/opendkim.pid
EOF2
    opendkim -x "$d/opendkim.conf" >>"$OUT/opendkim.err" 2>&1 &
    ODK_PID=$!
    PIDS+=("$ODK_PID")
    if ! wait_port "$ODK_PORT" 10 || ! kill -0 "$ODK_PID" 2>/dev/null; then
        stop_pid "$ODK_PID"
        ODK_PID=""
        return 1
    fi
}
pf_dkim_cpu() { echo $(($(pf_cpu "$1") + $(ortoo_ticks "$ODK_PID"))); }

CN=$((QUICK ? 5000 : 20000))   # messages through ortoo
CNPF=$((QUICK ? 1000 : 5000))  # through Postfix + OpenDKIM (about 300 msgs/s)
C_KEY=""
if want C && [[ $ORTOO_OK == 1 && -n "$RSINK_PID" ]]; then
    ORTOO_EXTRA=$(printf '{"delivery": {"hold": "off", "tls": "opportunistic"}, "routes": {"*": "[127.0.0.1]:%s"}, "relay": {"trusted_networks": "127.0.0.0/8"}}' "$RSINK_PORT")
    export ORTOO_EXTRA
    if start_ortoo auto auto; then
        C_KEY=$(ls "$ORTOO_DIR"/domains/bench.test/dkim/*.key 2>/dev/null | head -1)
        if [[ -n "$C_KEY" ]] && openssl pkey -in "$C_KEY" -noout -text 2>/dev/null | grep -q '2048 bit'; then
            relay_run C ortoo "relay size=2048" "$ORTOO_PORT" "$CN" "$RSINK_PID" "$RSINK_DIR/counts" \
                ortoo_ticks "$ORTOO_PID" --size 2048 --from dev@bench.test
        else
            log "C: ortoo init made no RSA-2048 DKIM key for bench.test ($C_KEY)"
            C_KEY=""
        fi
        stop_ortoo
    else
        log "C: ortoo did not start"
    fi
    unset ORTOO_EXTRA
fi
if want C && [[ -n "$C_KEY" ]]; then
    sel=$(basename "$C_KEY" .key)
    if ! start_opendkim "$C_KEY" "$sel"; then
        log "C: opendkim is not available (see $OUT/opendkim.err; make bench installs it)"
    elif start_postfix_relay postfix-dkim "smtpd_milters=inet:127.0.0.1:$ODK_PORT" \
        "non_smtpd_milters=inet:127.0.0.1:$ODK_PORT" milter_default_action=tempfail; then
        PFR_MASTER=$(cat "$PFR/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
        relay_run C postfix+opendkim "relay size=2048" "$PFR_PORT" "$CNPF" "$RSINK_PID" "$RSINK_DIR/counts" \
            pf_dkim_cpu "$PFR_MASTER" --size 2048 --from dev@bench.test
        postfix -c "$PFR/etc" stop >/dev/null 2>&1
        PFR=""
    else
        log "C: the Postfix for OpenDKIM is not available (see $OUT/postfix.err)"
    fi
    [[ -n "$ODK_PID" ]] && stop_pid "$ODK_PID"
    ODK_PID=""
fi

# G: the sink defers 30% of recipients.
if want G && [[ -n "$RSINK_PID" ]]; then
GN=$((QUICK ? 2000 : 10000))
GSINK_PORT=$(free_port)
GSINK_DIR=$WORK/g-sink
mkdir -p "$GSINK_DIR"
echo "* tempfail=0.3" >"$GSINK_DIR/rules"
"$SINK" --listen "127.0.0.1:$GSINK_PORT" --quiet --counts "$GSINK_DIR/counts" --rules "$GSINK_DIR/rules" \
    --log "$GSINK_DIR/rcpts" --cert "$RSINK_DIR/cert.pem" --key "$RSINK_DIR/key.pem" 2>>"$OUT/sink.err" &
GSINK_PID=$!
PIDS+=($GSINK_PID)
if [[ $ORTOO_OK == 1 ]] && wait_port "$GSINK_PORT" 5; then
    SAVE_RSINK=$RSINK_PORT
    RSINK_PORT=$GSINK_PORT
    if b_ortoo off ', "delivery": {"hold": "off", "tls": "opportunistic", "retry": "1s"}'; then
        : >"$GSINK_DIR/rcpts"
        relay_run G ortoo "tempfail=0.3" "$ORTOO_SUB_PORT" "$GN" "$GSINK_PID" "$GSINK_DIR/counts" \
            ortoo_ticks "$ORTOO_PID" --size 2048 --starttls --auth "dev@bench.test:$B_PW" \
            --from dev@bench.test
        stop_ortoo
        # Every recipient is one message (ortoo-load numbers them): lost and duplicated.
        "$PY" - "$GSINK_DIR/rcpts" "$RESULTS" <<'EOF2'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
g = [r for r in rows if r.get("scenario") == "G"][-1]
got = [l.strip() for l in open(sys.argv[1]) if l.strip().endswith("@relay.test")]
uniq = set(got)
g["unique_at_sink"] = len(uniq)
g["duplicates"] = len(got) - len(uniq)
g["lost"] = max(0, g.get("ok", 0) - len(uniq))
rows = [r for r in rows if r is not g] + [g]
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in rows))
print("G: %d acknowledged, %d at the sink, %d lost, %d duplicated, %d deferrals, drained in %.2f s"
      % (g.get("ok", 0), len(uniq), g["lost"], g["duplicates"], g.get("deferrals", 0), g.get("drain_s", 0)),
      file=sys.stderr)
EOF2
    fi
    RSINK_PORT=$SAVE_RSINK
fi
fi

# ---- stop the peers, then write BENCHMARKS.md --------------------------------------------------
[[ -n "$PF" ]] && postfix -c "$PF/etc" stop >/dev/null 2>&1
PF=""
kill -USR1 "${PIDS[0]}" 2>/dev/null
sleep 0.3
cp -f "$WORK/sink.counts" "$OUT/sink.counts" 2>/dev/null

CMD="make bench$( ((QUICK)) && echo ' QUICK=1')"
LOADAVG1=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ -n "$SCENARIOS" ]]; then
    # A partial run: its figures, not a new BENCHMARKS.md.
    "$PY" - "$RESULTS" <<'EOF'
import json, sys
R = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = next((r for r in R if r["scenario"] == "I" and r["label"] == "attack=none"), None)
for r in R:
    line = "%s %s %s:" % (r["scenario"], r["target"], r["label"])
    if "msgs_per_s" in r:
        line += " %.0f msgs/s, p99 %.2f ms, ok %d, failed %d" % (
            r["msgs_per_s"], r["latency_ms"]["p99"], r.get("ok", 0), r.get("failed", 0))
        if r["scenario"] == "I" and base and base.get("msgs_per_s"):
            line += ", %.2f of no attack" % (r["msgs_per_s"] / base["msgs_per_s"])
        if "delivered" in r:
            line += ", at the sink %d (%d DKIM-signed) in %.2f s, %.0f us CPU/msg" % (
                r["delivered"], r.get("dkim_signed", 0), r.get("drain_s", 0), r.get("cpu_us_per_msg", 0))
    else:
        line += " " + json.dumps({k: v for k, v in r.items()
                                  if k not in ("scenario", "target", "label")})
    print(line)
EOF
    log "load average $LOADAVG0 at the start, $LOADAVG1 at the end ($CORES cores)"
    log "SCENARIOS=$SCENARIOS: a partial run, BENCHMARKS.md left as it is; results in $RESULTS"
    exit 0
fi
((QUICK)) || mkdir -p "$PLOTS"
"$PY" - "$RESULTS" "$MD" "$PLOTS" "$QUICK" <<EOF
import json, os, subprocess, sys
results_path, md_path, plots, quick = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
R = [json.loads(l) for l in open(results_path) if l.strip()]
# B, 2 KB: the round whose relay/accept ratio is the median becomes "size=2048".
B_ROUNDS = []
for r in R:
    if r["scenario"] == "B" and r["target"] == "ortoo" and r["label"].startswith("size=2048"):
        h = [x for x in R if x["scenario"] == "B-accept" and x["target"] == "ortoo" and x["label"] == r["label"]]
        if h and r.get("msgs_per_s") and h[0].get("accept_msgs_per_s"):
            B_ROUNDS.append((r["msgs_per_s"] / h[0]["accept_msgs_per_s"], r, h[0]))
if B_ROUNDS:
    med = sorted(B_ROUNDS, key=lambda t: t[0])[(len(B_ROUNDS) - 1) // 2]
    for _, r, h in B_ROUNDS:
        r["label"] = h["label"] = "size=2048" if r is med[1] else "size=2048 (other round)"
def get(sc, target, label):
    for r in R:
        if r["scenario"] == sc and r["target"] == target and r["label"] == label:
            return r
    return None
def f(v, fmt="%.0f"):
    return fmt % v if isinstance(v, (int, float)) else "n/a"
def ratio(a, b):
    if a and b and a.get("msgs_per_s") and b.get("msgs_per_s"):
        return "%.2f×" % (a["msgs_per_s"] / b["msgs_per_s"])
    return "n/a"
L = []
L.append("# ortoo benchmarks\n")
L.append("Generated by \`bench/run.sh\` (\`$CMD\`) on $(date -u '+%Y-%m-%d %H:%M UTC')%s. Every number below comes"
         " from one run on one machine, all programs on loopback; the load generator shares"
         " the CPU with the server under test.\n" % (" — QUICK mode: short runs, noisy numbers" if quick else ""))
L.append("## Machine and versions\n")
L.append("| | |\n|---|---|")
L.append("| CPU | $CPU ($CORES cores) |")
L.append("| Kernel | $KERNEL |")
L.append("| Disk (spool and queue) | $DISK $DISKMODEL |")
L.append("| ortoo | $ORTOOVER |")
L.append("| Postfix | $PFVER (private instance, relays to ortoo-sink) |")
L.append("| OpenSSL | $OPENSSLVER |")
L.append("| OpenDKIM | $ODKVER (private milter of a private Postfix, scenario C) |")
L.append("| Load average (1, 5, 15 min) | $LOADAVG0 at the start, $LOADAVG1 at the end (2 cores; above 2, other work was running) |")
L.append("| Load | ortoo-load, $CONNS connections, --pipelining (used when offered), recipient $TO |\n")

L.append("## Load generator check: ortoo-load vs smtp-source against smtp-sink\n")
L.append("2 KB messages, $CONNS sessions. smtp-source: \`-s $CONNS -m N -l 2048\` (\`-d\` for reuse); ortoo-load without pipelining.\n")
L.append("| connections | smtp-source msgs/s | ortoo-load msgs/s | ratio |\n|---|---|---|---|")
for mode, name in (("new", "new per message"), ("reuse", "reused")):
    s, o = get("gen", "smtp-source", mode), get("gen", "ortoo-load", mode)
    L.append("| %s | %s | %s | %s |" % (name, f(s and s.get("msgs_per_s")), f(o and o.get("msgs_per_s")), ratio(o, s)))
L.append("")

L.append("## A. Accept (durable: a 250 after DATA means stored)\n")
L.append("$CONNS connections; messages per target: $N1 (1 per connection), $N100 (100 per connection)."
         " Latency: final dot to reply. Postfix: smtpd → cleanup → hold queue (fsync; HOLD keeps its delivery from competing with the next run)."
         " smtp-sink: no storage, the protocol ceiling.\n")
L.append("| size | msgs/conn | target | msgs/s | MB/s | p50 ms | p99 ms | ortoo/Postfix | ortoo/smtp-sink |")
L.append("|---|---|---|---|---|---|---|---|---|")
for size in (2048, 51200):
    for pc in (1, 100):
        lab = "size=%d per_conn=%d" % (size, pc)
        o, p, s = get("A", "ortoo", lab), get("A", "postfix", lab), get("A", "smtp-sink", lab)
        for name, r in (("ortoo", o), ("Postfix", p), ("smtp-sink", s)):
            if r is None or "msgs_per_s" not in r:
                L.append("| %d KB | %d | %s | not available | | | | | |" % (size // 1024, pc, name))
                continue
            lat = r["latency_ms"]
            extra = ("| %s | %s |" % (ratio(o, p), ratio(o, s))) if name == "ortoo" else "| | |"
            L.append("| %d KB | %d | %s | %.0f | %.1f | %.2f | %.2f %s" % (size // 1024, pc, name, r["msgs_per_s"],
                     r["mb_per_s"], lat["p50"], lat["p99"], extra))
L.append("")

if not quick:
    rows = {}
    for r in R:
        if r["scenario"] == "S" and "msgs_per_s" in r:
            c = int(r["label"].split("=")[1])
            rows.setdefault(c, {})[r["target"]] = r
    if rows:
        tg = ["ortoo", "postfix", "smtp-sink"]
        with open(os.path.join(plots, "throughput.dat"), "w") as fh:
            for c in sorted(rows):
                fh.write("%d %s\n" % (c, " ".join(f(rows[c].get(t, {}).get("msgs_per_s"), "%.1f").replace("n/a", "NaN") for t in tg)))
        names = {"ortoo": "ortoo", "postfix": "Postfix", "smtp-sink": "smtp-sink"}
        with open(os.path.join(plots, "latency.dat"), "w") as fh:
            for t in tg:
                r = get("A", t, "size=2048 per_conn=100")
                if r and "latency_ms" in r:
                    l = r["latency_ms"]
                    fh.write('"%s" %.3f %.3f %.3f %.3f\n' % (names[t], l["p50"], l["p90"], l["p99"], l["max"]))
        tls_rows = []
        for k in ("session", "mail", "starttls"):
            fu, re_ = get("D", "ortoo", k + " full"), get("D", "ortoo", k + " resumed")
            if fu and re_ and "msgs_per_s" in fu and "msgs_per_s" in re_:
                tls_rows.append('"%s" %.1f %.1f\n' % (k, fu["msgs_per_s"], re_["msgs_per_s"]))
        with open(os.path.join(plots, "tls.dat"), "w") as fh:
            fh.writelines(tls_rows)
        gp = """set terminal pngcairo size 800,500 font ',11'
set output '%(d)s/throughput.png'
set title 'Accept throughput vs connections (2 KB, 100 msgs/conn, pipelining, durable)'
set xlabel 'concurrent connections (log scale)'; set ylabel 'messages/s'
set logscale x; set xtics (1, 10, 50, 100); set yrange [0:*]; set grid
set key below horizontal reverse Left width 1
plot '%(d)s/throughput.dat' u 1:2 w lp lw 2 pt 7 t 'ortoo', '' u 1:3 w lp lw 2 pt 5 t 'Postfix', '' u 1:4 w lp lw 2 pt 9 t 'smtp-sink (no storage)'
set output '%(d)s/latency.png'
unset logscale; set xtics auto; set logscale y; set yrange [0.1:*]
set title 'Latency, final dot to reply (2 KB, 50 connections, 100 msgs/conn)'
set ylabel 'ms (log scale)'; set xlabel ''; set style data histograms; set style fill solid 0.8; set boxwidth 0.9
plot '%(d)s/latency.dat' u 2:xtic(1) t 'p50', '' u 3 t 'p90', '' u 4 t 'p99', '' u 5 t 'max'
""" % {"d": plots}
        if tls_rows:
            gp += """set output '%(d)s/tls.png'
unset logscale; set yrange [0:*]
set title 'TLS 1.3 sessions/s on ortoo, full vs resumed handshakes (10 connections)'
set ylabel 'sessions/s'; set xlabel 'session: EHLO+QUIT on 465; mail: AUTH + one 2 KB message on 465; starttls: 587'
plot '%(d)s/tls.dat' u 2:xtic(1) t 'full handshake', '' u 3 t 'resumed (psk\\_dhe\\_ke)'
""" % {"d": plots}
        try:
            subprocess.run(["gnuplot"], input=gp.encode(), check=True, timeout=60)
            L.append("## Throughput against connections\n")
            L.append("![throughput](bench/plots/throughput.png)\n")
            L.append("![latency](bench/plots/latency.png)\n")
            L.append("| connections | ortoo | Postfix | smtp-sink |\n|---|---|---|---|")
            for c in sorted(rows):
                L.append("| %d | %s |" % (c, " | ".join(f(rows[c].get(t, {}).get("msgs_per_s")) for t in tg)))
            L.append("")
        except Exception as e:
            L.append("(plots failed: %s)\n" % e)

L.append("## B. Relay end to end\n")
L.append("Submitted and relayed to ortoo-sink with STARTTLS; msgs/s counts until the last message is at the"
         " sink. ortoo: submission with STARTTLS and AUTH, $CONNS connections, 100 messages each, pipelining;"
         " \`[routes] * = [127.0.0.1]:port\`, STARTTLS to the sink, no DKIM key (signing is scenario C)."
         " The same load with \`[delivery] hold = on\` is ortoo's accept-only rate in this run."
         " Postfix: a second private instance relaying to the same sink (\`smtp_tls_security_level = may\`),"
         " its clients relaying from 127.0.0.0/8 without TLS or AUTH. CPU per message: ortoo's from /proc,"
         " Postfix's over its master and daemons; the sink's own (it shares the 2 cores with the sender,"
         " as a remote receiver would not). All programs share the 2 cores.\n")
L.append("| size | target | msgs/s at the sink | submission msgs/s | messages | time s | CPU µs/msg | sink CPU µs/msg | connections to the sink | ortoo/Postfix |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
B_NOTES = []
for size in (2048, 102400):
    lab = "size=%d" % size
    o, p, h = get("B", "ortoo", lab), get("B", "postfix", lab), get("B-accept", "ortoo", lab)
    for name, r in (("ortoo", o), ("ortoo accept-only (hold)", h), ("Postfix", p)):
        if r is None or not r.get("msgs_per_s"):
            L.append("| %d KB | %s | not available | | | | | | | |" % (size // 1024, name))
            continue
        extra = ratio(o, p) if r is o else ""
        rate = r["msgs_per_s"] if r is not h else r.get("accept_msgs_per_s", 0)
        L.append("| %d KB | %s | %s | %s | %d | %.2f | %.0f | %s | %s | %s |" % (
            size // 1024, name, f(rate) if r is not h else "(accept: %s)" % f(rate),
            f(r.get("accept_msgs_per_s")), r.get("ok", 0), r.get("drain_s", 0),
            r.get("cpu_us_per_msg", 0),
            "%.0f" % r["sink_cpu_us_per_msg"] if r is not h and "sink_cpu_us_per_msg" in r else "",
            r.get("connections", "") if r is not h else "", extra))
    if o and h and o.get("msgs_per_s") and h.get("accept_msgs_per_s"):
        B_NOTES.append("%d KB: relay/accept-only %.2f." % (size // 1024, o["msgs_per_s"] / h["accept_msgs_per_s"]))
    if size == 2048 and len(B_ROUNDS) > 1:
        B_NOTES.append("2 KB rounds (accept-only then relay, each pair seconds apart; the table shows the median):"
                 " relay/accept %s; ortoo relay msgs/s %s; accept-only msgs/s %s." % (
                     ", ".join("%.2f" % t[0] for t in B_ROUNDS),
                     ", ".join(f(t[1]["msgs_per_s"]) for t in B_ROUNDS),
                     ", ".join(f(t[2]["accept_msgs_per_s"]) for t in B_ROUNDS)))
L.append("")
for note in B_NOTES:
    L.append(note + "\n")
L.append("")

L.append("## G. Deferral storm\n")
g = get("G", "ortoo", "tempfail=0.3")
if g and g.get("ok"):
    L.append("The sink answers 450 to 30% of the recipients (ortoo-sink rule \`* tempfail=0.3\`), one recipient"
             " per message; ortoo retries after 1 s (\`[delivery] retry = 1s\`). Counted at the sink by"
             " recipient (its --log): every message once.\n")
    L.append("| messages acknowledged | at the sink | lost | duplicated | deferrals (450s) | time to drain s | msgs/s |")
    L.append("|---|---|---|---|---|---|---|")
    L.append("| %d | %d | %d | %d | %d | %.2f | %.0f |\n" % (g["ok"], g.get("unique_at_sink", 0), g.get("lost", 0),
             g.get("duplicates", 0), g.get("deferrals", 0), g.get("drain_s", 0), g.get("msgs_per_s", 0)))
else:
    L.append("not available.\n")

L.append("## C. DKIM-signed messages per core\n")
c = get("C", "dkimbench", "2KB")
if c and "ortoo" in c:
    L.append("One thread, 2 KB messages in ortoo's stored form (dot-stuffed), each signed the way a reactor"
             " does it: \`dkim_sign_open\`, \`dkim_sign_feed\`, \`dkim_sign_finish\` (relaxed/relaxed"
             " canonicalization and SHA-256 as the bytes come, keys parsed once at start; RSA through"
             " OpenSSL EVP, Ed25519 through libsodium). \`openssl speed -seconds %d rsa2048 ed25519\` in the"
             " same run; libopendkim 2.11 (which parses the PEM key for every message) for comparison."
             " Rates per second of the thread's CPU time, as \`openssl speed\` divides by its user CPU time;"
             " per wall second (ortoo): RSA %.0f, Ed25519 %.0f, both %.0f. Load average at the end of the"
             " measure: %s (2 cores; above 2, other work was running).\n"
             % (round(c["seconds"]), c["ortoo_wall"]["rsa"], c["ortoo_wall"]["ed25519"], c["ortoo_wall"]["both"],
                " ".join("%.2f" % v for v in c["loadavg"])))
    ssl = c["openssl_speed"]
    def vs(v, ref):
        return "%.0f%%" % (100 * v / ref) if ref else "n/a"
    L.append("| per core | signatures/s or messages/s | vs openssl speed |\n|---|---|---|")
    L.append("| openssl speed, RSA-2048 sign | %.0f | |" % ssl["rsa2048_sign_per_s"])
    L.append("| signed messages, RSA-2048 (dkim/) | %.0f | %s |" % (c["ortoo"]["rsa"], vs(c["ortoo"]["rsa"], ssl["rsa2048_sign_per_s"])))
    L.append("| openssl speed, Ed25519 sign | %.0f | |" % ssl["ed25519_sign_per_s"])
    L.append("| signed messages, Ed25519 (dkim/) | %.0f | %s |" % (c["ortoo"]["ed25519"], vs(c["ortoo"]["ed25519"], ssl["ed25519_sign_per_s"])))
    L.append("| signed messages, both (2 signatures each) | %.0f | |" % c["ortoo"]["both"])
    L.append("| signed messages, RSA-2048, libopendkim | %.0f | %s |" % (c["libopendkim"]["rsa"], vs(c["libopendkim"]["rsa"], ssl["rsa2048_sign_per_s"])))
    L.append("| signed messages, Ed25519, libopendkim | %.0f | %s |" % (c["libopendkim"]["ed25519"], vs(c["libopendkim"]["ed25519"], ssl["ed25519_sign_per_s"])))
    L.append("")
else:
    L.append("not available (ortoo-dkimbench did not run).\n")

L.append("## C. Signed relay: ortoo against Postfix + OpenDKIM\n")
def all_signed(r):
    return bool(r and r.get("ok") and r.get("delivered", 0) >= r["ok"] and r.get("dkim_signed", 0) >= r["ok"])
co, cp = get("C", "ortoo", "relay size=2048"), get("C", "postfix+opendkim", "relay size=2048")
if (co and co.get("ok")) or (cp and cp.get("ok")):
    L.append("Both take the same load on their port 25 from a trusted client (ortoo: \`[relay] trusted_networks ="
             " 127.0.0.0/8\`; Postfix: \`mynetworks\`; no TLS, no AUTH): 2 KB messages From dev@bench.test to"
             " relay.test, $CONNS connections, 100 messages each, pipelining, relayed with STARTTLS to the same"
             " ortoo-sink as B; msgs/s counts until the last message is at the sink. Every message is to be"
             " DKIM-signed with one RSA-2048 key (made by \`ortoo init\`, as \`ortoo dkim keygen\` makes it):"
             " by ortoo itself, or for Postfix by a private $ODKVER milter (\`smtpd_milters\`, \`Mode s\`,"
             " relaxed/relaxed, rsa-sha256, the same key, on a loopback port; \`milter_default_action ="
             " tempfail\`). *Signed at the sink*: messages that arrived with a DKIM-Signature field, counted by"
             " ortoo-sink. CPU per message: ortoo's from /proc; Postfix's over its master and daemons, plus"
             " opendkim's. All programs share the 2 cores.\n")
    L.append("| target | msgs/s at the sink | submission msgs/s | messages | at the sink | signed at the sink | time s | CPU µs/msg | connections to the sink | load average at the end |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in (("ortoo", co), ("Postfix + OpenDKIM", cp)):
        if not r or not r.get("ok"):
            L.append("| %s | not available | | | | | | | | |" % name)
            continue
        L.append("| %s | %s | %s | %d | %d | %d | %.2f | %.0f | %s | %s |" % (name, f(r.get("msgs_per_s")),
                 f(r.get("accept_msgs_per_s")), r["ok"], r.get("delivered", 0), r.get("dkim_signed", 0),
                 r.get("drain_s", 0), r.get("cpu_us_per_msg", 0), r.get("connections", ""),
                 f((r.get("loadavg") or [None])[0], "%.2f")))
    if ratio(co, cp) != "n/a":
        L.append("\nortoo/(Postfix + OpenDKIM): %s in msgs/s at the sink%s. The load average counts Postfix's own"
                 " processes waiting on the disk too.\n" % (ratio(co, cp), "" if all_signed(co) and all_signed(cp)
                 else " (not every message arrived signed: not a fair comparison)"))
    else:
        L.append("")
else:
    L.append("not available (see build/bench/opendkim.err, postfix.err, ortoo.err).\n")

L.append("## D. TLS handshakes: full vs resumed\n")
L.append("10 connections, one session per connection, TLS 1.3 (X25519, ECDSA P-256 certificate from"
         " \`ortoo init\`). *session*: implicit TLS on 465, EHLO, QUIT — the handshake rate itself."
         " *mail*: 465, EHLO, AUTH PLAIN, one 2 KB message, QUIT — the goal's scenario."
         " *starttls*: 587, EHLO, STARTTLS, EHLO, QUIT. Resumed: ortoo-load offers each ticket once"
         " (RFC 8446 C.4) and ortoo sends one new ticket per resumption. CPU per session: ortoo's from"
         " /proc, ortoo-load's from getrusage; both share the 2 cores.\n")
drows = [(k, get("D", "ortoo", k + " full"), get("D", "ortoo", k + " resumed")) for k in ("session", "mail", "starttls")]
if any(fu and "msgs_per_s" in fu for _, fu, _ in drows):
    L.append("| sessions | handshakes | sessions/s | resumed/full | ortoo CPU µs/session | ortoo-load CPU µs/session | full | resumed |")
    L.append("|---|---|---|---|---|---|---|---|")
    for k, fu, re_ in drows:
        for n, r in (("full", fu), ("resumed", re_)):
            if not r or "msgs_per_s" not in r:
                L.append("| %s | %s | not available | | | | | |" % (k, n))
                continue
            rr = ratio(re_, fu) if n == "resumed" else ""
            L.append("| %s | %s | %.0f | %s | %.0f | %.0f | %s | %s |" % (k, n, r["msgs_per_s"], rr,
                     r.get("server_cpu_us", 0), r.get("load_cpu_us", 0), r.get("handshakes_full"), r.get("handshakes_resumed")))
    L.append("")
    for k, fu, re_ in drows:
        if fu and re_ and fu.get("server_cpu_us") and re_.get("server_cpu_us"):
            L.append("- %s: resumed/full %s in sessions/s; by ortoo's CPU per session (its capacity when the"
                     " client is elsewhere) %.2f×." % (k, ratio(re_, fu), fu["server_cpu_us"] / re_["server_cpu_us"]))
    L.append("")
else:
    L.append("not available: ortoo's submissions listener did not answer TLS in this run.\n")
if not quick and os.path.exists(os.path.join(plots, "tls.png")) and drows:
    L.append("![tls](bench/plots/tls.png)\n")
tb = get("D", "tlsbench", "handshake")
if tb and "full" in tb:
    fs, fc, rs, rc = tb["full"]["server_us"], tb["full"]["client_us"], tb["resumed"]["server_us"], tb["resumed"]["client_us"]
    L.append("Inside ortoo's TLS layer alone (\`ortoo-tlsbench\`: io/tls.c server and client in one thread,"
             " flights passed in memory, no sockets or SMTP; cheapest of %d rounds of %d):\n" % (tb["rounds"], tb["count"]))
    L.append("| handshake | server µs | client µs |\n|---|---|---|")
    L.append("| full | %.0f | %.0f |" % (fs, fc))
    L.append("| resumed (psk_dhe_ke) | %.0f | %.0f |" % (rs, rc))
    L.append("| full/resumed | %.2f× | %.2f× |\n" % (fs / rs, fc / rc))
    L.append("Primitives through EVP, as libssl calls them: X25519 key pair + shared secret %.0f µs (each side,"
             " every handshake, resumed ones too), %s signature %.0f µs (server, full only), verification %.0f µs"
             " (client, full only).\n" % (tb["x25519_us"], tb["key"], tb["sign_us"], tb["verify_us"]))
    L.append("A resumed TLS 1.3 handshake with psk_dhe_ke (what every mainstream client offers) skips only the"
             " certificate, its signature and its verification; the ECDHE stays, and so do the key schedule,"
             " the ticket (opened, and a new one sealed) and the library's per-connection work. With an ECDSA"
             " P-256 key the signature is cheap, so ortoo saves little per resumption (server full/resumed"
             " %.2f×); the client saves more (parsing and checking the certificate), which is most of the gain"
             " in sessions/s. psk_ke (SSL_OP_ALLOW_NO_DHE_KEX) would at best remove the X25519 work from a resumed"
             " handshake — server %.0f → about %.0f µs, %.2f× — and gives up forward secrecy for resumed"
             " sessions; OpenSSL 3.0's server takes psk_dhe_ke whenever the client offers it, and OpenSSL,"
             " BoringSSL, Go and NSS clients always do, so it would not even be used. The ≥ 4× goal is out of"
             " reach for TLS 1.3 with forward secrecy and an ECDSA certificate: it presumes that the"
             " certificate signature dominates a full handshake (true for RSA-2048, whose signature costs"
             " more than ten P-256 signatures here).\n" % (fs / rs, rs, max(1.0, rs - tb["x25519_us"]), fs / max(1.0, rs - tb["x25519_us"])))
L.append("## E. Idle connections\n")
e = get("E", "ortoo", "idle=10000")
if e and e.get("rss_held_kb"):
    L.append("| connections held | RSS before | RSS held | per connection |\n|---|---|---|---|")
    L.append("| %s | %d KiB | %d KiB | %.0f bytes (goal ≤ 16 KiB) |\n" % (e.get("held", e.get("fds_held")), e["rss_before_kb"],
             e["rss_held_kb"], e["rss_per_conn_bytes"]))
else:
    L.append("not available (ortoo did not run).\n")

L.append("## F. Reactors\n")
f1, f2 = get("F", "ortoo", "reactors=1"), get("F", "ortoo", "reactors=2")
if f1 and f2 and "msgs_per_s" in f1:
    L.append("| reactors | msgs/s | p99 ms |\n|---|---|---|")
    for n, r in (("1", f1), ("2", f2)):
        L.append("| %s | %.0f | %.2f |" % (n, r["msgs_per_s"], r["latency_ms"]["p99"]))
    L.append("\n2/1: %s. The load generator runs on the same 2 cores, so this understates scaling.\n" % ratio(f2, f1))
else:
    L.append("not available (ortoo did not run).\n")

L.append("## H. Instructions per accepted message (callgrind)\n")
h = get("H", "ortoo", "2KB callgrind")
if h:
    L.append("%s instructions per 2 KB message (reactors = 1, io = epoll, one connection; (I(3N) − I(N)) / 2N with N = %d).\n"
             % (format(h["instructions_per_message"], ","), h["n"]))
else:
    L.append("not available (ortoo did not run under valgrind).\n")

L.append("## K. Inbound checks: SPF + iprev + DKIM verify + DMARC\n")
k0, k1 = get("K", "ortoo", "checks=off"), get("K", "ortoo", "checks=on")
b0, b1 = get("K", "ortoo", "before checks=off"), get("K", "ortoo", "before checks=on")
if k0 and k1 and "msgs_per_s" in k0 and "msgs_per_s" in k1:
    L.append("Mail from outside on port 25 to a local recipient: one 2 KB message From load@load.test,"
             " DKIM-signed (RSA-2048), $CONNS connections, 100 messages each, pipelining; ortoo's"
             " resolver answers from a DNSSEC-signed zone on a loopback nsd (SPF, DKIM key, DMARC"
             " p=reject, reverse zone), then from its cache: the cost measured is the checks' CPU"
             " (two SPF evaluations, iprev, one RSA verification, DMARC, the header), not DNS"
             " latency. Same server, \`[checks] enabled = off\` vs on. DKIM is verified in dkim/"
             " with the public key parsed once per reactor (before, libopendkim decoded it for every"
             " message: three quarters of the checks' CPU).\n")
    L.append("| server | checks | msgs/s | p50 ms | p99 ms | ortoo CPU µs/msg | results in a stored message |")
    L.append("|---|---|---|---|---|---|---|")
    for srv, n, r in (("before", "off", b0), ("before", "on", b1), ("ortoo", "off", k0), ("ortoo", "on", k1)):
        if not r or "msgs_per_s" not in r:
            continue
        L.append("| %s | %s | %.0f | %.2f | %.2f | %.0f | %s |" % (srv, n, r["msgs_per_s"], r["latency_ms"]["p50"],
                 r["latency_ms"]["p99"], r.get("server_cpu_us", 0),
                 " ".join("%s=%s" % tuple(x) for x in r.get("results", [])) or "none"))
    L.append("\non/off: %s in msgs/s; ortoo CPU per message %s.%s\n" % (ratio(k1, k0),
             "%.2f×" % (k1["server_cpu_us"] / k0["server_cpu_us"]) if k0.get("server_cpu_us") else "n/a",
             (" Before (the binary in \`ORTOO_BEFORE\`): %s." % ratio(b1, b0)) if b0 and b1 else ""))
else:
    L.append("not available (see build/bench/inbound.err).\n")
kv = get("K", "dkimbench", "verify 2KB")
if kv and "ortoo_verify" in kv:
    o, ssl = kv["ortoo_verify"], kv.get("openssl_speed", {})
    L.append("DKIM verification alone (\`ortoo-dkimbench --verify\`): one thread, 2 KB messages signed by"
             " ortoo, verified as a reactor does (open, feed, the key record handed over, finish; the"
             " key cache warm), per second of the thread's CPU, beside \`openssl speed rsa2048 ed25519\`"
             " verify rates from the same run.\n")
    L.append("| | verifications/s | vs openssl speed verify |")
    L.append("|---|---|---|")
    L.append("| openssl speed rsa2048 verify | %s | |" % f(ssl.get("rsa2048_verify_per_s")))
    L.append("| openssl speed ed25519 verify | %s | |" % f(ssl.get("ed25519_verify_per_s")))
    L.append("| bare RSA-2048 verify (EVP, context made once) | %s | |" % f(kv["pubkey_verify"]["rsa"]))
    L.append("| bare Ed25519 verify (libsodium) | %s | |" % f(kv["pubkey_verify"]["ed25519"]))
    L.append("| verified messages, RSA-2048 | %s | %s |" % (f(o["rsa"]), "%.0f%%" % (100 * kv["rsa_vs_openssl"]) if kv.get("rsa_vs_openssl") else "n/a"))
    L.append("| verified messages, Ed25519 | %s | %s |" % (f(o["ed25519"]), "%.0f%%" % (100 * kv["ed25519_vs_openssl"]) if kv.get("ed25519_vs_openssl") else "n/a"))
    L.append("| verified messages, both (2 signatures) | %s | |" % f(o["both"]))
    L.append("| verified messages, libopendkim, RSA-2048 | %s | |" % f(kv["libopendkim_verify"]["rsa"]))
    L.append("| verified messages, libopendkim, Ed25519 | %s | |" % f(kv["libopendkim_verify"]["ed25519"]))
    L.append("")

L.append("## I. Well-behaved clients under attack (issue 8)\n")
L.append("ortoo with its default limits; ortoo-load, $CONNS connections from 127.0.0.1, 2 KB, 100 messages"
         " per connection, pipelining, for a fixed time, alone and then while \`bench/attack.py\` attacks from"
         " 127.0.0.2 (*flood*) or 127.0.0.3 (*slowloris*): *flood* = 50 connections sending EHLO lines as fast as ortoo takes them and never"
         " reading a reply (reopened when ortoo closes them); *slowloris* = 1,000 connections sending one"
         " byte a second. Peak RSS: VmHWM of the run (reset before it). The attacker runs on the same 2"
         " cores; its CPU time is shown.\n")
base = get("I", "ortoo", "attack=none")
rows_i = []
for mode in ("none", "flood", "slowloris"):
    r, m = get("I", "ortoo", "attack=" + mode), get("I", "ortoo", "rss attack=" + mode)
    if r is None or "msgs_per_s" not in r:
        continue
    a = (m or {}).get("attack") or {}
    rows_i.append("| %s | %.0f | %s | %.2f | %s | %s | %s |" % (
        mode, r["msgs_per_s"], ratio(r, base) if mode != "none" else "1.00×", r["latency_ms"]["p99"],
        f((m or {}).get("vm_hwm_kb", 0) / 1024, "%.0f MiB") if m and m.get("vm_hwm_kb") else "n/a",
        ("%d opened, %d closed by ortoo" % (a.get("opened", 0), a.get("closed_by_server", 0))) if a else "",
        f(a.get("cpu_s"), "%.1f s") if a else ""))
if rows_i:
    L.append("| attack | msgs/s | vs. no attack (goal ≥ 0.8) | p99 ms | ortoo peak RSS | attacker connections | attacker CPU |")
    L.append("|---|---|---|---|---|---|---|")
    L += rows_i
    L.append("")
else:
    L.append("not available (ortoo did not run).\n")

L.append("## J. Body memory: 20 MB messages at once (issue 7 part 4)\n")
j = next((r for r in R if r["scenario"] == "J"), None)
if j and "counts" in j:
    bound_kb = (256 + 96) * 1024
    L.append("%d sessions each send one %.0f MB message at once (half declare SIZE=) to ortoo with"
             " \`body_memory = 256M\` (the default). Stated bound for the peak RSS: body_memory + 96 MiB"
             " (io_uring receive buffers, 16 MiB per reactor, and the sessions' bounded input buffers).\n"
             % (j["sessions"], j["size"] / 1e6))
    L.append("| accepted (250, in \`queue list\`) | 452 at DATA | 452 at the final dot | errors | missing from the queue | peak RSS | bound | time |")
    L.append("|---|---|---|---|---|---|---|---|")
    c = j["counts"]
    peak = j.get("vm_hwm_kb") or j.get("rss_peak_kb") or 0
    L.append("| %d | %d | %d | %d | %s | %.0f MiB | %.0f MiB (%s) | %.1f s |\n" % (
        j["accepted"], c.get("452-data", 0), c.get("452-dot", 0), c.get("error", 0) + c.get("hung", 0),
        len(j["missing_from_queue"]) if j.get("missing_from_queue") is not None else "n/a",
        peak / 1024, bound_kb / 1024, "met" if peak <= bound_kb else "not met", j["elapsed_s"]))
else:
    L.append("not available.\n")

L.append("## Goals (issue 3)\n")
a_o, a_p, a_s = get("A", "ortoo", "size=2048 per_conn=1"), get("A", "postfix", "size=2048 per_conn=1"), get("A", "smtp-sink", "size=2048 per_conn=1")
def met(cond):
    return "n/a" if cond is None else ("met" if cond else "not met")
def q(a, b, k):
    return None if not (a and b and a.get("msgs_per_s") and b.get("msgs_per_s")) else a["msgs_per_s"] / b["msgs_per_s"] >= k
L.append("| goal | result |\n|---|---|")
L.append("| A: ortoo ≥ 20× Postfix (2 KB, 50 conns) | %s (%s) |" % (met(q(a_o, a_p, 20)), ratio(a_o, a_p)))
L.append("| A: ortoo ≥ 70%% of smtp-sink | %s (%s) |" % (met(q(a_o, a_s, 0.7)), ratio(a_o, a_s)))
p99 = a_o["latency_ms"]["p99"] if a_o and "latency_ms" in a_o else None
L.append("| A: p99 dot → 250 ≤ 10 ms | %s (%s ms) |" % (met(None if p99 is None else p99 <= 10), f(p99, "%.2f")))
dm_f, dm_r = get("D", "ortoo", "mail full"), get("D", "ortoo", "mail resumed")
ds_f, ds_r = get("D", "ortoo", "session full"), get("D", "ortoo", "session resumed")
L.append("| D: resumed ≥ 4× full (465, AUTH + 1 message) | %s (%s; handshake only %s) |" % (met(q(dm_r, dm_f, 4)), ratio(dm_r, dm_f), ratio(ds_r, ds_f)))
L.append("| E: ≤ 16 KiB per idle connection | %s |" % met(None if not (e and e.get("rss_held_kb")) else e["rss_per_conn_bytes"] <= 16384))
L.append("| F: 2 reactors ≥ 1.6× 1 | %s |" % met(q(f2, f1, 1.6)))
cdk = get("C", "dkimbench", "2KB") # (c is J's counts by now)
cr = cdk["rsa_vs_openssl"] if cdk and cdk.get("rsa_vs_openssl") else None
L.append("| C: signed 2 KB messages ≥ 85%% of the raw RSA-2048 sign rate per core | %s (%s) |" % (met(None if cr is None else cr >= 0.85), "n/a" if cr is None else "%.0f%%" % (100 * cr)))
b2o, b2p, b2h = get("B", "ortoo", "size=2048"), get("B", "postfix", "size=2048"), get("B-accept", "ortoo", "size=2048")
b100 = get("B", "ortoo", "size=102400")
L.append("| B: relay ≥ 10× Postfix (2 KB) | %s (%s) |" % (met(q(b2o, b2p, 10)), ratio(b2o, b2p)))
rel = (b2o["msgs_per_s"] / b2h["accept_msgs_per_s"]) if b2o and b2h and b2o.get("msgs_per_s") and b2h.get("accept_msgs_per_s") else None
L.append("| B: relay ≥ 70%% of ortoo's accept-only rate (2 KB) | %s (%s) |" % (met(None if rel is None else rel >= 0.7), "n/a" if rel is None else "%.0f%%" % (100 * rel)))
L.append("| B: 100 KB relay ≥ 1,500 msgs/s | %s (%s) |" % (met(None if not (b100 and b100.get("msgs_per_s")) else b100["msgs_per_s"] >= 1500), f(b100 and b100.get("msgs_per_s"))))
L.append("| G: nothing lost or duplicated | %s |" % met(None if not (g and g.get("ok")) else g.get("lost") == 0 and g.get("duplicates") == 0))
if co and cp and co.get("msgs_per_s") and cp.get("msgs_per_s"):
    L.append("| C: signed relay against Postfix + OpenDKIM (2 KB; a ratio, no target) | %s (ortoo %.0f msgs/s, Postfix + OpenDKIM %.0f msgs/s; %s) |"
             % (ratio(co, cp), co["msgs_per_s"], cp["msgs_per_s"],
                "every message signed" if all_signed(co) and all_signed(cp) else "NOT every message signed: not comparable"))
else:
    L.append("| C: signed relay against Postfix + OpenDKIM (2 KB; a ratio, no target) | n/a |")
for mode in ("flood", "slowloris"):
    r = get("I", "ortoo", "attack=" + mode)
    L.append("| I (issue 8): accept under %s ≥ 0.8 of no attack | %s (%s) |" % (mode, met(q(r, base, 0.8)), ratio(r, base)))
L.append("")
L.append("Raw results (one JSON object per run): \`build/bench/results.jsonl\`; logs in \`build/bench/\`.\n")
open(md_path, "w").write("\n".join(L))
EOF
log "wrote $MD"

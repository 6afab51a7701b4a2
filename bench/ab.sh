#!/bin/bash
# SPDX-License-Identifier: MIT
# ab.sh - compare two ortoo binaries on one machine, in one run: rounds that
# alternate A and B (the order flips every round, so neither always runs
# second), each on a fresh spool, one reactor, driven by ortoo-load.  Prints
# one line per run (rate, the server's CPU per session or message from
# /proc/PID/task/*/schedstat, the load average) and the medians.  On a
# shared machine the rates swing; the server CPU per operation is the
# steadier figure.
#
#   bench/ab.sh A_BIN B_BIN [ROUNDS] [N] [sessions|messages] [uring|epoll]
#
# sessions: connect, EHLO, QUIT (--no-mail; the accept path); messages:
# 2 KB pipelined messages to one local user.  Example (the cost of the
# metrics counters, main before and after):
#   git archive <main-commit> | tar -x -C /tmp/before && make -C /tmp/before
#   bench/ab.sh /tmp/before/ortoo ./ortoo 12 50000 sessions
set -u
A=$1 B=$2 ROUNDS=${3:-8} N=${4:-50000} MODE=${5:-sessions} IO=${6:-uring}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${ORTOO_LOAD:-$ROOT/build/release/bench/ortoo-load}
WORK=$(mktemp -d /tmp/ortoo-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
"$B" -c "$WORK/tmpl" init example.test --dev --hostname localhost >/dev/null
: > "$WORK/results"
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="A B"; else order="B A"; fi
    for v in $order; do
        bin=$A; [ "$v" = B ] && bin=$B
        d=$WORK/run; rm -rf "$d"; cp -a "$WORK/tmpl" "$d"
        cat > "$d/ortoo.conf" <<CONF
[server]
hostname = localhost
spool = spool
user = $(id -un)
reactors = 1
io = $IO
max_connections = 100000
[listen]
smtp = 127.0.0.1:0
[tls]
cert_dir = certs
[smtp]
greeting_delay = 0
CONF
        : > "$d/log"
        "$bin" -c "$d" serve 2>> "$d/log" &
        pid=$!
        for _ in $(seq 1 400); do grep -q "event=ready" "$d/log" && break; sleep 0.05; done
        port=$(grep -o 'role=smtp addr=127.0.0.1:[0-9]*' "$d/log" | sed 's/.*://')
        if [ -z "$port" ]; then
            echo "round=$r $v: no start:"; tail -2 "$d/log"; kill "$pid" 2>/dev/null; wait "$pid"
            continue
        fi
        load1=$(cut -d' ' -f1 /proc/loadavg)
        if [ "$MODE" = sessions ]; then
            out=$("$LOAD" --server "127.0.0.1:$port" --no-mail --connections 50 --messages "$N" --json)
        else
            out=$("$LOAD" --server "127.0.0.1:$port" --connections 50 --messages "$N" --size 2048 \
                  --pipelining --to dev@example.test --json)
        fi
        rate=$(printf '%s' "$out" | sed -n 's/.*"msgs_per_s":\([0-9.]*\).*/\1/p')
        cpu=$(cat /proc/"$pid"/task/*/schedstat | awk -v n="$N" '{s += $1} END {printf "%.2f", s / n / 1000}')
        kill "$pid"; wait "$pid"
        echo "round=$r $v rate=$rate cpu_us_per_op=$cpu load1=$load1" | tee -a "$WORK/results"
    done
done
/usr/bin/python3 - "$WORK/results" <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1]) if "rate=" in l]
for v in "AB":
    r = [float(re.search(r"rate=([\d.]+)", l).group(1)) for l in rows if f" {v} " in l]
    c = [float(re.search(r"cpu_us_per_op=([\d.]+)", l).group(1)) for l in rows if f" {v} " in l]
    if r:
        print(f"{v}: runs {len(r)}  rate median {statistics.median(r):.0f}/s "
              f"(min {min(r):.0f}, max {max(r):.0f})  server CPU median "
              f"{statistics.median(c):.2f} us/op (min {min(c):.2f}, max {max(c):.2f})")
# Paired: B against the A of the same round (same moment's load).
by = {}
for l in rows:
    m = re.match(r"round=(\d+) (\w) rate=([\d.]+) cpu_us_per_op=([\d.]+)", l)
    if m and float(m.group(3)) > 0:
        by.setdefault(m.group(1), {})[m.group(2)] = (float(m.group(3)), float(m.group(4)))
pairs = [v for v in by.values() if "A" in v and "B" in v]
if pairs:
    rr = sorted(v["B"][0] / v["A"][0] for v in pairs)
    cc = sorted(v["B"][1] / v["A"][1] for v in pairs)
    print(f"B/A per round: rate median {statistics.median(rr):.3f} ({rr[0]:.2f}..{rr[-1]:.2f}), "
          f"server CPU median {statistics.median(cc):.3f} ({cc[0]:.2f}..{cc[-1]:.2f})")
PY

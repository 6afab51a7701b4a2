#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Body-memory budget run (issue 7 part 4, issue 8): many concurrent sessions
each send one big message to ortoo at the same time; ortoo must keep its
resident memory under the bound that its [limits] body_memory gives, and
every message must be either accepted (250, and listed by `ortoo queue list`)
or refused with 452 4.3.1 (at DATA or at the final dot) -- never lost, never
left hanging.

    body_budget.py --server 127.0.0.1:PORT --pid PID --sessions 200 --size 20000000
                   [--ortoo ./ortoo --config DIR] [--sizes-declared half] [--json]

Each session: EHLO, MAIL FROM (half of them with SIZE=, to cover both the
reservation at DATA and the budget running out mid-message), RCPT, DATA,
then the body in 1 MiB writes (lines of 998 characters), the final dot, and
the reply.  VmHWM is reset first (/proc/PID/clear_refs) and read at the
end, so it is the true peak of the run; a thread also samples VmRSS every
20 ms.  With --ortoo and --config, the accepted ids are looked up
in `ortoo queue list --json`.  Output: one JSON object (or a summary).  Exit
status 0 when every session ended in 250 or 452 and every 250's id is in the
queue, 1 otherwise.
"""

import argparse
import json
import re
import socket
import subprocess
import sys
import threading
import time

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{20})")


def reset_hwm(pid):
    """Make VmHWM start from the current RSS (Linux >= 4.0), so that it is the
    peak of this run, not of start-up (recovery maps the spool's segments)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_kb(pid, key="VmRSS"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Conn:
    def __init__(self, addr, timeout):
        fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.s = socket.socket(fam, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(addr)
        self.buf = b""

    def reply(self):
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError("closed; got " + repr(lines))
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            line = line.decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] == " ":
                return line, lines

    def cmd(self, text):
        self.s.sendall(text.encode() + b"\r\n")
        return self.reply()[0]


def one_session(i, args, body, out):
    t0 = time.monotonic()
    res = {"i": i, "outcome": "error", "detail": ""}
    try:
        c = Conn(args.addr, args.timeout)
        greet = c.reply()[0]
        if not greet.startswith("220"):
            res["detail"] = greet
            return
        c.cmd("EHLO budget.test")
        size = f" SIZE={len(body)}" if args.declared == "all" or (
            args.declared == "half" and i % 2 == 0) else ""
        r = c.cmd(f"MAIL FROM:<budget-{i}@client.test>{size}")
        if not r.startswith("250"):
            res["detail"] = "MAIL: " + r
            return
        r = c.cmd(f"RCPT TO:<{args.to}>")
        if not r.startswith("250"):
            res["detail"] = "RCPT: " + r
            return
        r = c.cmd("DATA")
        if r.startswith("452"):
            res["outcome"], res["detail"] = "452-data", r
            c.cmd("QUIT")
            return
        if not r.startswith("354"):
            res["detail"] = "DATA: " + r
            return
        mv = memoryview(body)
        for off in range(0, len(body), 1 << 20):
            c.s.sendall(mv[off:off + (1 << 20)])
        c.s.sendall(b".\r\n")
        r = c.reply()[0]
        m = QUEUED.match(r)
        if m:
            res["outcome"], res["id"] = "250", m.group(1)
        elif r.startswith("452"):
            res["outcome"], res["detail"] = "452-dot", r
        else:
            res["detail"] = "dot: " + r
        try:
            c.cmd("QUIT")
        except (OSError, EOFError):
            pass
    except (OSError, EOFError) as e:
        res["detail"] = repr(e)
    finally:
        res["seconds"] = time.monotonic() - t0
        out[i] = res


def make_body(size):
    line = b"b" * 998 + b"\r\n"
    head = b"Subject: body budget\r\n\r\n"
    n = max(1, (size - len(head)) // len(line))
    return head + line * n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True, help="HOST:PORT of ortoo's smtp listener")
    ap.add_argument("--pid", type=int, required=True, help="ortoo's pid (for VmRSS)")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--size", type=int, default=20_000_000)
    ap.add_argument("--to", default="dev@bench.test")
    ap.add_argument("--declared", choices=["none", "half", "all"], default="half",
                    help="which sessions declare SIZE= at MAIL")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--ortoo", help="ortoo binary, to check `queue list`")
    ap.add_argument("--config", help="ortoo's config directory")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    host, _, port = args.server.rpartition(":")
    args.addr = (host.strip("[]"), int(port))

    body = make_body(args.size)
    out = [None] * args.sessions
    hwm_reset = reset_hwm(args.pid)
    peak = [rss_kb(args.pid)]
    base = peak[0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kb(args.pid))
            time.sleep(0.02)

    mon = threading.Thread(target=sample, daemon=True)
    mon.start()
    t0 = time.monotonic()
    threads = [threading.Thread(target=one_session, args=(i, args, body, out), daemon=True)
               for i in range(args.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.timeout + 60)
    elapsed = time.monotonic() - t0
    stop.set()
    mon.join()
    res = [r or {"outcome": "hung"} for r in out]
    counts = {}
    for r in res:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    ids = [r["id"] for r in res if r["outcome"] == "250"]
    missing = None
    if args.ortoo and args.config:
        p = subprocess.run([args.ortoo, "-c", args.config, "queue", "list", "--json"],
                           capture_output=True, text=True, timeout=120)
        listed = {json.loads(l)["id"] for l in p.stdout.splitlines() if l.strip()}
        missing = sorted(set(ids) - listed)
    result = {
        "sessions": args.sessions, "size": len(body), "counts": counts,
        "accepted": len(ids), "refused_452": counts.get("452-data", 0) + counts.get("452-dot", 0),
        "errors": [r for r in res if r["outcome"] in ("error", "hung")][:5],
        "missing_from_queue": missing, "rss_start_kb": base, "rss_peak_kb": peak[0],
        "vm_hwm_kb": rss_kb(args.pid, "VmHWM") if hwm_reset else None, "elapsed_s": elapsed,
    }
    ok = (counts.get("error", 0) == 0 and counts.get("hung", 0) == 0 and not missing)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.sessions} sessions x {len(body)} bytes in {elapsed:.1f} s: "
              f"accepted {len(ids)}, 452 {result['refused_452']} "
              f"(at DATA {counts.get('452-data', 0)}, at the dot {counts.get('452-dot', 0)}), "
              f"errors {counts.get('error', 0) + counts.get('hung', 0)}; "
              f"RSS {base} -> peak {peak[0]} KiB (VmHWM {result['vm_hwm_kb']} KiB)"
              + ("" if missing is None else f"; missing from the queue: {len(missing)}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The attackers of bench/run.sh scenario I (issue 8), one process, one
thread, non-blocking sockets on a selector:

  flood      N connections that send "EHLO flood.test" lines as fast as the
             server takes them and never read a reply (the reply flood that
             took ortoo to 2.5 GB before its output bound); a connection the
             server closes is opened again.
  slowloris  N connections that send one byte of a never-ending command
             every --interval seconds; a closed one is opened again.

    attack.py --server 127.0.0.1:PORT --mode flood|slowloris --connections N
              --duration S [--source 127.0.0.2] [--interval 1] [--json]

Output: connections opened, bytes sent, closes seen by the attackers, and
this process's CPU time (the attackers share the machine with the server
under test; the report says how much CPU they took).
"""

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--mode", choices=["flood", "slowloris"], required=True)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--source", default="127.0.0.2")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    host, _, port = args.server.rpartition(":")
    addr = (host.strip("[]"), int(port))
    fam = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.connections + 64)), hard))
    sel = selectors.DefaultSelector()
    flood = b"EHLO flood.test\r\n" * 4096
    trickle = b"EHLO slow" + b"w" * 100000
    stats = {"mode": args.mode, "connections": args.connections, "opened": 0,
             "closed_by_server": 0, "bytes_sent": 0, "connect_errors": 0}
    conns = {}                     # fd -> [sock, bytes into the trickle, next send time]

    def open_one():
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((args.source, 0))
            s.connect_ex(addr)
        except OSError:
            stats["connect_errors"] += 1
            s.close()
            return
        stats["opened"] += 1
        conns[s.fileno()] = [s, 0, time.monotonic()]
        sel.register(s, selectors.EVENT_WRITE | selectors.EVENT_READ)

    def drop(fd):
        s = conns.pop(fd)[0]
        sel.unregister(s)
        s.close()
        stats["closed_by_server"] += 1

    for _ in range(args.connections):
        open_one()
    t_end = time.monotonic() + args.duration
    next_tick = time.monotonic() + args.interval
    while time.monotonic() < t_end:
        for key, ev in sel.select(timeout=0.05):
            fd = key.fd
            if fd not in conns:
                continue
            c = conns[fd]
            s = c[0]
            if ev & selectors.EVENT_READ:
                # Flooders never read replies: a readable socket is only
                # looked at (MSG_PEEK) to notice the server's close.
                # Slow clients read (and drop) what the server says.
                flags = socket.MSG_PEEK if args.mode == "flood" else 0
                try:
                    if s.recv(1 if flags else 65536, flags) == b"":
                        drop(fd)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    drop(fd)
                    continue
                if args.mode == "flood":
                    # From now on a close shows as a failed send().
                    sel.modify(s, selectors.EVENT_WRITE)
            if ev & selectors.EVENT_WRITE and args.mode == "flood":
                try:
                    stats["bytes_sent"] += s.send(flood)
                except BlockingIOError:
                    pass
                except OSError as e:
                    if e.errno not in (errno.EAGAIN,):
                        drop(fd)
            elif ev & selectors.EVENT_WRITE:
                sel.modify(s, selectors.EVENT_READ)        # connected; trickle on time
        now = time.monotonic()
        if args.mode == "slowloris" and now >= next_tick:
            # Every connection sends its next byte once per interval, all in
            # one sweep: cheap for this process, however many connections.
            next_tick = now + args.interval
            for fd, c in list(conns.items()):
                try:
                    stats["bytes_sent"] += c[0].send(trickle[c[1]:c[1] + 1])
                    c[1] = (c[1] + 1) % len(trickle)
                except BlockingIOError:
                    pass
                except OSError:
                    drop(fd)
        while len(conns) < args.connections and time.monotonic() < t_end:
            open_one()
    for c in conns.values():
        c[0].close()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_s"] = ru.ru_utime + ru.ru_stime
    print(json.dumps(stats) if args.json else
          f"{args.mode}: {stats['opened']} connections opened, {stats['bytes_sent']} bytes sent, "
          f"{stats['closed_by_server']} closed by the server, {stats['cpu_s']:.2f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())

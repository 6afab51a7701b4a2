# SPDX-License-Identifier: MIT
"""Crash test: kill -9 in the middle of load, restart, and find every message
that a client saw 250 for, exactly once.

Postfix's smtp-source sends 2,000 messages over 20 connections to the smtp
role while a Python client, on its own connections, sends messages with
unique senders (c<conn>-m<n>@client.test) and records each one for which the
250 after DATA arrived.  The daemon gets SIGKILL mid-load, is restarted on
the same config directory, and `ortoo queue list --json` must hold every
acknowledged sender exactly once, no ID twice, and no more messages than
were sent."""

import collections
import shutil
import subprocess
import threading
import time

from conftest import QUEUED_RE, Raw, assert_serving

SOURCE_MESSAGES = 2000
SOURCE_SESSIONS = 20
PY_CONNECTIONS = 4


class AckingClient:
    """Threads sending messages; acked[sender] = queue ID for every 250."""

    def __init__(self, addr, nconn):
        self.addr = addr
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}
        self.sent = set()          # final dot written (maybe stored, maybe not)
        self.errors = []
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(nconn)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        for t in self.threads:
            t.join(30)

    def run(self, conn):
        n = 0
        try:
            c = Raw(self.addr, timeout=20)
            c.expect(None, 220)
            c.expect("EHLO client.test", 250)
            while not self.stop.is_set():
                sender = f"c{conn}-m{n}@client.test"
                n += 1
                # MAIL, RCPT, DATA pipelined; the body after the 354.
                c.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<alice@example.test>\r\n"
                       "DATA\r\n")
                c.expect(None, 250)
                c.expect(None, 250)
                c.expect(None, 354)
                with self.lock:
                    self.sent.add(sender)
                c.send(f"From: <{sender}>\r\nSubject: crash {sender}\r\n\r\n"
                       + "line of body text\r\n" * 40 + ".\r\n")
                r = c.reply()
                m = QUEUED_RE.match(f"{r.code} {r.text}")
                if not m:
                    self.errors.append(f"{sender}: {r!r}")
                    return
                with self.lock:
                    self.acked[sender] = m.group(1)
        except (OSError, EOFError, AssertionError):
            pass                   # the server was killed


def test_kill9_midload(fresh):
    smtp_source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    s = fresh("crash", **{"server.timeout_command": 60})
    host, port = s.addr("smtp")
    src = subprocess.Popen(
        [smtp_source, "-d", "-m", str(SOURCE_MESSAGES), "-s",
         str(SOURCE_SESSIONS), "-l", "2048", "-M", "source.test",
         "-f", "source@source.test", "-t", "alice@example.test",
         f"{host}:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = AckingClient((host, port), PY_CONNECTIONS)
    client.start()

    # Let the load run, then kill -9 while it is in full swing.
    t0 = time.monotonic()
    while time.monotonic() < t0 + 20:
        with client.lock:
            nacked = len(client.acked)
        if nacked >= 30 and time.monotonic() > t0 + 0.5:
            break
        time.sleep(0.05)
    source_running = src.poll() is None
    acked_before_kill = len(client.acked)
    s.kill()
    client.stop.set()
    client.join()
    try:
        src_out, _ = src.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        src.kill()
        src_out, _ = src.communicate()

    assert not client.errors, client.errors
    assert acked_before_kill >= 30, (
        f"only {acked_before_kill} messages acknowledged in 20 s before the "
        f"kill\nsmtp-source:\n{src_out[-2000:]}")
    print(f"acked by the python client: {len(client.acked)}, "
          f"smtp-source still running at kill: {source_running}")

    # Restart on the same directory: recovery keeps what was acknowledged.
    s.start()
    rows = s.queue()
    ids = [r["id"] for r in rows]
    dup_ids = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not dup_ids, f"IDs listed twice: {dup_ids[:10]}"
    per_sender = collections.Counter(r["sender"] for r in rows)
    with client.lock:
        acked = dict(client.acked)
        sent = set(client.sent)
    missing = [x for x in acked if per_sender.get(x, 0) == 0]
    assert not missing, (f"{len(missing)} acknowledged messages lost, e.g. "
                         f"{missing[:10]}")
    twice = {x: n for x, n in per_sender.items()
             if x != "source@source.test" and n > 1}
    assert not twice, f"messages stored twice: {list(twice.items())[:10]}"
    # Acknowledged messages keep their ID.
    by_id = {r["id"]: r for r in rows}
    wrong = [x for x, qid in acked.items()
             if qid not in by_id or by_id[qid]["sender"] != x]
    assert not wrong, f"acknowledged IDs not found as such: {wrong[:10]}"
    unknown = [x for x in per_sender
               if x != "source@source.test" and x not in sent]
    assert not unknown, f"senders never sent: {unknown[:10]}"
    assert per_sender.get("source@source.test", 0) <= SOURCE_MESSAGES
    assert len(rows) <= SOURCE_MESSAGES + len(sent)
    # And the restarted server works.
    assert_serving(s)

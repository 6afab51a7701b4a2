# SPDX-License-Identifier: MIT
"""Issue 8: port 25 faces the internet.  Each attack runs against the real
binary while a well-behaved client (attack.GoodClient, from 127.0.0.1) keeps
sending; every attack asserts that the good client's messages were all
accepted and queued with a p99 under attack.GOOD_P99_S, and that ortoo's
RSS grew by less than attack.RSS_GROWTH_KB (attack.Attack).  Attackers use
other loopback addresses (127.0.0.2, 127.0.0.3) so that per-address limits
hit them and not the good client.

The attacks that exercise the event loop (reading, writing, timers, TLS)
run on both io backends, on one server per backend with short deadlines
(ATTACK_CONF) and without the junk-command limit or the penalty box
(conftest.py turns it off), so that back-pressure and deadlines, not those,
are what stops them; test_reply_flood_reconnecting then runs the flood of
`make bench` (bench/attack.py) against the default limits, penalty box on.  The AUTH, log, lock and
CLI tests run once (the backend does not matter there).
"""

import base64
import json
import os
import re
import resource
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from attack import (ARGON2_KB, ASAN, RSS_GROWTH_KB, Attack, GoodClient, RssWatch, closed_within,
                    connect, logfmt_parse, logfmt_unescape)
from conftest import (ORTOO, USERS, Raw, assert_serving, check, open_session,
                      plain_token, run_log)

ALICE = "alice@example.test"
ATTACKER = "127.0.0.2"
PER_ADDRESS = 20
ATTACK_CONF = {
    "server.timeout_command": 3,
    "server.timeout_data": 3,
    "server.timeout_tls": 3,
    "limits.timeout_greeting": 2,
    "limits.min_data_rate": 1000,
    "limits.connections_per_address": PER_ADDRESS,
    "limits.max_junk_commands": 1000000,
    "limits.max_commands": 100000000,
}
SLACK_S = 2.5 if not ASAN else 4.0     # timer and scheduling slack on a busy machine
LINGER_S = 5                           # SESSION_LINGER_MS in core/smtp_session.c


@pytest.fixture(scope="module")
def atk(make_server, backend):
    s = make_server(backend, "attack", **ATTACK_CONF)
    yield s
    rc = s.stop()
    assert rc == 0, f"{s.name}: exit status {rc}\n" + s.tail(40)
    assert not s.sanitizer_errors(), "\n".join(s.sanitizer_errors())


TCP_ESTABLISHED = 1


def tcp_state(sock):
    """tcpi_state of struct tcp_info (linux/tcp.h): ESTABLISHED until the
    peer's FIN or RST arrives, whether or not we read."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def send_in_thread(c, data):
    """sendall in a thread: the caller reads the replies meanwhile (ortoo
    stops reading while its replies are not read)."""
    t = threading.Thread(target=c.sock.sendall, args=(data,), daemon=True)
    t.start()
    return t


@pytest.fixture(scope="module", autouse=True)
def figures():
    """After the module: the figures of every attack (good client p99, RSS
    growth), printed (seen with -s) and written to build/attack-figures-<mode>.txt."""
    yield
    lines = [f"{what:42s} {be:6s} good p99 {p99:7.1f} ms over {n:4d} messages, "
             f"RSS growth {growth / 1024:6.1f} MiB (bound {bound / 1024:.0f} MiB)"
             for what, be, p99, growth, n, bound in Attack.FIGURES]
    mode = os.path.basename(os.path.dirname(ORTOO))
    out = os.path.join(os.path.dirname(__file__), "..", "..", "build",
                       f"attack-figures-{mode}.txt")
    try:
        with open(out, "w") as f:
            f.write("\n".join(lines) + "\n")
    except OSError:
        pass
    print("\n" + "\n".join(lines))


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


# ---- output back-pressure ------------------------------------------------

def test_reply_flood(atk, backend):
    """EHLO in a loop, never reading (the issue's reproduction: 2.5 GB in
    20 s).  ortoo stops reading once 64 KiB of replies wait (and the kernel's
    socket buffers are full), so each flooder's send() soon blocks for good;
    the command deadline then closes it: 421 and, as it does not read that,
    the close LINGER_S later."""
    flood = b"EHLO flood.test\r\n" * 4096
    socks, last_ok = [], []
    with Attack(atk, "reply flood", backend, min_s=2.0):
        for _ in range(5):
            s = connect(atk.addr("smtp"), source=ATTACKER)
            s.setblocking(False)
            socks.append(s)
        t0 = time.monotonic()
        last_ok = [t0] * len(socks)
        # Flood until every socket has been blocked for 1 s (ortoo stopped
        # reading it), for 8 s at most.
        while time.monotonic() - t0 < 8:
            now = time.monotonic()
            if all(now - t > 1.0 for t in last_ok):
                break
            for i, s in enumerate(socks):
                try:
                    if s.send(flood) > 0:
                        last_ok[i] = time.monotonic()
                except BlockingIOError:
                    pass
            time.sleep(0.002)
        now = time.monotonic()
        assert all(now - t > 1.0 for t in last_ok), "ortoo kept reading the flooders"
    # ortoo closes each one by the command deadline (3 s after the last
    # command it parsed, which was before the flooder's last successful
    # send) plus the linger, without the flooder reading anything (reading
    # would let ortoo go on parsing).
    for i, s in enumerate(socks):
        limit = last_ok[i] + 3 + LINGER_S + SLACK_S
        while tcp_state(s) == TCP_ESTABLISHED and time.monotonic() < limit:
            time.sleep(0.1)
        assert tcp_state(s) != TCP_ESTABLISHED, \
            f"flooder {i} still connected {limit - last_ok[i]:.1f} s after its last send"
        s.close()
    assert_serving(atk)


def test_reply_flood_reconnecting(make_server, backend):
    """bench/attack.py's flood (scenario I of `make bench`): 50 connections
    pushing EHLO lines without reading, each reopened at once when ortoo
    closes it, with the default limits (max_junk_commands 100, penalty box
    on).  Before the box, each reconnect was a new session that read ~1 MB
    before the junk limit closed it, ~2,000 times a second; now the prefix
    is refused at accept and the refused connection held, so the flooder
    gets a handful of sessions and then sits idle.  The good client (another
    address) is served throughout, ortoo's CPU stays low."""
    s = make_server(backend, "boxflood", **{"limits.penalty_time": 10,
                                            "server.timeout_command": 30})
    script = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "attack.py")
    host, port = s.addr("smtp")
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu_s():
        with open(f"/proc/{s.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    with Attack(s, "reconnecting reply flood, penalty box", backend, min_s=3.0):
        c0 = cpu_s()
        p = subprocess.run(["/usr/bin/python3", script, "--server", f"{host}:{port}",
                            "--mode", "flood", "--connections", "50", "--duration", "4",
                            "--source", ATTACKER, "--json"],
                           capture_output=True, text=True, timeout=60)
        used = cpu_s() - c0
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    # 50 first sessions, then refusals held 5 s each: the 4 s run opens
    # about 100 connections (without the box: thousands).
    assert res["opened"] <= 400, res
    # ortoo spent well under a core on it (without the box: more than one).
    assert used < 2.0 * (2 if ASAN else 1), (used, res)
    log = "\n".join(run_log(s))
    assert "event=penalty-box what=junk-commands client=127.0.0.2" in log, log[-3000:]
    assert_serving(s)


def test_pipelined_noops(atk, backend):
    """10,000 pipelined NOOPs, read slowly: every one answered, memory flat."""
    n = 10000
    with Attack(atk, "10,000 pipelined NOOPs", backend):
        with Raw(atk.addr("smtp"), source=ATTACKER, timeout=30) as c:
            c.expect(None, 220)
            t = send_in_thread(c, b"NOOP\r\n" * n)
            time.sleep(0.5)            # let ortoo hit the output bound
            got = 0
            while got < n:
                r = c.reply()
                check(r, 250, "2.0.0", c)
                got += 1
            t.join(10)
            c.expect("QUIT", 221)


def test_many_rcpts(atk, backend):
    """MAIL and 10,000 pipelined RCPTs: max_recipients get 250, the rest 452."""
    n = 10000
    with Attack(atk, "10,000 RCPTs", backend):
        with Raw(atk.addr("smtp"), source=ATTACKER, timeout=30) as c:
            c.expect(None, 220)
            c.expect("EHLO rcpt.test", 250)
            c.expect("MAIL FROM:<rcpts@client.test>", 250)
            t = send_in_thread(c, b"RCPT TO:<alice@example.test>\r\n" * n)
            codes = {}
            for _ in range(n):
                r = c.reply()
                codes[(r.code, r.enhanced)] = codes.get((r.code, r.enhanced), 0) + 1
            assert codes == {(250, "2.1.5"): 5, (452, "4.5.3"): n - 5}, codes
            t.join(10)
            c.expect("RSET", 250)


def test_long_line(atk, backend):
    """A 100 MB command line, then a 100 MB line in DATA: 500 for the first,
    552 for the second (max_message_size), nothing kept, the session goes on."""
    chunk = b"x" * (1 << 20)
    with Attack(atk, "100 MB line", backend):
        with Raw(atk.addr("smtp"), source=ATTACKER, timeout=30) as c:
            c.expect(None, 220)
            c.send(b"NOOP ")
            for _ in range(100):
                c.send(chunk)
            c.send(b"\r\n")
            c.expect(None, 500, "5.5.2")
            c.expect("EHLO long.test", 250)
            c.expect("MAIL FROM:<long@client.test>", 250)
            c.expect("RCPT TO:<alice@example.test>", 250)
            c.expect("DATA", 354)
            for _ in range(100):
                c.send(chunk)
            c.send(b"\r\n.\r\n")
            c.expect(None, 552, "5.3.4")
            c.expect("NOOP", 250)


# ---- slowloris: one byte at a time, in every state ------------------------

def _trickle(addr, prologue, trickle, every, tls=False, result=None, key=None, chunk=1):
    """Connect, run the prologue (commands whose replies are read), then send
    `trickle` `chunk` bytes every `every` seconds; record when the server
    closed and the last reply line it sent."""
    t_start = time.monotonic()
    out = {"closed_after": None, "last": None}
    try:
        c = Raw(addr, tls=tls, timeout=10, source=ATTACKER)
        if prologue is not None:
            c.expect(None, 220)
            for cmd, code in prologue:
                c.expect(cmd, code)
        t0 = time.monotonic()
        c.sock.setblocking(False)
        data = b""
        for i in range(10 ** 6):
            b = bytes(trickle[(i * chunk + j) % len(trickle)] for j in range(chunk))
            try:
                c.sock.send(b)
            except (BlockingIOError, ssl.SSLWantWriteError):
                pass
            except OSError:
                break
            end = time.monotonic() + every
            closed = False
            while time.monotonic() < end:
                try:
                    got = c.sock.recv(4096)
                    if not got:
                        closed = True
                        break
                    data += got
                except (BlockingIOError, ssl.SSLWantReadError):
                    time.sleep(0.02)
                except OSError:
                    closed = True
                    break
            if closed or time.monotonic() - t0 > 30:
                break
        out["closed_after"] = time.monotonic() - t0
        lines = [l for l in data.split(b"\r\n") if l]
        out["last"] = lines[-1].decode("utf-8", "replace") if lines else None
        c.close()
    except Exception as e:
        out["error"] = repr(e)
    out["total"] = time.monotonic() - t_start
    result[key] = out


def test_slowloris(atk, backend):
    """A byte every 0.3 s in each state: before the first command (greeting
    deadline 2 s), after EHLO and after MAIL (command deadline 3 s), in DATA
    (3 s plus what 1 byte per 0.3 s earns at 1000 B/s: nothing much), in DATA
    at 400 B/s (below min_data_rate), in a TLS handshake on 465 and after
    STARTTLS (3 s).  Each must be closed by its deadline, however it
    trickles; the good client does not notice."""
    smtp, subs = atk.addr("smtp"), atk.addr("submissions")
    ehlo = [("EHLO slow.test", 250)]
    mail = ehlo + [("MAIL FROM:<slow@client.test>", 250)]
    data = mail + [("RCPT TO:<alice@example.test>", 250), ("DATA", 354)]
    hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(32)
    cases = {
        # name: (addr, prologue, trickle, every, tls, deadline s)
        "greeting": (smtp, [], b"EHLO slow.test\r\n"[:-2] + b"x" * 1000, 0.3, False, 2),
        "after-ehlo": (smtp, ehlo, b"MAIL FROM:<" + b"s" * 1000, 0.3, False, 3),
        "after-mail": (smtp, mail, b"RCPT TO:<" + b"s" * 1000, 0.3, False, 3),
        "data-byte": (smtp, data, b"slow body line\r\n", 0.3, False, 3),
        "tls-465": (subs, None, hello, 0.3, False, 3),
        "starttls": (smtp, ehlo + [("STARTTLS", 220)], hello, 0.3, False, 3),
    }
    result = {}
    with Attack(atk, "slowloris", backend, min_s=3.0):
        threads = [threading.Thread(target=_trickle, args=(c[0], c[1], c[2], c[3], c[4]),
                                    kwargs={"result": result, "key": k}, daemon=True)
                   for k, c in cases.items()]
        # DATA at 400 B/s: 40 bytes every 0.1 s, below min_data_rate 1000:
        # it earns 0.4 s a second, so its 3 s run out after about 5 s.
        threads.append(threading.Thread(
            target=_trickle, args=(smtp, data, b"y" * 38 + b"\r\n", 0.1),
            kwargs={"result": result, "key": "data-400Bps", "chunk": 40}, daemon=True))
        cases["data-400Bps"] = (smtp, data, None, None, False, 3 / (1 - 0.4))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for k, c in cases.items():
        r = result.get(k, {})
        assert "error" not in r, f"{k}: {r}"
        assert r["closed_after"] is not None and r["closed_after"] <= c[5] + SLACK_S, \
            f"{k}: closed after {r['closed_after']} s, deadline {c[5]} s: {r}"
        if k not in ("tls-465", "starttls"):
            assert r["last"] and r["last"].startswith("421 4.4.2"), f"{k}: {r}"
    assert_serving(atk)


# ---- connections from one address ----------------------------------------

def test_connection_flood(atk, backend):
    """2,000 connections from 127.0.0.3: connections_per_address of them get
    220 (across both reactors), every other one 421 4.7.0 and a close; the
    good client (another address) is served throughout, and the slots come
    back when the connections go."""
    raise_nofile(4096)
    addr = atk.addr("smtp")
    held, codes = [], {}
    try:
        with Attack(atk, "2,000 connections from one address", backend):
            for _ in range(2000):
                s = connect(addr, source="127.0.0.3")
                f = s.makefile("rb")
                line = f.readline().decode()
                code = line[:9]
                codes[code] = codes.get(code, 0) + 1
                if line.startswith("220"):
                    held.append((s, f))
                else:
                    f.close()
                    s.close()
        assert codes == {"220 mx.ex": PER_ADDRESS, "421 4.7.0": 2000 - PER_ADDRESS}, codes
        assert len(held) == PER_ADDRESS
    finally:
        for s, f in held:
            f.close()
            s.close()
    # The slots are released: a new connection from there is served again.
    deadline = time.monotonic() + 5
    while True:
        with Raw(addr, source="127.0.0.3") as c:
            r = c.reply()
            if r.code == 220:
                break
        assert time.monotonic() < deadline, "slots not released after the close"
        time.sleep(0.1)


def test_tls_garbage(atk, backend):
    """Garbage instead of a ClientHello on 465: what cannot start a TLS
    record (a plaintext EHLO, HTTP, zeros, a bogus handshake message) is
    closed at once; random bytes that may read as the start of a long record
    are closed by timeout_tls at the latest."""
    addr = atk.addr("submissions")
    garbage = [b"EHLO plain.test\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\0" * 600,
               bytes.fromhex("1603010005") + b"\xff" * 5, b"B" + os.urandom(599)]
    with Attack(atk, "garbage ClientHello on 465", backend):
        for i in range(60):
            s = connect(addr, source=ATTACKER)
            s.sendall(garbage[i % len(garbage)])
            took = closed_within(s, 3 + SLACK_S)
            s.close()
            # At once: well before timeout_tls (3 s) would have closed it.
            assert took is not None and took < 1.5, f"garbage {i}: closed after {took}"
        for i in range(10):
            s = connect(addr, source=ATTACKER)
            s.sendall(os.urandom(600))
            took = closed_within(s, 3 + SLACK_S)
            s.close()
            assert took is not None, f"random {i}: still open after {3 + SLACK_S} s"


# ---- body memory (issue 7 part 4) ---------------------------------------

def test_body_budget(make_server, backend):
    """bench/body_budget.py, small: 24 sessions x 4 MB at once against a
    16 MiB body budget.  Every message is accepted (and queued) or refused
    with 452 (at DATA or at the final dot); RSS stays under its start +
    body_memory + RSS_GROWTH_KB."""
    budget_kb = 16 * 1024
    s = make_server(backend, "budget", **{"server.max_message_size": "8M",
                                          "limits.body_memory": "16M"})
    script = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "body_budget.py")
    host, port = s.addr("smtp")
    rss = RssWatch(s.proc.pid)
    p = subprocess.run(["/usr/bin/python3", script, "--server", f"{host}:{port}",
                        "--pid", str(s.proc.pid), "--sessions", "24", "--size", "4000000",
                        "--to", ALICE, "--ortoo", ORTOO, "--config", s.dir, "--json",
                        "--timeout", "60"],
                       capture_output=True, text=True, timeout=180)
    peak = rss.stop()
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(p.stdout)
    assert res["accepted"] + res["refused_452"] == 24, res
    assert res["accepted"] >= 1, res
    assert res["missing_from_queue"] == [], res
    bound = rss.start_kb + budget_kb + RSS_GROWTH_KB
    assert peak <= bound, f"peak RSS {peak} KiB > {bound} KiB: {res}"
    Attack.FIGURES.append(("body budget 24x4MB/16MiB (accepted)", backend, 0,
                           peak - rss.start_kb, res["accepted"], budget_kb + RSS_GROWTH_KB))
    assert_serving(s)


def test_body_budget_reservation(make_server):
    """A SIZE= declared at MAIL is reserved at DATA; while it holds the budget
    (64 KiB here), another session's DATA gets 452 4.3.1 at once and its BDAT
    chunks 452 too; once the first message is stored, the second goes."""
    s = make_server("epoll", "reserve", **{"server.max_message_size": "60000",
                                           "limits.body_memory": "64K"})
    with open_session(s) as a, open_session(s, source=ATTACKER) as b:
        a.expect("MAIL FROM:<big@client.test> SIZE=59000", 250)
        a.expect("RCPT TO:<alice@example.test>", 250)
        a.expect("DATA", 354)                    # 59000 + 4 KiB reserved
        b.expect("MAIL FROM:<small@client.test>", 250)
        b.expect("RCPT TO:<alice@example.test>", 250)
        b.expect("DATA", 452, "4.3.1")           # the budget is taken
        b.expect("MAIL FROM:<small@client.test>", 250)
        b.expect("RCPT TO:<alice@example.test>", 250)
        body = b"Subject: bdat\r\n\r\nbdat\r\n"
        b.send(b"BDAT %d\r\n" % len(body) + body)
        b.expect(None, 452, "4.3.1")
        b.send(b"BDAT %d LAST\r\n" % len(body) + body)
        b.expect(None, 452, "4.3.1")
        a.send(b"Subject: big\r\n\r\n" + b"a" * 998 + b"\r\n" + b".\r\n")
        r = a.reply()
        check(r, 250, "2.0.0", a)
        b.expect("MAIL FROM:<small@client.test>", 250)
        b.expect("RCPT TO:<alice@example.test>", 250)
        b.send(b"BDAT %d LAST\r\n" % len(body) + body)
        b.expect(None, 250, "2.0.0")


def test_session_deadline(make_server):
    """timeout_session ends a connection that keeps talking (NOOP every
    0.3 s, each well within timeout_command)."""
    s = make_server("epoll", "sessdl", **{"limits.timeout_session": 2,
                                          "limits.max_junk_commands": 1000})
    with Raw(s.addr("smtp")) as c:
        t0 = time.monotonic()
        c.expect(None, 220)
        last = None
        while time.monotonic() - t0 < 2 + SLACK_S + 1:
            r = c.cmd("NOOP")
            if r.code != 250:
                last = r
                break
            time.sleep(0.3)
        assert last is not None and last.code == 421 and last.enhanced == "4.4.2", last
        assert 1.8 <= time.monotonic() - t0 <= 2 + SLACK_S
        assert c.at_eof()


# ---- limits on commands (default junk limit, max_commands) -----------------

def test_junk_and_command_limits(make_server):
    s = make_server("epoll", "junk", **{"limits.max_junk_commands": 100})
    with Raw(s.addr("smtp"), source=ATTACKER) as c:
        c.expect(None, 220)
        c.send(b"NOOP\r\n" * 150)
        for _ in range(100):
            c.expect(None, 250)
        c.expect(None, 421, "4.7.0")
        assert c.at_eof()
    # An accepted message starts the count again.
    with open_session(s, source=ATTACKER) as c:
        for _ in range(99):
            c.expect("NOOP", 250)
        c.expect("MAIL FROM:<junk@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: j\r\n\r\nj\r\n.\r\n")
        c.expect(None, 250)
        for _ in range(99):
            c.expect("RSET", 250)
    s.stop()
    s2 = make_server("epoll", "maxcmd", **{"limits.max_commands": 10})
    with Raw(s2.addr("smtp")) as c:
        c.expect(None, 220)
        lines = (["EHLO a.test", "MAIL FROM:<a@client.test>"] +
                 ["RCPT TO:<alice@example.test>"] * 3 + ["RSET"] * 5)
        for line in lines:
            assert c.cmd(line).code in (250, 452)
        c.expect("NOOP", 421, "4.7.0")        # the 11th command line
        assert c.at_eof()


# ---- AUTH -------------------------------------------------------------------

def _auth_attempt(addr, user, pw, barrier, out, i, source):
    try:
        with Raw(addr, tls=True, timeout=30, source=source) as c:
            c.expect(None, 220)
            c.expect("EHLO auth.test", 250)
            barrier.wait(20)
            t0 = time.monotonic()
            r = c.cmd(f"AUTH PLAIN {plain_token(user, pw)}")
            out[i] = (r.code, r.enhanced, time.monotonic() - t0)
    except Exception as e:
        out[i] = ("error", repr(e), 0)


def test_parallel_wrong_auth(make_server):
    """40 wrong AUTHs (40 distinct passwords) at once from one address,
    max_failures 5: 5 get 535, 35 get 454 at once (attempts count while in
    flight).  A good user on another address authenticates and sends
    meanwhile, unslowed."""
    s = make_server("epoll", "auth40", **{"auth.max_failures": 5,
                                          "auth.account_max_failures": 1000})
    n = 40
    out = [None] * n
    barrier = threading.Barrier(n + 1)
    addr = s.addr("submissions")
    # The good user has logged in before (its password is in the success
    # cache); a cold check would wait behind the max_failures attempts that
    # are admitted, by design.
    assert_serving(s, "submissions")
    # The attackers connect (TLS, EHLO) first; the attack is their AUTHs,
    # sent at once when the barrier opens.
    threads = [threading.Thread(target=_auth_attempt,
                                args=(addr, ALICE, f"wrong-{i}", barrier, out, i, ATTACKER))
               for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while barrier.n_waiting < n and time.monotonic() < deadline:
        time.sleep(0.05)
    with Attack(s, "40 parallel wrong AUTHs", "epoll", extra_kb=2 * ARGON2_KB):
        good = GoodClient(s, role="submissions", auth=(ALICE, USERS[ALICE]), sender=ALICE)
        with good:
            time.sleep(0.2)
            barrier.wait(10)
            for t in threads:
                t.join(60)
            time.sleep(0.5)
        good.check(s, "AUTH user during the AUTH flood")
        Attack.FIGURES.append(("  (AUTH user during it)", "epoll", good.p99() * 1000, 0,
                               len(good.lat), 0))
    codes = sorted((o[0], o[1]) for o in out)
    assert codes == [(454, "4.7.0")] * 35 + [(535, "5.7.8")] * 5, codes
    # The 454s came at once, without waiting for argon2id.
    slow = [o for o in out if o[0] == 454 and o[2] > 0.5]
    assert not slow, slow


def _metric(srv, name, **labels):
    host, port = srv.addr("metrics")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    lb = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + lb + '}')} (\S+)$", body, re.M)
    return float(m.group(1)) if m else 0.0


def test_parallel_identical_wrong_auth(make_server):
    """40 AUTHs at once from one address with the same wrong password,
    max_failures 5: one guess.  They share one argon2id check (those that
    come after it ended make another): all 40 get 535, and the address is
    charged one failure per check, not per connection -- it has exactly
    5 - checks guesses left."""
    s = make_server("epoll", "auth40same", **{"auth.max_failures": 5,
                                              "auth.account_max_failures": 1000,
                                              "listen.metrics": "127.0.0.1:0"})
    n = 40
    out = [None] * n
    barrier = threading.Barrier(n)
    addr = s.addr("submissions")
    threads = [threading.Thread(target=_auth_attempt,
                                args=(addr, ALICE, "wrong", barrier, out, i, ATTACKER))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = sorted((o[0], o[1]) for o in out)
    assert codes == [(535, "5.7.8")] * n, codes
    checks = _metric(s, "ortoo_auth_verifications_total", by="argon2id")
    shared = _metric(s, "ortoo_auth_verifications_total", by="shared")
    assert 1 <= checks < 5 and checks + shared == n, (checks, shared)
    left = 5 - int(checks)
    for i in range(left + 1):
        with Raw(addr, tls=True, timeout=30, source=ATTACKER) as c:
            c.expect(None, 220)
            c.expect("EHLO auth.test", 250)
            c.expect(f"AUTH PLAIN {plain_token(ALICE, f'other-{i}')}",
                     *((535, "5.7.8") if i < left else (454, "4.7.0")))
    assert_serving(s, "submissions")


def test_auth_queue_bound(make_server):
    """One password worker and max_queue 2: ten AUTHs at once from ten
    addresses (not throttled) -- those that do not fit get 454 at once, none
    waits behind the whole flood."""
    s = make_server("epoll", "authq", **{"auth.workers": 1, "auth.max_queue": 2,
                                         "auth.max_failures": 1000,
                                         "auth.account_max_failures": 1000})
    n = 10
    out = [None] * n
    barrier = threading.Barrier(n)
    addr = s.addr("submissions")
    threads = [threading.Thread(target=_auth_attempt,
                                args=(addr, ALICE, f"wrong-{i}", barrier, out, i,
                                      f"127.0.1.{i + 1}"))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    busy = [o for o in out if o[0] == 454]
    assert all(o[0] in (454, 535) for o in out), out
    assert len(busy) >= n - 4, out          # 1 running + 2 queued (+ 1 racing the worker)
    assert all(o[2] < 0.5 for o in busy), busy
    assert_serving(s, "submissions")


NS_SERVER = "2001:db8::1"


@pytest.fixture
def netns():
    """A network namespace with lo up and test addresses on it."""
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the IPv6 /64 AUTH test needs root for a network namespace")
    name = f"ortoo-t{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        addrs = [NS_SERVER] + [f"2001:db8::{i:x}" for i in range(0x100, 0x110)] + \
            ["2001:db8:1::5"]
        for a in addrs:
            subprocess.run(["ip", "-n", name, "addr", "add", f"{a}/128", "dev", "lo", "nodad"],
                           check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


NS_CLIENT = r'''
import base64, json, socket, ssl, sys
port = int(sys.argv[1]); out = []
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
tok = base64.b64encode(b"\0alice@example.test\0wrong").decode()
def reply(f):
    while True:
        l = f.readline().decode()
        if len(l) < 4 or l[3] == " ":
            return l.strip()
for src in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6); s.settimeout(20); s.bind((src, 0))
    s.connect(("2001:db8::1", port)); s = ctx.wrap_socket(s); f = s.makefile("rb")
    reply(f); s.sendall(b"EHLO v6.test\r\n"); reply(f)
    s.sendall(f"AUTH PLAIN {tok}\r\n".encode()); out.append([src, reply(f)])
    s.close()
print(json.dumps(out))
'''


def test_auth_ipv6_prefix(make_server, netns):
    """Wrong AUTHs from 16 addresses of one IPv6 /64: after max_failures the
    whole /64 gets 454, whatever address it uses next; another /64 does not."""
    s = make_server("epoll", "authv6", start=False, **{
        "auth.max_failures": 3, "auth.account_max_failures": 1000,
        "listen.smtp": None, "listen.submission": None,
        "listen.submissions": f"[{NS_SERVER}]:0"})
    s.wrapper = ["ip", "netns", "exec", netns]
    s.start()
    port = s.addr("submissions", socket.AF_INET6)[1]
    srcs = [f"2001:db8::{i:x}" for i in range(0x100, 0x110)] + ["2001:db8:1::5"]
    p = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", NS_CLIENT,
                        str(port)] + srcs, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    codes = [r[:3] for _, r in got]
    assert codes[:3] == ["535"] * 3, got
    assert codes[3:16] == ["454"] * 13, got
    assert codes[16] == "535", got             # 2001:db8:1::/64 is someone else
    s.stop()


# ---- logs ------------------------------------------------------------------

FORGED = 'x\nlevel=info event=auth-failed user=root client=203.0.113.7\r" = "'


def test_log_injection(make_server):
    """A SASL user name with \\n, \\r, '"' and '=' (and an address with a
    quoted local part) stays one value of one line: every line of the session
    parses as logfmt and gives the exact bytes back."""
    s = make_server("epoll", "logs")
    with Raw(s.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO logs.test", 250)
        c.expect(f"AUTH PLAIN {plain_token(FORGED, 'pw')}", 535)
        c.expect("AUTH LOGIN", 334)
        c.expect(base64.b64encode(FORGED.encode()).decode(), 334)
        c.expect(base64.b64encode(b"pw").decode(), 535)
    quoted = '"a b=c\\"d"@client.test'
    with open_session(s) as c:
        c.expect(f"MAIL FROM:<{quoted}>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: bare\r\n\r\nbare\nLF\r\n.\r\n")
        c.expect(None, 554, "5.6.0")
    time.sleep(0.3)
    lines = run_log(s)
    assert not any(l.startswith("level=info event=auth-failed") or
                   l.lstrip().startswith('" = "') for l in lines), lines
    forged = [l for l in lines if "203.0.113.7" in l]
    fails = [l for l in lines if "event=auth-failed" in l]
    assert len(fails) == 2 and forged == fails, lines
    for l in fails:
        kv = logfmt_parse(l)
        assert kv is not None, f"does not parse: {l!r}"
        assert kv["event"] == "auth-failed" and kv["client"] == "127.0.0.1", kv
        assert logfmt_unescape(kv["user"]) == FORGED.encode(), kv
    rej = [l for l in lines if "event=rejected" in l and "bare-lf" in l]
    assert len(rej) == 1, lines
    kv = logfmt_parse(rej[0])
    assert kv is not None, rej
    assert logfmt_unescape(kv["addr"]) == f"<{quoted}>".encode(), kv
    for l in lines:
        if "session=" in l and "event=" in l:
            assert logfmt_parse(l) is not None, f"unparsable line {l!r}"


# ---- one daemon per spool ----------------------------------------------------

def test_second_serve_refused(make_server):
    s = make_server("epoll", "lock")
    pidfile = os.path.join(s.dir, "spool", "ortoo.pid")
    for _ in range(50):                      # written just after event=ready
        if os.path.exists(pidfile):
            break
        time.sleep(0.1)
    before = open(pidfile).read()
    assert before.strip() == str(s.proc.pid)
    p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert f"another ortoo (pid {s.proc.pid}) is already serving the spool" in p.stderr, \
        p.stderr
    assert s.alive()
    assert open(pidfile).read() == before
    assert_serving(s)
    assert s.stop() == 0
    assert not os.path.exists(pidfile)
    # After a kill -9 the lock goes with the process: a restart works.
    s.start()
    s.kill()
    s.start()
    assert_serving(s)


# ---- ortoo send ------------------------------------------------------------------

def _send(args, stdin=None, timeout=60):
    p = subprocess.run([ORTOO, "send", "--from", "send@client.test", "--to", ALICE] + args,
                       input=stdin, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def test_send_refuses_plaintext_password(make_server):
    s = make_server("epoll", "send", **{"server.timeout_tls": 2})
    host, port = s.addr("smtp")
    rc, out, err = _send(["--server", f"{host}:{port}", "--user", ALICE,
                          "--password-stdin"], stdin=USERS[ALICE] + "\n")
    assert rc == 2 and "refusing to send a password without TLS" in err, (rc, err)
    assert "AUTH" not in out
    # --allow-plaintext-auth towards loopback: sent (and refused by ortoo, 538).
    rc, out, err = _send(["--server", f"{host}:{port}", "--user", ALICE,
                          "--password-stdin", "--allow-plaintext-auth"],
                         stdin=USERS[ALICE] + "\n")
    assert rc == 1 and "C: AUTH PLAIN ****" in out and "538 5.7.11" in out, (out, err)
    rc, out, err = _send(["--server", f"{host}:{port}", "--starttls", "--tls"])
    assert rc == 2 and "exclude each other" in err, err
    # Plain text to the implicit-TLS port: a hint, not a 30 s mystery.
    shost, sport = s.addr("submissions")
    t0 = time.monotonic()
    rc, out, err = _send(["--server", f"{shost}:{sport}"])
    assert rc == 1 and "try --tls" in err, (rc, out, err)
    assert time.monotonic() - t0 < 2 + SLACK_S + 2
    # TLS to the plaintext port: the other hint.
    rc, out, err = _send(["--server", f"{host}:{port}", "--tls", "--insecure"])
    assert rc == 1 and "use --starttls instead of --tls" in err, (rc, out, err)

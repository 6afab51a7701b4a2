# SPDX-License-Identifier: MIT
"""Issue 12 part 5 (apps' relay) and issue 8's penalty box, through the real
binary (core/policy.h has the rules).

- A client in [relay] trusted_networks (127.0.0.1/32 here) relays to a
  remote domain without STARTTLS or AUTH, on port 25 and on 587; what it
  sends is a submission: DKIM-signed when From is a local domain with a key
  (verified with python3-dkim), given a Date and a Message-ID; any sender.
  Another address (127.0.0.2, bound by the client) cannot relay (550 5.7.1)
  and must STARTTLS and AUTH on 587.
- AUTH from a trusted address: app A's failures do not throttle app B (no
  per-prefix count there), while A's account still stops at its maximum;
  from an untrusted address the per-prefix count still applies.
- [relay] messages_per_hour: past it MAIL gets 452 4.7.1, counted across the
  two reactors (each message sent on a connection known, from the debug log,
  to be on reactor 0 or on reactor 1); also per trusted prefix.
- Penalty box: a client closed for abuse (junk limit) is refused at accept
  with 421 4.7.0 (implicit TLS: a close) for penalty_time and admitted
  after; a good client from another address is served meanwhile; the box
  is bounded (penalty_slots); a non-loopback prefix's box doubles (in a
  network namespace, as root).
"""

import os
import re
import socket
import subprocess
import time

import dkim
import pytest

from conftest import (ORTOO, QUEUED_RE, USERS, Raw, assert_serving, check, open_session,
                      plain_token, run_ortoo, wait_log)

ALICE = "alice@example.test"
BOB = "bob@example.test"
REMOTE = "friend@elsewhere.example"
OTHER = "127.0.0.2"
TRUST_LO = {"relay.trusted_networks": "127.0.0.1/32"}


def queue_show(srv, qid):
    """The stored message with what delivery sends ahead of it (bytes)."""
    p = subprocess.run([ORTOO, "-c", srv.dir, "queue", "show", qid, "--raw"],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def dkim_records(srv, domain="example.test"):
    """{name: TXT value} from `ortoo dkim show` (strings joined)."""
    out, name = {}, None
    for line in run_ortoo(srv.dir, "dkim", "show", domain).stdout.splitlines():
        m = re.match(r"\s*name:\s+(\S+)$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"\s*value:\s+(.*)$", line)
        if m and name:
            out[name.lower().rstrip(".")] = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"',
                                                               m.group(1)))
            name = None
    return out


def verified(msg, records):
    """The a= of every DKIM-Signature of msg that python3-dkim verifies."""
    def dnsfunc(name, timeout=5):
        v = records.get((name.decode() if isinstance(name, bytes) else name)
                        .rstrip(".").lower())
        return v.encode() if v is not None else None
    hb = msg.split(b"\r\n\r\n", 1)[0]
    n = len(re.findall(rb"(?im)^DKIM-Signature:", hb))
    d = dkim.DKIM(msg)
    ok = []
    for i in range(n):
        try:
            if d.verify(idx=i, dnsfunc=dnsfunc):
                ok.append(i)
        except dkim.DKIMException:
            pass
    return n, ok


def relay_one(c, sender, rcpt, body):
    c.expect(f"MAIL FROM:<{sender}>", 250)
    c.expect(f"RCPT TO:<{rcpt}>", 250)
    c.expect("DATA", 354)
    c.send(body + b".\r\n")
    r = c.reply()
    m = QUEUED_RE.match(f"{r.code} {r.text}")
    assert m, f"not queued: {r!r}\n{c.dump()}"
    return m.group(1)


# ---- trusted networks ------------------------------------------------------

def test_trusted_relay_signed(fresh):
    s = fresh("trusted", **TRUST_LO)
    records = dkim_records(s)
    assert records, "ortoo init made no DKIM key for example.test"
    body = (b"From: App <noreply@example.test>\r\nTo: <friend@elsewhere.example>\r\n"
            b"Subject: from an app\r\n\r\nHello from a local app.\r\n")
    # Port 25 and 587, plaintext, no AUTH, a sender the app does not "own".
    for role in ("smtp", "submission"):
        with Raw(s.addr(role), source="127.0.0.1") as c:
            c.expect(None, 220)
            c.expect("EHLO app.test", 250)
            qid = relay_one(c, "noreply@example.test", REMOTE, body)
            c.expect("QUIT", 221)
        row = s.queue_by_id()[qid]
        assert row["recipients"] == [REMOTE], row
        got = queue_show(s, qid)
        assert got.endswith(body), got[:500]
        n, ok = verified(got, records)
        assert n >= 1 and ok == list(range(n)), got[:3000]
        assert re.search(rb"\bd=example\.test;", got)
        # A submission: Date and Message-ID were added (and signed).
        hb = got.split(b"\r\n\r\n", 1)[0]
        assert re.search(rb"(?m)^Date: ", hb) and re.search(rb"(?m)^Message-ID: <", hb), hb
    # From a domain without a key: relayed, unsigned.
    with Raw(s.addr("smtp"), source="127.0.0.1") as c:
        c.expect(None, 220)
        c.expect("EHLO app.test", 250)
        qid = relay_one(c, "x@nokey.example",
                        REMOTE, b"From: x@nokey.example\r\nSubject: s\r\n\r\nx\r\n")
    assert b"DKIM-Signature:" not in queue_show(s, qid)
    # Another address cannot relay, and must use TLS and AUTH on 587.
    with Raw(s.addr("smtp"), source=OTHER) as c:
        c.expect(None, 220)
        c.expect("EHLO other.test", 250)
        c.expect("MAIL FROM:<noreply@example.test>", 250)
        c.expect(f"RCPT TO:<{REMOTE}>", 550, "5.7.1")
        c.expect("RCPT TO:<alice@example.test>", 250)   # local mail still comes in
    with Raw(s.addr("submission"), source=OTHER) as c:
        c.expect(None, 220)
        c.expect("EHLO other.test", 250)
        c.expect("MAIL FROM:<noreply@example.test>", 530, "5.7.0")
    with Raw(s.addr("submissions"), tls=True, source=OTHER) as c:
        c.expect(None, 220)
        c.expect("EHLO other.test", 250)
        c.expect("MAIL FROM:<noreply@example.test>", 530, "5.7.0")
    # A trusted client that authenticates is held to its user's senders.
    with open_session(s, "submission", auth=(ALICE, USERS[ALICE]), source="127.0.0.1") as c:
        c.expect("MAIL FROM:<noreply@example.test>", 553, "5.7.1")


def test_untrusted_by_default(fresh):
    """No trusted_networks (the default): loopback relays only with AUTH."""
    s = fresh("untrusted")
    with open_session(s, "smtp", source="127.0.0.1") as c:
        c.expect("MAIL FROM:<noreply@example.test>", 250)
        c.expect(f"RCPT TO:<{REMOTE}>", 550, "5.7.1")


# ---- AUTH throttling on a trusted address ------------------------------------

def _auth(s, user, pw, source):
    with Raw(s.addr("submissions"), tls=True, source=source) as c:
        c.expect(None, 220)
        c.expect("EHLO app.test", 250)
        r = c.cmd(f"AUTH PLAIN {plain_token(user, pw)}")
        return r.code, r.enhanced


def test_apps_do_not_throttle_each_other(fresh):
    s = fresh("apps", **TRUST_LO, **{"auth.max_failures": 3,
                                     "auth.account_max_failures": 5})
    # App A (alice's account) keeps failing from 127.0.0.1: its own account
    # stops at 5 failures ...
    codes = [_auth(s, ALICE, "wrong", "127.0.0.1") for _ in range(6)]
    assert codes == [(535, "5.7.8")] * 5 + [(454, "4.7.0")], codes
    # ... and app B (bob) on the same address is not throttled.
    assert _auth(s, BOB, USERS[BOB], "127.0.0.1") == (235, "2.7.0")
    # From an untrusted address the per-prefix count still holds: 3
    # failures there throttle every account, bob's included.
    codes = [_auth(s, BOB, "wrong", OTHER) for _ in range(3)]
    assert codes == [(535, "5.7.8")] * 3, codes
    assert _auth(s, BOB, USERS[BOB], OTHER) == (454, "4.7.0")
    assert _auth(s, BOB, USERS[BOB], "127.0.0.1") == (235, "2.7.0")


# ---- messages per hour ------------------------------------------------------

CONNECT_RE = re.compile(r"session=(\d+)\.\w+ event=connect client=127\.0\.0\.1 port=(\d+)")


def reactor_of(s, sock, start):
    port = sock.getsockname()[1]
    m = wait_log(s, rf"session=(\d+)\.\w+ event=connect client=127\.0\.0\.1 port={port}\b",
                 start)
    return int(m.group(1))


def one_per_reactor(s, role, auth=None, tries=40):
    """Connections (past EHLO/AUTH) until one sits on each of the 2 reactors."""
    conns, spare = {}, []
    start = len(s.log)
    for _ in range(tries):
        c = open_session(s, role, auth=auth, source="127.0.0.1")
        r = reactor_of(s, c.sock, start)
        if r in conns:
            spare.append(c)
        else:
            conns[r] = c
        if len(conns) == 2:
            break
    for c in spare:
        c.close()
    assert sorted(conns) == [0, 1], f"no connection landed on both reactors: {sorted(conns)}"
    return conns[0], conns[1]


def test_messages_per_hour_across_reactors(fresh):
    s = fresh("rate", **TRUST_LO, **{"relay.messages_per_hour": 3,
                                     "server.log_level": "debug"})
    auth = (ALICE, USERS[ALICE])
    r0, r1 = one_per_reactor(s, "submissions", auth=auth)
    msg = b"From: alice@example.test\r\nSubject: rate\r\n\r\nx\r\n"
    with r0, r1:
        relay_one(r0, ALICE, REMOTE, msg)
        relay_one(r1, ALICE, REMOTE, msg)
        # A transaction that ends without a message gives its count back.
        r1.expect(f"MAIL FROM:<{ALICE}>", 250)
        r1.expect("RSET", 250)
        relay_one(r0, ALICE, REMOTE, msg)
        # 3 an hour, counted on both reactors: the 4th is refused on each.
        r1.expect(f"MAIL FROM:<{ALICE}>", 452, "4.7.1")
        r0.expect(f"MAIL FROM:<{ALICE}>", 452, "4.7.1")
    wait_log(s, r"event=limit what=messages-per-hour user=alice@example\.test")
    # Another account has its own budget ...
    with open_session(s, "submissions", auth=(BOB, USERS[BOB])) as c:
        relay_one(c, BOB, REMOTE, msg)
    # ... and so has the trusted address itself when it sends without AUTH.
    t0, t1 = one_per_reactor(s, "smtp")
    with t0, t1:
        relay_one(t0, "app@example.test", REMOTE, msg)
        relay_one(t1, "app@example.test", REMOTE, msg)
        relay_one(t0, "app@example.test", ALICE, msg)
        t1.expect("MAIL FROM:<app@example.test>", 452, "4.7.1")
    # Inbound mail (an untrusted client, no AUTH) is not counted.
    with open_session(s, "smtp", source=OTHER) as c:
        for _ in range(4):
            relay_one(c, "someone@outside.test", ALICE, msg)


# ---- penalty box ----------------------------------------------------------

BOX_CONF = {"limits.penalty_time": 3, "limits.penalty_max": 60,
            "limits.max_junk_commands": 5}


def offend(s, source, role="smtp"):
    """A session closed for abuse: the junk-command limit (421 4.7.0)."""
    with Raw(s.addr(role), source=source) as c:
        c.expect(None, 220)
        c.send(b"NOOP\r\n" * 6)
        for _ in range(5):
            c.expect(None, 250)
        c.expect(None, 421, "4.7.0")
        assert c.at_eof()


def refused(s, source, role="smtp"):
    """Connect from source: the 421 line when refused at accept, None when
    greeted (220).  (A refused connection is held, unread, for 5 s and then
    reset: the client does not wait for that.)"""
    with Raw(s.addr(role), tls=False, source=source, timeout=5) as c:
        line = c.line()
        if line.startswith("220"):
            return None
        assert line.startswith("421 "), line
        return line


def test_penalty_box(fresh):
    s = fresh("box", **BOX_CONF)
    offend(s, OTHER)
    t_boxed = time.monotonic()
    line = refused(s, OTHER)
    assert line and re.match(r"421 4\.7\.0 \S+ Your network was disconnected for abuse; "
                             r"try again in [1-3] s$", line), line
    wait_log(s, r"event=penalty-box what=junk-commands client=127\.0\.0\.2 "
                r"prefix=127\.0\.0\.2/32 seconds=3 level=0")
    # A good client from another address is served meanwhile.
    assert_serving(s)
    assert re.search(r"refused by a limit \(penalty_box [1-9]", s.cli("stats").stdout)
    # Refused for the box time ...
    while time.monotonic() - t_boxed < 2.5:
        assert refused(s, OTHER) is not None, "admitted before the box ended"
        time.sleep(0.2)
    # ... and admitted after it.
    deadline = t_boxed + 3 + 2
    while refused(s, OTHER) is not None:
        assert time.monotonic() < deadline, "still refused after the box time"
        time.sleep(0.1)
    # Loopback never doubles: a second offence boxes for 3 s again.
    start = len(s.log)
    offend(s, OTHER)
    wait_log(s, r"event=penalty-box what=junk-commands client=127\.0\.0\.2 "
                r"prefix=127\.0\.0\.2/32 seconds=3 level=0", start)
    # Implicit TLS: no plaintext; held (not read) and reset 5 s later.
    t0 = time.monotonic()
    with socket.create_connection(s.addr("submissions"), timeout=10,
                                  source_address=(OTHER, 0)) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")  # what a ClientHello would start with
        with pytest.raises(ConnectionResetError):
            raw.recv(100)
    assert 4 <= time.monotonic() - t0 <= 5 + 2.5
    # Too many errors is abuse too; a trusted address is never boxed.
    s2 = fresh("boxtrust", **BOX_CONF, **TRUST_LO)
    for _ in range(2):
        offend(s2, "127.0.0.1")
        assert refused(s2, "127.0.0.1") is None
    with Raw(s2.addr("smtp"), source=OTHER) as c:
        c.expect(None, 220)
        for _ in range(4):
            c.expect("BOGUS", 500)
        c.expect("BOGUS", 500)
        c.expect(None, 421, "4.7.0")
    assert refused(s2, OTHER) is not None


def test_penalty_box_bounded(fresh):
    """penalty_slots = 64: 100 prefixes closed for abuse, at most 64 of them
    are still refused (the box never holds more), the latest among them."""
    s = fresh("boxbound", **{"limits.penalty_time": 120, "limits.penalty_max": 120,
                             "limits.penalty_slots": 64, "limits.max_junk_commands": 5})
    sources = [f"127.0.3.{i}" for i in range(1, 101)]
    for src in sources:
        offend(s, src)
    boxed = [src for src in sources if refused(s, src) is not None]
    assert 8 <= len(boxed) <= 64, len(boxed)
    assert sources[-1] in boxed
    assert_serving(s)


NS_SERVER = "2001:db8::1"


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: the doubling box test needs root for a network namespace")
    name = f"ortoo-r{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for a in (NS_SERVER, "2001:db8:5::1", "2001:db8:6::1"):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{a}/128", "dev", "lo", "nodad"],
                           check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name])


NS_CLIENT = r'''
import json, socket, sys, time
port, src, good = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def conn(s):
    c = socket.socket(socket.AF_INET6); c.settimeout(10); c.bind((s, 0))
    c.connect(("2001:db8::1", port)); return c, c.makefile("rb")
def offend():
    c, f = conn(src); f.readline(); c.sendall(b"NOOP\r\n" * 6)
    for _ in range(6): f.readline()
    c.close()
def first(s):
    c, f = conn(s); l = f.readline().decode().strip(); c.close(); return l
out = []
t0 = time.monotonic()
for n in range(3):
    offend()
    boxed = time.monotonic()
    refused_line = first(src)
    good_line = first(good)
    while first(src).startswith("421"):
        time.sleep(0.1)
        if time.monotonic() - boxed > 30: break
    out.append([refused_line[:9], good_line[:3], round(time.monotonic() - boxed, 1)])
print(json.dumps(out))
'''


def test_penalty_box_doubles(make_server, netns):
    """A non-loopback prefix offending again as soon as it is let in: 2 s,
    then 4 s, then 8 s (penalty_max); another prefix is served throughout."""
    import json
    s = make_server("epoll", "boxv6", start=False, **{
        "limits.penalty_time": 2, "limits.penalty_max": 8, "limits.max_junk_commands": 5,
        "listen.smtp": f"[{NS_SERVER}]:0", "listen.submission": None,
        "listen.submissions": None})
    s.wrapper = ["ip", "netns", "exec", netns]
    s.start()
    port = s.addr("smtp", socket.AF_INET6)[1]
    p = subprocess.run(["ip", "netns", "exec", netns, "/usr/bin/python3", "-c", NS_CLIENT,
                        str(port), "2001:db8:5::1", "2001:db8:6::1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert [g[:2] for g in got] == [["421 4.7.0", "220"]] * 3, got
    for (_, _, took), box in zip(got, (2, 4, 8)):
        assert box - 0.5 <= took <= box + 2.5, got
    s.stop()


# ---- mail loops (RFC 5321 6.3) ----------------------------------------------

def _hops_msg(n):
    return (b"".join(b"Received: from hop%d.example by hop%d.example; Mon, 1 Dec 2026 00:00:00 +0000\r\n"
                     % (i, i + 1) for i in range(n))
            + b"From: <x@elsewhere.test>\r\nSubject: hops\r\n\r\nbody\r\n")


def test_too_many_hops_refused(fresh):
    """100 Received: fields are taken, 101 are a loop: 554 5.4.6 at the end of
    the data, nothing queued, and the session goes on."""
    s = fresh("hops")
    with Raw(s.addr("smtp")) as c:
        c.expect(None, 220)
        c.expect("EHLO loop.test", 250)
        qid = relay_one(c, "x@elsewhere.test", ALICE, _hops_msg(100))
        c.expect("MAIL FROM:<x@elsewhere.test>", 250)
        c.expect(f"RCPT TO:<{ALICE}>", 250)
        c.expect("DATA", 354)
        c.send(_hops_msg(101) + b".\r\n")
        r = c.reply()
        check(r, 554, "5.4.6", c)
        c.expect("NOOP", 250)
    assert list(s.queue_by_id()) == [qid]


def _free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def test_route_to_itself_loop_bounces(fresh):
    """A route that points back at the server itself: the message goes round
    until it carries more than 100 Received: fields, ortoo then refuses it to
    itself, and its sender gets a DSN with 5.4.6; nothing stays queued."""
    port = _free_port()
    s = fresh("loop", **TRUST_LO, **{"listen.smtp": f"127.0.0.1:{port}",
                                     "routes.*": f"[127.0.0.1]:{port}",
                                     "delivery.hold": "off", "delivery.retry": "1s"})
    with Raw(s.addr("smtp"), source="127.0.0.1") as c:
        c.expect(None, 220)
        c.expect("EHLO app.test", 250)
        relay_one(c, ALICE, REMOTE,
                  b"From: <alice@example.test>\r\nSubject: loop\r\n\r\nround and round\r\n")
    new = os.path.join(s.dir, "maildir", "example.test", "alice", "Maildir", "new")
    deadline = time.monotonic() + 90
    dsn = None
    while time.monotonic() < deadline and dsn is None:
        for f in sorted(os.listdir(new)) if os.path.isdir(new) else []:
            with open(os.path.join(new, f), "rb") as fh:
                data = fh.read()
            if b"multipart/report" in data:
                dsn = data
        time.sleep(0.2)
    assert dsn is not None, "no DSN after 90 s\n" + s.tail(30)
    assert b"Status: 5.4.6" in dsn, dsn[:3000]
    assert b"Too many hops" in dsn, dsn[:3000]
    deadline = time.monotonic() + 30
    while s.queue_by_id() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not s.queue_by_id(), s.queue_by_id()

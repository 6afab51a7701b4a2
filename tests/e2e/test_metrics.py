# SPDX-License-Identifier: MIT
"""Metrics: the Prometheus endpoint ([listen] metrics) and `ortoo stats`.

Scrapes are parsed by prometheus_client's parser (python3-prometheus-client)
and linted by `promtool check metrics`; a real Prometheus server (Debian's
`prometheus`) scrapes the endpoint on loopback.  The counters move as mail
flows: messages and recipients received (and their bytes, exactly),
rejections by reason, connections by role and refused by a limit, AUTH,
DKIM, local submission, the spool's group-commit histograms, the queue's
gauges; TLS handshakes full and resumed come from `openssl s_client`
-sess_out/-sess_in.  The HTTP side: bad requests get 400/404/405/505/431,
and silent or half-sent clients hold neither another scrape nor the
daemon.  `ortoo stats` shows the same figures.  docs/metrics.md documents
exactly the families the endpoint serves.

Tests that count mail run under both io backends; the HTTP responder runs
on the main thread whatever the backend, so its tests use one server."""

import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (BACKENDS, HOSTNAME, ORTOO, USERS, Raw, message, open_session,
                      plain_token, run_log, send_mail, wait_log)

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "..", "..", "docs", "metrics.md")
ALICE = ("alice@example.test", USERS["alice@example.test"])
EXPO_CTYPE = "text/plain; version=0.0.4; charset=utf-8"


# ---- helpers ----------------------------------------------------------------

def scrape(srv, path="/metrics", timeout=10):
    """GET the endpoint; return (status, headers, body text)."""
    host, port = srv.addr("metrics")
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as r:
        return r.status, dict(r.headers), r.read().decode()


def parse(text):
    """{(sample name, frozenset(labels)): value} and {family: type}, through
    prometheus_client's parser (it raises on malformed input)."""
    samples, types = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def metrics(srv):
    status, headers, body = scrape(srv)
    assert status == 200
    return parse(body)[0]


def val(m, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in m, f"no series {name}{labels}"
    return m[key]


def total(m, name):
    """Sum of a family's series over all label values."""
    return sum(v for (n, _), v in m.items() if n == name)


def wait_value(srv, name, want, timeout=10, **labels):
    """Scrape until name{labels} == want (gauges settle after a close)."""
    deadline = time.monotonic() + timeout
    while True:
        v = val(metrics(srv), name, **labels)
        if v == want or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def http_raw(srv, data, timeout=15):
    """Send raw bytes to the endpoint; return everything until it closes."""
    with socket.create_connection(srv.addr("metrics"), timeout=timeout) as s:
        if data:
            s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
    return out


def status_of(resp):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
    assert m, f"not an HTTP response: {resp[:200]!r}"
    return int(m.group(1))


def promtool_check(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "" and p.stderr.strip() == "", \
        f"promtool check metrics:\n{p.stdout}\n{p.stderr}"


def s_client(addr, sess_arg, sess_file):
    p = subprocess.run(
        ["openssl", "s_client", "-connect", f"{addr[0]}:{addr[1]}", "-tls1_3",
         "-servername", HOSTNAME, "-crlf", "-ign_eof", sess_arg, sess_file],
        input="EHLO resume.test\nQUIT\n", capture_output=True, text=True, timeout=20)
    m = re.search(r"^(New|Reused), TLSv", p.stdout, re.M)
    assert m and "221" in p.stdout, f"s_client:\n{p.stdout}\n{p.stderr}"
    return m.group(1)


@pytest.fixture
def msrv(fresh):
    """A server of the current backend with the endpoint on a free port."""
    return fresh("metrics", **{"listen.metrics": "127.0.0.1:0"})


@pytest.fixture(scope="module")
def http_srv(make_server):
    """One server for the HTTP-side tests (the responder is backend-free)."""
    s = make_server(BACKENDS[0], "metrics-http", **{"listen.metrics": "0"})
    yield s
    assert s.stop() == 0


# ---- the exposition ---------------------------------------------------------

def test_scrape_format(msrv):
    status, headers, body = scrape(msrv)
    assert status == 200
    assert headers["Content-Type"] == EXPO_CTYPE
    assert int(headers["Content-Length"]) == len(body.encode())
    samples, types = parse(body)
    promtool_check(body)
    # Types as documented, a few of each kind.
    assert types["ortoo_messages_received"] == "counter"
    assert types["ortoo_queue_messages"] == "gauge"
    assert types["ortoo_spool_sync_seconds"] == "histogram"
    assert types["process_resident_memory_bytes"] == "gauge"
    assert val(samples, "ortoo_reactors") == 2
    assert val(samples, "ortoo_info", version=val_label(body, "version"),
               io=msrv.name.split("[")[1].rstrip("]")) == 1
    assert val(samples, "process_resident_memory_bytes") > 1e6
    assert val(samples, "process_open_fds") > 5
    assert abs(val(samples, "process_start_time_seconds") - time.time()) < 120
    assert 0 <= val(samples, "ortoo_uptime_seconds") < 120
    # Every label value is present from the start, zeros included.
    for reason in ["no-such-user", "relay-denied", "too-big", "other"]:
        assert val(samples, "ortoo_messages_rejected_total", reason=reason) == 0
    for cls in ["4xx", "5xx", "connect", "tls", "dns", "protocol", "expired", "local"]:
        assert val(samples, "ortoo_recipients_deferred_total", **{"class": cls}) == 0
    assert val(samples, "ortoo_spool_sync_seconds_bucket", file="segment", le="+Inf") == 0


def val_label(body, label):
    m = re.search(rf'{label}="([^"]*)"', body)
    assert m, f"no {label} label"
    return m.group(1)


def test_docs_list_every_family(http_srv):
    """docs/metrics.md names exactly the families the endpoint serves."""
    _, _, body = scrape(http_srv)
    served = set(re.findall(r"^# TYPE (\S+) ", body, re.M))
    with open(DOC) as f:
        doc = f.read()
    documented = set(re.findall(r"^\| `((?:ortoo|process)_[a-z_]+)` \|", doc, re.M))
    assert served == documented, \
        f"served, not documented: {served - documented}; documented, not served: " \
        f"{documented - served}"


def test_every_reject_reason_named(http_srv):
    """Every reason the code passes to maillog_rejected() is a label value
    of its own (io/metrics.c's table), not lumped into "other"."""
    _, _, body = scrape(http_srv)
    served = set(re.findall(r'^ortoo_messages_rejected_total\{reason="([^"]+)"\}', body, re.M))
    logged = set()
    root = os.path.join(HERE, "..", "..")
    for sub in ["core", "delivery", "io", "cli"]:
        for name in os.listdir(os.path.join(root, sub)):
            if not name.endswith(".c") or name == "maillog.c":
                continue
            with open(os.path.join(root, sub, name)) as f:
                src = f.read()
            for call in re.findall(r"maillog_rejected\((.*?)\);", src, re.S):
                # The literals after the reply ("550 5.1.1") are the reasons.
                lits = re.findall(r'"([^"]*)"', call)
                codes = [i for i, l in enumerate(lits) if re.match(r"^\d{3} \d\.", l)]
                if not codes and "v.reason" in call:
                    # The inbound checks' verdict: its reasons are the
                    # literals core/checks.c assigns to c->reason.
                    with open(os.path.join(root, "core", "checks.c")) as cf:
                        for a, b in re.findall(r'c->reason = [^;]*?"([^"]+)"(?: : "([^"]+)")?',
                                               cf.read()):
                            logged |= {a, b} - {"", "accepted"}
                    continue
                assert codes, f"{name}: no reply code in maillog_rejected({call})"
                logged |= set(lits[codes[-1] + 1:])
    assert logged, "no maillog_rejected() call found"
    assert logged <= served - {"other"}, f"reasons without a label: {logged - served}"


# ---- counters move as mail flows --------------------------------------------

def test_counters_move(msrv):
    before = metrics(msrv)
    sizes = []
    # Three messages in one SMTP session (one with two recipients), pipelined
    # DATA bodies of known size; one unknown user, one relay attempt.
    with open_session(msrv, "smtp") as c:
        for i in range(3):
            rcpts = ["alice@example.test"] + (["bob@example.test"] if i == 0 else [])
            msg = message(f"metrics {i}", body="x" * (100 * (i + 1)) + "\r\n")
            sizes.append(len(msg.encode()))
            send_mail(c, f"s{i}@client.test", rcpts, msg)
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RCPT TO:<nobody@example.test>", 550)
        c.expect("RCPT TO:<someone@elsewhere.test>", 550)
        c.expect("RSET", 250)
        c.expect("QUIT", 221)
    # Submission with AUTH: one failure, one success, one message (signed).
    with open_session(msrv, "submission") as c:
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect("EHLO client.test", 250)
        c.expect("AUTH PLAIN " + plain_token(ALICE[0], "wrong"), 535)
        c.expect("AUTH PLAIN " + plain_token(*ALICE), 235)
        msg = message("signed", sender=ALICE[0], to="bob@example.test")
        sizes.append(len(msg.encode()))
        send_mail(c, ALICE[0], ["bob@example.test"], msg)
        c.expect("QUIT", 221)
    # Local submission through the maildrop.
    p = subprocess.run([ORTOO, "-c", msrv.dir, "sendmail", "-t", "-i"],
                       input=b"To: alice@example.test\nSubject: drop\n\nfrom cron\n",
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    wait_log(msrv, r"session=maildrop event=queued")

    after = metrics(msrv)
    d = lambda name, **lb: val(after, name, **lb) - val(before, name, **lb)
    assert d("ortoo_messages_received_total") == 5
    assert d("ortoo_messages_received_recipients_total") == 6
    # Bytes: exactly what was stored for the SMTP messages, plus the drop's.
    drop_bytes = d("ortoo_messages_received_bytes_total") - sum(sizes)
    assert 0 < drop_bytes < 1000, drop_bytes
    assert d("ortoo_messages_rejected_total", reason="no-such-user") == 1
    assert d("ortoo_messages_rejected_total", reason="relay-denied") == 1
    assert d("ortoo_connections_accepted_total", role="smtp") == 1
    assert d("ortoo_connections_accepted_total", role="submission") == 1
    assert d("ortoo_auth_attempts_total", result="success") == 1
    assert d("ortoo_auth_attempts_total", result="failure") == 1
    # The wrong password ran argon2id; the right one too, or hit the cache.
    assert d("ortoo_auth_verifications_total", by="argon2id") >= 1
    assert d("ortoo_auth_verifications_total", by="argon2id") + \
        d("ortoo_auth_verifications_total", by="cache") == 2
    assert d("ortoo_auth_verifications_total", by="shared") == 0
    assert total(after, "ortoo_dkim_signatures_total") - \
        total(before, "ortoo_dkim_signatures_total") >= 1
    assert d("ortoo_maildrop_pickups_total", result="queued") == 1
    assert d("ortoo_tls_handshakes_total", side="server", result="full") == 1
    # Group commit: every message went through a durable segment batch.
    entries = d("ortoo_spool_batch_entries_sum", file="segment")
    batches = d("ortoo_spool_batch_entries_count", file="segment")
    assert entries == 5 and 1 <= batches <= 5, (entries, batches)
    assert d("ortoo_spool_sync_seconds_count", file="segment") == batches
    assert d("ortoo_spool_sync_seconds_bucket", file="segment", le="+Inf") == batches
    assert d("ortoo_spool_sync_seconds_sum", file="segment") > 0
    assert d("ortoo_spool_written_bytes_total", file="segment") > sum(sizes)
    # The queue holds them (nothing delivers yet on this branch's main).
    assert val(after, "ortoo_queue_messages") == 5
    assert val(after, "ortoo_queue_bytes") == val(after, "ortoo_messages_received_bytes_total")
    assert 0 <= val(after, "ortoo_queue_oldest_age_seconds") < 120
    assert wait_value(msrv, "ortoo_connections_open", 0) == 0

    # `ortoo stats` says the same.
    out = msrv.cli("stats").stdout
    assert re.search(r"^received: +5 messages, 6 recipients, ", out, re.M), out
    assert re.search(r"^rejected: +2 \(no-such-user 1, relay-denied 1\)$", out, re.M), out
    assert re.search(r"^auth: +1 succeeded, 1 failed, 0 throttled; \d+ password checks, "
                     r"\d+ shared, \d+ cached$", out, re.M), out
    assert re.search(r"^queue: +5 messages, .*, oldest \d+s$", out, re.M), out
    assert re.search(r"^maildrop: +1 queued, 0 rejected, 0 failed$", out, re.M), out
    assert re.search(r"^spool: +segment \d+ batches, [\d.]+ entries each, sync avg", out,
                     re.M), out
    assert re.search(r"^connections: 0 open, 2 accepted \(smtp 1, submission 1\)", out,
                     re.M), out
    prom = msrv.cli("stats", "--prometheus").stdout
    samples, _ = parse(prom)
    assert val(samples, "ortoo_messages_received_total") == 5
    promtool_check(prom)


def test_tls_full_and_resumed(msrv, tmp_path):
    before = metrics(msrv)
    addr = msrv.addr("submissions")
    sess = str(tmp_path / "sess.pem")
    assert s_client(addr, "-sess_out", sess) == "New"
    assert s_client(addr, "-sess_in", sess) == "Reused"
    assert s_client(addr, "-sess_in", sess) == "Reused"
    # A client that speaks plain text to the implicit-TLS port.
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"EHLO plain.test\r\n")
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    after = metrics(msrv)
    d = lambda **lb: val(after, "ortoo_tls_handshakes_total", **lb) - \
        val(before, "ortoo_tls_handshakes_total", **lb)
    assert d(side="server", result="full") == 1
    assert d(side="server", result="resumed") == 2
    assert d(side="server", result="failed") == 1
    assert d(side="client", result="full") == 0
    assert val(after, "ortoo_connections_accepted_total", role="submissions") - \
        val(before, "ortoo_connections_accepted_total", role="submissions") == 4
    out = msrv.cli("stats").stdout
    assert re.search(r"^tls: +server 1 full, 2 resumed, 1 failed;", out, re.M), out


def test_refused_by_limit(fresh):
    s = fresh("limit", **{"listen.metrics": "127.0.0.1:0", "server.reactors": "1",
                          "server.max_connections": "1"})
    with open_session(s, "smtp"):
        with Raw(s.addr("smtp")) as c2:
            r = c2.reply()
            assert r.code == 421, r
    m = metrics(s)
    assert val(m, "ortoo_connections_refused_total", reason="max_connections") == 1
    assert val(m, "ortoo_connections_refused_total", reason="connections_per_address") == 0
    assert val(m, "ortoo_connections_accepted_total", role="smtp") == 2
    # [limits] per_address: the second connection from 127.0.0.1.
    s = fresh("peraddr", **{"listen.metrics": "127.0.0.1:0", "limits.connections_per_address": "1"})
    with open_session(s, "smtp"):
        with Raw(s.addr("smtp")) as c2:
            r = c2.reply()
            assert r.code == 421, r
    m = metrics(s)
    assert val(m, "ortoo_connections_refused_total", reason="connections_per_address") == 1
    assert val(m, "ortoo_connections_refused_total", reason="max_connections") == 0
    assert "refused by a limit (connections_per_address 1)" in s.cli("stats").stdout


# ---- the HTTP side ----------------------------------------------------------

def test_bad_requests(http_srv):
    s = http_srv
    r = http_raw(s, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status_of(r) == 405 and b"\r\nAllow: GET, HEAD\r\n" in r
    assert status_of(http_raw(s, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")) == 404
    assert status_of(http_raw(s, b"GET /metrics HTTP/1.1\r\n\r\n")) == 400  # no Host
    assert status_of(http_raw(s, b"hello there\r\n\r\n")) == 400
    assert status_of(http_raw(s, b"GET /metrics HTTP/1.1\r\nHost: x\r\n fold\r\n\r\n")) == 400
    assert status_of(http_raw(s, b"GET /metrics HTTP/2.0\r\n\r\n")) == 505
    big = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    assert status_of(http_raw(s, big)) == 431
    r = http_raw(s, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status_of(r) == 200 and r.endswith(b"\r\n\r\n")
    assert status_of(http_raw(s, b"GET / HTTP/1.0\r\n\r\n")) == 200
    # The endpoint still serves after all that.
    assert metrics(s)[("ortoo_reactors", frozenset())] == 2


def test_slow_clients_block_nothing(http_srv):
    """Silent and half-sent clients hold their own slot: another scrape, the
    control socket and SMTP are served at once; the silent ones get 408
    (at their 10 s deadline) and are closed."""
    s = http_srv
    silent = [socket.create_connection(s.addr("metrics"), timeout=20) for _ in range(5)]
    half = socket.create_connection(s.addr("metrics"), timeout=20)
    half.sendall(b"GET /metr")
    t0 = time.monotonic()
    for _ in range(3):
        metrics(s)
    s.cli("stats")
    with open_session(s, "smtp") as c:
        send_mail(c, "slow@client.test", ["alice@example.test"], message("while slow"))
        c.expect("QUIT", 221)
    assert time.monotonic() - t0 < 5, "scrapes, stats or SMTP waited on the slow clients"
    for sock in silent + [half]:
        out = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
        sock.close()
        assert status_of(out) == 408
    waited = time.monotonic() - t0
    assert 8 < waited < 15, waited


def test_prometheus_scrapes(http_srv, tmp_path):
    """Debian's Prometheus server scrapes the endpoint: `up` is 1 and a
    counter is read back through its query API."""
    s = http_srv
    host, port = s.addr("metrics")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        web_port = probe.getsockname()[1]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: ortoo\n    static_configs:\n"
        f"      - targets: ['{host}:{port}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    p = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{web_port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        want = val(metrics(s), "ortoo_reactors")

        def query(q):
            url = f"http://127.0.0.1:{web_port}/api/v1/query?query={q}"
            with urllib.request.urlopen(url, timeout=5) as r:
                import json
                res = json.loads(r.read())["data"]["result"]
                return float(res[0]["value"][1]) if res else None

        deadline = time.monotonic() + 60
        up = reactors = None
        while time.monotonic() < deadline:
            try:
                up = query('up{job="ortoo"}')
                reactors = query("ortoo_reactors")
            except OSError:
                pass
            if up == 1 and reactors is not None:
                break
            time.sleep(0.5)
        assert up == 1 and reactors == want, \
            f"up={up} ortoo_reactors={reactors}\n" + open(tmp_path / "prometheus.log").read()[-3000:]
    finally:
        p.terminate()
        p.wait(30)
        log.close()


# ---- configuration and CLI --------------------------------------------------

def test_off_by_default(fresh):
    """No [listen] metrics, no endpoint; `ortoo stats` works all the same.
    (A non-loopback address is flagged exposed=yes in the log: checked by
    the unit test, since tests bind loopback addresses only.)"""
    s = fresh("nometrics")
    assert "metrics" not in s.addrs
    assert not any("role=metrics" in l for l in run_log(s))
    assert re.search(r"^received: +0 messages", s.cli("stats").stdout, re.M)


def test_stats_cli(fresh):
    s = fresh("statscli")
    p = s.cli("stats", "-h")
    assert p.returncode == 0 and "usage: ortoo [-c DIR] stats" in p.stdout
    p = s.cli("stats", "--bogus", check=False)
    assert p.returncode == 2 and "unexpected argument" in p.stderr
    out = s.cli("stats").stdout
    for key in ["server:", "connections:", "received:", "rejected:", "delivered:",
                "deferred:", "bounced:", "queue:", "tls:", "dns:", "dkim:", "auth:",
                "maildrop:", "spool:", "process:"]:
        assert re.search(rf"^{key} ", out, re.M), f"no {key} line:\n{out}"
    assert s.stop() == 0
    p = s.cli("stats", check=False)
    assert p.returncode == 1 and "not running" in p.stderr, p.stderr

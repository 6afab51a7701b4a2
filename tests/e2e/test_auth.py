# SPDX-License-Identifier: MIT
"""Roles, TLS and AUTH: STARTTLS on submission and SMTP_SSL on submissions
with AUTH PLAIN and LOGIN (smtplib and raw), AUTH refused before TLS, relay
refused without AUTH on the smtp role, sender ownership, STARTTLS input
injection, the per-address throttle of failed AUTH, and parallel identical
logins sharing one password check (a bulk sender's 50 connections)."""

import re
import smtplib
import socket
import struct
import threading
import time
import urllib.request

import pytest

from conftest import (QUEUED_RE, USERS, Raw, assert_serving, b64, check,
                      client_tls_context, message, open_session,
                      plain_token, run_log, send_mail)

ALICE = "alice@example.test"
ALICE_PW = USERS[ALICE]


def smtplib_auth(s, mech, user=ALICE, pw=ALICE_PW):
    s.user, s.password = user, pw
    if mech == "PLAIN":
        return s.auth("PLAIN", s.auth_plain)
    return s.auth("LOGIN", s.auth_login, initial_response_ok=False)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_submission_starttls_auth_smtplib(srv, mech):
    host, port = srv.addr("submission")
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=client_tls_context())
        assert code == 220
        s.ehlo()
        assert "LOGIN" in s.esmtp_features["auth"].upper()
        code, text = smtplib_auth(s, mech)
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        # Authenticated: anything may be relayed.
        s.mail(ALICE)
        s.rcpt("someone@elsewhere.example")
        code, text = s.data(message(f"submission {mech}", sender=ALICE,
                                    to="someone@elsewhere.example"))
        assert QUEUED_RE.match(f"{code} {text.decode()}"), text
        qid = text.decode().split()[-1]
    row = srv.queue_by_id()[qid]
    assert row["sender"] == ALICE
    assert row["recipients"] == ["someone@elsewhere.example"]


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_submissions_smtp_ssl_auth_smtplib(srv, mech):
    host, port = srv.addr("submissions")
    with smtplib.SMTP_SSL(host, port, local_hostname="client.test", timeout=10,
                          context=client_tls_context()) as s:
        s.ehlo()
        code, text = smtplib_auth(s, mech)
        assert code == 235 and text.startswith(b"2.7.0"), (code, text)
        refused = s.sendmail(ALICE, ["bob@example.test", "x@elsewhere.example"],
                             message(f"submissions {mech}", sender=ALICE))
        assert refused == {}


def test_auth_plain_with_continuation(srv):
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        r = c.expect("AUTH PLAIN", 334)
        assert r.text.strip() == "", r
        c.expect(plain_token(ALICE, ALICE_PW), 235, "2.7.0")
        send_mail(c, ALICE, ["bob@example.test"], message("plain 334", sender=ALICE))


def test_auth_login_raw(srv):
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("AUTH LOGIN", 334)
        c.expect(b64(ALICE), 334)
        c.expect(b64(ALICE_PW), 235, "2.7.0")
        # Already authenticated: a second AUTH is a bad sequence (RFC 4954 4).
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 503, "5.5.1")


def test_auth_wrong_password(srv):
    # One failure only: the shared server's throttle allows 5.
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect(f"AUTH PLAIN {plain_token(ALICE, 'wrong')}", 535, "5.7.8")
        c.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 235, "2.7.0")


def test_auth_cancelled(srv):
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("AUTH LOGIN", 334)
        c.expect("*", 501)                       # RFC 4954 4: cancelled
        c.expect("NOOP", 250, "2.0.0")


def test_submission_auth_refused_before_tls(srv):
    with open_session(srv, "submission") as c:
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 530, "5.7.0")
        c.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
        c.expect("QUIT", 221, "2.0.0")


def test_submission_mail_before_auth(srv):
    with open_session(srv, "submission") as c:
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("MAIL FROM:<alice@example.test>", 530, "5.7.0")


def test_smtp_auth_refused_before_tls(srv):
    with open_session(srv, "smtp") as c:
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 538, "5.7.11")
        c.expect("NOOP", 250)


def test_smtp_relay_denied_without_auth(srv):
    with open_session(srv, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RCPT TO:<victim@elsewhere.example>", 550, "5.7.1")
        c.expect("RCPT TO:<nobody@example.test>", 550, "5.1.1")
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message("relay denied").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, r
    row = srv.queue_by_id()[m.group(1)]
    assert row["recipients"] == ["alice@example.test"], row


def test_smtp_relay_allowed_after_starttls_auth(srv):
    with open_session(srv, "smtp", auth=(ALICE, ALICE_PW)) as c:
        qid = send_mail(c, ALICE, ["friend@elsewhere.example"],
                        message("auth relay", sender=ALICE))
    assert srv.queue_by_id()[qid]["recipients"] == ["friend@elsewhere.example"]


def test_authenticated_sender_must_be_own(srv):
    with open_session(srv, "submissions", auth=(ALICE, ALICE_PW)) as c:
        c.expect("MAIL FROM:<bob@example.test>", 553, "5.7.1")
        c.expect("MAIL FROM:<forged@elsewhere.example>", 553, "5.7.1")
        c.expect("MAIL FROM:<>", 250)
        c.expect("RSET", 250, "2.0.0")
        send_mail(c, ALICE, ["bob@example.test"], message("own", sender=ALICE))


def test_starttls_twice(srv):
    with open_session(srv, "submission") as c:
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect("EHLO client.test", 250)
        c.expect("STARTTLS", 503, "5.5.1")
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("STARTTLS", 503, "5.5.1")


@pytest.mark.parametrize("role", ["smtp", "submission"])
def test_starttls_injection_discarded(srv, role):
    """RFC 3207 5: bytes pipelined after STARTTLS are not executed under TLS."""
    with open_session(srv, role) as c:
        c.send("STARTTLS\r\nMAIL FROM:<inject@client.test>\r\n"
               "RCPT TO:<alice@example.test>\r\n")
        r = c.reply()
        check(r, 220, None, c)
        # Anything the server said in plaintext after its 220 would have been
        # read into c.buf: it must say nothing.
        assert not c.buf, f"plaintext after 220: {c.buf!r}"
        c.starttls()
        c.expect("EHLO client.test", 250)
        # Had the injected MAIL run, this RCPT would be accepted.
        if role == "smtp":
            c.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
        else:
            c.expect("RCPT TO:<alice@example.test>", 503)
        c.expect("NOOP", 250, "2.0.0")
        c.expect("QUIT", 221, "2.0.0")
        assert c.at_eof()
    assert "inject@client.test" not in [r["sender"] for r in srv.queue()]


def test_auth_throttle(fresh):
    """After max_failures failed AUTHs from an address, AUTH answers 454
    there (even with the right password), and other addresses are unaffected."""
    s = fresh("throttle", **{"auth.max_failures": 3})
    codes = []
    for _ in range(4):
        with Raw(s.addr("submissions"), tls=True) as c:
            c.expect(None, 220)
            c.expect("EHLO client.test", 250)
            r = c.cmd(f"AUTH PLAIN {plain_token(ALICE, 'bad-guess')}")
            codes.append((r.code, r.enhanced))
    assert codes == [(535, "5.7.8")] * 3 + [(454, "4.7.0")], codes
    with Raw(s.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 454, "4.7.0")
    # Another client address (loopback 127.0.0.2) still authenticates.
    with Raw(s.addr("submissions"), tls=True, source="127.0.0.2") as c:
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect(f"AUTH PLAIN {plain_token(ALICE, ALICE_PW)}", 235, "2.7.0")
    assert_serving(s)


# ---- parallel identical logins ---------------------------------------------

def scrape_counter(srv, name, **labels):
    """One sample of the metrics endpoint (0 when the series is absent)."""
    host, port = srv.addr("metrics")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    lb = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + lb + '}') if lb else ''} (\S+)$",
                  body, re.M)
    return float(m.group(1)) if m else 0.0


def _submission_login(addr, user, pw, barrier, out, i):
    """587: EHLO, STARTTLS, EHLO, wait for the others, AUTH, QUIT."""
    try:
        with Raw(addr, timeout=60) as c:
            c.expect(None, 220)
            c.expect("EHLO bulk.test", 250)
            c.expect("STARTTLS", 220)
            c.starttls()
            c.expect("EHLO bulk.test", 250)
            barrier.wait(60)
            r = c.cmd(f"AUTH PLAIN {plain_token(user, pw)}")
            out[i] = (r.code, r.enhanced)
            if r.code == 235:
                c.expect(f"MAIL FROM:<{user}>", 250)
            c.expect("QUIT", 221)
    except Exception as e:
        out[i] = ("error", repr(e))


def _login_and_reset(addr, user, pw, barrier, i):
    """AUTH, then a TCP reset while the password is being checked."""
    try:
        c = Raw(addr, timeout=60, source="127.0.0.3")
        c.expect(None, 220)
        c.expect("EHLO reset.test", 250)
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect("EHLO reset.test", 250)
        barrier.wait(60)
        c.send(f"AUTH PLAIN {plain_token(user, pw)}\r\n")
        time.sleep(0.005 * (i % 4))
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    except Exception:
        pass


def test_parallel_same_login(fresh):
    """A bulk sender opens 50 submission connections at once and logs in on
    each with the same (right) password: all 50 get 235 although only 20
    attempts per account may be in flight, and argon2id runs once (the
    others join it or find its success in the cache).  Then identical wrong
    logins whose clients reset the connection while the check runs: the
    check completes without them (a waiter that went away is never
    touched: ASan), the one that stays gets 535, and it counts as one
    failure."""
    n = 50
    s = fresh("bulk", **{"listen.metrics": "127.0.0.1:0",
                         "limits.connections_per_address": 100})
    addr = s.addr("submission")
    out = [None] * n
    barrier = threading.Barrier(n)
    threads = [threading.Thread(target=_submission_login,
                                args=(addr, ALICE, ALICE_PW, barrier, out, i))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert out == [(235, "2.7.0")] * n, out
    assert scrape_counter(s, "ortoo_auth_verifications_total", by="argon2id") == 1
    assert scrape_counter(s, "ortoo_auth_verifications_total", by="shared") + \
        scrape_counter(s, "ortoo_auth_verifications_total", by="cache") == n - 1
    assert scrape_counter(s, "ortoo_auth_attempts_total", result="success") == n
    assert scrape_counter(s, "ortoo_auth_attempts_total", result="throttled") == 0
    oks = [l for l in run_log(s) if "event=auth-ok" in l]
    assert len(oks) == n, oks
    assert len([l for l in oks if "check=argon2id" in l]) == 1, oks
    assert all(re.search(r" check=(argon2id|shared|cache)\b", l) for l in oks), oks

    # Identical wrong logins from 127.0.0.3; most hang up mid-check.
    before = scrape_counter(s, "ortoo_auth_verifications_total", by="argon2id")
    k = 12
    barrier = threading.Barrier(k + 1)
    resets = [threading.Thread(target=_login_and_reset,
                               args=(addr, ALICE, "not-it", barrier, i)) for i in range(k)]
    for t in resets:
        t.start()
    with Raw(addr, timeout=60, source="127.0.0.3") as c:
        c.expect(None, 220)
        c.expect("EHLO stays.test", 250)
        c.expect("STARTTLS", 220)
        c.starttls()
        c.expect("EHLO stays.test", 250)
        barrier.wait(60)
        c.expect(f"AUTH PLAIN {plain_token(ALICE, 'not-it')}", 535, "5.7.8")
    for t in resets:
        t.join(60)
    time.sleep(0.5)   # a check that nobody waits for any more still ends and counts
    # Each check counted one failure for 127.0.0.3, whoever waited for it
    # (normally one check; a reset AUTH that came after it ended is a new
    # one): max_failures (5) is reached after exactly 5 - checks more.
    checks = scrape_counter(s, "ortoo_auth_verifications_total", by="argon2id") - before
    assert 1 <= checks < 5, checks
    for i in range(5 - int(checks) + 1):
        with Raw(addr, timeout=30, source="127.0.0.3") as c:
            c.expect(None, 220)
            c.expect("EHLO stays.test", 250)
            c.expect("STARTTLS", 220)
            c.starttls()
            c.expect("EHLO stays.test", 250)
            r = c.cmd(f"AUTH PLAIN {plain_token(ALICE, f'guess-{i}')}")
            check(r, 535 if i < 5 - checks else 454, "5.7.8" if i < 5 - checks else "4.7.0", c)
    assert_serving(s, "submission")

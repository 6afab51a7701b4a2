# SPDX-License-Identifier: MIT
"""Every limit and bad input of the SMTP server answered with the right code
and enhanced code; after each, the server still serves a full transaction on
a new connection (assert_serving)."""

import time

import pytest

from conftest import (MAX_ERRORS, MAX_MESSAGE_SIZE, MAX_RECIPIENTS, QUEUED_RE,
                      Raw, assert_serving, check, message, open_session,
                      send_mail)


def senders(srv):
    return [r["sender"] for r in srv.queue()]


def test_command_line_too_long(srv):
    with open_session(srv) as c:
        c.expect("NOOP " + "x" * 600, 500, "5.5.2")
        c.expect("MAIL FROM:<" + "a" * 600 + "@client.test>", 500, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")
        send_mail(c, "afterlong@client.test", ["alice@example.test"], message())
    assert_serving(srv)


def test_data_line_too_long(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<longline@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message("long line", body="y" * 1200 + "\r\nend\r\n").encode()
               + b".\r\n")
        c.expect(None, 554, "5.6.0")
        # The session goes on.
        send_mail(c, "afterlongline@client.test", ["alice@example.test"],
                  message())
    assert "longline@client.test" not in senders(srv)
    assert_serving(srv)


def test_size_param_too_big(srv):
    with open_session(srv) as c:
        c.expect(f"MAIL FROM:<big@client.test> SIZE={MAX_MESSAGE_SIZE + 1}",
                 552, "5.3.4")
        c.expect(f"MAIL FROM:<ok@client.test> SIZE={MAX_MESSAGE_SIZE // 2}", 250)
    assert_serving(srv)


@pytest.mark.parametrize("how", ["DATA", "BDAT"])
def test_message_too_big(srv, how):
    line = b"z" * 998 + b"\r\n"
    body = b"Subject: too big\r\n\r\n" + line * (MAX_MESSAGE_SIZE // 1000 + 100)
    assert len(body) > MAX_MESSAGE_SIZE
    sender = f"toobig-{how.lower()}@client.test"
    with open_session(srv) as c:
        c.expect(f"MAIL FROM:<{sender}>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        if how == "DATA":
            c.expect("DATA", 354)
            c.send(body + b".\r\n")
            c.expect(None, 552, "5.3.4")
        else:
            half = len(body) // 2
            c.send(b"BDAT %d\r\n" % half + body[:half])
            r = c.reply()
            if r.code == 250:       # the first half fits; the second does not
                c.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
                r = c.reply()
            check(r, 552, "5.3.4", c)
        c.expect("RSET", 250, "2.0.0")
        send_mail(c, "aftertoobig@client.test", ["alice@example.test"], message())
    assert sender not in senders(srv)
    assert_serving(srv)


def test_message_at_limit_accepted(srv):
    head = b"Subject: near limit\r\n\r\n"
    line = b"w" * 98 + b"\r\n"
    body = head + line * ((MAX_MESSAGE_SIZE - 20000 - len(head)) // 100)
    with open_session(srv) as c:
        qid = send_mail(c, "nearlimit@client.test", ["alice@example.test"], body)
    assert srv.queue_by_id()[qid]["size"] >= len(body)


def test_too_many_recipients(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<many@client.test>", 250)
        for i in range(MAX_RECIPIENTS):
            c.expect(f"RCPT TO:<{'alice' if i % 2 else 'bob'}@example.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 452, "4.5.3")
        c.expect("DATA", 354)
        c.send(message("many").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, r
    assert len(srv.queue_by_id()[m.group(1)]["recipients"]) == MAX_RECIPIENTS
    assert_serving(srv)


def test_bad_sequence(srv):
    with open_session(srv) as c:
        c.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        c.expect("MAIL FROM:<seq@client.test>", 250)
        c.expect("DATA", 503, "5.5.1")
        c.expect("MAIL FROM:<seq@client.test>", 503, "5.5.1")
        c.expect("RSET", 250, "2.0.0")
    # max_errors is 5: the next errors on a new connection.
    with open_session(srv) as c:
        c.expect("BDAT 0 LAST", 503, "5.5.1")
        c.expect("MAIL FROM:<seq@client.test>", 250)
        c.expect("BDAT 0 LAST", 503, "5.5.1")
    assert_serving(srv)


def test_unknown_command(srv):
    with open_session(srv) as c:
        c.expect("FROB nicate", 500, "5.5.1")
        c.expect("NOOP", 250, "2.0.0")
    assert_serving(srv)


def test_address_syntax_errors(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<foo@@bar.test>", 501, "5.1.7")
        c.expect("MAIL FROM:<good@client.test>", 250)
        c.expect("RCPT TO:<alice@@example.test>", 501, "5.1.3")
        c.expect("RCPT TO:<alice@example.test>", 250)
    assert_serving(srv)


def test_unknown_mail_parameter(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<param@client.test> FROBNICATE=yes", 555, "5.5.4")
        c.expect("MAIL FROM:<param@client.test> BODY=8BITMIME", 250)
    assert_serving(srv)


def test_too_many_errors(srv):
    with open_session(srv) as c:
        replies = []
        for _ in range(MAX_ERRORS + 1):
            r = c.cmd("BOGUS")
            replies.append(r)
            if r.code == 421:
                break
        codes = [(r.code, r.enhanced) for r in replies]
        n = len(replies)
        assert n in (MAX_ERRORS, MAX_ERRORS + 1), codes
        assert codes[-1] == (421, "4.7.0"), codes
        assert all(x == (500, "5.5.1") for x in codes[:-1]), codes
        assert c.at_eof(), "not closed after 421"
    assert_serving(srv)


@pytest.mark.parametrize("payload", [
    b"hello\nworld\r\n",                 # bare LF
    b"hello\rworld\r\n",                 # bare CR
    b"hello\r\n.\nworld\r\n",            # LF-only dot line
    b"hello\n.\r\nworld\r\n",            # dot line after bare LF
])
def test_bare_lf_cr_rejected(srv, payload):
    sender = f"bare-{time.time_ns()}@client.test"
    with open_session(srv) as c:
        c.expect(f"MAIL FROM:<{sender}>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: bare\r\n\r\n" + payload + b".\r\n")
        c.expect(None, 554, "5.6.0")
        c.expect("NOOP", 250, "2.0.0")
    assert sender not in senders(srv)
    assert_serving(srv)


@pytest.mark.parametrize("fake_end", [b"\r\n.\n", b"\n.\r\n", b"\n.\n",
                                      b"\r\n.\r"])
def test_smuggling(srv, fake_end):
    """A fake end of data followed by a second transaction never yields a
    second queued message (and the first is rejected for its bare LF/CR)."""
    outer = f"outer-{time.time_ns()}@client.test"
    inner = f"smuggled-{time.time_ns()}@client.test"
    data = (b"Subject: outer\r\n\r\nouter body" + fake_end
            + b"MAIL FROM:<" + inner.encode() + b">\r\n"
            b"RCPT TO:<bob@example.test>\r\n"
            b"DATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
            b".\r\n")
    with open_session(srv) as c:
        c.expect(f"MAIL FROM:<{outer}>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(data)
        c.expect(None, 554, "5.6.0")
        # Exactly one reply for all of that: the next is NOOP's.
        c.expect("NOOP", 250, "2.0.0")
        c.expect("QUIT", 221, "2.0.0")
        assert c.at_eof()
    s = senders(srv)
    assert inner not in s, "smuggled message queued"
    assert outer not in s
    assert_serving(srv)


def test_command_timeout(fresh):
    s = fresh("timeout", **{"server.timeout_command": 3,
                            "server.timeout_data": 3})
    with Raw(s.addr("smtp")) as c:
        t0 = time.monotonic()
        c.expect(None, 220)
        c.sock.settimeout(10)
        c.expect(None, 421, "4.4.2")
        took = time.monotonic() - t0
        assert 2.5 <= took <= 7, took
        assert c.at_eof()
    # In DATA, too (timeout_data).
    with open_session(s) as c:
        c.expect("MAIL FROM:<slow@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(b"Subject: slow\r\n\r\npartial")
        c.sock.settimeout(10)
        c.expect(None, 421, "4.4.2")
        assert c.at_eof()
    assert "slow@client.test" not in senders(s)
    # A session that keeps talking is not cut off (the timeout is per
    # command, RFC 5321 4.5.3.2), on a connection made after the others.
    with open_session(s) as c:
        for _ in range(6):
            time.sleep(1)
            c.expect("NOOP", 250, "2.0.0")
    assert_serving(s)

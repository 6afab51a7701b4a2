# SPDX-License-Identifier: MIT
"""Greeting, EHLO/HELO, the simple commands, smtplib over the plain smtp
role (IPv4 and IPv6), the pipelined transaction in one write, BDAT, and what
`ortoo queue list` shows for accepted mail."""

import smtplib
import socket

from conftest import (HOSTNAME, MAX_MESSAGE_SIZE, QUEUED_RE, Raw, check,
                      message, open_session, send_mail)


def ehlo_keywords(r):
    """EHLO reply lines after the first -> {KEYWORD: params string}."""
    out = {}
    for l in r.lines[1:]:
        kw, _, params = l.partition(" ")
        out[kw.upper()] = params
    return out


def test_greeting_and_ehlo_smtp(srv):
    with Raw(srv.addr("smtp")) as c:
        r = c.reply()
        check(r, 220)
        assert r.lines[0].startswith(f"{HOSTNAME} ESMTP ortoo"), r
        r = c.expect("EHLO client.test", 250)
        assert r.lines[0].startswith(HOSTNAME), r
        kw = ehlo_keywords(r)
        for k in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
                  "CHUNKING", "STARTTLS"):
            assert k in kw, f"{k} not in EHLO reply:\n{r!r}"
        assert kw.get("SIZE") == str(MAX_MESSAGE_SIZE), r
        assert "AUTH" not in kw, f"AUTH offered before TLS:\n{r!r}"
        c.expect("QUIT", 221, "2.0.0")
        assert c.at_eof()


def test_ehlo_after_starttls_offers_auth(srv):
    with open_session(srv, "smtp") as c:
        c.expect("STARTTLS", 220)
        c.starttls()
        r = c.expect("EHLO client.test", 250)
        kw = ehlo_keywords(r)
        assert "STARTTLS" not in kw, f"STARTTLS offered under TLS:\n{r!r}"
        assert set(kw.get("AUTH", "").upper().split()) >= {"PLAIN", "LOGIN"}, r
        c.expect("QUIT", 221, "2.0.0")


def test_ehlo_submission_and_submissions(srv):
    with open_session(srv, "submission") as c:
        r = c.expect("EHLO client.test", 250)
        kw = ehlo_keywords(r)
        assert "STARTTLS" in kw and "AUTH" not in kw, r
    with Raw(srv.addr("submissions"), tls=True) as c:
        c.expect(None, 220)
        r = c.expect("EHLO client.test", 250)
        kw = ehlo_keywords(r)
        assert "STARTTLS" not in kw, r
        assert set(kw.get("AUTH", "").upper().split()) >= {"PLAIN", "LOGIN"}, r


def test_helo_has_no_extensions(srv):
    with Raw(srv.addr("smtp")) as c:
        c.expect(None, 220)
        r = c.expect("HELO client.test", 250)
        assert len(r.lines) == 1, f"HELO reply is multi-line:\n{r!r}"
        qid = send_mail(c, "helo@client.test", ["alice@example.test"],
                        message("helo"))
        c.expect("QUIT", 221, "2.0.0")
    assert qid in srv.queue_by_id()


def test_simple_commands(srv):
    with open_session(srv) as c:
        c.expect("NOOP", 250, "2.0.0")
        c.expect("RSET", 250, "2.0.0")
        c.expect("VRFY alice@example.test", 252)
        c.expect("HELP", 214)
        # RSET ends a transaction: RCPT after it is a bad sequence.
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RSET", 250, "2.0.0")
        c.expect("RCPT TO:<alice@example.test>", 503, "5.5.1")
        c.expect("QUIT", 221, "2.0.0")
        assert c.at_eof()


def test_smtplib_plain_ipv4(srv):
    host, port = srv.addr("smtp")
    msg = message("smtplib v4", sender="v4@client.test")
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.has_extn("pipelining") and s.has_extn("size")
        s.mail("v4@client.test")
        s.rcpt("alice@example.test")
        s.rcpt("bob@example.test")
        code, text = s.data(msg)
        assert code == 250, text
        m = QUEUED_RE.match(f"{code} {text.decode()}")
        assert m, text
    q = srv.queue_by_id()
    row = q[m.group(1)]
    assert row["sender"] == "v4@client.test"
    assert sorted(row["recipients"]) == ["alice@example.test", "bob@example.test"]


def test_smtplib_plain_ipv6(srv):
    host, port = srv.addr("smtp", socket.AF_INET6)
    assert host == "::1"
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        refused = s.sendmail("v6@client.test", ["bob@example.test"],
                             message("smtplib v6", sender="v6@client.test"))
        assert refused == {}
    senders = [r["sender"] for r in srv.queue()]
    assert "v6@client.test" in senders


def test_pipelined_transaction_in_one_write(srv):
    body = message("pipelined", sender="pipe@client.test")
    with Raw(srv.addr("smtp")) as c:
        c.expect(None, 220)
        c.send("EHLO client.test\r\n"
               "MAIL FROM:<pipe@client.test>\r\n"
               "RCPT TO:<alice@example.test>\r\n"
               "RCPT TO:<bob@example.test>\r\n"
               "DATA\r\n" + body + ".\r\n"
               "QUIT\r\n")
        r = c.expect(None, 250)
        assert "PIPELINING" in [l.split(" ")[0].upper() for l in r.lines[1:]]
        c.expect(None, 250, "2.1.0")
        c.expect(None, 250, "2.1.5")
        c.expect(None, 250, "2.1.5")
        c.expect(None, 354)
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, f"{r!r}\n{c.dump()}"
        c.expect(None, 221, "2.0.0")
        assert c.at_eof(), f"extra bytes or no close: {c.buf!r}"
    row = srv.queue_by_id()[m.group(1)]
    assert row["sender"] == "pipe@client.test"
    assert sorted(row["recipients"]) == ["alice@example.test", "bob@example.test"]


def test_several_messages_one_session(srv):
    with open_session(srv) as c:
        ids = [send_mail(c, f"multi{i}@client.test", ["alice@example.test"],
                         message(f"multi {i}")) for i in range(3)]
        c.expect("QUIT", 221, "2.0.0")
    assert len(set(ids)) == 3
    q = srv.queue_by_id()
    for i, qid in enumerate(ids):
        assert q[qid]["sender"] == f"multi{i}@client.test"


def test_bdat(srv):
    part1 = b"From: <bdat@client.test>\r\nSubject: bdat\r\n\r\n"
    part2 = b"first line\r\n.dot line\r\nlast line\r\n"
    with open_session(srv) as c:
        c.expect("MAIL FROM:<bdat@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        r = c.expect(None, 250, "2.0.0")
        assert f"{len(part1)} octets received" in r.text, r
        c.send(b"BDAT %d LAST\r\n" % len(part2) + part2)
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, f"{r!r}\n{c.dump()}"
        # BDAT pipelined in one write, with an empty LAST chunk.
        c.send(b"MAIL FROM:<bdat2@client.test>\r\nRCPT TO:<bob@example.test>\r\n"
               b"BDAT %d\r\n" % len(part1) + part1 + b"BDAT %d\r\n" % len(part2)
               + part2 + b"BDAT 0 LAST\r\n")
        c.expect(None, 250, "2.1.0")
        c.expect(None, 250, "2.1.5")
        c.expect(None, 250, "2.0.0")
        c.expect(None, 250, "2.0.0")
        r = c.reply()
        m2 = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m2, f"{r!r}\n{c.dump()}"
        c.expect("QUIT", 221, "2.0.0")
    q = srv.queue_by_id()
    total = len(part1) + len(part2)
    for qid, sender, rcpt in ((m.group(1), "bdat@client.test", "alice@example.test"),
                              (m2.group(1), "bdat2@client.test", "bob@example.test")):
        row = q[qid]
        assert row["sender"] == sender and row["recipients"] == [rcpt]
        # Stored dot-stuffed: ".dot line" becomes "..dot line"; a Received
        # header may be counted too.
        assert total <= row["size"] <= total + 2048, row


def test_queue_list(srv):
    body = ("x" * 98 + "\r\n") * 50
    msg = message("queue list", body=body, sender="ql@client.test")
    with open_session(srv) as c:
        qid = send_mail(c, "ql@client.test",
                        ["alice@example.test", "bob@example.test"], msg)
        c.expect("QUIT", 221, "2.0.0")
    rows = srv.queue()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "an ID listed twice"
    row = {r["id"]: r for r in rows}[qid]
    for k in ("id", "shard", "size", "age", "received_at", "sender",
              "recipients", "states"):
        assert k in row, f"key {k} missing: {row}"
    assert row["sender"] == "ql@client.test"
    assert sorted(row["recipients"]) == ["alice@example.test", "bob@example.test"]
    assert isinstance(row["states"], list) and row["states"]
    assert len(msg) <= row["size"] <= len(msg) + 2048, row
    # The text form: one row per message, then "N messages".
    p = srv.cli("queue", "list")
    lines = p.stdout.strip().splitlines()
    assert lines[-1].strip() == f"{len(rows)} message{'' if len(rows) == 1 else 's'}", lines[-1]
    mine = [l for l in lines if l.split() and l.split()[0] == qid]
    assert len(mine) == 1, p.stdout[-2000:]
    assert "ql@client.test" in mine[0] and "alice@example.test" in mine[0]

# SPDX-License-Identifier: MIT
"""The spool through the real binary: what the session stores with a message
(DSN parameters of RFC 3461, the prepended Received field), recovery from
corrupted segments and journals, and the ordering of durable writes before
the 250 (under strace)."""

from conftest import open_session, message, QUEUED_RE


def test_dsn_parameters_stored(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<dsn@client.test> RET=HDRS ENVID=QQ314159", 250)
        c.expect("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;alice+2Bx@example.test", 250)
        c.expect("RCPT TO:<bob@example.test> NOTIFY=NEVER", 250)
        c.expect("DATA", 354)
        c.send(message("dsn").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, repr(r)
        qid = m.group(1)
        # a second transaction on the same session starts clean
        c.expect("MAIL FROM:<plain@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message("plain").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, repr(r)
        qid2 = m.group(1)
        c.expect("QUIT", 221)
    rows = srv.queue_by_id()
    d = rows[qid]["dsn"]
    assert d["ret"] == "HDRS"
    assert d["envid"] == "QQ314159"
    assert d["notify"] == [1 | 2, 8]
    assert d["orcpt"] == ["rfc822;alice+2Bx@example.test", None]
    d2 = rows[qid2]["dsn"]
    assert d2 == {"ret": None, "envid": None, "notify": [0], "orcpt": [None]}

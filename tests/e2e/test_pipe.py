# SPDX-License-Identifier: MIT
"""Delivery to commands ("|command" alias targets, [local] allow_pipe = on)
through the real binary: the command gets the message on stdin (the bytes
a Maildir delivery writes, in LF line ends) and its environment (SENDER,
RECIPIENT, ORIGINAL_RECIPIENT, LOCAL, DOMAIN, EXTENSION); exit 75 defers
the recipient (no bounce); exit 1 bounces to the sender with the command's
output in the DSN; a command running past [local] pipe_timeout is killed
and deferred; with allow_pipe off a pipe target added while the server runs
is refused (the old table stays)."""

import email
import email.policy
import os
import time

from conftest import (DOMAIN, USERS, open_session, run_log, send_mail,
                      wait_log)

ALICE = "alice@example.test"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def wait_for(pred, srv, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n" + srv.tail(60))


def mailbox(srv, user="alice"):
    d = os.path.join(srv.dir, "maildir", DOMAIN, user, "Maildir", "new")
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def read(path):
    with open(path, "rb") as f:
        return f.read()


def dsns(srv):
    return [p for p in mailbox(srv) if b"multipart/report" in read(p)
            and b"Return-Path: <>" in read(p)]


def submit(srv, rcpts, body):
    """As alice on the submission port; the wire form of the message."""
    msg = (f"From: <{ALICE}>\r\nTo: <{rcpts[0]}>\r\nSubject: pipe test\r\n"
           f"Message-ID: <{time.time_ns()}@client.test>\r\n\r\n{body}")
    with open_session(srv, "submission", auth=(ALICE, USERS[ALICE])) as c:
        qid = send_mail(c, ALICE, rcpts, msg)
        c.expect("QUIT", 221)
    return qid, msg.encode()


def pipe_server(fresh, tmp_path, aliases, **over):
    conf = {"delivery.hold": "off", "local.allow_pipe": "on"}
    conf.update(over)
    srv = fresh("pipe", **conf)
    write(os.path.join(srv.dir, "domains", DOMAIN, "aliases"), aliases)
    srv.stop()
    srv.start()
    return srv


def test_pipe_gets_message_and_env(fresh, tmp_path):
    out = tmp_path / "msg"
    env = tmp_path / "env"
    srv = pipe_server(fresh, tmp_path,
                      f'bugs: "|cat > {out}; env > {env}"\n')
    body = "first line\r\n..a stuffed dot\r\nlast line\r\n"
    qid, wire = submit(srv, ["bugs+urgent@example.test", ALICE], body)
    wait_for(lambda: out.exists() and env.exists() and mailbox(srv), srv,
             "the command's files and alice's Maildir file")
    wait_for(lambda: qid not in srv.queue_by_id(), srv, "an empty queue")
    wait_log(srv, rf"msgid={qid} event=delivered rcpt=<bugs\+urgent@example.test> "
                  r".*delivered to command of bugs@example.test")
    got = out.read_bytes()
    # The Maildir copy of the same message, in LF form, with the pipe's
    # Delivered-To: the same bytes.
    md = read(mailbox(srv)[0]).replace(b"\r\n", b"\n")
    md = md.replace(b"Delivered-To: <alice@example.test>\n",
                    b"Delivered-To: <bugs@example.test>\n", 1)
    assert got == md, (got, md)
    assert got.startswith(b"Return-Path: <alice@example.test>\n"
                          b"Delivered-To: <bugs@example.test>\n"), got[:200]
    # Everything ortoo added (Received, DKIM-Signature) is in LF too.
    assert b"\r" not in got
    assert b"Received: " in got
    # The message as received: dot-unstuffed, LF line ends.
    want = wire.replace(b"\r\n..", b"\r\n.").replace(b"\r\n", b"\n")
    assert got.endswith(want), (got, want)
    envs = dict(l.split("=", 1) for l in env.read_text().splitlines() if "=" in l)
    assert envs["SENDER"] == ALICE
    assert envs["RECIPIENT"] == "bugs@example.test"
    assert envs["ORIGINAL_RECIPIENT"] == "bugs+urgent@example.test"
    assert envs["LOCAL"] == "bugs"
    assert envs["DOMAIN"] == "example.test"
    assert envs["EXTENSION"] == "urgent"
    assert envs["PATH"] == "/usr/bin:/bin"
    assert envs["HOME"] == "/" and envs["SHELL"] == "/bin/sh"
    assert envs.get("PWD") == "/"
    assert "ORTOO_BIN" not in envs and "PYTEST_CURRENT_TEST" not in envs


def test_pipe_tempfail_defers(fresh, tmp_path):
    srv = pipe_server(fresh, tmp_path, 'later: "|cat > /dev/null; exit 75"\n')
    qid, _ = submit(srv, ["later@example.test"], "try again\r\n")
    line = wait_log(srv, rf"msgid={qid} event=deferred rcpt=<later@example.test>.*")
    assert "status=4.3.0" in line.group(0) and "EX_TEMPFAIL" in line.group(0), line.group(0)
    row = srv.queue_by_id()[qid]
    assert row["states"] == ["deferred"], row
    time.sleep(0.5)
    assert not dsns(srv), "a temporary failure must not bounce"
    assert not [l for l in run_log(srv) if f"msgid={qid} event=bounced" in l]


def test_pipe_failure_bounces_with_output(fresh, tmp_path):
    srv = pipe_server(fresh, tmp_path,
                      'broken: "|echo ticket queue closed >&2; exit 1"\n')
    qid, _ = submit(srv, ["broken@example.test"], "this will bounce\r\n")
    wait_for(lambda: dsns(srv), srv, "the DSN in alice's Maildir")
    wait_for(lambda: qid not in srv.queue_by_id(), srv, "the message gone")
    dsn = email.message_from_bytes(read(dsns(srv)[0]), policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    status = [p for p in dsn.iter_parts()
              if p.get_content_type() == "message/delivery-status"][0]
    groups = status.get_payload()
    fields = {k.lower(): str(v) for k, v in groups[1].items()}
    assert fields["action"] == "failed", fields
    assert fields["status"] == "5.3.0", fields
    assert "broken@example.test" in fields["final-recipient"], fields
    diag = " ".join(fields.get("diagnostic-code", "").split())
    assert "command exited 1" in diag and "ticket queue closed" in diag, fields


def test_pipe_timeout_defers(fresh, tmp_path):
    srv = pipe_server(fresh, tmp_path, 'slow: "|sleep 30"\n',
                      **{"local.pipe_timeout": "1s"})
    t0 = time.monotonic()
    qid, _ = submit(srv, ["slow@example.test"], "slow\r\n")
    line = wait_log(srv, rf"msgid={qid} event=deferred rcpt=<slow@example.test>.*",
                    timeout=15)
    assert "timed out after 1s" in line.group(0), line.group(0)
    assert time.monotonic() - t0 < 15
    # The log line comes first; the mark reaches the journal within
    # [spool] journal_delay_ms, and `queue list` reads the journal.
    wait_for(lambda: srv.queue_by_id()[qid]["states"] == ["deferred"], srv, "the deferred mark",
             timeout=5)


def test_pipe_off_refused_on_reload(fresh, tmp_path):
    """allow_pipe off: a pipe target written while the server runs is an
    error; the table in use stays (bugs@ stays unknown)."""
    srv = fresh("nopipe")
    path = os.path.join(srv.dir, "domains", DOMAIN, "aliases")
    start = len(srv.log)
    write(path, 'bugs: "|cat > /dev/null"\n')
    wait_log(srv, r"event=reload-failed what=users .*/aliases:1: pipe target "
                  r"'\|cat > /dev/null' needs \[local\] allow_pipe = on", start=start)
    with open_session(srv, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        r = c.cmd("RCPT TO:<bugs@example.test>")
        assert r.code == 550, r

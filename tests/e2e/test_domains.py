# SPDX-License-Identifier: MIT
"""Mail for the local domains, through the real binary: who is accepted at
RCPT (users, case, plus-addressing, alias chains, the catch-all,
postmaster@ and abuse@, SRS bounce addresses, unknown names refused with
550 5.1.1), aliases edited by hand while the server runs (picked up without
a reload command; a broken file keeps the old table), `ortoo domain
add|del|list` and `ortoo user add` with a running server, start-up errors
with file:line, and the early-talker check of the delayed banner.

SRS addresses are made here with Python's hmac from the srs.key that
`ortoo init` wrote: an implementation independent of ortoo's."""

import base64
import hashlib
import hmac
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import (DOMAIN, ORTOO, Raw, check, message, open_session,
                      run_ortoo, send_mail, wait_log)

B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def srs_secret(cfg_dir):
    """The signing secret: the first line of srs.key that is not a comment."""
    with open(os.path.join(cfg_dir, "srs.key")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line
    raise AssertionError("no secret in srs.key")


def srs0(secret, sender, srs_domain, when=None):
    """SRS0=HHHH=TT=domain=local@srs_domain as libsrs2/postsrsd make it."""
    local, _, domain = sender.rpartition("@")
    day = int((time.time() if when is None else when) // 86400)
    stamp = B32[(day >> 5) & 31] + B32[day & 31]
    mac = hmac.new(secret.encode(), (stamp + domain + local).lower().encode(),
                   hashlib.sha1).digest()
    h = base64.b64encode(mac)[:4].decode()
    return f"SRS0={h}={stamp}={domain}={local}@{srs_domain}"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def rcpt(srv, addr, auth=None):
    """The reply to RCPT TO:<addr> in a fresh transaction on port 25."""
    with open_session(srv, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        r = c.cmd(f"RCPT TO:<{addr}>")
        c.cmd("QUIT")
        return r


def wait_rcpt(srv, addr, code, timeout=10):
    """Poll RCPT until it answers `code` (a reload is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        r = rcpt(srv, addr)
        if r.code == code:
            return r
        if time.monotonic() > deadline:
            raise AssertionError(f"RCPT {addr}: still {r!r} after {timeout}s\n"
                                 + srv.tail(30))
        time.sleep(0.05)


ALIASES = """# aliases of example.test
sales: team
team: alice, bob@example.test,
      team-archive@remote.example
me: me@remote.example
"""


@pytest.fixture(scope="module")
def dsrv(make_server, backend):
    """A server with aliases in example.test and a catch-all domain."""
    s = make_server(backend, "domains", start=False)
    write(os.path.join(s.dir, "domains", DOMAIN, "aliases"), ALIASES)
    run_ortoo(s.dir, "domain", "add", "catch.test")
    write(os.path.join(s.dir, "domains", "catch.test", "aliases"),
          "info: bob@example.test\n*: alice@example.test\n")
    s.start()
    yield s
    rc = s.stop()
    assert rc == 0, s.tail(40)
    assert not s.sanitizer_errors(), "\n".join(s.sanitizer_errors())


@pytest.mark.parametrize("addr", [
    "alice@example.test",             # a user
    "Alice@EXAMPLE.TEST",             # local parts without case
    "alice+newsletter@example.test",  # plus-addressing
    "BOB+x+y@example.test",
    "sales@example.test",             # alias -> alias -> users + remote
    "SALES+q3@example.test",
    "me@example.test",                # alias to a remote address
    "postmaster@example.test",        # no alias: the first user
    "abuse@example.test",
    "PostMaster@Example.Test",
    "anything@catch.test",            # the catch-all
    "info@catch.test",
    "postmaster@catch.test",
])
def test_rcpt_accepted(dsrv, addr):
    check(rcpt(dsrv, addr), 250, "2.1.5")


@pytest.mark.parametrize("addr", [
    "unknown@example.test",
    "alice-x@example.test",           # '-' is no separator by default
    "+alice@example.test",
    "teams@example.test",
    "*@example.test",
])
def test_rcpt_unknown(dsrv, addr):
    r = rcpt(dsrv, addr)
    check(r, 550, "5.1.1")
    assert "no such user" in r.text, r


def test_rcpt_not_local(dsrv):
    check(rcpt(dsrv, "alice@elsewhere.example"), 550, "5.7.1")
    # Bare <postmaster> is always ours (RFC 5321 4.5.1).
    with open_session(dsrv, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect("RCPT TO:<Postmaster>", 250)


def test_message_keeps_original_recipients(dsrv):
    """The spool stores the recipients as given; expansion is redone at
    delivery (aliases changed meanwhile apply)."""
    with open_session(dsrv, "smtp") as c:
        qid = send_mail(c, "x@client.test",
                        ["sales@example.test", "Alice+tag@example.test",
                         "nobody-here@catch.test"],
                        message("to an alias"))
        c.expect("QUIT", 221)
    m = dsrv.queue_by_id()[qid]
    assert m["recipients"] == ["sales@example.test", "Alice+tag@example.test",
                               "nobody-here@catch.test"], m


def test_srs_bounce_addresses(dsrv):
    secret = srs_secret(dsrv.dir)
    good = srs0(secret, "joe@sender.example", DOMAIN)
    check(rcpt(dsrv, good), 250, "2.1.5")
    # Hops may lowercase the local part: hash and stamp compare without case.
    check(rcpt(dsrv, good.lower()), 250, "2.1.5")
    # At any local domain, even one with a catch-all.
    check(rcpt(dsrv, srs0(secret, "joe@sender.example", "catch.test")), 250)
    # A long original sender makes a local part over RFC 5321's 64 octets:
    # the bounce must still be taken.
    long_sender = "bounce-mc.us5_12345678.98765-abcdef0123@mail123.suw11.mcdlv.example"
    long_srs = srs0(secret, long_sender, DOMAIN)
    assert len(long_srs.split("@")[0]) > 64
    check(rcpt(dsrv, long_srs), 250, "2.1.5")
    forged = srs0("not-the-secret-0123456789", "joe@sender.example", DOMAIN)
    for addr in (forged, forged.replace("@example.test", "@catch.test"),
                 srs0(secret, "joe@sender.example", DOMAIN,
                      when=time.time() - 30 * 86400),  # expired
                 "SRS0=abcd@example.test"):            # malformed
        r = rcpt(dsrv, addr)
        check(r, 550, "5.1.1")
        assert "bounce address" in r.text, r
    assert any("reason=bad-srs" in l for l in dsrv.log), dsrv.tail(20)


def test_alias_added_by_hand_applies(fresh):
    """An alias typed into the aliases file while the server runs applies
    without any command (inotify); a broken file keeps the old table and
    says why with file:line; removing the alias takes it away."""
    s = fresh("handedit")
    path = os.path.join(s.dir, "domains", DOMAIN, "aliases")
    check(rcpt(s, "helpdesk@example.test"), 550, "5.1.1")
    start = len(s.log)
    with open(path, "a") as f:   # appended in place, as an editor may
        f.write("helpdesk: alice, bob\n")
    wait_rcpt(s, "helpdesk@example.test", 250)
    wait_log(s, r"event=reloaded what=users", start)

    # A loop: refused with file:line, the current table stays.
    start = len(s.log)
    with open(path, "a") as f:
        f.write("loop1: loop2\nloop2: loop1\n")
    m = wait_log(s, r"event=reload-failed what=users err=\"(.*)\"", start)
    assert re.search(r"/aliases:\d+: alias loop: loop1@example.test -> "
                     r"loop2@example.test -> loop1@example.test", m.group(1)), m.group(0)
    check(rcpt(s, "helpdesk@example.test"), 250)
    check(rcpt(s, "loop1@example.test"), 550, "5.1.1")

    # Replaced by rename (what `ortoo` and many editors do): the catch-all.
    tmp = path + ".new"
    write(tmp, "*: bob\n")
    os.rename(tmp, path)
    wait_rcpt(s, "whatever@example.test", 250)
    wait_rcpt(s, "helpdesk@example.test", 250)   # now through the catch-all
    os.unlink(path)
    wait_rcpt(s, "whatever@example.test", 550)
    assert not s.sanitizer_errors()


def test_domain_cli_with_running_server(fresh):
    s = fresh("domaincli")
    # add: local at once, and the CLI says the server was told.
    r = s.cli("domain", "add", "New.Test")
    assert "domain new.test: added" in r.stdout, r.stdout
    assert "the running server reloaded" in r.stdout, r.stdout
    assert s.cli("domain", "list").stdout.split() == ["example.test", "new.test"]
    assert wait_local(s, "new.test"), s.tail(20)
    check(rcpt(s, "dave@new.test"), 550, "5.1.1")
    s.cli("user", "add", "dave@new.test", "--password-stdin", input="dave-pw-4\n")
    wait_rcpt(s, "dave@new.test", 250)
    wait_rcpt(s, "DAVE+x@New.Test", 250)
    # del: refused while the domain has a user; --force removes it all.
    r = s.cli("domain", "del", "new.test", check=False)
    assert r.returncode == 1 and "new.test is not empty: 1 user" in r.stderr, r.stderr
    assert os.path.isdir(os.path.join(s.dir, "domains", "new.test"))
    r = s.cli("domain", "del", "new.test", "--force")
    assert "domain new.test: deleted" in r.stdout, r.stdout
    wait_rcpt(s, "dave@new.test", 550)
    check(rcpt(s, "dave@new.test"), 550, "5.7.1")   # not ours any more: relay
    assert s.cli("domain", "list").stdout.split() == ["example.test"]
    r = s.cli("domain", "del", "new.test", check=False)
    assert r.returncode == 1 and "not a local domain" in r.stderr, r.stderr
    s.stop()
    r = s.cli("domain", "add", "later.test")
    assert "no server running: takes effect at start" in r.stdout, r.stdout


def wait_local(srv, domain, timeout=10):
    """Wait until `domain` is local (postmaster@ stops being a relay
    refusal); True when it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = rcpt(srv, f"nobody@{domain}")
        if r.code == 550 and r.enhanced == "5.1.1":
            return True
        time.sleep(0.05)
    return False


def test_user_add_needs_a_local_domain(template_dir, tmp_path):
    import shutil
    d = tmp_path / "conf"
    shutil.copytree(template_dir, d)
    r = run_ortoo(d, "user", "add", "bob@other.org", "--password-stdin",
                  input="pw-12345\n", check=False)
    assert r.returncode == 1, r
    assert "other.org is not a local domain" in r.stderr, r.stderr
    assert "ortoo domain add other.org" in r.stderr, r.stderr
    assert not os.path.exists(d / "domains" / "other.org")
    r = run_ortoo(d, "user", "add", "*@example.test", "--password-stdin",
                  input="pw-12345\n", check=False)
    assert r.returncode == 2, r
    assert "catch-all is an alias" in r.stderr and "*: you@example.test" in r.stderr, r.stderr
    assert "domains/example.test/aliases" in r.stderr, r.stderr
    users = (d / "domains" / "example.test" / "users").read_text()
    assert "*@" not in users


def test_startup_errors(make_server, backend):
    """A broken aliases file stops the start with file:line; so does a pipe
    target without [local] allow_pipe."""
    s = make_server(backend, "badaliases", start=False)
    path = os.path.join(s.dir, "domains", DOMAIN, "aliases")
    for text, want in (
            ("ok: alice\nbroken line\n", r"/aliases:2: expected 'name: target, \.\.\.'"),
            ("bugs: |/bin/cat\n",
             r"/aliases:1: pipe target '\|/bin/cat' needs \[local\] allow_pipe = on"),
            ("a: b\nb: a\n", r"/aliases:1: alias loop: a@example.test -> b@example.test"),
    ):
        write(path, text)
        p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 1, p
        assert re.search(want, p.stderr), p.stderr


def test_pipe_allowed(make_server, backend):
    s = make_server(backend, "pipes", start=False,
                    **{"local.allow_pipe": "on"})
    write(os.path.join(s.dir, "domains", DOMAIN, "aliases"),
          'tracker: "|/usr/bin/env true", alice\n')
    s.start()
    check(rcpt(s, "tracker@example.test"), 250)
    s.stop()


def test_early_talker(make_server, backend):
    """Port 25 holds the banner back for greeting_delay; a client that
    talks first gets 554 and the connection closes.  Other roles answer at
    once."""
    s = make_server(backend, "greet", **{"smtp.greeting_delay": "400ms"})
    # Polite: waits for the 220, which comes after the delay.
    t0 = time.monotonic()
    with Raw(s.addr("smtp")) as c:
        c.expect(None, 220)
        assert time.monotonic() - t0 >= 0.35
        c.expect("EHLO client.test", 250)
        c.expect("QUIT", 221)
    # Early: the command never runs.
    with Raw(s.addr("smtp")) as c:
        c.send("EHLO spammer.test\r\nMAIL FROM:<a@b.test>\r\n")
        r = c.reply()
        check(r, 554, "5.5.1")
        assert c.at_eof()
    wait_log(s, r"event=rejected stage=connect .*reason=early-talker")
    assert not any("cmd=EHLO" in l for l in s.log)
    # Submission: no delay.
    t0 = time.monotonic()
    with Raw(s.addr("submission")) as c:
        c.expect(None, 220)
        assert time.monotonic() - t0 < 0.3
    s.stop()
    assert not s.sanitizer_errors()


def test_idn_domain_local_by_a_labels(fresh):
    """A domain added by its A-labels takes mail addressed to its U-labels
    (SMTPUTF8): the RCPT is local, not relaying, and the message reaches the
    Maildir its catch-all names."""
    s = fresh("idn", **{"delivery.hold": "off"})
    r = s.cli("domain", "add", "xn--bcher-kva.test")
    assert r.returncode == 0, r.stderr
    write(os.path.join(s.dir, "domains", "xn--bcher-kva.test", "aliases"),
          "*: alice@example.test\n")
    deadline = time.monotonic() + 10
    while True:
        with open_session(s, "smtp") as c:
            c.expect("MAIL FROM:<x@elsewhere.test> SMTPUTF8", 250)
            r = c.cmd("RCPT TO:<jürgen@bücher.test>")
            if r.code == 250 or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    check(r, 250, "2.1.5")
    with open_session(s, "smtp") as c:
        c.expect("MAIL FROM:<x@elsewhere.test> SMTPUTF8", 250)
        check(c.cmd("RCPT TO:<jürgen@bächer.test>"), 550, "5.7.1")  # another domain
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<x@elsewhere.test> SMTPUTF8", 250)
        c.expect("RCPT TO:<jürgen@bücher.test>", 250)
        c.expect("DATA", 354)
        c.send(b"From: <x@elsewhere.test>\r\nSubject: idn local\r\n\r\nhallo\r\n.\r\n")
        check(c.reply(), 250)
    new = os.path.join(s.dir, "maildir", DOMAIN, "alice", "Maildir", "new")
    deadline = time.monotonic() + 20
    while not (os.path.isdir(new) and os.listdir(new)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.isdir(new) and os.listdir(new), s.tail(30)
    with open(os.path.join(new, os.listdir(new)[0]), "rb") as f:
        assert b"Subject: idn local" in f.read()

# SPDX-License-Identifier: MIT
"""DKIM signing through the real binary, verified independently.

Messages are submitted with AUTH on the submission port (plain text, MIME
multipart with attachments, 8-bit, long lines, a body of only dots, an empty
body, CRLF.CRLF split across reads, DATA and BDAT), read back with
`ortoo queue show ID --raw` (what delivery will send), and every
DKIM-Signature is verified by python3-dkim with the public keys that
`ortoo dkim show` prints (handed over through its dnsfunc), and by
`opendkim-testmsg` against a DNS server in a private network namespace.
RSA-2048 (rsa.test), Ed25519 (ed.test) and both (example.test).  A message
changed after signing must fail both verifiers.

Also: the keygen / show CLI (permissions, overwrite refusal, the 255-byte
strings), what is not signed (no AUTH, no key for the From domain), the
Date / Message-ID added to submissions, and keys picked up at reload.
"""

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import textwrap
import time
import warnings
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email import policy

import dkim
import pytest

from conftest import (ORTOO, QUEUED_RE, USERS, open_session, run_ortoo,
                      run_log, wait_log)

ALICE = ("alice@example.test", USERS["alice@example.test"])
DOMAINS = {"example.test": ("rsa-sha256", "ed25519-sha256"),
           "rsa.test": ("rsa-sha256",),
           "ed.test": ("ed25519-sha256",)}


# ---- helpers ---------------------------------------------------------------

def parse_show(text):
    """`ortoo dkim show` output -> {name: record value (strings joined)}."""
    out, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*name:\s+(\S+)$", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"\s*value:\s+(.*)$", line)
        if m and name:
            parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
            for p in parts:
                assert len(p.encode()) <= 255, f"TXT string over 255 bytes: {p!r}"
            out[name.lower()] = "".join(parts)
            name = None
    return out


def dnsfunc_for(records):
    def get(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        v = records.get(name.rstrip(".").lower())
        return v.encode() if v is not None else None
    return get


def stuff(msg):
    """RFC 5321 4.5.2: double a line-start dot (what a DATA client sends)."""
    return re.sub(rb"(?m)^\.", b"..", msg)


def queue_show(srv, qid, raw=True):
    args = [ORTOO, "-c", srv.dir, "queue", "show", qid] + (["--raw"] if raw else [])
    p = subprocess.run(args, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def header_block(msg):
    return msg.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def signatures(msg):
    """The DKIM-Signature fields of msg (unfolded), top first."""
    hb = header_block(msg)
    return [re.sub(rb"\r\n[ \t]", b" ", m) for m in
            re.findall(rb"(?ims)^DKIM-Signature:.*?\r\n(?![ \t])", hb)]


def verify_all(msg, records):
    """python3-dkim on every signature; returns the a= values that passed."""
    sigs = signatures(msg)
    d = dkim.DKIM(msg)
    passed = []
    for i, s in enumerate(sigs):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc_for(records))
        except dkim.DKIMException:
            ok = False  # some failures raise (body hash mismatch) instead of returning
        if ok:
            passed.append(re.search(rb"\ba=([\w-]+)", s).group(1).decode())
    return passed, len(sigs)


def submit(srv, msg, sender="alice@example.test", rcpts=("bob@example.test",),
           how="DATA", pieces=None, auth=ALICE, role="submission", mail_params=""):
    """Send one message; return its queue ID.

    how: DATA (msg dot-stuffed here, sent with the terminator, in `pieces`
    writes when given: a list of split offsets into the wire bytes) or BDAT
    (chunks split at `pieces`, unstuffed, the last one with LAST)."""
    with open_session(srv, role, auth=auth) as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.expect(f"MAIL FROM:<{sender}>{mail_params}", 250)
        for r in rcpts:
            c.expect(f"RCPT TO:<{r}>", 250)
        if how == "DATA":
            c.expect("DATA", 354)
            wire = stuff(msg) + b".\r\n"
            cuts = [0] + list(pieces or []) + [len(wire)]
            for a, b in zip(cuts, cuts[1:]):
                c.send(wire[a:b])
                if pieces:
                    time.sleep(0.05)  # separate reads on the server
        else:
            cuts = [0] + list(pieces or []) + [len(msg)]
            for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
                last = k == len(cuts) - 2
                c.send(b"BDAT %d%s\r\n" % (b - a, b" LAST" if last else b"") + msg[a:b])
                r = c.reply()
                if not last:
                    assert r.code == 250, f"{r!r}\n{c.dump()}"
            m = QUEUED_RE.match(f"{r.code} {r.text}")
            assert m, f"BDAT not queued: {r!r}\n{c.dump()}"
            c.expect("QUIT", 221)
            return m.group(1)
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, f"DATA not queued: {r!r}\n{c.dump()}"
        c.expect("QUIT", 221)
        return m.group(1)


def headers(frm="Alice <alice@example.test>", subject="test", extra=""):
    return (f"From: {frm}\r\nTo: Bob <bob@example.test>\r\nSubject: {subject}\r\n"
            f"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
            f"Message-ID: <{time.time_ns()}@client.test>\r\n{extra}").encode()


def multipart():
    m = MIMEMultipart()
    m["From"] = "Alice <alice@example.test>"
    m["To"] = "bob@example.test"
    m["Subject"] = "with attachments"
    m["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    m["Message-ID"] = f"<{time.time_ns()}@client.test>"
    m.attach(MIMEText("See the attached files.\n\n.\n-- \nAlice\n"))
    m.attach(MIMEApplication(bytes(range(256)) * 40, Name="data.bin"))
    m.attach(MIMEText("<p>html</p>\n", "html"))
    return m.as_bytes(policy=policy.SMTP)


BODIES = {
    "plain": headers() + b"\r\nHello Bob,\r\n\r\nA plain message.\r\n",
    "multipart": multipart(),
    "8bit": headers(subject="=?utf-8?q?caf=C3=A9?=",
                    extra="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                          "Content-Transfer-Encoding: 8bit\r\n")
            + "\r\nCafé, naïve, 東京, emoji 😀.\r\n".encode(),
    "long-lines": headers() + b"\r\n" + (b"x" * 998 + b"\r\n") * 3
                  + b" \t spaced \t  out \t\r\n" + b"y" * 997 + b"\r\n",
    "only-dots": headers() + b"\r\n.\r\n..\r\n...\r\n.\r\n",
    "empty-body": headers() + b"\r\n",
    "trailing-blank-lines": headers() + b"\r\nbody\r\n\r\n\r\n \r\n",
}


# ---- fixtures --------------------------------------------------------------

@pytest.fixture(scope="module")
def dk(make_server, backend):
    """A server with keys: example.test RSA (from init) + Ed25519, rsa.test
    RSA, ed.test Ed25519.  Yields (server, DNS records)."""
    s = make_server(backend, "dkim", start=False)
    run_ortoo(s.dir, "dkim", "keygen", "example.test", "--algo", "ed25519")
    run_ortoo(s.dir, "dkim", "keygen", "rsa.test", "--selector", "r1")
    run_ortoo(s.dir, "dkim", "keygen", "ed.test", "--algo", "ed25519", "--selector", "e1")
    s.start()
    records = {}
    for d in DOMAINS:
        records.update(parse_show(run_ortoo(s.dir, "dkim", "show", d).stdout))
    assert len(records) == 4, records
    yield s, records
    rc = s.stop()
    assert rc == 0, f"{s.name}: exit status {rc}\n" + s.tail(40)
    assert not s.sanitizer_errors(), "\n".join(s.sanitizer_errors())


# ---- signing and verification ------------------------------------------------

@pytest.mark.parametrize("how", ["DATA", "BDAT"])
@pytest.mark.parametrize("kind", sorted(BODIES))
def test_signed_and_verified(dk, kind, how):
    srv, records = dk
    msg = BODIES[kind]
    params = " BODY=8BITMIME" if kind == "8bit" else ""
    pieces = None
    if how == "BDAT":
        # Chunks that split lines, CRLFs and line-start dots.
        pieces = sorted({p for p in (1, len(msg) // 3, len(msg) // 2 + 1, len(msg) - 3)
                         if 0 < p < len(msg)})
    qid = submit(srv, msg, how=how, pieces=pieces, mail_params=params)
    got = queue_show(srv, qid)
    assert got.endswith(msg), "the stored message changed"
    passed, n = verify_all(got, records)
    assert n == 2, f"expected 2 signatures, found {n}:\n{got[:3000]!r}"
    assert sorted(passed) == ["ed25519-sha256", "rsa-sha256"], \
        f"python3-dkim passed only {passed}:\n{got[:3000]!r}"
    hb = header_block(got)
    # From over-signed, no l=, t= set; the signatures sit on top.
    for s in signatures(got):
        assert re.search(rb"h=from:\s*from:", s), s
        assert not re.search(rb";\s*l=", s), s
        assert re.search(rb";\s*t=\d+;", s), s
        assert b"c=relaxed/relaxed" in s, s
    assert got.startswith(b"DKIM-Signature:"), got[:200]
    assert hb.count(b"\r\nReceived: ") == 1


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_each_algorithm(dk, domain):
    srv, records = dk
    msg = headers(frm=f"alice@{domain}") + b"\r\nOne key or two.\r\n"
    got = queue_show(srv, submit(srv, msg))
    passed, n = verify_all(got, records)
    assert n == len(DOMAINS[domain])
    assert sorted(passed) == sorted(DOMAINS[domain]), got[:2000]
    assert re.search(rb"d=" + domain.encode().replace(b".", rb"\.") + rb";", got)


def test_terminator_split_across_reads(dk):
    """CRLF.CRLF arriving in three reads (CR | LF . | CR LF), and a
    line-start dot split from its line."""
    srv, records = dk
    msg = headers() + b"\r\nfirst\r\n.dotted line\r\nlast"
    wire_len = len(stuff(msg))
    msg += b"\r\n"
    # wire: ...last \r | \n . | \r \n ; plus a cut right after the stuffed dots
    dots_at = stuff(msg).index(b"..dotted") + 1
    qid = submit(srv, msg, pieces=[dots_at, wire_len + 1, wire_len + 3])
    got = queue_show(srv, qid)
    assert got.endswith(msg)
    passed, n = verify_all(got, records)
    assert n == 2 and len(passed) == 2, got


def test_tampered_fails(dk):
    """The verification can fail: a changed body, a changed signed field, a
    From added on top."""
    srv, records = dk
    msg = headers() + b"\r\nPay 100 EUR to account 1.\r\n"
    got = queue_show(srv, submit(srv, msg))
    assert len(verify_all(got, records)[0]) == 2
    for bad in (got.replace(b"Pay 100", b"Pay 900"),
                got.replace(b"Subject: test", b"Subject: tesT"),
                b"From: mallory@example.test\r\n" + got):
        passed, n = verify_all(bad, records)
        assert n == 2 and passed == [], f"a changed message still verifies: {passed}"
    # Whitespace changes that relaxed canonicalization ignores still pass.
    loose = got.replace(b"Subject: test", b"Subject:   test  ")
    assert len(verify_all(loose, records)[0]) == 2


def test_added_date_and_message_id(dk):
    """RFC 6409 8.2-8.3: a submission without Date and Message-ID gets both,
    signed."""
    srv, records = dk
    msg = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bare\r\n\r\nx\r\n"
    got = queue_show(srv, submit(srv, msg))
    hb = header_block(got)
    assert re.search(rb"(?m)^Date: \w{3}, \d{2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r$", hb), hb
    assert re.search(rb"(?m)^Message-ID: <[^@>\s]+@mx\.example\.test>\r$", hb), hb
    for s in signatures(got):
        assert re.search(rb"h=[^;]*date:\s*message-id", s), s
    assert len(verify_all(got, records)[0]) == 2
    # Nothing is added when the fields are there.
    got = queue_show(srv, submit(srv, BODIES["plain"]))
    assert header_block(got).count(b"\r\nDate:") == 1
    assert header_block(got).count(b"\r\nMessage-ID:") == 1


def test_not_signed(dk):
    srv, records = dk
    # Inbound on port 25 without AUTH: neither signed nor changed (ortoo
    # prepends its Authentication-Results and Received fields only).
    msg = headers() + b"\r\nfrom outside\r\n"
    with open_session(srv, "smtp") as c:
        c.expect("MAIL FROM:<someone@outside.test>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(stuff(msg) + b".\r\n")
        r = c.reply()
        qid = QUEUED_RE.match(f"{r.code} {r.text}").group(1)
    got = queue_show(srv, qid)
    assert signatures(got) == []
    assert got.startswith(b"Authentication-Results: mx.example.test;"), got[:200]
    assert b"\r\nReceived: " in header_block(got)
    bare = b"From: x@outside.test\r\nSubject: s\r\n\r\nx\r\n"
    with open_session(srv, "smtp") as c:
        c.expect("MAIL FROM:<x@outside.test>", 250)
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(bare + b".\r\n")
        r = c.reply()
        qid = QUEUED_RE.match(f"{r.code} {r.text}").group(1)
    got = queue_show(srv, qid)
    assert b"\r\nMessage-ID:" not in got and b"\r\nDate:" not in got
    # Authenticated, but the From domain has no key: not signed, completed.
    start = len(srv.log)
    got = queue_show(srv, submit(srv, b"From: alice@nokey.test\r\nSubject: s\r\n\r\nx\r\n"))
    assert signatures(got) == []
    assert b"\r\nMessage-ID: <" in header_block(got)
    wait_log(srv, r"event=dkim-unsigned user=alice@example\.test why=\"no key for the From domain\"",
             start)


def test_queue_show_envelope(dk):
    srv, _ = dk
    qid = submit(srv, BODIES["only-dots"])
    out = queue_show(srv, qid, raw=False)
    head, _, rest = out.partition(b"\n\n")
    assert f"id: {qid}".encode() in head
    assert b"sender: <alice@example.test>" in head
    assert b"recipient: <bob@example.test> pending" in head
    assert b"auth-user: alice@example.test" in head
    assert rest.endswith(BODIES["only-dots"])
    p = subprocess.run([ORTOO, "-c", srv.dir, "queue", "show", "A" * 20],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no message" in p.stderr


def test_reload_picks_up_keys(dk):
    srv, records = dk
    msg = headers(frm="alice@later.test") + b"\r\nafter reload\r\n"
    assert signatures(queue_show(srv, submit(srv, msg))) == []
    run_ortoo(srv.dir, "dkim", "keygen", "later.test", "--algo", "ed25519", "--selector", "l1")
    recs = dict(records)
    recs.update(parse_show(run_ortoo(srv.dir, "dkim", "show", "later.test").stdout))
    start = len(srv.log)
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, r"event=reloaded what=dkim keys=5", start)
    time.sleep(0.2)  # the reactors take the new set between events
    got = queue_show(srv, submit(srv, msg))
    passed, n = verify_all(got, recs)
    assert n == 1 and passed == ["ed25519-sha256"], got[:1500]
    # A broken key at reload: the current keys stay in use.
    bad = os.path.join(srv.dir, "domains", "later.test", "dkim", "broken.key")
    with open(bad, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    try:
        start = len(srv.log)
        srv.proc.send_signal(signal.SIGHUP)
        wait_log(srv, r"event=reload-failed what=dkim .*broken\.key", start)
        got = queue_show(srv, submit(srv, msg))
        assert verify_all(got, recs)[0] == ["ed25519-sha256"]
    finally:
        os.unlink(bad)
        shutil.rmtree(os.path.join(srv.dir, "domains", "later.test"))
        start = len(srv.log)
        srv.proc.send_signal(signal.SIGHUP)
        wait_log(srv, r"event=reloaded what=dkim keys=4", start)


# ---- opendkim-testmsg, against a DNS server in a private namespace -----------

NSD_CONF = """server:
    ip-address: 127.0.0.1@53
    port: 53
    username: ""
    chroot: ""
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "test."
    zonefile: "{d}/test.zone"
"""

SCRIPT = """set -u
ip link set lo up
mount --bind {d}/resolv.conf /etc/resolv.conf
nsd -c {d}/nsd.conf -d &
NSD=$!
for i in $(seq 1 100); do
    drill -p 53 @127.0.0.1 TXT {probe} 2>/dev/null | grep -q 'v=DKIM1' && break
    sleep 0.1
done
for f in {d}/msg-*; do
    opendkim-testmsg < "$f" > "$f.out" 2>&1
    echo "RESULT $(basename $f) $?"
done
kill $NSD
wait $NSD 2>/dev/null
"""


def test_opendkim_testmsg(dk, tmp_path):
    if os.geteuid() != 0:
        warnings.warn("opendkim-testmsg check SKIPPED: it needs root for a private network "
                      "namespace (unshare --net --mount)")
        pytest.skip("NOT RUN: opendkim-testmsg needs root for its private DNS namespace")
    for tool in ("opendkim-testmsg", "nsd", "drill", "unshare"):
        assert shutil.which(tool), f"{tool} missing (make deps)"
    srv, records = dk
    d = str(tmp_path)
    msgs = {}
    for kind in ("plain", "multipart", "only-dots", "empty-body", "8bit"):
        msgs[f"ok-{kind}"] = queue_show(srv, submit(
            srv, BODIES[kind], mail_params=" BODY=8BITMIME" if kind == "8bit" else ""))
    msgs["ok-rsa-only"] = queue_show(srv, submit(srv, headers(frm="alice@rsa.test") + b"\r\nr\r\n"))
    msgs["ok-ed-only"] = queue_show(srv, submit(srv, headers(frm="alice@ed.test") + b"\r\ne\r\n"))
    msgs["bad-tampered"] = msgs["ok-plain"].replace(b"A plain message", b"A plain massage")
    for name, data in msgs.items():
        with open(os.path.join(d, "msg-" + name), "wb") as f:
            f.write(data)
    zone = ["$TTL 300",
            "test. IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300",
            "test. IN NS ns.test.",
            "ns.test. IN A 127.0.0.1"]
    for name, value in records.items():
        chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
        zone.append(f"{name}. IN TXT " + " ".join(f'"{c}"' for c in chunks))
    with open(os.path.join(d, "test.zone"), "w") as f:
        f.write("\n".join(zone) + "\n")
    with open(os.path.join(d, "nsd.conf"), "w") as f:
        f.write(NSD_CONF.format(d=d))
    with open(os.path.join(d, "resolv.conf"), "w") as f:
        f.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
    probe = next(iter(records))
    with open(os.path.join(d, "run.sh"), "w") as f:
        f.write(SCRIPT.format(d=d, probe=probe))
    p = subprocess.run(["unshare", "--net", "--mount", "sh", os.path.join(d, "run.sh")],
                       capture_output=True, text=True, timeout=120)
    results = dict(re.findall(r"^RESULT msg-(\S+) (\d+)$", p.stdout, re.M))
    detail = f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}\n" + "".join(
        f"--- {n}:\n" + open(os.path.join(d, f"msg-{n}.out")).read()
        for n in msgs if os.path.exists(os.path.join(d, f"msg-{n}.out")))
    assert set(results) == set(msgs), detail
    for name, rc in results.items():
        if name.startswith("ok-"):
            assert rc == "0", f"opendkim-testmsg failed {name}\n{detail}"
        else:
            assert rc != "0", f"opendkim-testmsg accepted the tampered message\n{detail}"


# ---- the CLI -----------------------------------------------------------------

def test_keygen_and_show(tmp_path):
    d = tmp_path / "conf"
    run_ortoo(d, "init", "example.test", "--hostname", "mx.example.test")
    keys = list((d / "domains/example.test/dkim").glob("*.key"))
    assert len(keys) == 1 and keys[0].name.startswith("rsa-"), keys
    p = run_ortoo(d, "dkim", "keygen", "example.test", "--algo", "ed25519", "--selector", "s2")
    key = d / "domains/example.test/dkim/s2.key"
    mode = stat.S_IMODE(key.stat().st_mode)
    assert mode & 0o077 in (0, 0o040), f"key mode {oct(mode)}: readable by others"
    assert "s2._domainkey.example.test" in p.stdout
    rec = parse_show(p.stdout)
    assert rec["s2._domainkey.example.test"].startswith("v=DKIM1; k=ed25519; p=")
    txt = (d / "domains/example.test/dkim/s2.txt").read_text()
    assert txt.startswith("s2._domainkey.example.test. IN TXT \"v=DKIM1; k=ed25519; p=")
    # No overwrite without --force; the key stays the same.
    before = key.read_bytes()
    p = run_ortoo(d, "dkim", "keygen", "example.test", "--algo", "ed25519", "--selector", "s2",
                  check=False)
    assert p.returncode == 1 and "--force" in p.stderr
    assert key.read_bytes() == before
    run_ortoo(d, "dkim", "keygen", "example.test", "--algo", "ed25519", "--selector", "s2",
              "--force")
    assert key.read_bytes() != before
    # show: both keys, RSA split into 255-byte strings, the same as init printed.
    p = run_ortoo(d, "dkim", "show", "example.test")
    recs = parse_show(p.stdout)
    assert len(recs) == 2
    rsa_name = [n for n in recs if n.startswith("rsa-")][0]
    rsa_line = [l for l in p.stdout.splitlines() if "k=rsa" in l][0]
    assert rsa_line.count('" "') >= 1, "an RSA-2048 record needs two strings"
    assert recs[rsa_name].startswith("v=DKIM1; k=rsa; p=MIIB")
    init_again = run_ortoo(d, "init", "example.test", "--if-missing").stdout
    assert recs[rsa_name] == parse_show(init_again)[rsa_name]
    # The public key really is the key's: compare with openssl.
    pub = subprocess.run(["openssl", "pkey", "-in", str(d / "domains/example.test/dkim" /
                                                        (rsa_name.split(".")[0] + ".key")),
                          "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
    import base64
    assert recs[rsa_name].endswith("p=" + base64.b64encode(pub).decode())
    # Errors and help.
    for args, code in ((["dkim", "keygen", "bad_domain"], 2),
                       (["dkim", "keygen", "x.test", "--algo", "dsa"], 2),
                       (["dkim", "keygen", "x.test", "--selector", "a_b"], 2),
                       (["dkim", "keygen"], 2),
                       (["dkim", "show", "none.test"], 1),
                       (["dkim", "frob"], 2)):
        p = run_ortoo(d, *args, check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert p.stderr.strip(), args
    for args in (["dkim", "-h"], ["dkim", "keygen", "-h"], ["dkim", "show", "--help"]):
        p = run_ortoo(d, *args)
        assert "keygen" in p.stdout


def test_broken_key_refuses_to_start(make_server, backend):
    s = make_server(backend, "dkim-broken", start=False)
    os.makedirs(os.path.join(s.dir, "domains/example.test/dkim"), exist_ok=True)
    with open(os.path.join(s.dir, "domains/example.test/dkim/bad.key"), "w") as f:
        f.write("garbage\n")
    p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1
    assert "DKIM" in p.stderr and "bad.key" in p.stderr, p.stderr

# SPDX-License-Identifier: MIT
"""Session corners: a client that pipelines everything and half-closes still
gets every reply; input pipelined while the spool syncs is kept; large
pipelined BDAT chunks while the previous message is being synced."""

import socket

from conftest import DOMAIN, QUEUED_RE

RCPT = f"alice@{DOMAIN}"


def read_all(sock, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode("utf-8", "replace")
        data += chunk


def transaction(sender, body="Subject: t\r\n\r\nhello\r\n"):
    return (f"MAIL FROM:<{sender}>\r\nRCPT TO:<{RCPT}>\r\nDATA\r\n"
            f"{body}.\r\n")


def test_half_close_after_pipelined_transactions(srv):
    """Three transactions and QUIT in one write, then SHUT_WR: three 250s,
    then 221, then EOF (RFC 5321 / 2920: replies are owed for all of it)."""
    host, port = srv.addr("smtp")
    s = socket.create_connection((host, port))
    payload = "EHLO client.test\r\n"
    for i in range(3):
        payload += transaction(f"half-{i}@client.test")
    payload += "QUIT\r\n"
    s.sendall(payload.encode())
    s.shutdown(socket.SHUT_WR)
    out = read_all(s)
    s.close()
    lines = out.split("\r\n")
    ids = [m.group(1) for m in (QUEUED_RE.match(l) for l in lines) if m]
    assert len(ids) == 3, out
    assert lines[-2].startswith("221 2.0.0"), out
    listed = {m["id"]: m for m in srv.queue()}
    for i, mid in enumerate(ids):
        assert listed[mid]["sender"] == f"half-{i}@client.test"


def test_bdat_pipelined_big_chunks(srv):
    """Two messages sent with pipelined BDAT chunks of 200 KB each: the
    second message's chunks arrive while the first is being synced."""
    host, port = srv.addr("smtp")
    s = socket.create_connection((host, port))
    chunk = (("x" * 98 + "\r\n") * 2000).encode()  # 200,000 bytes
    payload = b"EHLO client.test\r\n"
    for i in range(2):
        payload += (f"MAIL FROM:<bdat-{i}@client.test>\r\nRCPT TO:<{RCPT}>\r\n").encode()
        payload += f"BDAT {len(chunk)}\r\n".encode() + chunk
        payload += f"BDAT {len(chunk)} LAST\r\n".encode() + chunk
    payload += b"QUIT\r\n"
    s.sendall(payload)
    out = read_all(s)
    s.close()
    lines = out.split("\r\n")
    ids = [m.group(1) for m in (QUEUED_RE.match(l) for l in lines) if m]
    assert len(ids) == 2, out
    assert sum(1 for l in lines if l.startswith("250 2.0.0 200000 octets")) == 2, out
    listed = {m["id"]: m for m in srv.queue()}
    for mid in ids:
        assert listed[mid]["size"] >= 2 * len(chunk), listed[mid]


def test_sighup_reloads_users(fresh):
    """A user added with `ortoo user add` while the server runs is known at
    once: the CLI has the server reload through its control socket and says
    so once the reload is done (RCPT accepted, AUTH works); a removed one is
    gone the same way; `ortoo reload` still works; without a running server
    it is a clear error."""
    from conftest import open_session, wait_log

    s = fresh("hupusers")
    carol = f"carol@{DOMAIN}"
    with open_session(s, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect(f"RCPT TO:<{carol}>", 550, "5.1.1")
    start = len(s.log)
    r = s.cli("user", "add", carol, "--password-stdin", input="carol-pw-3\n")
    assert "the running server reloaded" in r.stdout, r.stdout
    wait_log(s, r"event=reload-done ok=1", start)
    with open_session(s, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect(f"RCPT TO:<{carol}>", 250, "2.1.5")
    with open_session(s, "submissions", auth=(carol, "carol-pw-3")) as c:
        c.expect(f"MAIL FROM:<{carol}>", 250)
    start = len(s.log)
    r = s.cli("user", "del", carol)
    assert "the running server reloaded" in r.stdout, r.stdout
    wait_log(s, r"event=reload-done ok=1", start)
    with open_session(s, "smtp") as c:
        c.expect("MAIL FROM:<x@client.test>", 250)
        c.expect(f"RCPT TO:<{carol}>", 550, "5.1.1")
    start = len(s.log)
    r = s.cli("reload")  # `ortoo reload`: through the control socket
    assert "reloaded" in r.stdout and "certificates" in r.stdout, r.stdout
    wait_log(s, r"event=reloaded what=tls", start)
    s.stop()
    r = s.cli("reload", check=False)
    assert r.returncode == 1 and "not running" in r.stderr, (r.returncode, r.stderr)

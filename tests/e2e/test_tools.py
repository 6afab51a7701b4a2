# SPDX-License-Identifier: MIT
"""Third-party clients against the server: swaks (plain, STARTTLS, implicit
TLS, AUTH PLAIN and LOGIN), `openssl s_client -starttls smtp` driven through
stdin, and ortoo's own `ortoo send`."""

import os
import re
import select
import subprocess
import time

import pytest

from conftest import ORTOO, USERS, message

ALICE = "alice@example.test"
QUEUED_ANY = re.compile(r"250[ -]2\.0\.0 Ok: queued as ([0-9A-Za-z]{20})\b")


def run(cmd, input=None, timeout=60):
    p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                       timeout=timeout)
    out = p.stdout + p.stderr
    return p.returncode, out


def queued_id(out, cmd):
    ids = QUEUED_ANY.findall(out)
    assert len(ids) == 1, f"{' '.join(cmd)}: want one queued ID in:\n{out}"
    return ids[0]


SWAKS_CASES = {
    # name: (role, extra args, sender)
    "plain": ("smtp", [], "swaks@client.test"),
    "starttls": ("smtp", ["--tls"], "swaks-tls@client.test"),
    "starttls-auth-plain": ("submission", ["--tls", "--auth", "PLAIN"], ALICE),
    "starttls-auth-login": ("submission", ["--tls", "--auth", "LOGIN"], ALICE),
    "tlsc-auth-plain": ("submissions", ["--tlsc", "--auth", "PLAIN"], ALICE),
    "tlsc-auth-login": ("submissions", ["--tlsc", "--auth", "LOGIN"], ALICE),
}


@pytest.mark.parametrize("case", list(SWAKS_CASES))
def test_swaks(srv, case):
    role, extra, sender = SWAKS_CASES[case]
    host, port = srv.addr(role)
    cmd = ["swaks", "--server", host, "--port", str(port),
           "--ehlo", "client.test", "--from", sender,
           "--to", "bob@example.test", "--header", f"Subject: swaks {case}",
           "--body", "Hello from swaks.", "--timeout", "20"] + extra
    if "--auth" in extra:
        cmd += ["--auth-user", ALICE, "--auth-password", USERS[ALICE]]
    rc, out = run(cmd)
    assert rc == 0, f"swaks exit {rc}:\n{out}"
    if "--auth" in extra:
        assert re.search(r"<~\s+235 2\.7\.0", out), out
    qid = queued_id(out, cmd)
    row = srv.queue_by_id()[qid]
    assert row["sender"] == sender and row["recipients"] == ["bob@example.test"]


def test_swaks_relay_denied(srv):
    host, port = srv.addr("smtp")
    cmd = ["swaks", "--server", host, "--port", str(port), "--from",
           "x@client.test", "--to", "victim@elsewhere.example", "--timeout", "20"]
    rc, out = run(cmd)
    assert rc != 0, out
    assert re.search(r"<[~*]\*+\s+550 5\.7\.1", out), out


def test_swaks_auth_wrong_password(srv):
    host, port = srv.addr("submissions")
    cmd = ["swaks", "--server", host, "--port", str(port), "--tlsc",
           "--from", ALICE, "--to", "bob@example.test", "--auth", "LOGIN",
           "--auth-user", ALICE, "--auth-password", "not-it", "--timeout", "20"]
    rc, out = run(cmd)
    assert rc != 0, out
    assert re.search(r"<[~*]\*+\s+535 5\.7\.8", out), out


def test_openssl_s_client_batch(srv):
    """s_client does EHLO and STARTTLS itself; the rest of the dialogue comes
    from stdin in one go (pipelined)."""
    host, port = srv.addr("smtp")
    script = ("EHLO client.test\n"
              "MAIL FROM:<s_client@client.test>\n"
              "RCPT TO:<alice@example.test>\n"
              "DATA\n"
              "Subject: s_client\n\nHello over TLS.\n.\n"
              "QUIT\n")
    cmd = ["openssl", "s_client", "-starttls", "smtp", "-connect",
           f"{host}:{port}", "-crlf", "-quiet", "-servername", "mx.example.test"]
    rc, out = run(cmd, input=script, timeout=30)
    qid = queued_id(out, cmd)
    assert re.search(r"^221 2\.0\.0", out, re.M), out
    assert srv.queue_by_id()[qid]["sender"] == "s_client@client.test"


class SClient:
    """openssl s_client driven interactively: one command, then its reply."""

    def __init__(self, addr):
        self.p = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"{addr[0]}:{addr[1]}", "-crlf", "-quiet"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.out = []
        self.buf = b""

    def sync(self):
        """Skip what s_client prints of its own EHLO/STARTTLS exchange (it
        echoes a stray final EHLO line): send HELP and read up to its 214."""
        self.p.stdin.write("HELP\n")
        self.p.stdin.flush()
        while not self.reply().startswith("214 "):
            pass

    def reply(self, timeout=15):
        """Read lines until a final reply line "ddd text"; return it.  Reads
        the pipe unbuffered (select on a buffered file would miss lines)."""
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").rstrip("\r")
                self.out.append(line)
                if re.match(r"^\d{3}( |$)", line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        raise AssertionError("no reply from s_client:\n" + "\n".join(self.out))

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.reply()

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def test_openssl_s_client_submission_auth(srv):
    c = SClient(srv.addr("submission"))
    try:
        c.sync()
        assert c.cmd("EHLO client.test").startswith("250 ")
        plain = __import__("base64").b64encode(
            f"\0{ALICE}\0{USERS[ALICE]}".encode()).decode()
        assert c.cmd(f"AUTH PLAIN {plain}").startswith("235 2.7.0")
        assert c.cmd(f"MAIL FROM:<{ALICE}>").startswith("250 ")
        assert c.cmd("RCPT TO:<someone@elsewhere.example>").startswith("250 ")
        assert c.cmd("DATA").startswith("354")
        for l in message("s_client auth", sender=ALICE).split("\r\n"):
            c.p.stdin.write(l + "\n")
        r = c.cmd(".")
        m = re.match(r"^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{20})$", r)
        assert m, r
        assert c.cmd("QUIT").startswith("221 2.0.0")
    finally:
        c.close()
    assert srv.queue_by_id()[m.group(1)]["recipients"] == ["someone@elsewhere.example"]


ORTOO_SEND_CASES = {
    "plain": ("smtp", [], "send@client.test", None),
    "starttls": ("submission", ["--starttls"], ALICE, ALICE),
    "tls": ("submissions", ["--tls"], ALICE, ALICE),
}


@pytest.mark.parametrize("case", list(ORTOO_SEND_CASES))
def test_ortoo_send(srv, case, tmp_path):
    role, extra, sender, user = ORTOO_SEND_CASES[case]
    host, port = srv.addr(role)
    body = tmp_path / "body.txt"
    body.write_text("Hello from ortoo send.\n.leading dot\n")
    cmd = [ORTOO, "send", "--server", f"{host}:{port}", "--insecure",
           "--from", sender, "--to", "bob@example.test",
           "--subject", f"ortoo send {case}", "--body-file", str(body)] + extra
    stdin = None
    if user:
        cmd += ["--user", user, "--password-stdin"]
        stdin = USERS[user] + "\n"
    rc, out = run(cmd, input=stdin)
    assert rc == 0, f"ortoo send exit {rc}:\n{out}"
    assert re.search(r"^C: ", out, re.M) and re.search(r"^S: 220", out, re.M), out
    qid = queued_id(out, cmd)
    row = srv.queue_by_id()[qid]
    assert row["sender"] == sender and row["recipients"] == ["bob@example.test"]


def test_ortoo_send_refused(srv):
    host, port = srv.addr("smtp")
    cmd = [ORTOO, "send", "--server", f"{host}:{port}", "--insecure",
           "--from", "x@client.test", "--to", "victim@elsewhere.example"]
    rc, out = run(cmd)
    assert rc != 0, out
    assert "550 5.7.1" in out, out

# SPDX-License-Identifier: MIT
"""sendmail compatibility: `sendmail -t -i` as apps and cron run it, with the
server up (the message is in the queue with the right envelope, Bcc gone,
Date, Message-ID and From added) and down (it waits in the maildrop, stderr
says so, and it is queued when the server starts); the `sendmail` link name;
-f/-F, recipients as arguments, the "." rule without -i; -bs; an
unprivileged user (the maildrop's permissions); a bad drop file quarantined.

What the spool holds is read back from its files: the message is stored in
wire form, verbatim (docs/flow.md), so its header can be found by a marker."""

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import HOSTNAME, ORTOO, Server, make_conf, wait_log

ME = pwd.getpwuid(os.geteuid()).pw_name


def sendmail(srv, args, text, env=None, argv0=None, user=None, timeout=60):
    """Run sendmail (as `ortoo -c DIR sendmail` or through a link named
    sendmail with $ORTOO_CONFIG); return the CompletedProcess."""
    if argv0 is not None:
        cmd = [argv0, *args]
        env = {**os.environ, "ORTOO_CONFIG": srv.dir, **(env or {})}
    else:
        cmd = [ORTOO, "-c", srv.dir, "sendmail", *args]
        env = {**os.environ, **(env or {})}
    if user is not None:
        cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
               "--clear-groups", *cmd]
    return subprocess.run(cmd, input=text.encode() if isinstance(text, str) else text,
                          capture_output=True, env=env, timeout=timeout)


def stored(srv, marker):
    """The wire-form bytes of the stored message holding `marker`: from
    its first header line (To:, as the tests write it) to the marker."""
    for path in glob.glob(os.path.join(srv.dir, "spool", "shard-*", "*")):
        with open(path, "rb") as f:
            data = f.read()
        i = data.find(marker.encode())
        if i >= 0:
            start = data.rfind(b"To: ", 0, i)
            assert start >= 0, f"no To: before {marker} in {path}"
            return data[start:i + len(marker)]
    raise AssertionError(f"{marker} not in the spool of {srv.name}")


@pytest.fixture
def server(fresh):
    return fresh("sm")


def test_t_i_daemon_up(server):
    s = server
    mark = f"mark-{time.time_ns()}"
    msg = (f"To: Alice <alice@example.test>, bob@example.test\n"
           f"Cc: \"Carol, C.\" <carol@other.test>\n"
           f"Bcc: secret@hidden.test\n"
           f"Subject: cron {mark}\n"
           f"\n"
           f"line one\n.\n..two dots\nend {mark}\n")
    p = sendmail(s, ["-t", "-i"], msg)
    assert p.returncode == 0, p
    assert p.stderr == b"", p.stderr
    rows = [r for r in s.queue() if r["sender"] == f"{ME}@{HOSTNAME}"]
    assert len(rows) == 1, s.queue()
    assert sorted(rows[0]["recipients"]) == sorted(
        ["alice@example.test", "bob@example.test", "carol@other.test",
         "secret@hidden.test"]), rows
    body = stored(s, f"end {mark}")
    head, _, rest = body.partition(b"\r\n\r\n")
    assert b"Bcc" not in head and b"secret@hidden.test" not in body, head
    assert re.search(rb"\r\nDate: \w{3}, \d{2} \w{3} \d{4} ", head), head
    assert re.search(rb"\r\nMessage-ID: <[^>@]+@" + HOSTNAME.encode() + rb">", head), head
    # "Full Name <me@host>", or the bare address when the account has no
    # full name (GECOS empty, as useradd leaves it).
    me = re.escape(f"{ME}@{HOSTNAME}".encode())
    assert re.search(rb"\r\nFrom: (?:.*<" + me + rb">|" + me + rb")\r\n", head), head
    # Wire form: CRLF, and the lone "." (kept by -i) dot-stuffed.
    assert rest == f"line one\r\n..\r\n...two dots\r\nend {mark}".encode(), rest
    assert b"\n" not in body.replace(b"\r\n", b"")
    maildrop = os.path.join(s.dir, "spool", "maildrop")
    assert os.listdir(maildrop) == [], "drop file left after the commit"
    wait_log(s, r"session=maildrop event=queued client=local .* user=" + ME)


def test_link_name_and_flags(server, tmp_path):
    s = server
    link = tmp_path / "sendmail"
    os.symlink(ORTOO, link)
    mark = f"mark-{time.time_ns()}"
    # Recipients as arguments (one "a, b" list too), -f and -F, the sendmail
    # options cron and PHP add (-oi: a lone "." does not end the input), one
    # unknown flag.
    msg = f"To: whoever@example.test\nSubject: {mark}\n\nbody {mark}\n.\nafter {mark}\n"
    p = sendmail(s, ["-oi", "-odi", "-oem", "-Fbatch job", "-f", "<jobs@example.test>",
                     "-Q", "--", "alice@example.test, bob@example.test"],
                 msg, argv0=str(link))
    assert p.returncode == 0, p
    assert b"ignoring unknown option -Q" in p.stderr, p.stderr
    rows = [r for r in s.queue() if r["sender"] == "jobs@example.test"]
    assert len(rows) == 1 and sorted(rows[0]["recipients"]) == [
        "alice@example.test", "bob@example.test"], rows
    body = stored(s, f"after {mark}")
    assert f"\r\n..\r\nafter {mark}".encode() in body, body
    assert b"From: batch job <jobs@example.test>" in body, body
    # Without -i a lone "." ends the message.
    mark2 = f"mark2-{time.time_ns()}"
    p = sendmail(s, ["-f", "dot@example.test", "alice@example.test"],
                 f"To: alice@example.test\nSubject: {mark2}\n\n{mark2}\n.\nafter the dot\n")
    assert p.returncode == 0, p
    body = stored(s, mark2 + "\r\n")
    assert b"after the dot" not in stored(s, f"Subject: {mark2}") + body
    # Errors: no recipients; a bad address; an unsupported mode.
    p = sendmail(s, [], "Subject: x\n\nx\n")
    assert p.returncode == 64 and b"no recipients" in p.stderr, p
    p = sendmail(s, ["-t"], "To: a b c <<@>\n\nx\n")
    assert p.returncode in (64, 65), p
    p = sendmail(s, ["-bd"], "")
    assert p.returncode == 64, p
    # A bare name is qualified with the host name (cron mails "root").
    p = sendmail(s, ["root"], "Subject: to root\n\nx\n")
    assert p.returncode == 0, p
    assert any(r["recipients"] == [f"root@{HOSTNAME}"] for r in s.queue())
    # -bp lists the queue.
    p = sendmail(s, ["-bp"], "")
    assert p.returncode == 0 and b"jobs@example.test" in p.stdout, p


def test_daemon_down_then_started(server):
    s = server
    assert s.stop() == 0
    mark = f"mark-{time.time_ns()}"
    p = sendmail(s, ["-t", "-i"], f"To: alice@example.test\nSubject: {mark}\n\n{mark}\n")
    assert p.returncode == 0, p
    err = p.stderr.decode()
    assert "not running" in err and "waits in" in err and "queued when it starts" in err, err
    maildrop = os.path.join(s.dir, "spool", "maildrop")
    files = os.listdir(maildrop)
    assert len(files) == 1 and re.fullmatch(r"m[0-9a-f]{32}", files[0]), files
    assert os.stat(os.path.join(maildrop, files[0])).st_mode & 0o777 == 0o640
    s.start()
    # Picked up at start: in the queue, and the drop file gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not os.listdir(maildrop):
            break
        time.sleep(0.05)
    assert os.listdir(maildrop) == [], os.listdir(maildrop)
    rows = [r for r in s.queue() if r["sender"] == f"{ME}@{HOSTNAME}"]
    assert len(rows) == 1 and rows[0]["recipients"] == ["alice@example.test"], rows
    assert mark.encode() in stored(s, mark)
    # And after a restart it is there once (the file was deleted only after
    # the commit).
    assert s.stop() == 0
    s.start()
    assert len([r for r in s.queue() if r["sender"] == f"{ME}@{HOSTNAME}"]) == 1


def test_bs_smtp(server):
    s = server
    mark = f"mark-{time.time_ns()}"
    dialog = ("EHLO app.example\r\n"
              "MAIL FROM:<app@example.test>\r\n"
              "RCPT TO:<alice@example.test>\r\n"
              "DATA\r\n"
              f"To: alice@example.test\r\nSubject: {mark}\r\n\r\n..leading dot\r\nend {mark}\r\n"
              ".\r\n"
              "QUIT\r\n")
    p = sendmail(s, ["-bs"], dialog)
    assert p.returncode == 0, p
    out = p.stdout.decode()
    codes = [l[:3] for l in out.splitlines() if not l[3:4] == "-"]
    assert codes == ["220", "250", "250", "250", "354", "250", "221"], out
    assert re.search(r"250 2\.0\.0 Ok: queued as \w+", out), out
    rows = [r for r in s.queue() if r["sender"] == "app@example.test"]
    assert len(rows) == 1, rows
    body = stored(s, f"end {mark}")
    assert b"\r\n..leading dot\r\n" in body, body
    assert b"Message-ID: <" in body and b"Date: " in body


def test_bad_drop_file_quarantined(server):
    s = server
    maildrop = os.path.join(s.dir, "spool", "maildrop")
    name = "m" + "ab" * 16
    with open(os.path.join(maildrop, name), "w") as f:
        f.write("ortoo-maildrop 1\nfrom <x@y.test>\nrcpt <bad address>\nsize 0\n\nend\n")
    os.chmod(os.path.join(maildrop, name), 0o640)
    start = len(s.log)
    import socket
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(os.path.join(s.dir, "spool", "pickup"))
    c.sendall(f"pickup {name}\n".encode())
    ans = b""
    while not ans.endswith(b"\n"):
        chunk = c.recv(1000)
        if not chunk:
            break
        ans += chunk
    c.close()
    assert ans.startswith(b"ERR rejected: bad 'rcpt <ADDRESS>' line"), ans
    wait_log(s, rf"event=maildrop-rejected file={name} ", start)
    assert os.listdir(maildrop) == []
    assert os.path.exists(os.path.join(s.dir, "spool", "quarantine", "maildrop-" + name))
    # A symlink and a stray name are moved away by the periodic scan (10 s)
    # or at once by an explicit scan.
    os.symlink("/etc/passwd", os.path.join(maildrop, "m" + "cd" * 16))
    open(os.path.join(maildrop, "stray"), "w").close()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(os.path.join(s.dir, "spool", "pickup"))
    c.sendall(b"pickup\n")
    assert c.recv(100).startswith(b"OK"), "scan"
    c.close()
    assert os.listdir(maildrop) == []
    assert s.alive()


@pytest.fixture
def public_server(make_server, backend, template_dir):
    """A server whose config and spool every account can reach."""
    if os.geteuid() != 0:
        pytest.skip("NOT RUN: another account's sendmail needs root to switch to it")
    base = tempfile.mkdtemp(prefix="ortoo-sm-", dir="/tmp")
    os.chmod(base, 0o755)
    d = os.path.join(base, "conf")
    shutil.copytree(template_dir, d)
    os.chmod(d, 0o755)
    s = Server(d, make_conf(backend), f"smpub[{backend}]")
    os.chmod(os.path.join(d, "ortoo.conf"), 0o644)
    s.start()
    yield s
    if s.alive():
        assert s.stop() == 0
    shutil.rmtree(base, ignore_errors=True)


def test_unprivileged_user(public_server):
    s = public_server
    nobody = pwd.getpwnam("nobody")
    mark = f"mark-{time.time_ns()}"
    p = sendmail(s, ["-t", "-i"], f"To: alice@example.test\nSubject: {mark}\n\n{mark}\n",
                 user=nobody)
    assert p.returncode == 0, p
    rows = [r for r in s.queue() if r["sender"] == f"nobody@{HOSTNAME}"]
    assert len(rows) == 1, s.queue()
    # The Received field names the submitting account (the file's owner,
    # which the kernel records: not something the user can forge).
    wait_log(s, r"session=maildrop event=queued .* user=nobody")
    maildrop = os.path.join(s.dir, "spool", "maildrop")
    # nobody may not list the maildrop, nor reach the control socket.
    r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", "ls", maildrop], capture_output=True)
    assert r.returncode != 0, r
    r = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                        "--clear-groups", ORTOO, "-c", s.dir, "reload"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "permission denied" in r.stderr, r.stderr
    # With the server down, nobody's message waits, unreadable by others.
    assert s.stop() == 0
    p = sendmail(s, ["alice@example.test"], "Subject: later\n\nlater\n", user=nobody)
    assert p.returncode == 0 and b"not running" in p.stderr, p
    files = os.listdir(maildrop)
    assert len(files) == 1
    st = os.stat(os.path.join(maildrop, files[0]))
    assert st.st_uid == nobody.pw_uid and st.st_mode & 0o777 == 0o640, st
    assert st.st_gid == os.stat(maildrop).st_gid      # the directory's group (set-gid)
    s.start()
    deadline = time.monotonic() + 10
    while os.listdir(maildrop) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(maildrop) == []
    assert len([r for r in s.queue() if r["sender"] == f"nobody@{HOSTNAME}"]) == 2

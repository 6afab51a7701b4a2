# SPDX-License-Identifier: MIT
"""TLS beyond the basics: certificates reloaded on SIGHUP without dropping
sessions, SNI with several host directories under cert_dir, the protocol
versions served (1.2 and 1.3 only), and session resumption.

Which certificate a server presented is checked by comparing the DER the
client received (getpeercert(binary_form=True)) with the first certificate
of <cert_dir>/<host>/fullchain.pem."""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

import pytest

from conftest import (HOSTNAME, QUEUED_RE, USERS, Raw, assert_serving,
                      message, open_session, plain_token, send_mail,
                      wait_log)

OTHER = "other.example.test"
RELOADED = r"event=reloaded what=tls\b"
RELOAD_FAILED = r"event=reload-failed what=tls\b"


# ---- certificates ---------------------------------------------------------

def new_cert_files(workdir, host):
    """A fresh self-signed P-256 certificate for host: (chain path, key path)."""
    os.makedirs(workdir, exist_ok=True)
    tag = f"{host}-{time.time_ns()}"
    crt = os.path.join(workdir, f"{tag}.crt")
    key = os.path.join(workdir, f"{tag}.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host}", "-keyout", key, "-out", crt],
        check=True, capture_output=True, timeout=30)
    return crt, key


def install_cert(srv, host, crt, key):
    """Put crt/key at certs/<host>/{fullchain,privkey}.pem (each file
    replaced atomically, as acme.sh and certbot hooks do)."""
    d = os.path.join(srv.dir, "certs", host)
    os.makedirs(d, exist_ok=True)
    for src, name in ((crt, "fullchain.pem"), (key, "privkey.pem")):
        tmp = os.path.join(d, f".{name}.new")
        shutil.copyfile(src, tmp)
        os.replace(tmp, os.path.join(d, name))


def file_der(srv, host):
    """DER of the first certificate in certs/<host>/fullchain.pem."""
    with open(os.path.join(srv.dir, "certs", host, "fullchain.pem")) as f:
        pem = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                  pem, re.S)
    assert m, f"no certificate in {host}/fullchain.pem"
    return ssl.PEM_cert_to_DER_cert(m.group(0))


def client_ctx(minv=None, maxv=None, old=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if old:
        # Debian's OpenSSL will not even offer TLS 1.0/1.1 at its default
        # security level: lower it so that the refusal is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if minv is not None:
            ctx.minimum_version = minv
        if maxv is not None:
            ctx.maximum_version = maxv
    return ctx


def served_der(srv, role, sni=HOSTNAME, ctx=None):
    """Handshake on role (STARTTLS for smtp/submission, implicit for
    submissions) sending `sni` (None: no SNI); return the server's DER
    certificate, after checking the session works under TLS."""
    ctx = ctx or client_ctx()
    c = Raw(srv.addr(role))
    try:
        if role == "submissions":
            c.sock = ctx.wrap_socket(c.sock, server_hostname=sni)
            c.expect(None, 220)
        else:
            c.expect(None, 220)
            c.expect("EHLO client.test", 250)
            c.expect("STARTTLS", 220)
            c.sock = ctx.wrap_socket(c.sock, server_hostname=sni)
        der = c.sock.getpeercert(binary_form=True)
        c.expect("EHLO client.test", 250)
        c.expect("QUIT", 221)
        return der
    finally:
        c.close()


def fp(der):
    return hashlib.sha256(der).hexdigest()[:16]


def hup(srv, ok=True, timeout=10):
    """SIGHUP; wait for the reload's outcome line and return it.  The
    certificates are loaded (that line) before every reactor has taken them:
    wait for event=reload-done too, or a connection may still meet the old
    context."""
    start = len(srv.log)
    srv.proc.send_signal(signal.SIGHUP)
    m = wait_log(srv, f"{RELOADED}|{RELOAD_FAILED}", start, timeout)
    wait_log(srv, r"event=reload-done\b", start, timeout)
    line = m.string
    if ok:
        assert re.search(RELOADED, line), f"reload failed: {line}"
    else:
        assert re.search(RELOAD_FAILED, line), f"reload did not fail: {line}"
    return line


# ---- SIGHUP ---------------------------------------------------------------

def test_sighup_reload_keeps_sessions(fresh, tmp_path):
    s = fresh("hup")
    old = file_der(s, HOSTNAME)
    assert served_der(s, "submission") == old
    # Sessions open across the reload: plain, after MAIL; and under TLS
    # (implicit), authenticated, after MAIL.
    plain = open_session(s)
    plain.expect("MAIL FROM:<hup-plain@client.test>", 250)
    tls = open_session(s, "submissions",
                       auth=("alice@example.test", USERS["alice@example.test"]))
    tls.expect("MAIL FROM:<alice@example.test>", 250)

    install_cert(s, HOSTNAME, *new_cert_files(tmp_path, HOSTNAME))
    new = file_der(s, HOSTNAME)
    assert new != old
    hup(s)

    for c, sender in ((plain, "hup-plain@client.test"),
                      (tls, "alice@example.test")):
        c.expect("RCPT TO:<bob@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message("across the reload", sender=sender) + ".\r\n")
        r = c.reply()
        assert QUEUED_RE.match(f"{r.code} {r.text}"), f"{r!r}\n" + c.dump()
        c.expect("QUIT", 221)
        c.close()

    for role in ("submission", "submissions", "smtp"):
        got = served_der(s, role)
        assert got == new, f"{role}: served {fp(got)}, want the new {fp(new)} " \
                           f"(old {fp(old)})"
    assert_serving(s, "submission")


def test_sighup_broken_pair_keeps_old(fresh, tmp_path):
    s = fresh("hupbad")
    old = file_der(s, HOSTNAME)
    crt_a, _ = new_cert_files(tmp_path, HOSTNAME)
    _, key_b = new_cert_files(tmp_path, HOSTNAME)
    # A certificate with somebody else's key.
    install_cert(s, HOSTNAME, crt_a, key_b)
    line = hup(s, ok=False)
    assert "privkey.pem" in line or "fullchain.pem" in line, line
    for role in ("submission", "submissions"):
        assert served_der(s, role) == old, f"{role}: not the old certificate"
    # Garbage in place of the chain.
    with open(os.path.join(s.dir, "certs", HOSTNAME, "fullchain.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    hup(s, ok=False)
    assert served_der(s, "submissions") == old
    assert_serving(s, "submission")
    # Fixed: the next HUP takes it.
    crt_c, key_c = new_cert_files(tmp_path, HOSTNAME)
    install_cert(s, HOSTNAME, crt_c, key_c)
    hup(s)
    assert served_der(s, "submissions") == file_der(s, HOSTNAME) != old


def test_sighup_many_reloads_during_handshake(fresh, tmp_path):
    """A connection accepted on the implicit-TLS port before a series of
    reloads does its handshake after them (a slow client): it must be served
    (by whichever certificate) and the server must not touch freed state."""
    s = fresh("hupmany")
    host, port = s.addr("submissions")
    waiting = socket.create_connection((host, port), timeout=10)
    time.sleep(0.2)                   # accepted, no ClientHello yet
    crt, key = new_cert_files(tmp_path, HOSTNAME)
    install_cert(s, HOSTNAME, crt, key)
    for _ in range(12):
        hup(s)
    try:
        t = client_ctx().wrap_socket(waiting, server_hostname=HOSTNAME)
        t.settimeout(10)
        buf = b""
        while b"\r\n" not in buf:
            chunk = t.recv(4096)
            assert chunk, "closed before the greeting"
            buf += chunk
        assert buf.startswith(b"220 "), buf
        t.sendall(b"QUIT\r\n")
    finally:
        waiting.close()
    assert s.alive(), "server died:\n" + s.tail(40)
    assert served_der(s, "submissions") == file_der(s, HOSTNAME)
    assert_serving(s)


# ---- SNI ------------------------------------------------------------------

def test_sni(fresh, tmp_path):
    # Two host directories before start: the default (hostname) and OTHER.
    s = fresh("sni", start=False)
    install_cert(s, OTHER, *new_cert_files(tmp_path, OTHER))
    s.start()
    default = file_der(s, HOSTNAME)
    other = file_der(s, OTHER)
    assert default != other
    for role in ("submission", "submissions", "smtp"):
        cases = [(OTHER, other), (OTHER.upper(), other), (HOSTNAME, default),
                 ("unknown.example.test", default), (None, default)]
        for sni, want in cases:
            got = served_der(s, role, sni)
            assert got == want, \
                f"{role} SNI={sni}: served {fp(got)}, want {fp(want)} " \
                f"(default {fp(default)}, {OTHER} {fp(other)})"
    # A full authenticated submission under the other name.
    c = Raw(s.addr("submissions"))
    c.sock = client_ctx().wrap_socket(c.sock, server_hostname=OTHER)
    with c:
        assert c.sock.getpeercert(binary_form=True) == other
        c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("AUTH PLAIN " + plain_token("alice@example.test",
                                             USERS["alice@example.test"]), 235)
        send_mail(c, "alice@example.test", ["bob@example.test"], message("sni"))
        c.expect("QUIT", 221)
    # A reload keeps both names.
    hup(s)
    assert served_der(s, "submissions", OTHER) == other
    assert served_der(s, "submissions", "nope.test") == default


# ---- versions ---------------------------------------------------------------

OLD = [("TLSv1", ssl.TLSVersion.TLSv1), ("TLSv1.1", ssl.TLSVersion.TLSv1_1)]
GOOD = [("TLSv1.2", ssl.TLSVersion.TLSv1_2), ("TLSv1.3", ssl.TLSVersion.TLSv1_3)]


def handshake(srv, role, ctx):
    """Handshake only; return the negotiated version or raise."""
    c = Raw(srv.addr(role))
    try:
        if role != "submissions":
            c.expect(None, 220)
            c.expect("EHLO client.test", 250)
            c.expect("STARTTLS", 220)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        v = c.sock.version()
        if role == "submissions":
            c.expect(None, 220)
        c.expect("EHLO client.test", 250)
        c.expect("QUIT", 221)
        return v
    finally:
        c.close()


@pytest.mark.parametrize("role", ["submission", "submissions"])
def test_tls_versions(srv, role):
    for name, v in GOOD:
        assert handshake(srv, role, client_ctx(v, v)) == name
    for name, v in OLD:
        start = len(srv.log)
        with pytest.raises((ssl.SSLError, OSError)) as ei:
            handshake(srv, role, client_ctx(v, v, old=True))
        # Not the client's own refusal to offer the version ...
        assert "NO_PROTOCOLS_AVAILABLE" not in str(ei.value), ei.value
        # ... but the server's: it logged the failed handshake.
        m = wait_log(srv, r"event=tls-failed\b.*unsupported protocol", start, 5)
        assert m, name


@pytest.mark.parametrize("role", ["submission", "submissions"])
def test_tls_old_version_gets_alert(srv, role):
    """RFC 8446 4.2.1: a server that supports only versions above the
    ClientHello's (no supported_versions extension) MUST abort the handshake
    with a protocol_version alert -- not just close the connection."""
    with pytest.raises((ssl.SSLError, OSError)) as ei:
        handshake(srv, role, client_ctx(ssl.TLSVersion.TLSv1,
                                        ssl.TLSVersion.TLSv1, old=True))
    assert "ALERT_PROTOCOL_VERSION" in str(getattr(ei.value, "reason", "")) \
        or "alert protocol version" in str(ei.value), \
        f"no protocol_version alert from the server; the client saw {ei.value!r}"


# ---- resumption -------------------------------------------------------------

def s_client(addr, version, sess_arg, sess_file):
    p = subprocess.run(
        ["openssl", "s_client", "-connect", f"{addr[0]}:{addr[1]}", version,
         "-servername", HOSTNAME, "-crlf", "-ign_eof", sess_arg, sess_file],
        input="EHLO resume.test\nQUIT\n", capture_output=True, text=True,
        timeout=20)
    out = p.stdout + p.stderr
    assert "221" in p.stdout, f"the session did not run to QUIT:\n{out}"
    m = re.search(r"^(New|Reused), (TLSv[\d.]+)", p.stdout, re.M)
    assert m, f"no session summary:\n{out}"
    return m.group(1), m.group(2)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_tls_resumption(srv, tmp_path, version):
    addr = srv.addr("submissions")
    sess = str(tmp_path / "sess.pem")
    first = s_client(addr, version, "-sess_out", sess)
    assert first[0] == "New", first
    assert os.path.getsize(sess) > 0, "no session saved"
    second = s_client(addr, version, "-sess_in", sess)
    assert second == ("Reused", first[1]), f"second connection: {second}"
    # Once more from the same ticket/session.
    third = s_client(addr, version, "-sess_in", sess)
    assert third[0] == "Reused", third

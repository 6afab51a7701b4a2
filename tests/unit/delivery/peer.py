# SPDX-License-Identifier: MIT
"""A scripted SMTP server for the delivery client's tests (test_smtp_client.c).

    /usr/bin/python3 peer.py CONFIG.json LOG

Listens on 127.0.0.1, port chosen by the kernel, prints "port N" on stdout,
and serves connections (one thread each) until killed.  Every read from a
client is logged, so a test can see how its bytes were split into writes,
what was said in clear text and under TLS, and the exact bytes of each
message.  LOG gets one line per event, fields separated by single spaces,
binary data in hex:

    R <conn> <tls 0|1> <hex>     one recv() from the client
    C <conn> <tls> <hex>         one command line (without CRLF)
    D <conn> <tls> <hex>         the raw bytes of a DATA body (dot-stuffed,
                                 without the final ".\\r\\n")
    B <conn> <tls> <hex>         the bytes of one BDAT chunk
    A <conn> <ip>                a connection accepted from ip
    T <conn> ok|fail             a TLS handshake
    E <conn>                     the connection ended

CONFIG (all optional):
    greeting        "220 peer ESMTP" (null: say nothing, ever)
    ehlo            ["peer.test", "PIPELINING", "SIZE 1000", ...]
    helo_ok         true: HELO gets 250 (default true)
    ehlo_reply      a reply sent to EHLO instead (e.g. "502 5.5.1 no")
    tls             {"cert": PEM, "key": PEM}: STARTTLS offered and done
    replies         {"MAIL": R, "RCPT": R, "DATA": R, "DOT": R, "BDAT": R,
                     "BDAT_LAST": R, "RSET": R, "QUIT": R, "AUTH": R}, where R is a
                    reply string or a list used in turn (the last repeats); a
                    reply may hold several lines joined by CRLF
    close_after_data  N: close abruptly once N body bytes have arrived
    starttls_inject   a line sent in clear right after the 220 to STARTTLS
"""

import json
import socket
import ssl
import sys
import threading

CFG = json.load(open(sys.argv[1]))
LOG = open(sys.argv[2], "a", buffering=1)
LOCK = threading.Lock()

DEFAULTS = {
    "MAIL": "250 2.1.0 Ok", "RCPT": "250 2.1.5 Ok",
    "DATA": "354 End data with <CR><LF>.<CR><LF>", "DOT": "250 2.0.0 Ok: queued",
    "BDAT": "250 2.0.0 Ok", "BDAT_LAST": "250 2.0.0 Ok: queued", "RSET": "250 2.0.0 Ok",
    "QUIT": "221 2.0.0 Bye", "NOOP": "250 2.0.0 Ok", "AUTH": "235 2.7.0 Ok",
}


def log(*fields):
    with LOCK:
        LOG.write(" ".join(str(f) for f in fields) + "\n")


class Conn:
    def __init__(self, sock, n):
        self.sock = sock
        self.n = n
        self.tls = 0
        self.buf = b""
        self.counts = {}
        self.body_bytes = 0
        self.out = b""

    def reply_for(self, key):
        r = CFG.get("replies", {}).get(key, DEFAULTS.get(key, "250 Ok"))
        if isinstance(r, list):
            i = self.counts.get(key, 0)
            self.counts[key] = i + 1
            r = r[min(i, len(r) - 1)]
        return r

    def say(self, text):
        self.out += text.encode() + b"\r\n"

    def flush(self):
        if self.out:
            self.sock.sendall(self.out)
            self.out = b""

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        log("R", self.n, self.tls, data.hex())
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self.flush()  # replies to what was pipelined go out before we wait
            self.fill()
        l, self.buf = self.buf.split(b"\r\n", 1)
        log("C", self.n, self.tls, l.hex())
        return l

    def check_close(self, seen):
        """close_after_data: drop the connection once `seen` body bytes are in."""
        lim = CFG.get("close_after_data")
        if lim is not None and seen >= lim:
            self.sock.shutdown(socket.SHUT_RDWR)
            raise EOFError

    def data(self):
        """The body after 354, up to CRLF.CRLF (the body starts a line)."""
        acc, self.buf = self.buf, b""
        scanned = 0
        while True:
            self.check_close(self.body_bytes + len(acc))
            if acc.startswith(b".\r\n"):
                body, rest = b"", acc[3:]
                break
            i = acc.find(b"\r\n.\r\n", max(0, scanned - 4))
            if i >= 0:
                body, rest = acc[: i + 2], acc[i + 5:]
                break
            scanned = len(acc)
            self.fill()
            acc, self.buf = acc + self.buf, b""
        self.body_bytes += len(body)
        self.buf = rest
        log("D", self.n, self.tls, body.hex())

    def bdat(self, size):
        while len(self.buf) < size:
            self.check_close(self.body_bytes + len(self.buf))
            self.flush()
            self.fill()
        chunk, self.buf = self.buf[:size], self.buf[size:]
        self.body_bytes += size
        log("B", self.n, self.tls, chunk.hex())

    def starttls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CFG["tls"]["cert"], CFG["tls"]["key"])
        if self.buf:
            log("C", self.n, self.tls, b"<pipelined after STARTTLS>".hex())
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError):
            log("T", self.n, "fail")
            raise EOFError
        log("T", self.n, "ok")
        self.tls = 1
        self.buf = b""

    def run(self):
        if CFG.get("greeting", "220 peer.test ESMTP") is None:
            while True:
                self.fill()  # never answer
        self.say(CFG.get("greeting", "220 peer.test ESMTP"))
        while True:
            l = self.line().decode("latin-1")
            verb = l.split(" ", 1)[0].upper()
            if verb == "EHLO":
                if CFG.get("ehlo_reply"):
                    self.say(CFG["ehlo_reply"])
                    continue
                kws = list(CFG.get("ehlo", ["peer.test", "PIPELINING"]))
                if CFG.get("tls") and not self.tls and "STARTTLS" not in kws:
                    kws.append("STARTTLS")
                if self.tls and "STARTTLS" in kws:
                    kws.remove("STARTTLS")
                self.say("\r\n".join(
                    f"250{'-' if i < len(kws) - 1 else ' '}{k}" for i, k in enumerate(kws)))
            elif verb == "HELO":
                self.say("250 peer.test" if CFG.get("helo_ok", True) else "502 5.5.1 no")
            elif verb == "STARTTLS" and CFG.get("tls") and not self.tls:
                self.say("220 2.0.0 Ready to start TLS")
                if CFG.get("starttls_inject"):
                    self.say(CFG["starttls_inject"])  # in clear, before TLS
                self.flush()
                self.starttls()
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP", "AUTH"):
                self.say(self.reply_for(verb))
            elif verb == "DATA":
                r = self.reply_for("DATA")
                self.say(r)
                if r.startswith("354"):
                    self.flush()
                    self.data()
                    self.say(self.reply_for("DOT"))
            elif verb == "BDAT":
                parts = l.split()
                size = int(parts[1])
                last = len(parts) > 2 and parts[2].upper() == "LAST"
                self.bdat(size)
                self.say(self.reply_for("BDAT_LAST" if last else "BDAT"))
            elif verb == "QUIT":
                self.say(self.reply_for("QUIT"))
                self.flush()
                return
            else:
                self.say("502 5.5.2 Command not recognized")


def serve(sock, n):
    c = Conn(sock, n)
    try:
        c.run()
    except (EOFError, OSError, ssl.SSLError):
        pass
    finally:
        log("E", n)
        try:
            c.sock.close()
        except OSError:
            pass


def main():
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    print(f"port {lst.getsockname()[1]}", flush=True)
    n = 0
    while True:
        s, peer = lst.accept()
        n += 1
        log("A", n, peer[0])
        threading.Thread(target=serve, args=(s, n), daemon=True).start()


if __name__ == "__main__":
    main()

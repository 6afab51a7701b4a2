# SPDX-License-Identifier: MIT
"""A small SMTP receiver for the delivery tests: it records what it gets.

    with MailSink("127.0.0.3", port, tls=ctx) as sink:
        ...
        sink.wait_messages(3)
        sink.messages      # [{"mail": ..., "rcpts": [...], "data": bytes, "conn": i}]
        sink.conns         # [{"peer", "tls", "resumed", "reads": [bytes...], "messages": n}]

One thread accepts, one thread per connection serves it.  The server side
of RFC 5321 is minimal but honest: PIPELINING (every complete command of
one read is answered, and the replies go out in one write), SIZE,
8BITMIME, ENHANCEDSTATUSCODES, STARTTLS when given an SSLContext (RFC 3207:
after the handshake the session starts over), DSN when asked (dsn=True),
DATA with the end found across reads, dot-unstuffed.  Every read is
recorded as it came (after TLS: the decrypted bytes), so a test can see
how the client split its writes.

rcpt_reply(addr) -> "250 ..." / "450 ..." lets a test refuse recipients;
data_reply(message) -> reply does the same at the end of DATA.  A sink
made with refuse=True is not started: its port refuses connections.
"""

import socket
import ssl
import threading
import time


class MailSink:
    def __init__(self, host, port, tls=None, name="sink.test", dsn=False,
                 rcpt_reply=None, data_reply=None, greeting_delay=0.0, smtputf8=False):
        self.host = host
        self.smtputf8 = smtputf8
        self.port = port
        self.tls = tls
        self.name = name
        self.dsn = dsn
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.greeting_delay = greeting_delay
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.messages = []
        self.conns = []
        self.errors = []
        self.sock = None
        self.threads = []
        self.socks = []            # accepted sockets, shut down at stop()
        self.stopping = False

    # ---- life cycle ----
    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        s.settimeout(0.2)
        self.sock = s
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def stop(self):
        self.stopping = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        with self.lock:
            socks = list(self.socks)
        for c in socks:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- waiting ----
    def wait_messages(self, n, timeout=30):
        """Wait until at least n messages arrived; return the list."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink {self.host}:{self.port}: {len(self.messages)} of {n} "
                        f"messages after {timeout}s; conns={len(self.conns)} "
                        f"errors={self.errors[-3:]}")
                self.cond.wait(min(left, 0.2))
            return list(self.messages)

    def rcpts(self):
        with self.lock:
            return [r for m in self.messages for r in m["rcpts"]]

    # ---- serving ----
    def _accept(self):
        while not self.stopping:
            try:
                c, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.settimeout(30)
            with self.lock:
                self.socks.append(c)
            rec = {"peer": peer, "tls": None, "resumed": False, "reads": [],
                   "messages": 0, "commands": []}
            with self.lock:
                self.conns.append(rec)
            t = threading.Thread(target=self._serve, args=(c, rec), daemon=True)
            t.start()
            self.threads.append(t)

    def _ehlo(self, secure):
        lines = [self.name, "PIPELINING", "SIZE 50000000", "8BITMIME",
                 "ENHANCEDSTATUSCODES"]
        if self.dsn:
            lines.append("DSN")
        if self.smtputf8:
            lines.append("SMTPUTF8")
        if self.tls is not None and not secure:
            lines.append("STARTTLS")
        return "".join(f"250{'-' if i < len(lines) - 1 else ' '}{l}\r\n"
                       for i, l in enumerate(lines))

    def _serve(self, c, rec):
        try:
            self._session(c, rec)
        except (OSError, ssl.SSLError, ValueError) as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _session(self, sock, rec):
        if self.greeting_delay:
            time.sleep(self.greeting_delay)
        sock.sendall(f"220 {self.name} ESMTP sink\r\n".encode())
        buf = b""
        secure = False
        mail, rcpts, data_mode, data = None, [], False, b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return
            with self.lock:
                rec["reads"].append(chunk)
            buf += chunk
            out = []
            accepted = []  # recorded once their 250 is sent
            while True:
                if data_mode:
                    data += buf
                    buf = b""
                    if data.startswith(b".\r\n"):
                        body, buf = b"", data[3:]
                    else:
                        end = data.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        body, buf = data[:end + 2], data[end + 5:]
                    body = b"\r\n".join(l[1:] if l.startswith(b".") else l
                                         for l in body.split(b"\r\n"))
                    msg = {"mail": mail, "rcpts": list(rcpts), "data": body,
                           "tls": rec["tls"], "resumed": rec["resumed"],
                           "conn": self.conns.index(rec)}
                    reply = self.data_reply(msg) if self.data_reply else None
                    reply = reply or "250 2.0.0 Ok: queued by sink"
                    if reply.startswith("2"):
                        accepted.append(msg)
                    out.append(reply + "\r\n")
                    mail, rcpts, data_mode, data = None, [], False, b""
                    continue
                nl = buf.find(b"\r\n")
                if nl < 0:
                    break
                line, buf = buf[:nl].decode("utf-8", "replace"), buf[nl + 2:]
                with self.lock:
                    rec["commands"].append(line)
                verb = line.split(" ", 1)[0].upper()
                arg = line[len(verb):].strip()
                if verb in ("EHLO", "HELO"):
                    mail, rcpts = None, []
                    out.append(self._ehlo(secure) if verb == "EHLO"
                               else f"250 {self.name}\r\n")
                elif verb == "STARTTLS" and self.tls is not None and not secure:
                    sock.sendall("".join(out).encode() + b"220 2.0.0 go ahead\r\n")
                    out = []
                    if buf:
                        raise ValueError("data pipelined after STARTTLS")
                    raw = sock
                    sock = self.tls.wrap_socket(sock, server_side=True)
                    with self.lock:  # stop() shuts the socket in use down
                        self.socks = [sock if x is raw else x for x in self.socks]
                    secure = True
                    with self.lock:
                        rec["tls"] = sock.version()
                        rec["resumed"] = sock.session_reused
                    mail, rcpts = None, []
                elif verb == "MAIL":
                    mail, rcpts = arg.split(":", 1)[1].strip() if ":" in arg else arg, []
                    out.append("250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    addr = arg.split(":", 1)[1].strip() if ":" in arg else arg
                    addr = addr.split(" ")[0].strip("<>")
                    reply = self.rcpt_reply(addr) if self.rcpt_reply else None
                    reply = reply or "250 2.1.5 Ok"
                    if reply.startswith("2"):
                        rcpts.append(addr)
                    out.append(reply + "\r\n")
                elif verb == "DATA":
                    if mail is None or not rcpts:
                        out.append("554 5.5.1 no valid recipients\r\n")
                    else:
                        out.append("354 go ahead\r\n")
                        data_mode, data = True, b""
                elif verb == "RSET":
                    mail, rcpts = None, []
                    out.append("250 2.0.0 Ok\r\n")
                elif verb == "NOOP":
                    out.append("250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    sock.sendall("".join(out).encode() + b"221 2.0.0 bye\r\n")
                    with self.cond:
                        self.messages += accepted
                        rec["messages"] += len(accepted)
                        self.cond.notify_all()
                    return
                else:
                    out.append("502 5.5.2 command not recognized\r\n")
            if out:
                sock.sendall("".join(out).encode())
            if accepted:
                with self.cond:
                    self.messages += accepted
                    rec["messages"] += len(accepted)
                    self.cond.notify_all()

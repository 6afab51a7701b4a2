#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/inbound.py WORKDIR - what scenario K (inbound checks) of bench/run.sh
needs, made in WORKDIR:

  - a DNSSEC-signed zone load.test on a loopback nsd (tests/e2e/dnszone.py):
    SPF "v=spf1 ip4:127.0.0.1 -all" (MAIL FROM load@load.test and HELO
    load.test pass), a DKIM key (selector s1, RSA-2048), "_dmarc" with
    p=reject, and the reverse zone 0.0.127.in-addr.arpa (127.0.0.1 ->
    mx.load.test -> 127.0.0.1: iprev passes);
  - msg.eml: a 2 KB message From load@load.test, DKIM-signed with that key
    (python3-dkim), CRLF lines, not dot-stuffed (ortoo-load --message);
  - resolver.conf: the [resolver] section pointing ortoo at the zone;
  - nsd.pid: nsd's pid (run.sh stops it).

The process exits once nsd answers; nsd runs on until killed.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import dkim  # noqa: E402
from dnszone import DnsServer, Zone, txt_chunks  # noqa: E402


def main():
    work = os.path.abspath(sys.argv[1])
    os.makedirs(work, exist_ok=True)
    key = os.path.join(work, "dkim.pem")
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", key, "2048"], check=True,
                   capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    record = "v=DKIM1; k=rsa; p=" + base64.b64encode(pub).decode()
    zones = [
        Zone("load.test", {
            "@": [("TXT", ["v=spf1 ip4:127.0.0.1 -all"])],
            "_dmarc": [("TXT", ["v=DMARC1; p=reject"])],
            "s1._domainkey": [("TXT", txt_chunks(record))],
            "mx": ["A 127.0.0.1"],
        }),
        Zone("0.0.127.in-addr.arpa", {"1": ["PTR mx.load.test."]}),
    ]
    dns = DnsServer(os.path.join(work, "dns"), zones)
    dns.start()
    anchor = dns.write_anchor(os.path.join(work, "anchors.ds"))
    with open(os.path.join(work, "resolver.conf"), "w") as f:
        f.write(dns.resolver_section(anchor))
    with open(os.path.join(work, "nsd.pid"), "w") as f:
        f.write(str(dns.proc.pid))
    body = "".join(f"line {i:03d} of the inbound benchmark message, some text to fill it up\r\n"
                   for i in range(24))
    msg = ("From: Load <load@load.test>\r\nTo: <dev@bench.test>\r\nSubject: inbound\r\n"
           "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <inbound@load.test>\r\n\r\n"
           + body).encode()
    sig = dkim.sign(msg, b"s1", b"load.test", open(key, "rb").read(),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    with open(os.path.join(work, "msg.eml"), "wb") as f:
        f.write(sig.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + msg)
    # Leave nsd running: do not let DnsServer's finalizer stop it.
    dns.proc = None


if __name__ == "__main__":
    main()

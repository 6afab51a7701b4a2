# SPDX-License-Identifier: MIT
"""DNS test zones on loopback for the end-to-end tests: nsd serving zones built
from Python data, DNSSEC-signed with ldns, and the `[resolver]` section that
points ortoo at them.

    import dnszone
    from dnszone import Zone, DnsServer

    zones = [
        Zone("secure.test", {                     # signed, DS in the anchors
            "@": ["MX 10 mx1", "MX 20 mx2"],
            "mx1": ["A 127.0.0.2"],
            "_25._tcp.mx1": ["TLSA 3 1 1 " + "ab" * 32],
            "spf": [("TXT", ["v=spf1 ", "-all"])],  # several strings
        }),
        Zone("plain.test", {"@": ["A 127.0.0.3"]}, signed=False),
        Zone("forged.test", {"www": ["A 127.0.0.4"]},
             tamper={("www", "A"): "127.0.0.66"}),  # signed, then edited: bogus
        Zone("0.0.127.in-addr.arpa", {"5": ["PTR mail.secure.test."]}),
    ]
    with DnsServer(tmp_path / "dns", zones) as dns:
        dns.addr                     # "127.0.0.1@PORT"
        dns.trust_anchor             # DS lines of the anchored zones
        dns.write_ortoo_conf(cfg_dir)  # ortoo.conf with [listen] and [resolver]
        text = dns.resolver_section("/path/to/anchors")
        # or, for a server made by conftest's make_server / fresh:
        anchor = dns.write_anchor(tmp_path / "anchors.ds")
        srv = fresh("mx", **dns.resolver_overrides(anchor))

Every zone gets an SOA, an NS (ns.<zone>, 127.0.0.1) and the records given.
A record is a zone-file string "TYPE RDATA", a tuple (TYPE, RDATA), or
("TXT", [str, ...]) whose strings are quoted for you (use txt_chunks() to
split a long text into 255-byte strings).  Owner names are relative to the
zone ("@" for the apex) unless they end with a dot.

Signed zones use ECDSAP256SHA256 keys made at test time (ldns-keygen) and
NSEC3 (ldns-signzone -n -t 0) with signatures valid for 20 years, so the
anchors (the KSK's DS) are new on every run.  `anchored=False` leaves a
signed zone out of the anchors (it then resolves as insecure, since ortoo's
trust_anchor replaces the root anchor).  `tamper` edits records of the
signed file: their signatures no longer match and the zone is bogus.

nsd runs unprivileged in the foreground on a free loopback port (bound to
port 0 first, then given to nsd; another port is tried if nsd loses the
race) and is stopped when the `with` block ends (or by stop()).  Zones
under `.test` work: ortoo makes its stub zones transparent in libunbound.
"""

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time

import dns.message
import dns.query
import dns.rcode

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
TTL = 300


def txt_chunks(text, size=255):
    """Split text into strings of at most `size` bytes (RFC 1035 3.3)."""
    b = text.encode()
    return [b[i:i + size].decode("latin-1") for i in range(0, len(b), size)] or [""]


def _quote(s):
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7e:
            out.append("\\%03d" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def ptr_owner(ip):
    """The reverse name of an address, with the final dot ("5.0.0.127.in-addr.arpa.")."""
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _free_port():
    """A port free on 127.0.0.1 for both UDP and TCP at the time of asking."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free loopback port for nsd")


def _run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


class Zone:
    """One zone: its name, records, and whether/how it is signed."""

    def __init__(self, name, records=None, signed=True, anchored=True, tamper=None,
                 ttl=TTL):
        self.name = name.rstrip(".").lower()
        self.records = records or {}
        self.signed = signed
        self.anchored = anchored and signed
        self.tamper = tamper or {}
        self.ttl = ttl
        self.ds = ""              # DS lines of the KSK once signed
        self.file = None          # the file nsd serves

    def fqdn(self, owner):
        if owner == "@":
            return self.name + "."
        if owner.endswith("."):
            return owner.lower()
        return f"{owner}.{self.name}.".lower()

    def _lines(self):
        z = self.name + "."
        out = [f"$ORIGIN {z}", f"$TTL {self.ttl}",
               f"@ IN SOA ns.{z} hostmaster.{z} 1 3600 900 604800 {self.ttl}",
               f"@ IN NS ns.{z}"]
        if "ns" not in self.records:
            out.append(f"ns IN A 127.0.0.1")
        for owner, recs in self.records.items():
            for r in recs:
                if isinstance(r, str):
                    rtype, _, rdata = r.partition(" ")
                elif r[0].upper() == "TXT" and not isinstance(r[1], str):
                    rtype, rdata = "TXT", " ".join(_quote(s) for s in r[1])
                else:
                    rtype, rdata = r[0], r[1]
                out.append(f"{self.fqdn(owner)} IN {rtype.upper()} {rdata}")
        return "\n".join(out) + "\n"

    def build(self, workdir):
        """Write (and sign, and tamper with) the zone file in workdir."""
        base = os.path.join(workdir, self.name + ".zone")
        with open(base, "w") as f:
            f.write(self._lines())
        self.file = base
        if not self.signed:
            return
        ksk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", self.name],
                   workdir).strip()
        zsk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", self.name], workdir).strip()
        # Far ahead, but under ldns' 68-year wrap-around of RRSIG times.
        until = (datetime.datetime.utcnow() + datetime.timedelta(days=20 * 365))
        _run(["ldns-signzone", "-n", "-t", "0", "-e", until.strftime("%Y%m%d%H%M%S"),
              "-f", base + ".signed", base, zsk, ksk], workdir)
        with open(os.path.join(workdir, ksk + ".ds")) as f:
            self.ds = f.read().strip() + "\n"
        self.file = base + ".signed"
        if self.tamper:
            self._apply_tamper()

    def _apply_tamper(self):
        want = {(self.fqdn(o), t.upper()): v for (o, t), v in self.tamper.items()}
        done = set()
        out = []
        with open(self.file) as f:
            for line in f:
                parts = line.rstrip("\n").split(None, 4)
                if len(parts) == 5 and parts[2] == "IN":
                    key = (parts[0].lower(), parts[3].upper())
                    if key in want:
                        line = "\t".join(parts[:4] + [want[key]]) + "\n"
                        done.add(key)
                out.append(line)
        missing = set(want) - done
        if missing:
            raise ValueError(f"tamper: no such records in {self.name}: {missing}")
        with open(self.file, "w") as f:
            f.writelines(out)


class DnsServer:
    """nsd on 127.0.0.1:<free port> serving the zones (a context manager)."""

    def __init__(self, workdir, zones, attempts=5):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.zones = list(zones)
        self.attempts = attempts
        self.proc = None
        self.port = None

    # ---- life cycle ----
    def start(self):
        for z in self.zones:
            z.build(self.dir)
        last = ""
        for _ in range(self.attempts):
            self.port = _free_port()
            if self._start_nsd():
                return self
            last = self.log()
        raise RuntimeError(f"nsd did not start after {self.attempts} ports:\n{last}")

    def _start_nsd(self):
        d = self.dir
        conf = os.path.join(d, "nsd.conf")
        lines = [
            "server:",
            f"    ip-address: 127.0.0.1@{self.port}",
            f"    port: {self.port}",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{d}"',
            f'    pidfile: "{d}/nsd.pid"',
            f'    logfile: "{d}/nsd.log"',
            f'    xfrdfile: "{d}/xfrd.state"',
            f'    xfrdir: "{d}"',
            f'    zonelistfile: "{d}/zone.list"',
            "    server-count: 1",
            "    verbosity: 1",
            "    hide-version: yes",
            "    do-ip6: no",
            "remote-control:",
            "    control-enable: no",
        ]
        for z in self.zones:
            lines += ["zone:", f"    name: {z.name}", f'    zonefile: "{z.file}"']
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        open(os.path.join(d, "nsd.log"), "a").close()
        self.proc = subprocess.Popen([NSD, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(d, "nsd.stderr"), "w"))
        deadline = time.monotonic() + 15
        first = self.zones[0].name + "."
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                return False          # lost the port race, or a bad zone: see log()
            try:
                q = dns.message.make_query(first, "SOA")
                r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.3)
                if r.rcode() == dns.rcode.NOERROR:
                    return True
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        text = ""
        for name in ("nsd.log", "nsd.stderr"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text += f.read()
            except OSError:
                pass
        return text

    # ---- what ortoo needs ----
    @property
    def addr(self):
        """The server in ortoo's (and libunbound's) form: 127.0.0.1@PORT."""
        return f"127.0.0.1@{self.port}"

    @property
    def trust_anchor(self):
        """The trust-anchor file's contents: the DS of every anchored zone."""
        return "".join(z.ds for z in self.zones if z.anchored)

    def stub_items(self):
        return [f"{z.name}. {self.addr}" for z in self.zones]

    def resolver_section(self, anchor_path, style="repeat", dnssec="on"):
        """The [resolver] section: dnssec, trust_anchor, and one stub per zone.

        style "repeat": one `stub =` line per zone; "continued": one key, the
        list continued on indented lines; "single": everything on one line
        (only for short lists: ortoo's lines are limited to 197 characters).
        """
        items = self.stub_items()
        out = ["[resolver]", f"dnssec = {dnssec}"]
        if anchor_path is not None:
            out.append(f"trust_anchor = {anchor_path}")
        if style == "repeat":
            out += [f"stub = {i}" for i in items]
        elif style == "continued":
            out.append("stub = " + items[0] + ("," if len(items) > 1 else ""))
            out += ["    " + i + ("," if k < len(items) - 2 else "")
                    for k, i in enumerate(items[1:])]
        elif style == "single":
            out.append("stub = " + ", ".join(items))
        else:
            raise ValueError(style)
        return "\n".join(out) + "\n"

    def resolver_overrides(self, anchor_path, dnssec="on"):
        """The same settings as conftest.make_conf / make_server overrides:
        {"resolver.dnssec": ..., "resolver.trust_anchor": ..., "resolver.stub":
        "item,\n    item..."} (the stub list continued on indented lines)."""
        return {
            "resolver.dnssec": dnssec,
            "resolver.trust_anchor": str(anchor_path),
            "resolver.stub": ",\n    ".join(self.stub_items()),
        }

    def write_anchor(self, path):
        with open(path, "w") as f:
            f.write(self.trust_anchor)
        return str(path)

    def write_ortoo_conf(self, cfg_dir, extra="", style="repeat"):
        """A minimal ortoo.conf in cfg_dir for `ortoo lookup` (a loopback
        listener on port 0, never bound by lookup) with the [resolver]
        section and the anchors in cfg_dir/anchors.ds.  `extra` is
        appended (other sections).  Returns the path of ortoo.conf."""
        os.makedirs(cfg_dir, exist_ok=True)
        anchor = self.write_anchor(os.path.join(cfg_dir, "anchors.ds"))
        conf = os.path.join(cfg_dir, "ortoo.conf")
        with open(conf, "w") as f:
            f.write("[listen]\nsmtp = 127.0.0.1:0\n\n")
            f.write(self.resolver_section(anchor, style=style))
            if extra:
                f.write("\n" + extra)
        return conf

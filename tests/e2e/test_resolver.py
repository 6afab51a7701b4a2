# SPDX-License-Identifier: MIT
"""The resolver through the real binary: `ortoo lookup` against zones served by
nsd on loopback (dnszone.py): a DNSSEC-signed zone, an unsigned one, a signed
one without an anchor, a tampered (bogus) one and reverse zones for 127.0.0.x
and ::1.  The `[resolver]` section points stubs at nsd and replaces the root
anchor with the zones' DS records, so nothing leaves the machine.

Each lookup prints `;; NAME TYPE status=... dnssec=...` and the records
(cli/cli_lookup.c); exit status 0 means records were found.
"""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import ORTOO, run_ortoo
from dnszone import DnsServer, Zone, txt_chunks

SPF = "v=spf1 ip4:127.0.0.0/8 ip6:::1 " + " ".join(
    f"include:_spf{i}.example.test" for i in range(12)) + " -all"
assert len(SPF) > 255
TLSA_DATA = "0123456789abcdef" * 4

ZONES = [
    Zone("secure.test", {
        "@": ["MX 20 mx2", "MX 10 mx1", "MX 10 mx1b", "MX 30 mx3"],
        "mx1": ["A 127.0.0.2", "AAAA ::1"],
        "mx1b": ["A 127.0.0.3"],
        "mx2": ["A 127.0.0.4"],
        "mx3": ["AAAA ::1"],
        "aonly": ["A 127.0.0.7"],
        "six": ["AAAA ::1"],
        "nomx": ["TXT \"nothing here\""],
        "null": ["MX 0 ."],
        "_25._tcp.mx1": [f"TLSA 3 1 1 {TLSA_DATA}", "TLSA 2 0 2 " + "ab" * 64],
        "spf": [("TXT", txt_chunks(SPF)), ("TXT", ["second record"])],
        "alias": ["CNAME mx1"],
    }),
    Zone("plain.test", {
        "@": ["MX 10 mx.plain.test."],
        "mx": ["A 127.0.0.9"],
    }, signed=False),
    Zone("noanchor.test", {"@": ["A 127.0.0.10"]}, anchored=False),
    Zone("forged.test", {
        "@": ["MX 10 mx"],
        "mx": ["A 127.0.0.11"],
        "www": ["A 127.0.0.12"],
    }, tamper={("www", "A"): "127.0.0.66", ("@", "MX"): "10 evil.example."}),
    Zone("0.0.127.in-addr.arpa", {"5": ["PTR mail.secure.test."]}),
    # ::/64: above libunbound's local zone for ::1, which ortoo makes transparent.
    Zone("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
         {"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0": ["PTR six.secure.test."]}),
]


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    with DnsServer(tmp_path_factory.mktemp("dns"), ZONES) as server:
        yield server


@pytest.fixture(scope="module")
def cfg(dns, tmp_path_factory):
    d = tmp_path_factory.mktemp("lookup") / "conf"
    dns.write_ortoo_conf(d)
    return d


def lookup(cfg_dir, rtype, name, *opts, io=None):
    """`ortoo lookup` -> (exit status, summary dict, record lines, stdout)."""
    args = ["lookup", *opts, rtype, name]
    p = run_ortoo(cfg_dir, *args, check=False, timeout=60)
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert bad not in p.stderr, p.stderr
    lines = p.stdout.splitlines()
    summary = {}
    if lines and lines[0].startswith(";; "):
        head = lines[0]
        why = re.search(r' why="((?:[^"\\]|\\.)*)"', head)
        if why:
            summary["why"] = why.group(1)
            head = head[:why.start()]
        for tok in head.split()[3:]:
            k, _, v = tok.partition("=")
            summary[k] = v
    records = [l for l in lines[1:] if not l.startswith(";;")]
    return p.returncode, summary, records, p.stdout + p.stderr


def rdata(records, rtype):
    out = []
    for r in records:
        parts = r.split(None, 4)
        assert parts[2:4] == ["IN", rtype], r
        out.append(parts[4])
    return out


# ---- answers and their DNSSEC state ---------------------------------------

@pytest.mark.parametrize("io", ["uring", "epoll"])
def test_secure_mx_in_preference_order(dns, tmp_path, io):
    d = tmp_path / "conf"
    dns.write_ortoo_conf(d, extra=f"[server]\nio = {io}\n")
    rc, s, recs, out = lookup(d, "MX", "secure.test")
    assert rc == 0, out
    assert s["status"] == "ok" and s["dnssec"] == "secure", out
    mx = [tuple(x.split()) for x in rdata(recs, "MX")]
    assert [int(p) for p, _ in mx] == [10, 10, 20, 30], out
    assert {h for p, h in mx[:2]} == {"mx1.secure.test.", "mx1b.secure.test."}
    assert mx[2:] == [("20", "mx2.secure.test."), ("30", "mx3.secure.test.")]
    assert "implicit_mx" not in s


def test_equal_preference_is_shuffled(cfg):
    """RFC 5321 5.1: hosts of equal preference in random order per lookup."""
    firsts = set()
    for _ in range(24):
        rc, s, recs, out = lookup(cfg, "MX", "secure.test")
        assert rc == 0, out
        firsts.add(rdata(recs, "MX")[0])
        if len(firsts) == 2:
            break
    assert firsts == {"10 mx1.secure.test.", "10 mx1b.secure.test."}


def test_implicit_mx_a_only(cfg):
    rc, s, recs, out = lookup(cfg, "MX", "aonly.secure.test")
    assert rc == 0, out
    assert s["status"] == "ok" and s["implicit_mx"] == "yes" and s["dnssec"] == "secure"
    assert rdata(recs, "MX") == ["0 aonly.secure.test."]


def test_implicit_mx_aaaa_only(cfg):
    rc, s, recs, out = lookup(cfg, "MX", "six.secure.test")
    assert rc == 0, out
    assert s["implicit_mx"] == "yes"
    assert rdata(recs, "MX") == ["0 six.secure.test."]
    rc, s, recs, out = lookup(cfg, "AAAA", "six.secure.test")
    assert rc == 0 and rdata(recs, "AAAA") == ["::1"], out


def test_no_mx_no_address_is_nodata(cfg):
    rc, s, recs, out = lookup(cfg, "MX", "nomx.secure.test")
    assert rc == 1 and s["status"] == "nodata" and s["dnssec"] == "secure", out
    assert recs == []


def test_null_mx(cfg):
    rc, s, recs, out = lookup(cfg, "MX", "null.secure.test")
    assert rc == 1, out
    assert s["status"] == "nullmx" and s["dnssec"] == "secure", out
    assert recs == []


def test_nxdomain_and_nodata(cfg):
    rc, s, recs, out = lookup(cfg, "A", "missing.secure.test")
    assert rc == 1 and s["status"] == "nxdomain" and s["dnssec"] == "secure", out
    rc, s, recs, out = lookup(cfg, "MX", "missing.secure.test")
    assert rc == 1 and s["status"] == "nxdomain", out
    rc, s, recs, out = lookup(cfg, "AAAA", "aonly.secure.test")
    assert rc == 1 and s["status"] == "nodata" and s["dnssec"] == "secure", out
    rc, s, recs, out = lookup(cfg, "A", "missing.plain.test")
    assert rc == 1 and s["status"] == "nxdomain" and s["dnssec"] == "insecure", out


def test_a_and_cname(cfg):
    rc, s, recs, out = lookup(cfg, "A", "alias.secure.test")
    assert rc == 0 and s["dnssec"] == "secure", out
    assert s["canon"] == "mx1.secure.test"
    assert rdata(recs, "A") == ["127.0.0.2"]
    assert recs[0].startswith("mx1.secure.test. ")


def test_insecure_unsigned_zone(cfg):
    rc, s, recs, out = lookup(cfg, "MX", "plain.test")
    assert rc == 0 and s["dnssec"] == "insecure", out
    assert rdata(recs, "MX") == ["10 mx.plain.test."]
    rc, s, recs, out = lookup(cfg, "A", "mx.plain.test")
    assert rc == 0 and s["dnssec"] == "insecure" and rdata(recs, "A") == ["127.0.0.9"]


def test_signed_zone_without_anchor_is_insecure(cfg):
    """trust_anchor replaces the root key: a signed zone with no anchor is
    insecure (with the root key as well it could not be, see docs)."""
    rc, s, recs, out = lookup(cfg, "A", "noanchor.test")
    assert rc == 0 and s["dnssec"] == "insecure", out


def test_bogus_is_never_used(cfg):
    for rtype, name in [("A", "www.forged.test"), ("MX", "forged.test")]:
        rc, s, recs, out = lookup(cfg, rtype, name)
        assert rc == 1, out
        assert s["status"] == "bogus" and s["dnssec"] == "bogus", out
        assert "validation failure" in s["why"], out
        assert recs == [], out
        assert "127.0.0.66" not in out and "evil.example" not in out, out
    # The untouched records of the same zone still validate.
    rc, s, recs, out = lookup(cfg, "A", "mx.forged.test")
    assert rc == 0 and s["dnssec"] == "secure", out


def test_tlsa(cfg):
    rc, s, recs, out = lookup(cfg, "TLSA", "_25._tcp.mx1.secure.test")
    assert rc == 0 and s["dnssec"] == "secure", out
    assert sorted(rdata(recs, "TLSA")) == sorted(
        [f"3 1 1 {TLSA_DATA}", "2 0 2 " + "ab" * 64])
    rc, s, recs, out = lookup(cfg, "TLSA", "_25._tcp.mx2.secure.test")
    assert rc == 1 and s["status"] == "nxdomain" and s["dnssec"] == "secure", out


def test_ptr_reverse_zones(cfg):
    rc, s, recs, out = lookup(cfg, "PTR", "127.0.0.5")
    assert rc == 0, out
    assert s["dnssec"] == "secure"
    assert rdata(recs, "PTR") == ["mail.secure.test."]
    assert recs[0].startswith("5.0.0.127.in-addr.arpa. ")
    rc, s, recs, out = lookup(cfg, "PTR", "::1")
    assert rc == 0 and s["dnssec"] == "secure", out
    assert rdata(recs, "PTR") == ["six.secure.test."]
    rc, s, recs, out = lookup(cfg, "PTR", "5.0.0.127.in-addr.arpa")
    assert rc == 0 and rdata(recs, "PTR") == ["mail.secure.test."], out
    rc, s, recs, out = lookup(cfg, "PTR", "127.0.0.6")
    assert rc == 1 and s["status"] == "nxdomain" and s["dnssec"] == "secure", out


def test_txt_several_strings(cfg):
    rc, s, recs, out = lookup(cfg, "TXT", "spf.secure.test")
    assert rc == 0 and s["dnssec"] == "secure", out
    lines = out.splitlines()
    chunks = txt_chunks(SPF)
    assert len(chunks) == 2
    want = " ".join(f'"{c}"' for c in chunks)
    assert any(l.endswith(f" IN TXT {want}") for l in lines), out
    assert f';; joined: "{SPF}"' in lines, out
    assert any(l.endswith(' IN TXT "second record"') for l in lines), out


# ---- configuration ----------------------------------------------------------

@pytest.mark.parametrize("style", ["continued", "repeat"])
def test_stub_list_continued_or_repeated(dns, tmp_path, style):
    d = tmp_path / "conf"
    conf = dns.write_ortoo_conf(d, style=style)
    text = open(conf).read()
    # Too long for one line (libinih's limit: 197 characters).
    assert len("stub = " + ", ".join(dns.stub_items())) > 197
    if style == "continued":
        assert text.count("stub =") == 1 and "\n    0.0.127" in text
    else:
        assert text.count("stub =") == len(ZONES)
    for rtype, name in [("MX", "secure.test"), ("PTR", "::1"), ("A", "mx.plain.test")]:
        rc, s, recs, out = lookup(d, rtype, name)
        assert rc == 0, out


def test_dnssec_off(dns, tmp_path):
    d = tmp_path / "conf"
    os.makedirs(d)
    with open(d / "ortoo.conf", "w") as f:
        f.write("[listen]\nsmtp = 127.0.0.1:0\n\n")
        f.write(dns.resolver_section(None, dnssec="off"))
    rc, s, recs, out = lookup(d, "MX", "secure.test")
    assert rc == 0 and s["dnssec"] == "insecure", out


def test_missing_trust_anchor(dns, tmp_path, make_server, backend):
    d = tmp_path / "conf"
    dns.write_ortoo_conf(d)
    os.unlink(d / "anchors.ds")
    rc, s, recs, out = lookup(d, "MX", "secure.test")
    assert rc == 1
    assert f"trust_anchor {d}/anchors.ds: No such file or directory" in out, out
    # serve stops at start-up with the same message.
    srv = make_server(backend, "noanchor", start=False,
                      **{"resolver.trust_anchor": "missing-anchors.ds"})
    p = subprocess.run([ORTOO, "-c", srv.dir, "serve"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 1, p.stderr
    assert f"trust_anchor {srv.dir}/missing-anchors.ds: No such file or directory" \
        in p.stderr, p.stderr
    assert "event=ready" not in p.stderr


def test_anchor_without_keys_or_unparsable(dns, tmp_path):
    d = tmp_path / "conf"
    dns.write_ortoo_conf(d)
    with open(d / "anchors.ds", "w") as f:
        f.write("; no keys here\n")
    rc, s, recs, out = lookup(d, "A", "secure.test")
    assert rc == 1 and "holds no DS or DNSKEY record" in out, out
    with open(d / "anchors.ds", "w") as f:
        f.write("secure.test. IN DS not a number\n")
    rc, s, recs, out = lookup(d, "A", "secure.test")
    assert rc == 1, out
    assert f"cannot initialise libunbound: initialization failure (check the trust " \
        f"anchor file {d}/anchors.ds)" in out, out


def test_serve_with_resolver_overrides(dns, tmp_path, fresh):
    """A server configured through conftest overrides starts and stops with
    its per-reactor resolver contexts (the stub list continued over lines)."""
    anchor = dns.write_anchor(tmp_path / "anchors.ds")
    srv = fresh("resolver", **dns.resolver_overrides(anchor))
    assert "stub = secure.test. 127.0.0.1@" in srv.conf_text
    rc, s, recs, out = lookup(srv.dir, "MX", "secure.test")
    assert rc == 0 and s["dnssec"] == "secure", out


def test_bad_resolver_config(tmp_path):
    d = tmp_path / "conf"
    os.makedirs(d)
    with open(d / "ortoo.conf", "w") as f:
        f.write("[listen]\nsmtp = 127.0.0.1:0\n[resolver]\n"
                "stub = a.test 127.0.0.1@53,\n     b.test 127.0.0.1@70000\n")
    rc, s, recs, out = lookup(d, "A", "a.test")
    assert rc == 1
    assert f"{d}/ortoo.conf:5: [resolver] stub: bad server '127.0.0.1@70000'" in out, out


def test_timeout_and_usage(tmp_path):
    d = tmp_path / "conf"
    os.makedirs(d)
    # A stub at a bound port where nothing answers: the lookup's own deadline.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        with open(d / "ortoo.conf", "w") as f:
            f.write(f"[listen]\nsmtp = 127.0.0.1:0\n[resolver]\ndnssec = off\n"
                    f"stub = silent.test 127.0.0.1@{port}\n")
        t0 = time.monotonic()
        rc, s, recs, out = lookup(d, "A", "x.silent.test", "--timeout", "1")
        took = time.monotonic() - t0
    assert rc == 1 and s["status"] == "timeout", out
    assert 0.9 < took < 15, took
    for args in (["lookup", "SOA", "x.test"], ["lookup", "A"], ["lookup", "A", "bad name"],
                 ["lookup", "--timeout", "0", "A", "x.test"]):
        p = run_ortoo(d, *args, check=False)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stderr.strip(), args

# SPDX-License-Identifier: MIT
"""`ortoo doctor DOMAIN` through the real binary, against zones served by nsd
on loopback (dnszone.py), DNSSEC-signed with anchors made at test time.

Two servers' configurations:
- "good": hostname mail.good.test, addresses 127.0.0.25 and ::1 (given with
  --ip), reverse zones for both, a certificate for the name signed by a test
  CA (trusted through SSL_CERT_FILE) with a matching TLSA record, DKIM keys
  (Ed25519 and RSA, whose record is split into 255-byte strings) published,
  SPF `mx -all`, DMARC and TLS-RPT reporting to an alias of the domain, and
  a loopback listener as the port 25 target: exit status 0, every check OK.
- "bad": hostname mail.bad.test, four addresses (one without PTR, one
  confirmed, one whose PTR names another host, one whose PTR name does not
  lead back), an expired certificate and a TLSA that does not match it, a
  closed loopback port as the port 25 target; and domains whose records are
  missing (bad.test), wrong (wrong.test), odd (odd.test: null MX, a SPF
  syntax error, an MTA-STS record, a rua nobody receives) or forged
  (forged.test: DNSSEC bogus).  Each broken record is a FAIL with its fix.

The port 25 test with a blackholed address runs ortoo in a network
namespace where 192.0.2.0/24 is routed into loopback and vanishes, and where
the host's only public address is 198.51.100.25 (root only).
"""

import datetime
import hashlib
import json
import os
import re
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import ORTOO, run_ortoo
from dnszone import DnsServer, Zone, txt_chunks

GOOD_IPS = ["127.0.0.25", "::1"]
BAD_IPS = ["127.0.0.26", "127.0.0.27", "127.0.0.28", "127.0.0.29"]


# ---- certificates ------------------------------------------------------------

def _name(cn, org=None):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(path):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    name = _name("ortoo test root", "ortoo test CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                         False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    with open(path, "wb") as f:
        f.write(_pem(cert))
    return cert, key


def make_leaf(cfg_dir, host, ca, days=(-1, 90), name=None):
    """certs/<host>/{fullchain,privkey}.pem for `name` (default host), valid
    from now+days[0] to now+days[1] days; returns the TLSA 3 1 1 data."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(_name(name or host))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days[0]))
            .not_valid_after(now + datetime.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name or host)]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d = os.path.join(cfg_dir, "certs", host)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "fullchain.pem"), "wb") as f:
        f.write(_pem(cert) + _pem(ca_cert))
    with open(os.path.join(d, "privkey.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


# ---- configuration -----------------------------------------------------------

def dkim_record(cfg_dir, domain, selector):
    """The record value in domains/<d>/dkim/<sel>.txt (strings joined)."""
    with open(os.path.join(cfg_dir, "domains", domain, "dkim", selector + ".txt")) as f:
        text = f.read()
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', text))


def other_ed25519_record():
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    import base64
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def write_conf(dns, cfg_dir, hostname):
    dns.write_ortoo_conf(cfg_dir, extra=f"[server]\nhostname = {hostname}\nspool = spool\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Both configurations, the zones, the CA, and nsd serving them."""
    base = tmp_path_factory.mktemp("doctor")
    good, bad = str(base / "good"), str(base / "bad")
    os.makedirs(good)
    os.makedirs(bad)
    for d in (good, bad):   # a minimal ortoo.conf so that the CLI runs
        with open(os.path.join(d, "ortoo.conf"), "w") as f:
            f.write("[listen]\nsmtp = 127.0.0.1:0\n")
    run_ortoo(good, "dkim", "keygen", "good.test", "--selector", "s1", "--algo", "ed25519")
    run_ortoo(good, "dkim", "keygen", "good.test", "--selector", "s2", "--algo", "rsa")
    with open(os.path.join(good, "domains", "good.test", "aliases"), "w") as f:
        f.write("reports: someone@elsewhere.example\n")
    for dom in ("bad.test", "wrong.test"):
        run_ortoo(bad, "dkim", "keygen", dom, "--selector", "s1", "--algo", "ed25519")
    run_ortoo(bad, "domain", "add", "odd.test")

    ca_file = str(base / "ca.pem")
    ca = make_ca(ca_file)
    good_tlsa = make_leaf(good, "mail.good.test", ca)
    make_leaf(bad, "mail.bad.test", ca, days=(-30, -2))      # expired two days ago

    rsa = dkim_record(good, "good.test", "s2")
    assert len(rsa) > 255
    zones = [
        Zone("good.test", {
            "@": ["MX 10 mail", ("TXT", ["v=spf1 mx -all"])],
            "mail": ["A 127.0.0.25", "AAAA ::1"],
            "s1._domainkey": [("TXT", [dkim_record(good, "good.test", "s1")])],
            "s2._domainkey": [("TXT", txt_chunks(rsa))],
            "_dmarc": [("TXT", ["v=DMARC1; p=quarantine; rua=mailto:reports@good.test"])],
            "_25._tcp.mail": [f"TLSA 3 1 1 {good_tlsa}"],
            "_smtp._tls": [("TXT", ["v=TLSRPTv1; rua=mailto:reports@good.test"])],
        }),
        Zone("bad.test", {
            "mail": ["A 127.0.0.27", "A 127.0.0.99"],
            "other": ["A 127.0.0.28"],
            "_25._tcp.mail": ["TLSA 3 1 1 " + "00" * 32],
        }),
        Zone("wrong.test", {
            "@": ["MX 10 mx.elsewhere.test.", ("TXT", ["v=spf1 ip4:192.0.2.1 -all"]),
                  ("TXT", ["v=spf1 mx -all"])],
            "s1._domainkey": [("TXT", [other_ed25519_record()])],
            "_dmarc": [("TXT", ["v=DMARC1; p=bogus; rua=mailto:postmaster@wrong.test"])],
            "_mta-sts": [("TXT", ["v=STSv1; id="])],
            "_smtp._tls": [("TXT", ["v=TLSRPTv1; rua=ftp://reports.example"])],
        }),
        Zone("odd.test", {
            "@": ["MX 0 .", ("TXT", ["v=spf1 ip4:300.1.2.3 -all"])],
            "_dmarc": [("TXT", ["v=DMARC1; p=reject; rua=mailto:nobody@odd.test"])],
            "_mta-sts": [("TXT", ["v=STSv1; id=20240101"])],
        }, signed=False),
        Zone("soft.test", {
            "@": ["MX 10 mail.bad.test.", ("TXT", ["v=spf1 ip4:127.0.0.28 ~all"])],
        }, signed=False),
        Zone("loop.test", {
            "@": ["MX 10 mail.bad.test.", ("TXT", ["v=spf1 include:loop.test -all"])],
        }, signed=False),
        Zone("forged.test", {"@": ["MX 10 mail.bad.test."]},
             tamper={("@", "MX"): "10 evil.example."}),
        Zone("0.0.127.in-addr.arpa", {
            "25": ["PTR mail.good.test."],
            "27": ["PTR mail.bad.test."],
            "28": ["PTR other.bad.test."],
            "29": ["PTR mail.bad.test."],
        }),
        Zone("0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
             {"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0": ["PTR mail.good.test."]}),
    ]
    with DnsServer(base / "dns", zones) as dns:
        write_conf(dns, good, "mail.good.test")
        write_conf(dns, bad, "mail.bad.test")
        yield {"good": good, "bad": bad, "ca": ca_file, "dns": dns, "base": base,
               "tlsa": good_tlsa}


@pytest.fixture(scope="module")
def listener():
    """A loopback TCP listener: the kernel completes handshakes (no accept)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


@pytest.fixture(scope="module")
def closed_port():
    """A loopback port nothing listens on (bound, never listening)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def doctor(world, which, domain, *args, json_out=True, env_ca=True, timeout=60):
    """Run `ortoo doctor`; returns (exit status, parsed JSON or text, stderr)."""
    env = dict(os.environ)
    if env_ca:
        env["SSL_CERT_FILE"] = world["ca"]
    cmd = [ORTOO, "-c", world[which], "doctor", domain, *args]
    if json_out:
        cmd.append("--json")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert bad not in p.stderr, p.stderr
    if not json_out:
        return p.returncode, p.stdout, p.stderr
    try:
        return p.returncode, json.loads(p.stdout), p.stderr
    except json.JSONDecodeError:
        raise AssertionError(f"not JSON:\n{p.stdout}\n{p.stderr}")


def checks(report, name, subject=None):
    out = [c for c in report["checks"] if c["name"] == name
           and (subject is None or c["subject"] == subject)]
    assert out, f"no {name} {subject or ''} check in {json.dumps(report, indent=1)}"
    return out


def one(report, name, subject=None):
    out = checks(report, name, subject)
    assert len(out) == 1, out
    return out[0]


def show(report):
    return "\n".join(f"{c['status']} {c['name']} {c['subject']}: {c['detail']}"
                     for c in report["checks"])


# ---- everything right ----------------------------------------------------------

@pytest.fixture(scope="module")
def good_report(world, listener):
    args = []
    for ip in GOOD_IPS:
        args += ["--ip", ip]
    rc, rep, err = doctor(world, "good", "good.test", *args, "--port25-target", listener)
    return rc, rep, err


def test_good_domain_all_ok(good_report):
    rc, rep, err = good_report
    bad = [c for c in rep["checks"] if c["status"] != "OK"]
    assert not bad, show(rep) + "\n" + err
    assert rc == 0, err
    assert rep["summary"] == {"ok": len(rep["checks"]), "warn": 0, "fail": 0}
    assert rep["domain"] == "good.test" and rep["hostname"] == "mail.good.test"
    assert rep["addresses"] == GOOD_IPS and rep["addresses_from"] == "given with --ip"
    assert rep["deadline_passed"] is False
    names = [c["name"] for c in rep["checks"]]
    # a stable order: one line per check, per address, per selector
    assert names == ["domain", "mx", "address", "ptr", "ptr", "spf", "spf", "spf",
                     "dkim", "dkim", "dmarc", "dmarc-rua", "certificate", "dnssec",
                     "tlsa", "mta-sts", "tls-rpt", "port25"], names
    for c in rep["checks"]:
        assert c["why"] is None and c["fix"] is None, c


def test_good_details(good_report, world, listener):
    _, rep, _ = good_report
    assert "10 mail.good.test" in one(rep, "mx")["detail"]
    assert "DNSSEC: secure" in one(rep, "mx")["detail"]
    assert "127.0.0.25" in one(rep, "address")["detail"]
    ptr = one(rep, "ptr", "::1")["detail"]
    assert "::1 -> mail.good.test -> ::1" in ptr and "forward-confirmed" in ptr
    assert "forward-confirmed" in one(rep, "ptr", "127.0.0.25")["detail"]
    assert '"v=spf1 mx -all"' in one(rep, "spf", "good.test")["detail"]
    for ip in GOOD_IPS:
        assert "SPF of good.test gives pass for " + ip in one(rep, "spf", ip)["detail"]
    assert "ed25519" in one(rep, "dkim", "s1._domainkey.good.test")["detail"]
    assert "matches the key on disk" in one(rep, "dkim", "s2._domainkey.good.test")["detail"]
    dmarc = one(rep, "dmarc")["detail"]
    assert "p=quarantine" in dmarc and "put in spam" in dmarc and "relaxed" in dmarc
    assert "reports@good.test" in one(rep, "dmarc-rua")["detail"]
    cert = one(rep, "certificate")["detail"]
    assert "ortoo test CA" in cert and re.search(r"\b(89|90) days left", cert), cert
    assert "secure" in one(rep, "dnssec")["detail"]
    assert "DANE-EE" in one(rep, "tlsa")["detail"]
    assert "reports@good.test" in one(rep, "tls-rpt")["detail"]
    assert "optional" in one(rep, "mta-sts")["detail"]
    assert listener in one(rep, "port25")["detail"]


def test_good_text_output(world, listener):
    rc, out, err = doctor(world, "good", "good.test", "--ip", "127.0.0.25", "--ip", "::1",
                          "--port25-target", listener, json_out=False)
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines[0] == ("ortoo doctor good.test: server mail.good.test, addresses "
                        "127.0.0.25, ::1 (given with --ip)"), out
    assert re.match(r"^OK +mx good\.test: good\.test MX 10 mail\.good\.test", lines[3]), out
    assert lines[-1] == f"0 FAIL, 0 WARN, {len(lines) - 4} OK", out


def test_without_trusted_ca_the_certificate_relies_on_dane(world, listener):
    """Not trusted by the system's CAs, but a secure DANE-EE record matches."""
    rc, rep, _ = doctor(world, "good", "good.test", "--ip", "127.0.0.25,::1",
                        "--port25-target", listener, env_ca=False)
    cert = one(rep, "certificate")
    assert cert["status"] == "OK" and "authenticated by DANE" in cert["detail"], cert
    assert rc == 0, show(rep)


def test_no_port25(world):
    # also: "--ip A B" takes both, and a v4-mapped address is the IPv4 address
    rc, rep, _ = doctor(world, "good", "good.test", "--ip", "::ffff:127.0.0.25", "::1",
                        "--no-port25")
    assert rc == 0, show(rep)
    assert rep["addresses"] == GOOD_IPS
    assert not [c for c in rep["checks"] if c["name"] == "port25"]


def test_addresses_from_listeners(world, tmp_path):
    """Without --ip, specific public listener addresses are the server's
    (loopback ones are not: the world never sees them)."""
    with open(os.path.join(world["good"], "ortoo.conf")) as f:
        conf = f.read()
    assert "smtp = 127.0.0.1:0\n" in conf
    os.makedirs(tmp_path / "c")
    with open(tmp_path / "c" / "ortoo.conf", "w") as f:
        f.write(conf.replace("smtp = 127.0.0.1:0\n",
                             "smtp = 127.0.0.1:0, 198.51.100.7:25\n"
                             "submission = [2001:db8::7]:587\n"))
    p = run_ortoo(tmp_path / "c", "doctor", "good.test", "--no-port25", "--json", check=False)
    rep = json.loads(p.stdout)
    assert rep["addresses"] == ["198.51.100.7", "2001:db8::7"], rep
    assert rep["addresses_from"] == "the addresses the listeners bind"
    c = one(rep, "address")
    assert c["status"] == "FAIL" and "mail.good.test. IN A 198.51.100.7" in c["fix"], c


# ---- everything wrong ----------------------------------------------------------

@pytest.fixture(scope="module")
def bad_report(world, closed_port):
    args = []
    for ip in BAD_IPS:
        args += ["--ip", ip]
    rc, rep, err = doctor(world, "bad", "bad.test", *args, "--port25-target", closed_port)
    return rc, rep, err


def test_bad_exit_status(bad_report):
    rc, rep, err = bad_report
    assert rc == 1, err
    assert rep["summary"]["fail"] == len([c for c in rep["checks"] if c["status"] == "FAIL"])


def test_missing_mx(bad_report):
    c = one(bad_report[1], "mx")
    assert c["status"] == "FAIL" and "no MX record" in c["detail"], c
    assert c["fix"] == "bad.test. IN MX 10 mail.bad.test."


def test_wrong_addresses(bad_report):
    c = one(bad_report[1], "address")
    assert c["status"] == "FAIL", c
    fix = c["fix"].splitlines()
    assert "mail.bad.test. IN A 127.0.0.26" in fix and "mail.bad.test. IN A 127.0.0.28" in fix
    assert "remove: mail.bad.test. IN A 127.0.0.99" in fix
    assert "mail.bad.test. IN A 127.0.0.27" not in fix


def test_ptr_missing_mismatch_unconfirmed(bad_report):
    rep = bad_report[1]
    c = one(rep, "ptr", "127.0.0.26")
    assert c["status"] == "FAIL" and "no reverse DNS" in c["detail"], c
    assert "26.0.0.127.in-addr.arpa. IN PTR mail.bad.test." in c["fix"]
    assert "provider" in c["fix"]
    c = one(rep, "ptr", "127.0.0.27")
    assert c["status"] == "OK", c
    c = one(rep, "ptr", "127.0.0.28")
    assert c["status"] == "FAIL" and "other.bad.test" in c["detail"], c
    assert "EHLO mail.bad.test" in c["detail"]
    assert "28.0.0.127.in-addr.arpa. IN PTR mail.bad.test." in c["fix"]
    c = one(rep, "ptr", "127.0.0.29")
    assert c["status"] == "FAIL" and "does not resolve to 127.0.0.29" in c["detail"], c
    assert c["fix"] == "mail.bad.test. IN A 127.0.0.29"


def test_missing_spf(bad_report):
    c = one(bad_report[1], "spf", "bad.test")
    assert c["status"] == "FAIL" and "no SPF record" in c["detail"], c
    # the MX is not this server: the addresses themselves
    assert c["fix"] == ('bad.test. IN TXT "v=spf1 ip4:127.0.0.26 ip4:127.0.0.27 '
                        'ip4:127.0.0.28 ip4:127.0.0.29 -all"'), c


def test_missing_dkim(bad_report, world):
    c = one(bad_report[1], "dkim", "s1._domainkey.bad.test")
    assert c["status"] == "FAIL" and "no DKIM record" in c["detail"], c
    rec = dkim_record(world["bad"], "bad.test", "s1")
    assert c["fix"] == f's1._domainkey.bad.test. IN TXT "{rec}"', c


def test_missing_dmarc(bad_report):
    c = one(bad_report[1], "dmarc")
    assert c["status"] == "FAIL", c
    assert c["fix"] == ('_dmarc.bad.test. IN TXT "v=DMARC1; p=quarantine; '
                        'rua=mailto:postmaster@bad.test"'), c


def test_expired_certificate(bad_report):
    c = one(bad_report[1], "certificate")
    assert c["status"] == "FAIL" and "expired 2 days ago" in c["detail"], c
    assert "acme.sh or certbot" in c["fix"]


def test_tlsa_does_not_match(bad_report, world):
    c = one(bad_report[1], "tlsa")
    assert c["status"] == "FAIL" and "no TLSA record matches" in c["detail"], c
    assert re.match(r"^_25\._tcp\.mail\.bad\.test\. IN TLSA 3 1 1 [0-9a-f]{64}\n", c["fix"]), c


def test_port25_refused(bad_report, closed_port):
    c = one(bad_report[1], "port25")
    assert c["status"] == "FAIL" and "refused" in c["detail"], c
    assert closed_port in c["detail"]
    assert "provider" in c["fix"]


@pytest.fixture(scope="module")
def wrong_report(world):
    rc, rep, err = doctor(world, "bad", "wrong.test", "--ip", "127.0.0.27", "--no-port25")
    assert rc == 1, err
    return rep


def test_mx_elsewhere(wrong_report):
    c = one(wrong_report, "mx")
    assert c["status"] == "FAIL" and "mx.elsewhere.test" in c["detail"], c
    assert c["fix"] == "wrong.test. IN MX 10 mail.bad.test."


def test_two_spf_records(wrong_report):
    c = one(wrong_report, "spf", "wrong.test")
    assert c["status"] == "FAIL" and "2 SPF records" in c["detail"], c
    assert "RFC 7208 4.5" in c["why"]
    assert 'wrong.test. IN TXT "v=spf1 ip4:127.0.0.27 -all"' in c["fix"], c


def test_dkim_other_key(wrong_report, world):
    c = one(wrong_report, "dkim")
    assert c["status"] == "FAIL" and "not the key on disk" in c["detail"], c
    rec = dkim_record(world["bad"], "wrong.test", "s1")
    assert c["fix"] == f's1._domainkey.wrong.test. IN TXT "{rec}"'


def test_dmarc_does_not_parse(wrong_report):
    c = one(wrong_report, "dmarc")
    assert c["status"] == "FAIL" and "p= must be none, quarantine or reject" in c["detail"], c
    # what ortoo's own inbound checks (core/dmarc.c) make of it: RFC 7489 6.6.3
    assert "receivers read it as p=none" in c["why"], c
    assert c["fix"].startswith('_dmarc.wrong.test. IN TXT "v=DMARC1; p=quarantine')


def test_mta_sts_and_tls_rpt_broken(wrong_report):
    c = one(wrong_report, "mta-sts")
    assert c["status"] == "FAIL" and "does not parse" in c["detail"], c
    assert c["fix"].startswith('_mta-sts.wrong.test. IN TXT "v=STSv1; id=')
    c = one(wrong_report, "tls-rpt")
    assert c["status"] == "FAIL" and "mailto: or https:" in c["detail"], c
    assert c["fix"] == '_smtp._tls.wrong.test. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@wrong.test"'


@pytest.fixture(scope="module")
def odd_report(world):
    rc, rep, err = doctor(world, "bad", "odd.test", "--ip", "127.0.0.27", "--no-port25")
    assert rc == 1, err
    return rep


def test_null_mx(odd_report):
    c = one(odd_report, "mx")
    assert c["status"] == "FAIL" and "null MX" in c["detail"], c
    assert c["fix"].endswith("odd.test. IN MX 10 mail.bad.test."), c


def test_spf_syntax_error(odd_report):
    c = one(odd_report, "spf", "odd.test")
    assert c["status"] == "FAIL" and "does not parse" in c["detail"], c
    assert "ip4:300.1.2.3" in c["detail"]
    assert c["fix"] == 'odd.test. IN TXT "v=spf1 ip4:127.0.0.27 -all"', c


def test_no_dkim_key(odd_report):
    c = one(odd_report, "dkim")
    assert c["status"] == "FAIL" and "no DKIM key" in c["detail"], c
    assert c["fix"].startswith("ortoo dkim keygen odd.test")


def test_rua_not_accepted(odd_report):
    c = one(odd_report, "dmarc")
    assert c["status"] == "OK" and "p=reject" in c["detail"] and "refused" in c["detail"], c
    c = one(odd_report, "dmarc-rua")
    assert c["status"] == "FAIL" and "nobody@odd.test" in c["detail"], c
    assert c["fix"].startswith("ortoo user add nobody@odd.test")


def test_insecure_zone_and_mta_sts_not_fetched(odd_report):
    c = one(odd_report, "dnssec")
    assert c["status"] == "OK" and "insecure" in c["detail"], c
    c = one(odd_report, "mta-sts")
    assert c["status"] == "WARN" and "not fetched" in c["detail"], c
    assert "https://mta-sts.odd.test/.well-known/mta-sts.txt" in c["fix"]


def test_spf_evaluated_per_address(world):
    """SPF parses but does not pass for one address: the evaluator's result,
    and the published record with the missing address put first."""
    rc, rep, err = doctor(world, "bad", "soft.test", "--ip", "127.0.0.27", "--ip", "127.0.0.28",
                          "--no-port25")
    assert rc == 1, err
    assert one(rep, "spf", "soft.test")["status"] == "OK"
    c = one(rep, "spf", "127.0.0.28")
    assert c["status"] == "OK" and "gives pass" in c["detail"], c
    c = one(rep, "spf", "127.0.0.27")
    assert c["status"] == "FAIL" and "gives softfail for 127.0.0.27" in c["detail"], c
    assert c["fix"] == 'soft.test. IN TXT "v=spf1 ip4:127.0.0.27 ip4:127.0.0.28 ~all"', c


def test_spf_permerror(world):
    """An include loop: the evaluator's lookup limit makes it a permerror."""
    rc, rep, err = doctor(world, "bad", "loop.test", "--ip", "127.0.0.27", "--no-port25")
    assert rc == 1, err
    c = one(rep, "spf", "127.0.0.27")
    assert c["status"] == "FAIL" and "gives permerror" in c["detail"], c
    # the MX is this server, and 127.0.0.27 is its address: "mx" says it all
    assert c["fix"] == 'loop.test. IN TXT "v=spf1 mx -all"', c


def test_bogus_zone(world):
    rc, rep, err = doctor(world, "bad", "forged.test", "--ip", "127.0.0.27", "--no-port25")
    assert rc == 1
    c = one(rep, "mx")
    assert c["status"] == "FAIL" and "bogus" in c["detail"], c
    c = one(rep, "dnssec")
    assert c["status"] == "FAIL" and "validation fails" in c["detail"], c


# ---- the command line ------------------------------------------------------------

@pytest.mark.parametrize("args", [
    (), ("--ip",), ("good.test", "--ip", "not-an-ip"), ("good.test", "--timeout", "0"),
    ("good.test", "--port25-target", "nope"), ("good.test", "--port25-target", "h:0"),
    ("good.test", "--bogus"), ("good.test", "other.test"), ("not_a_domain!",),
    ("good.test", "--timeout"), ("good.test", "--no-port25", "--port25-target", "h:25"),
], ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors(world, args):
    p = run_ortoo(world["good"], "doctor", *args, check=False)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert "usage" in p.stderr


def test_deadline(world, tmp_path):
    """A resolver that never answers: every lookup is reported, within --timeout.
    About fifteen lookups (and the SPF and FCrDNS checks) each wait the whole
    2 s: one after another they would take half a minute; at once, one
    deadline."""
    mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # reads nothing, answers nothing
    mute.bind(("127.0.0.1", 0))
    cfg = tmp_path / "mute"
    os.makedirs(cfg)
    with open(cfg / "ortoo.conf", "w") as f:
        f.write("[server]\nhostname = mail.good.test\n[listen]\nsmtp = 127.0.0.1:0\n"
                f"[resolver]\ndnssec = off\nforward = 127.0.0.1@{mute.getsockname()[1]}\n")
    t0 = time.monotonic()
    # (not under .test, which libunbound answers itself without a stub)
    p = run_ortoo(cfg, "doctor", "example.com", "--ip", "127.0.0.25", "--timeout", "2",
                  "--port25-target", "mx.example.com:25", "--json", check=False)
    elapsed = time.monotonic() - t0
    mute.close()
    assert p.returncode == 1, p.stdout + p.stderr
    assert elapsed < 10, elapsed
    rep = json.loads(p.stdout)
    c = one(rep, "mx")
    assert c["status"] == "FAIL" and ("timeout" in c["detail"] or "deadline" in c["detail"] or
                                      "servfail" in c["detail"]), c
    assert one(rep, "port25")["status"] == "WARN"


# ---- a blackholed port 25, and the host's own addresses ------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_port25_blackholed_in_netns(world):
    """In a namespace of its own: 198.51.100.25 is the host's only public address
    (doctor finds it without --ip), and 192.0.2.0/24 is routed into loopback
    where SYNs vanish: the connection times out and doctor says port 25 looks
    blocked."""
    script = (
        "set -e; ip link set lo up; ip addr add 198.51.100.25/32 dev lo; "
        "ip route add 192.0.2.0/24 dev lo; "
        f"exec {ORTOO} -c {world['good']} doctor good.test --json --timeout 7 "
        "--port25-target 192.0.2.99:25")
    t0 = time.monotonic()
    p = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                       text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert "AddressSanitizer" not in p.stderr and "runtime error:" not in p.stderr, p.stderr
    rep = json.loads(p.stdout)
    assert rep["addresses"] == ["198.51.100.25"], rep
    assert rep["addresses_from"] == "this host's public addresses"
    c = one(rep, "port25")
    assert c["status"] == "FAIL" and "looks blocked" in c["detail"], c
    assert "192.0.2.99:25" in c["detail"] and "VPS" in c["why"]
    assert 4.5 < elapsed < 30, elapsed
    assert p.returncode == 1

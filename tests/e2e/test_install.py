# SPDX-License-Identifier: MIT
"""`make install` into a DESTDIR: the exact file list, nothing outside it,
the sendmail links resolving to the binary, the unit pointing at the
installed binary (and accepted by `systemd-analyze verify`), the manual
pages formatting without a single warning under `man --warnings`, and
`make uninstall` removing everything again."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

EXPECTED = {
    "bin/ortoo", "sbin/sendmail", "lib/sendmail",
    "lib/systemd/system/ortoo.service",
    "lib/sysusers.d/ortoo.conf", "lib/tmpfiles.d/ortoo.conf",
    "share/man/man8/ortoo.8", "share/man/man5/ortoo.conf.5",
    "share/doc/ortoo/README.md", "share/doc/ortoo/config.md",
    "share/doc/ortoo/setup.md", "share/doc/ortoo/control.md",
    "share/doc/ortoo/doctor.md",
    "share/doc/ortoo/metrics.md",
}


def make(*args):
    # What users install is the release build: under `make MODE=asan test` the
    # MODE given to the outer make would reach this one through MAKEFLAGS.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    p = subprocess.run(["make", "-C", ROOT, "--no-print-directory", "MODE=release", *args],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"make {' '.join(args)}:\n{p.stdout}\n{p.stderr}"
    return p


def tree(root):
    """Every file and link under root, relative; directories apart."""
    files, dirs = set(), set()
    for d, dn, fn in os.walk(root):
        for n in fn:
            files.add(os.path.relpath(os.path.join(d, n), root))
        for n in dn:
            p = os.path.join(d, n)
            (files if os.path.islink(p) else dirs).add(os.path.relpath(p, root))
    return files, dirs


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    return dest


def test_file_list(installed):
    files, _ = tree(installed)
    assert files == {"usr/" + f for f in EXPECTED}, \
        f"unexpected: {sorted(files - {'usr/' + f for f in EXPECTED})}; " \
        f"missing: {sorted({'usr/' + f for f in EXPECTED} - files)}"
    assert set(os.listdir(installed)) == {"usr"}, os.listdir(installed)


def test_links_and_modes(installed):
    usr = installed / "usr"
    assert os.readlink(usr / "sbin/sendmail") == "../bin/ortoo"
    assert os.readlink(usr / "lib/sendmail") == "../sbin/sendmail"
    assert os.path.realpath(usr / "lib/sendmail") == str(usr / "bin/ortoo")
    assert os.stat(usr / "bin/ortoo").st_mode & 0o777 == 0o755
    for f in ("lib/systemd/system/ortoo.service", "share/man/man8/ortoo.8"):
        assert os.stat(usr / f).st_mode & 0o777 == 0o644, f
    # The link runs as sendmail.
    p = subprocess.run([str(usr / "sbin/sendmail"), "--help"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0 and "usage: sendmail" in p.stdout, p


def test_unit(installed):
    unit = (installed / "usr/lib/systemd/system/ortoo.service").read_text()
    assert "ExecStart=/usr/bin/ortoo -c /etc/ortoo serve" in unit, unit
    assert "ExecReload=/usr/bin/ortoo -c /etc/ortoo reload" in unit, unit
    assert "/usr/local" not in unit
    for want in ("Type=notify", "User=ortoo", "CAP_NET_BIND_SERVICE",
                 "ReadWritePaths=/var/spool/ortoo", "ProtectSystem=strict",
                 "NoNewPrivileges=yes"):
        assert want in unit, want
    tmpfiles = (installed / "usr/lib/tmpfiles.d/ortoo.conf").read_text()
    assert "d /var/spool/ortoo 0751 ortoo ortoo" in tmpfiles
    assert "d /var/spool/ortoo/maildrop 3733 ortoo ortoo" in tmpfiles
    # systemd's own check, on a copy that points at the installed binary.
    copy = installed / "verify" / "ortoo.service"
    copy.parent.mkdir()
    copy.write_text(unit.replace("/usr/bin/ortoo", str(installed / "usr/bin/ortoo")))
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                       capture_output=True, text=True, timeout=60)
    shutil.rmtree(copy.parent)
    problems = [l for l in (p.stdout + p.stderr).splitlines()
                if "ortoo.service" in l]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", ["man8/ortoo.8", "man5/ortoo.conf.5"])
def test_man_warnings(installed, page):
    path = installed / "usr/share/man" / page
    p = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "MANWIDTH": "80",
                                                   "MANPAGER": "cat", "PAGER": "cat"})
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", f"man --warnings on {page}:\n{p.stderr}"
    assert "NAME" in p.stdout and "SEE ALSO" in p.stdout
    # Each manual names what the other documents.
    text = " ".join(p.stdout.split())
    if page.endswith(".8"):
        for word in ("serve", "reload", "check", "sendmail", "/var/spool/ortoo"):
            assert word in text, word
    else:
        for word in ("control_group", "user", "spool", "[listen]"):
            assert word in text, word


def test_uninstall(tmp_path):
    dest = tmp_path / "d"
    make("install", f"DESTDIR={dest}")            # PREFIX=/usr/local
    files, _ = tree(dest)
    assert files == {"usr/local/" + f for f in EXPECTED}
    make("uninstall", f"DESTDIR={dest}")
    files, _ = tree(dest)
    assert files == set(), f"left behind: {sorted(files)}"

# SPDX-License-Identifier: MIT
"""Start-up and shutdown: clean exit on SIGTERM and SIGINT, the chosen io
backend, configuration errors reported as file:line, and `ortoo user`."""

import signal
import subprocess

from conftest import ORTOO, USERS, assert_serving, make_conf, run_ortoo


def test_sigint_and_sigterm_exit_zero(fresh, backend):
    s = fresh("signals")
    assert_serving(s)
    assert s.stop(signal.SIGINT) == 0, s.tail()
    s.start()
    assert_serving(s)
    assert s.stop(signal.SIGTERM) == 0, s.tail()
    assert backend in "\n".join(s.log), \
        f"the io backend {backend} is not named in the log"


def test_config_error_is_file_line(fresh, backend):
    s = fresh("badconf")
    s.stop()
    conf = make_conf(backend) + "[server]\nno_such_key = 1\n"
    with open(f"{s.dir}/ortoo.conf", "w") as f:
        f.write(conf)
    line = conf.splitlines().index("no_such_key = 1") + 1
    p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert f"ortoo.conf:{line}:" in p.stderr, p.stderr
    conf = make_conf(backend, **{"server.max_recipients": "lots"})
    with open(f"{s.dir}/ortoo.conf", "w") as f:
        f.write(conf)
    p = subprocess.run([ORTOO, "-c", s.dir, "serve"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "ortoo.conf:" in p.stderr and "max_recipients" in p.stderr, p.stderr


def test_init_layout(tmp_path):
    d = tmp_path / "conf"
    p = run_ortoo(d, "init", "example.test", "--hostname", "mx.example.test")
    for f in ("ortoo.conf", "certs/mx.example.test/fullchain.pem",
              "certs/mx.example.test/privkey.pem", "domains/example.test/users"):
        assert (d / f).is_file(), f"ortoo init did not write {f}"
    # A real server's queue is not in the config directory (which holds no
    # state): init names /var/spool/ortoo and runs as the ortoo account.
    assert not (d / "spool").exists(), "ortoo init made a spool in the config dir"
    conf = (d / "ortoo.conf").read_text()
    assert "spool = /var/spool/ortoo" in conf and "user = ortoo" in conf, conf
    # sendmail run by any user reads ortoo.conf (no secret in it) to find the
    # spool; users and keys stay private.
    import stat
    assert stat.S_IMODE(d.stat().st_mode) == 0o755
    assert stat.S_IMODE((d / "ortoo.conf").stat().st_mode) == 0o644
    for sub in ("domains", "certs"):
        assert stat.S_IMODE((d / sub).stat().st_mode) == 0o750, sub
    key = (d / "certs/mx.example.test/privkey.pem").read_text()
    assert "PRIVATE KEY" in key
    out = subprocess.run(["openssl", "pkey", "-in",
                          str(d / "certs/mx.example.test/privkey.pem"),
                          "-noout", "-text"], capture_output=True, text=True)
    assert "ASN1 OID: prime256v1" in out.stdout or "P-256" in out.stdout, \
        "the key is not ECDSA P-256"
    assert "MX" in p.stdout, "init does not print the DNS records"
    # The config init writes starts as it is.
    s = subprocess.run([ORTOO, "-c", str(d), "queue", "list"],
                       capture_output=True, text=True, timeout=20)
    assert s.returncode == 0, s.stderr


def test_user_check(template_dir):
    for user, pw in USERS.items():
        run_ortoo(template_dir, "user", "check", user, "--password-stdin",
                  input=pw + "\n")
    p = run_ortoo(template_dir, "user", "check", "alice@example.test",
                  "--password-stdin", input="wrong\n", check=False)
    assert p.returncode != 0
    p = run_ortoo(template_dir, "user", "check", "nobody@example.test",
                  "--password-stdin", input="x\n", check=False)
    assert p.returncode != 0

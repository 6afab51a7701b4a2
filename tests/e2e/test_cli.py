# SPDX-License-Identifier: MIT
"""The command line as a new user meets it: every command and subcommand
answers -h/--help with status 0, misuse prints the usage with status 2, a
missing configuration directory says so and suggests `ortoo init`, and the
README's command list is exactly the synopsis of `ortoo --help`."""

import os
import re

import pytest

from conftest import ORTOO, run_ortoo

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "..", "..", "README.md")

# Every command line that must print help: (args...) after `ortoo`.
HELP = [
    (), ("init",), ("check",), ("serve",), ("reload",), ("stats",), ("user",),
    ("user", "add"), ("user", "del"), ("user", "list"), ("user", "check"),
    ("domain",), ("domain", "add"), ("domain", "del"), ("domain", "list"),
    ("queue",), ("queue", "list"), ("queue", "show"), ("queue", "flush"),
    ("queue", "delete"), ("queue", "bounce"), ("dkim",), ("dkim", "keygen"),
    ("dkim", "show"), ("doctor",), ("lookup",), ("send",), ("sendmail",),
]


def synopsis(help_text):
    """The lines under "synopsis:" in `ortoo --help`, unindented."""
    lines = help_text.splitlines()
    i = lines.index("synopsis:")
    out = []
    for line in lines[i + 1:]:
        if not line.strip():
            break
        out.append(line[2:])
    return out


def readme_commands():
    with open(README) as f:
        text = f.read()
    m = re.search(r"^## Commands\n\n```\n(.*?)```", text, re.S | re.M)
    assert m, "README.md has no ## Commands block"
    return m.group(1).rstrip("\n").splitlines()


@pytest.mark.parametrize("args", HELP, ids=lambda a: " ".join(a) or "ortoo")
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_exits_zero(args, flag, tmp_path):
    # No configuration at all: help must not need one.
    p = run_ortoo(tmp_path / "none", *args, flag, check=False)
    assert p.returncode == 0, (args, flag, p.returncode, p.stderr)
    assert "usage" in p.stdout.lower(), p.stdout
    assert p.stderr == "", p.stderr


def test_sendmail_link_help(tmp_path):
    link = tmp_path / "sendmail"
    os.symlink(ORTOO, link)
    import subprocess
    p = subprocess.run([str(link), "--help"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 0 and "usage: sendmail" in p.stdout, p


@pytest.mark.parametrize("args", [
    (), ("bogus",), ("--bogus",), ("serve", "extra"), ("reload", "extra"),
    ("check", "extra"), ("user",), ("user", "bogus"), ("user", "add"),
    ("user", "add", "--bogus", "a@example.test"), ("queue",), ("queue", "bogus"),
    ("queue", "list", "--bogus"), ("init",), ("send",),
], ids=lambda a: " ".join(a) or "nothing")
def test_misuse_exits_two(args, template_dir):
    p = run_ortoo(template_dir, *args, check=False)
    assert p.returncode == 2, (args, p.returncode, p.stdout, p.stderr)
    assert "usage" in p.stderr.lower(), (args, p.stderr)


@pytest.mark.parametrize("args", [
    ("user", "list"), ("user", "del", "a@example.test"), ("queue", "list"),
    ("reload",), ("check",), ("serve",),
])
def test_missing_config_dir(args, tmp_path):
    missing = tmp_path / "nonexistent"
    p = run_ortoo(missing, *args, check=False)
    assert p.returncode == 1, (args, p.returncode, p.stdout, p.stderr)
    assert "does not exist" in p.stderr and "ortoo" in p.stderr \
        and "init" in p.stderr, p.stderr
    assert p.stdout == "", p.stdout
    # A directory that is not an ortoo configuration: the same advice.
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    p = run_ortoo(empty, *args, check=False)
    assert p.returncode == 1 and "no ortoo.conf" in p.stderr and "init" in p.stderr, \
        p.stderr


def test_readme_commands_match_help():
    p = run_ortoo(None, "--help")
    assert readme_commands() == synopsis(p.stdout), \
        "README.md's ## Commands block differs from `ortoo --help`'s synopsis:\n" \
        + "\n".join(synopsis(p.stdout))


def test_every_command_in_synopsis():
    """Each command listed by --help has a synopsis line, and takes -h."""
    p = run_ortoo(None, "--help")
    text = p.stdout
    cmds = re.findall(r"^  (\w+)\s{2,}\S", text.split("synopsis:")[0]
                      .split("commands:")[1], re.M)
    assert len(cmds) >= 8, cmds
    syn = " ".join(synopsis(text))
    for c in cmds:
        assert re.search(rf"\b{c}\b", syn), f"{c} has no synopsis line"
        assert (c,) in HELP, f"{c} is not in this test's HELP list"

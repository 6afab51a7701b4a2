# SPDX-License-Identifier: MIT
"""The documents stay true of the code, where that is cheap to check.

- Every `ortoo ...` (and `sendmail ...`) command in README.md and
  docs/setup.md, in code blocks and inline: its command and subcommand
  exist (the real binary answers it with `-h` appended, status 0), and every
  option it uses is one that command's help names.
- Every `[section] key` those two documents mention, and every key of their
  ```ini blocks, is documented in docs/config.md; each ```ini block, added to
  a configuration made by `ortoo init`, passes `ortoo check`.
- The section of docs/setup.md that `ortoo doctor` points at is there.
- README's install table names exactly the files test_install.py installs.
- Every function, constant or key named in docs/flow.md exists in the code.
- docs/setup.md has no part left "coming".

No server runs here: the whole file takes a second or two."""

import os
import re
import shlex
import textwrap

import pytest

from conftest import ORTOO, run_ortoo
from test_install import EXPECTED

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCS = ["README.md", "docs/setup.md"]
SRC_DIRS = ["cli", "core", "delivery", "dkim", "resolver", "spool", "io"]


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def fenced(text):
    """[(language, body)] of the ``` blocks (those inside a list dedented)."""
    return [(lang, textwrap.dedent(body)) for lang, body in
            re.findall(r"^ *```(\w*)\n(.*?)^ *```", text, re.S | re.M)]


def without_fenced(text):
    return re.sub(r"^ *```\w*\n.*?^ *```", "", text, flags=re.S | re.M)


def inline(text):
    """The `code spans` outside fenced blocks (they may wrap a line)."""
    return [s.replace("\n", " ") for s in
            re.findall(r"`([^`]+)`", without_fenced(text))]


# ---- commands -------------------------------------------------------------

OPERATORS = {"|", "||", "&&", ";", "&", "(", ")"}
REDIRECTS = {"<", "<<", "<<<", ">", ">>", "<<-"}
# The binary as the documents run it: ortoo, ./ortoo, /usr/local/bin/ortoo,
# sendmail (not a hook script that happens to be called ortoo).
PROGRAM = re.compile(r"^(?:(?:\./|.*/s?bin/)?ortoo|(?:.*/s?bin/)?sendmail)$")


def logical_lines(block):
    """A shell block as its logical lines (backslash continuations joined)."""
    return block.replace("\\\n", " ").splitlines()


def invocations(line):
    """Argument lists of `ortoo` and `sendmail` in command position on one
    shell line (after sudo, variable assignments or an operator); the
    arguments end at the next operator or redirection."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        toks = list(lex)
    except ValueError:                  # an unbalanced quote in prose: not a command
        return []
    out, i, cmd_pos = [], 0, True
    while i < len(toks):
        t = toks[i]
        if t in OPERATORS:
            cmd_pos = True
        elif t in REDIRECTS:
            i += 1                      # skip the redirection's word
        elif cmd_pos and (t == "sudo" or re.match(r"^[A-Z_]+=", t)):
            pass
        elif cmd_pos and PROGRAM.search(t):
            args = []
            i += 1
            while i < len(toks) and toks[i] not in OPERATORS:
                if toks[i] in REDIRECTS:
                    i += 1              # `< file` between the arguments
                else:
                    args.append(toks[i])
                i += 1
            name = os.path.basename(t)
            out.append(args if name == "ortoo" else ["sendmail"] + args)
            cmd_pos = False
            continue
        else:
            cmd_pos = False
        i += 1
    return out


def doc_commands():
    """[(document, argument list)] of every ortoo command in the documents."""
    out = []
    for doc in DOCS:
        text = read(doc)
        if doc == "README.md":          # the synopsis block is test_cli.py's
            text = re.sub(r"^## Commands\n\n```\n.*?```", "", text, flags=re.S | re.M)
        lines = []
        for lang, body in fenced(text):
            if lang in ("sh", ""):
                lines += logical_lines(body)
        lines += [s for s in inline(text) if re.match(r"^(sudo )?(ortoo|sendmail) ", s)]
        for line in lines:
            for args in invocations(line):
                if not any("..." in a for a in args):
                    out.append((doc, args))
    return out


_HELP = {}


def help_text(*words):
    if words not in _HELP:
        p = run_ortoo(None, *words, "-h", check=False)
        assert p.returncode == 0, (words, p.returncode, p.stderr)
        _HELP[words] = p.stdout
    return _HELP[words]


def subcommands():
    """{command: {subcommand}} from `ortoo --help`'s synopsis."""
    subs = {}
    for line in help_text().split("synopsis:")[1].splitlines():
        m = re.match(r"^\s+ortoo (?:\[-c DIR\] )?(\w+) ([a-z]+(?:\|[a-z]+)*)(?:\s|$)", line)
        if m:
            subs.setdefault(m.group(1), set()).update(m.group(2).split("|"))
    return subs


def has_option(text, opt):
    return re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", text) is not None


COMMANDS = doc_commands()


def test_found_commands():
    # The parser finds what the guide is made of (a regression guard for it).
    cmds = {tuple(a[:2]) for _, a in COMMANDS}
    for want in [("init", "example.com"), ("user", "add"), ("domain", "add"),
                 ("dkim", "keygen"), ("queue", "flush"), ("queue", "bounce")]:
        assert want in cmds, (want, sorted(cmds))
    assert any(a[0] == "send" for _, a in COMMANDS)
    assert any(a[0] == "sendmail" for _, a in COMMANDS)
    assert len(COMMANDS) >= 30, len(COMMANDS)


@pytest.mark.parametrize("doc,args", COMMANDS, ids=lambda v: v if isinstance(v, str)
                         else " ".join(v)[:60])
def test_command(doc, args, tmp_path):
    rest = list(args)
    glob = []
    while rest and rest[0] in ("-c", "-v"):
        glob += rest[:2] if rest[0] == "-c" else rest[:1]
        rest = rest[2:] if rest[0] == "-c" else rest[1:]
    assert rest, f"{doc}: `ortoo {' '.join(args)}` names no command"
    cmd = rest[0]
    if cmd.startswith("-"):             # `ortoo --help`, `ortoo --version`
        assert has_option(help_text(), cmd), f"{doc}: ortoo has no option {cmd}"
        return
    words = [cmd]
    subs = subcommands()
    if cmd in subs:
        assert len(rest) > 1 and rest[1] in subs[cmd], \
            f"{doc}: `ortoo {' '.join(args)}`: {cmd} takes {sorted(subs[cmd])}"
        words.append(rest[1])
    helps = help_text(*words)
    for opt in rest[len(words):]:
        if opt.startswith("-") and opt != "-":
            assert has_option(helps, opt), \
                f"{doc}: `ortoo {' '.join(args)}`: {opt} is not an option of " \
                f"`ortoo {' '.join(words)}`:\n{helps}"
    # The real parser, on the real arguments (-h ends it before anything runs).
    p = run_ortoo(tmp_path / "none", *rest, "-h", check=False)
    assert p.returncode == 0 and "usage" in p.stdout.lower(), \
        f"{doc}: `ortoo {' '.join(args)} -h` exited {p.returncode}: {p.stderr}"


# ---- configuration --------------------------------------------------------

def config_sections():
    """{section name: its text} of docs/config.md (`### [name]` headings;
    `[destination DOMAIN]` as "destination")."""
    text = read("docs/config.md")
    out = {}
    for m in re.finditer(r"^### \[(\w+)[^\]]*\]\n(.*?)(?=^##)", text + "\n##", re.S | re.M):
        out[m.group(1)] = m.group(2)
    return out


def documented(section, key):
    text = config_sections().get(section.split()[0])
    return text is not None and f"`{key}`" in text


def ini_blocks():
    out = []
    for doc in DOCS:
        out += [(doc, body) for lang, body in fenced(read(doc)) if lang == "ini"]
    return out


def ini_keys(body):
    section, keys = None, []
    for line in body.splitlines():
        line = line.split(";")[0].strip()
        if m := re.match(r"^\[([^\]]+)\]$", line):
            section = m.group(1)
        elif "=" in line and section is not None:
            keys.append((section, line.split("=", 1)[0].strip()))
    return keys


def test_section_keys_documented():
    mentions = set()
    for doc in DOCS:
        text = read(doc)
        for span in inline(text):
            for m in re.finditer(r"\[(\w+)(?: [^\]]*)?\]\s+([a-z][a-z0-9_]*)\b", span):
                mentions.add((doc, m.group(1), m.group(2)))
    for doc, body in ini_blocks():
        for section, key in ini_keys(body):
            if not section.startswith("routes"):        # its keys are domains
                mentions.add((doc, section, key))
    assert len(mentions) >= 10, mentions
    missing = sorted(m for m in mentions if not documented(m[1], m[2]))
    assert not missing, f"[section] key not in docs/config.md: {missing}"


@pytest.fixture(scope="module")
def base_conf(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs") / "conf"
    run_ortoo(d, "init", "example.com")
    conf = (d / "ortoo.conf").read_text()
    # Root may check a configuration for an account that does not exist here.
    conf = conf.replace("user = ortoo\n", "user = root\n")
    return d, conf


@pytest.mark.parametrize("doc,body", ini_blocks(), ids=lambda v: v.split("\n")[0][:40])
def test_ini_block_checks(doc, body, base_conf):
    d, conf = base_conf
    (d / "ortoo.conf").write_text(conf + "\n" + body)
    p = run_ortoo(d, "check", check=False)
    errors = [l for l in p.stdout.splitlines() if ": error:" in l]
    assert p.returncode == 0 and not errors, f"{doc}:\n{body}\n{p.stdout}{p.stderr}"


# ---- cross references -----------------------------------------------------

def test_doctor_points_at_setup_sections():
    setup = read("docs/setup.md")
    headings = dict(re.findall(r"^## (\d+)\. (.*)$", setup, re.M))
    src = read("cli/doctor_checks.c")
    refs = list(re.finditer(r"docs/setup\.md, section (\d+)", src))
    assert refs, "doctor no longer points at docs/setup.md: drop this test"
    for m in refs:
        n = m.group(1)
        assert n in headings, f"docs/setup.md has no section {n}"
        near = src[max(0, m.start() - 300):m.end()]
        if "certificate" in near:
            assert "certificate" in headings[n].lower(), (n, headings[n])


def test_readme_install_table():
    text = read("README.md")
    sec = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in sec.splitlines() if l.startswith("| `")]
    paths = set()
    for row in rows:
        first = row.split("|")[1]
        paths.update(re.findall(r"`([^`]+)`", first))
    covered = set()
    for p in paths:
        hit = {e for e in EXPECTED if e == p or (p.endswith("/") and e.startswith(p))}
        assert hit, f"README's install table names {p}, which make install does not install"
        covered |= hit
    assert covered == EXPECTED, f"not in README's install table: {sorted(EXPECTED - covered)}"
    docs = {e.rsplit("/", 1)[1] for e in EXPECTED if e.startswith("share/doc/")}
    for name in docs - {"README.md"}:
        assert f"`{name}`" in sec, f"README's install table does not list {name}"


def source_words():
    words = set()
    for d in SRC_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".c", ".h")):
                    with open(os.path.join(dirpath, f)) as fh:
                        words.update(re.findall(r"\b\w+\b", fh.read()))
    return words


def test_flow_names_exist():
    text = read("docs/flow.md")
    names = set()
    for span in re.findall(r"`([^`]+)`", text):
        for w in re.findall(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b", span):
            names.add(w)
    assert len(names) > 100, len(names)
    known = source_words()
    missing = sorted(n for n in names if n not in known)
    assert not missing, f"docs/flow.md names what the code does not have: {missing}"


def test_setup_has_nothing_coming():
    setup = read("docs/setup.md")
    assert not re.search(r"\bcoming\b", setup, re.I), "docs/setup.md still has a 'coming' part"

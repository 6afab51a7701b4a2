# SPDX-License-Identifier: MIT
"""The spool through the real binary: what the session stores with a message
(DSN parameters of RFC 3461, the prepended Received field), recovery from
corrupted segments and journals, and the ordering of durable writes before
the 250 (under strace)."""

from conftest import open_session, message, QUEUED_RE


def test_dsn_parameters_stored(srv):
    with open_session(srv) as c:
        c.expect("MAIL FROM:<dsn@client.test> RET=HDRS ENVID=QQ314159", 250)
        c.expect("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE "
                 "ORCPT=rfc822;alice+2Bx@example.test", 250)
        c.expect("RCPT TO:<bob@example.test> NOTIFY=NEVER", 250)
        c.expect("DATA", 354)
        c.send(message("dsn").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, repr(r)
        qid = m.group(1)
        # a second transaction on the same session starts clean
        c.expect("MAIL FROM:<plain@client.test>", 250)
        c.expect("RCPT TO:<alice@example.test>", 250)
        c.expect("DATA", 354)
        c.send(message("plain").encode() + b".\r\n")
        r = c.reply()
        m = QUEUED_RE.match(f"{r.code} {r.text}")
        assert m, repr(r)
        qid2 = m.group(1)
        c.expect("QUIT", 221)
    rows = srv.queue_by_id()
    d = rows[qid]["dsn"]
    assert d["ret"] == "HDRS"
    assert d["envid"] == "QQ314159"
    assert d["notify"] == [1 | 2, 8]
    assert d["orcpt"] == ["rfc822;alice+2Bx@example.test", None]
    d2 = rows[qid2]["dsn"]
    assert d2 == {"ret": None, "envid": None, "notify": [0], "orcpt": [None]}


# ---- recovery from corruption (kill -9, damage the files, restart) --------

import os
import re
import struct

import pytest

from conftest import send_mail, run_log

N_MSGS = 20


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC_T = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_T[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def journal_delete(qid):
    """A version-2 journal entry deleting message qid (spool/record.h)."""
    e = bytearray(64)
    struct.pack_into("<IHBB", e, 0, 0x324A534F, 64, 3, 0)   # "OSJ2", len, DELETE
    e[8:28] = qid.encode()
    struct.pack_into("<i", e, 28, -1)
    struct.pack_into("<I", e, 60, crc32c(bytes(e[:60])))
    return bytes(e)


def records(path):
    """[(offset, length, id)] of the records of an intact segment file."""
    data = open(path, "rb").read()
    out, off = [], 0
    while off < len(data):
        magic, ver, _, env_len, data_len = struct.unpack_from("<IHHIQ", data, off)
        assert magic == 0x3152534F and ver == 2, (path, off)
        qid = data[off + 20:off + 40].decode()
        total = 56 + env_len + data_len
        total += -total & 7
        out.append((off, total, qid))
        off += total
    return out


def shard_files(srv, prefix):
    d = os.path.join(srv.dir, "spool", "shard-0")
    names = sorted(n for n in os.listdir(d) if n.startswith(prefix)
                   and os.path.getsize(os.path.join(d, n)) > 0)
    return [os.path.join(d, n) for n in names]


def flip(path, off, x=0x20):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)[0]
        f.seek(off)
        f.write(bytes([b ^ x]))


def recovery_report(srv):
    for line in run_log(srv):
        if "event=recovered" in line:
            return line[line.index("spool:"):]
    raise AssertionError("no recovery report in the log\n" + srv.tail(40))


def fill(srv, n=N_MSGS):
    ids = []
    with open_session(srv) as c:
        for i in range(n):
            body = f"line {i} of the message body\r\n" * (20 + 37 * i)
            ids.append(send_mail(c, f"m{i}@client.test", ["alice@example.test"],
                                 message(f"msg {i}", body)))
        c.expect("QUIT", 221)
    return ids


SEG_CASES = ["head", "middle", "header-middle", "tail", "zero4k"]


@pytest.mark.parametrize("case", SEG_CASES)
def test_recover_corrupt_segment(fresh, case):
    s = fresh(f"corrupt-{case}", **{"server.reactors": 1})
    ids = fill(s)
    s.kill()
    segs = shard_files(s, "seg-")
    assert len(segs) == 1, segs
    recs = records(segs[0])
    assert [r[2] for r in recs] == ids
    if case == "head":
        lo = recs[0][0] + 9          # a length in the first header
        flip(segs[0], lo)
        hi = lo + 1
    elif case == "middle":
        lo = recs[9][0] + recs[9][1] // 2   # data of the tenth
        flip(segs[0], lo)
        hi = lo + 1
    elif case == "header-middle":
        lo = recs[10][0]            # the magic of the eleventh
        flip(segs[0], lo, 0xFF)
        hi = lo + 1
    elif case == "tail":
        lo = recs[-1][0] + recs[-1][1] - 30
        flip(segs[0], lo)
        hi = lo + 1
    else:
        lo = recs[6][0] + 200
        hi = lo + 4096
        with open(segs[0], "r+b") as f:
            f.seek(lo)
            f.write(b"\0" * 4096)
    intact = [q for off, ln, q in recs if off + ln <= lo or off >= hi]
    lost = [q for q in ids if q not in intact]
    assert lost and intact
    s.start()
    report = recovery_report(s)
    print(f"{case}: {report}")
    listed = sorted(r["id"] for r in s.queue())
    assert listed == sorted(intact), (lost, report)
    corrupt = os.path.join(s.dir, "spool", "corrupt")
    names = os.listdir(corrupt)
    assert len(names) == 1, names
    assert names[0].endswith("-torn") == (case == "tail")
    q = int(re.search(r"quarantined_bytes=(\d+)", report).group(1))
    torn = int(re.search(r"torn_bytes=(\d+)", report).group(1))
    bad = sum(ln for off, ln, qid in recs if qid in lost)
    assert (torn if case == "tail" else q) == bad, report
    # what the copy holds is what the segment held
    assert os.path.getsize(os.path.join(corrupt, names[0])) == bad
    assert_serving_fresh(s)


def assert_serving_fresh(s):
    with open_session(s) as c:
        send_mail(c, "after@client.test", ["alice@example.test"], message("after"))
        c.expect("QUIT", 221)


JRN_CASES = ["head", "middle", "tail", "zero4k"]


@pytest.mark.parametrize("case", JRN_CASES)
def test_recover_corrupt_journal(fresh, case):
    """Deletes written as version-2 journal entries (by this test, with the
    spool's own format), then one corrupted: only that delete is lost."""
    s = fresh(f"jcorrupt-{case}", **{"server.reactors": 1})
    ids = fill(s, 100)
    s.kill()
    d = os.path.join(s.dir, "spool", "shard-0")
    gens = [int(n[8:]) for n in os.listdir(d) if n.startswith("journal-")]
    path = os.path.join(d, "journal-%08d" % (max(gens) + 1))
    deleted = ids[::2] + ids[1:80:2]          # 90 deletes, 64 bytes each
    with open(path, "wb") as f:
        for q in deleted:
            f.write(journal_delete(q))
    if case == "head":
        flip(path, 5, 0x01)
        lost = deleted[0:1]
    elif case == "middle":
        flip(path, 45 * 64 + 30)
        lost = deleted[45:46]
    elif case == "tail":
        flip(path, 89 * 64 + 40)
        lost = deleted[89:90]
    else:
        with open(path, "r+b") as f:
            f.seek(20 * 64 + 8)
            f.write(b"\0" * 4096)
        lost = deleted[20:20 + 65]
    s.start()
    report = recovery_report(s)
    print(f"journal {case}: {report}")
    live = [q for q in ids if q not in deleted] + lost
    listed = sorted(r["id"] for r in s.queue())
    assert listed == sorted(live), report
    skipped = int(re.search(r"journal_skipped=(\d+)", report).group(1))
    assert skipped == (0 if case == "tail" else 1), report


# ---- durability ordering, seen from outside (strace) -----------------------

import shutil
import signal
import subprocess
import threading
import time

STRACE_CALLS = ("pwritev2,pwritev,pwrite64,write,fdatasync,fsync,sendto,rename,renameat,"
                "renameat2,openat,unlink,unlinkat,ftruncate,epoll_wait")
LINE_RE = re.compile(r"^(\d+)\s+(.*)$")
CALL_RE = re.compile(r"^(\w+)\((.*)$")
RESUMED_RE = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
RET_RE = re.compile(r"\)\s+=\s+(-?\d+)")
FD_RE = re.compile(r"^(\d+)<([^>]*)>")


def strace_events(path):
    """Completed syscalls in the order strace saw them finish, each
    {i (completion order), start (order of its entry), tid, name, args, ret}."""
    events, pending, order = [], {}, 0
    for raw in open(path, errors="replace"):
        m = LINE_RE.match(raw.rstrip("\n"))
        if not m:
            continue
        tid, rest = int(m.group(1)), m.group(2)
        order += 1
        r = RESUMED_RE.match(rest)
        if r:
            name, start, args = pending.pop(tid, (r.group(1), order, ""))
            args += r.group(2)
        else:
            c = CALL_RE.match(rest)
            if not c:
                continue
            name, args, start = c.group(1), c.group(2), order
            if rest.endswith("<unfinished ...>"):
                pending[tid] = (name, start, args[:-len("<unfinished ...>")])
                continue
        ret = RET_RE.search(args)
        events.append({"i": order, "start": start, "tid": tid, "name": name,
                       "args": args, "ret": int(ret.group(1)) if ret else None})
    return events


def fd_path(args):
    m = FD_RE.match(args)
    return (int(m.group(1)), m.group(2)) if m else (None, None)


def covered(writes, syncs, path, off, length, before):
    """Is [off, off+length) of path durable by event order `before`: written
    by a RWF_DSYNC pwritev2, or written and then fdatasync'ed?"""
    ok = bytearray(length)
    for w in writes:
        if w["path"] != path or w["i"] >= before or w["ret"] is None or w["ret"] <= 0:
            continue
        lo, hi = max(off, w["off"]), min(off + length, w["off"] + w["ret"])
        if lo >= hi:
            continue
        durable = w["dsync"] or any(
            s["path"] == path and w["i"] < s["start"] and s["i"] < before and s["ret"] == 0
            for s in syncs)
        if durable:
            ok[lo - off:hi - off] = b"\1" * (hi - lo)
    return all(ok)


def all_records(srv):
    """id -> (segment path, offset, length) of every record in the spool."""
    out = {}
    base = os.path.join(srv.dir, "spool")
    for sd in sorted(os.listdir(base)):
        if not sd.startswith("shard-"):
            continue
        for n in sorted(os.listdir(os.path.join(base, sd))):
            if n.startswith("seg-"):
                p = os.path.join(base, sd, n)
                for off, ln, qid in records(p):
                    out[qid] = (os.path.realpath(p), off, ln)
    return out


def test_durable_before_250(fresh, backend, tmp_path):
    """Every 250 after DATA goes out only after a write that is durable by
    itself (pwritev2 with RWF_DSYNC), or a write and an fdatasync, covered
    the message's whole record; the snapshot is synced before its rename and
    the journals it replaces go only after the directory fsync; and no
    reactor thread makes a blocking file call once its loop runs."""
    if backend != "epoll":
        pytest.skip("strace sees the epoll backend's syscalls; io_uring's are in "
                    "the ring (the unit tests cover both through the io/ seam)")
    strace = shutil.which("strace")
    assert strace, "strace is missing (installed by .ci/deps)"
    trace = str(tmp_path / "trace.txt")
    s = fresh("strace", start=False, **{"spool.segment_size": "64K",
                                        "server.reactors": 2})
    # LeakSanitizer cannot work under ptrace (an ASan build is traced too)
    s.wrapper = [strace, "-f", "-y", "-s", "120", "-e", "signal=none", "-o", trace,
                "-E", "ASAN_OPTIONS=detect_leaks=0", "-e", "trace=" + STRACE_CALLS]
    s.start(timeout=60)
    acked, errors = [], []

    def client(k):
        try:
            with open_session(s) as c:
                for i in range(25):
                    body = f"strace {k} {i} body line\r\n" * (30 + 11 * i)
                    acked.append(send_mail(c, f"t{k}-{i}@client.test",
                                           ["alice@example.test"], message("t", body)))
                c.expect("QUIT", 221)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    # Stop ortoo itself (strace would only detach on a signal of its own).
    pid = int(open(os.path.join(s.dir, "spool", "ortoo.pid")).read().strip())
    os.kill(pid, signal.SIGTERM)
    assert s.proc.wait(60) == 0
    s.stop()

    ev = strace_events(trace)
    writes, syncs, sends = [], [], []
    for e in ev:
        fd, path = fd_path(e["args"])
        if e["name"] in ("pwritev2", "pwritev", "pwrite64") and path:
            # pwritev2(fd, iov, cnt, off, flags), pwritev(fd, iov, cnt, off),
            # pwrite64(fd, buf, len, off): the offset is the last number
            m = re.search(r",\s*(\d+),\s*(\d+)(?:,\s*([A-Z_|0-9x]+))?\s*\)\s+=", e["args"])
            assert m, e
            off = int(m.group(2))
            dsync = e["name"] == "pwritev2" and "RWF_DSYNC" in (m.group(3) or "")
            writes.append({**e, "path": path, "fd": fd, "off": off, "dsync": dsync})
        elif e["name"] in ("fdatasync", "fsync") and path:
            syncs.append({**e, "path": path})
        elif e["name"] == "sendto":
            for q in re.findall(r"250 2\.0\.0 Ok: queued as ([0-9A-Za-z]{20})", e["args"]):
                sends.append((q, e["start"]))
    recs = all_records(s)
    assert sorted(q for q, _ in sends) == sorted(acked)
    assert len(acked) == 75
    late = []
    for q, at in sends:
        path, off, ln = recs[q]
        if not covered(writes, syncs, path, off, ln, at):
            late.append(q)
    assert not late, f"{len(late)} messages acknowledged before their record was durable"
    # the segments did rotate (64K each), so new files were made on the way
    assert len({p for p, _, _ in recs.values()}) > 2

    # The start-up snapshots: written, synced, renamed, directory synced,
    # then the journals it replaces unlinked.
    snaps = 0
    for e in ev:
        if e["name"] in ("renameat", "renameat2", "rename") and '"snapshot.tmp"' in e["args"]:
            snaps += 1
            d = fd_path(e["args"])[1]
            tmp = os.path.join(d, "snapshot.tmp")
            tw = [w for w in writes if w["path"] == tmp and w["i"] < e["start"]]
            ts = [x for x in syncs if x["path"] == tmp and x["i"] < e["start"]
                  and x["ret"] == 0 and all(w["i"] < x["start"] for w in tw)]
            assert tw and ts, f"snapshot renamed before its bytes were synced: {e}"
            later = [x for x in ev if x["i"] > e["i"]]
            dsync_after = [x for x in later if x["name"] == "fsync"
                           and fd_path(x["args"])[1] == d and x["ret"] == 0]
            assert dsync_after, "no directory fsync after the snapshot rename"
            for u in later:
                if u["name"] == "unlinkat" and '"journal' in u["args"] \
                        and fd_path(u["args"])[1] == d:
                    assert u["start"] > dsync_after[0]["i"], \
                        "a journal went before the rename was durable"
    assert snaps >= 2  # one per shard directory at start-up

    # No blocking file call on a reactor thread once its loop runs.
    loop_start = {}
    for e in ev:
        if e["name"] == "epoll_wait" and e["tid"] not in loop_start:
            loop_start[e["tid"]] = e["start"]
    blocking = ("openat", "unlinkat", "unlink", "ftruncate", "fsync", "fdatasync",
                "renameat", "renameat2", "rename", "pwritev2", "pwritev", "pwrite64")
    bad = [e for e in ev if e["tid"] in loop_start and e["start"] > loop_start[e["tid"]]
           and e["name"] in blocking and "/spool/" in e["args"]]
    assert not bad, f"blocking calls on a reactor thread: {bad[:5]}"

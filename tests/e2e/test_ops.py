# SPDX-License-Identifier: MIT
"""Operations: spool shards adopted when the number of reactors changes, the
per-reactor connection limit, and the graceful stop on SIGTERM.

(The DATA timeout, 421 4.4.2 with nothing queued, is in test_limits.py:
test_command_timeout.)

Shard adoption (spool/spool.h): with N reactors, reactor i recovers every
shard directory K with K % N == i.  Each reactor logs
`reactor=I event=started io=... spool_messages=M` at start-up; over one run
the M add up to every message in the spool, whatever N was when they came."""

import re
import signal
import time

from conftest import (QUEUED_RE, Raw, assert_serving, check, message,
                      open_session, run_log, send_mail)

STARTED_RE = re.compile(r"reactor=(\d+) event=started\b.*\bspool_messages=(\d+)")


def started_counts(srv):
    """{reactor index: spool_messages} from the current run's log."""
    out = {}
    for line in run_log(srv):
        m = STARTED_RE.search(line)
        if m:
            i = int(m.group(1))
            assert i not in out, f"reactor {i} started twice:\n" + srv.tail(40)
            out[i] = int(m.group(2))
    return out


def set_reactors(srv, n):
    text = re.sub(r"(?m)^reactors = .*$", f"reactors = {n}", srv.conf_text)
    assert text != srv.conf_text or f"reactors = {n}" in text
    srv.conf_text = text
    with open(f"{srv.dir}/ortoo.conf", "w") as f:
        f.write(text)


def send_batch(srv, tag, nconn, per_conn):
    """nconn connections, per_conn messages each; return {queue id: sender}."""
    acked = {}
    for c_i in range(nconn):
        with open_session(srv) as c:
            for m_i in range(per_conn):
                sender = f"{tag}-c{c_i}-m{m_i}@client.test"
                qid = send_mail(c, sender, ["alice@example.test"],
                                message(f"{tag} {c_i} {m_i}", sender=sender))
                acked[qid] = sender
            c.expect("QUIT", 221)
    return acked


def check_queue(srv, acked):
    """The queue holds exactly the acknowledged messages, each once."""
    rows = srv.queue()
    ids = [r["id"] for r in rows]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"listed twice: {sorted(dup)}"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged messages missing: " \
                        f"{sorted(acked[i] for i in missing)[:10]}"
    extra = set(ids) - set(acked)
    assert not extra, f"unexpected messages in the queue: {sorted(extra)[:10]}"
    for r in rows:
        assert r["sender"] == acked[r["id"]], r
    return rows


def test_shard_adoption(fresh):
    s = fresh("adopt", **{"server.reactors": 2})
    # Connections are spread over the two reactors' SO_REUSEPORT listeners
    # by the kernel's hash: send until both shards hold some (50 messages
    # over 10 connections, then more connections if one shard is empty).
    acked = send_batch(s, "a", 10, 5)
    for extra in range(20):
        shards = {r["shard"] for r in s.queue()}
        if shards >= {0, 1}:
            break
        acked.update(send_batch(s, f"x{extra}", 2, 1))
    rows = check_queue(s, acked)
    by_shard = {}
    for r in rows:
        by_shard[r["shard"]] = by_shard.get(r["shard"], 0) + 1
    assert set(by_shard) == {0, 1}, f"messages per shard: {by_shard}"
    assert s.stop() == 0, s.tail(40)

    # One reactor adopts both shards.
    set_reactors(s, 1)
    s.start()
    assert started_counts(s) == {0: len(acked)}, \
        f"want reactor 0 with spool_messages={len(acked)}:\n" + s.tail(40)
    check_queue(s, acked)
    acked.update(send_batch(s, "b", 3, 4))
    check_queue(s, acked)
    assert s.stop() == 0, s.tail(40)

    # Three reactors: shards 0 and 1 go back to reactors 0 and 1, reactor 2
    # starts an empty shard 2.
    set_reactors(s, 3)
    s.start()
    counts = started_counts(s)
    assert sorted(counts) == [0, 1, 2], f"started lines: {counts}\n" + s.tail(40)
    assert sum(counts.values()) == len(acked), \
        f"spool_messages over the reactors {counts} != {len(acked)}\n" + s.tail(40)
    rows = check_queue(s, acked)
    assert counts[2] == 0, counts
    assert {0: counts[0], 1: counts[1]} == {
        k: sum(1 for r in rows if r["shard"] == k) for k in (0, 1)}, (counts, rows[:3])
    acked.update(send_batch(s, "c", 3, 2))
    check_queue(s, acked)
    assert s.stop() == 0, s.tail(40)
    # And once more from three shards back to two (shard 2 -> reactor 0).
    set_reactors(s, 2)
    s.start()
    counts = started_counts(s)
    assert sum(counts.values()) == len(acked), (counts, len(acked))
    check_queue(s, acked)
    assert_serving(s)


def test_max_connections(fresh):
    s = fresh("maxconn", **{"server.reactors": 1, "server.max_connections": 3})
    addr = s.addr("smtp")
    held = []
    try:
        for _ in range(3):
            c = Raw(addr)
            c.expect(None, 220)
            held.append(c)
        held[0].expect("EHLO client.test", 250)
        # The 4th, and a 5th after it (a refused one must not stay counted).
        for _ in range(2):
            with Raw(addr) as c:
                c.expect(None, 421, "4.7.0")
                assert c.at_eof(), "not closed after 421:\n" + c.dump()
        # The three held sessions still work.
        for c in held:
            c.expect("NOOP", 250)
        # Close one (QUIT, then wait for the server's close): a new
        # connection is served.
        c = held.pop(1)
        c.expect("QUIT", 221)
        assert c.at_eof()
        c.close()
        r = None
        for _ in range(25):        # the server frees the slot after the close
            c = Raw(addr)
            r = c.reply()
            if r.code == 220:
                break
            c.close()
            time.sleep(0.1)
        check(r, 220, None, c)
        held.append(c)
        c.expect("EHLO client.test", 250)
        qid = send_mail(c, "maxconn@client.test", ["alice@example.test"],
                        message("maxconn"))
        assert qid in s.queue_by_id()
        # Full again.
        with Raw(addr) as c:
            c.expect(None, 421, "4.7.0")
            assert c.at_eof()
        # A client that just disconnects (no QUIT) frees its slot too.
        held.pop(0).close()
        for _ in range(25):
            c = Raw(addr)
            r = c.reply()
            if r.code == 220:
                break
            c.close()
            time.sleep(0.1)
        check(r, 220, None, c)
        held.append(c)
    finally:
        for c in held:
            c.close()
    # With every client gone, three at once again.
    time.sleep(0.2)
    again = [Raw(addr) for _ in range(3)]
    try:
        for c in again:
            c.expect(None, 220)
    finally:
        for c in again:
            c.close()


def read_outcome(c):
    """After the final dot and SIGTERM: ("acked", id) or ("none", what)."""
    try:
        r = c.reply()
    except (OSError, EOFError) as e:
        return ("none", repr(e))
    m = QUEUED_RE.match(f"{r.code} {r.text}")
    if m:
        # The 421 of the shutdown follows (or the close).
        try:
            r2 = c.reply()
            assert r2.code == 421 and r2.enhanced == "4.3.2", \
                f"after 250: {r2!r}\n" + c.dump()
        except (OSError, EOFError):
            pass
        return ("acked", m.group(1))
    assert r.code == 421, f"unexpected reply to the final dot: {r!r}\n" + c.dump()
    return ("none", repr(r))


def test_graceful_stop(fresh):
    s = fresh("graceful", **{"server.reactors": 1})
    acked = {}
    outcomes = []
    for rnd, delay in enumerate([0.003, 0, 0, -0.0002, -0.001, -0.003]):
        idle = open_session(s)                    # after EHLO
        mid = open_session(s)                     # inside DATA
        mid.expect("MAIL FROM:<middata@client.test>", 250)
        mid.expect("RCPT TO:<alice@example.test>", 250)
        mid.expect("DATA", 354)
        mid.send("Subject: half\r\n\r\nnot finished\r\n")
        dot = open_session(s)                     # final dot, then SIGTERM
        sender = f"dot{rnd}@client.test"
        dot.expect(f"MAIL FROM:<{sender}>", 250)
        dot.expect("RCPT TO:<alice@example.test>", 250)
        dot.expect("DATA", 354)
        # delay > 0: the dot, then SIGTERM after delay; delay < 0: SIGTERM,
        # then the dot after -delay (it races the shutdown on the server).
        body = message(f"graceful {rnd}", sender=sender) + ".\r\n"
        if delay >= 0:
            dot.send(body)
            if delay:
                time.sleep(delay)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        if delay < 0:
            time.sleep(-delay)
            try:
                dot.send(body)
            except OSError:
                pass
        idle.sock.settimeout(5)
        idle.expect(None, 421, "4.3.2")
        assert idle.at_eof(), "idle session not closed after 421"
        mid.sock.settimeout(5)
        mid.expect(None, 421, "4.3.2")
        assert mid.at_eof(), "session in DATA not closed after 421"
        dot.sock.settimeout(5)
        kind, what = read_outcome(dot)
        outcomes.append(kind)
        if kind == "acked":
            acked[what] = sender
        rc = s.stop(timeout=10)
        took = time.monotonic() - t0
        assert rc == 0, f"exit status {rc}\n" + s.tail(40)
        assert took < 4, f"took {took:.1f}s to exit after SIGTERM\n" + s.tail(40)
        assert not any("forced=1" in l for l in run_log(s)), s.tail(40)
        for c in (idle, mid, dot):
            c.close()
        s.start()
        q = s.queue_by_id()
        for qid, snd in acked.items():
            assert qid in q, f"{snd} got 250 ({qid}) but is not in the queue " \
                             f"after the restart\n" + s.tail(60)
        assert "middata@client.test" not in {r["sender"] for r in q.values()}
        senders = [r["sender"] for r in q.values()]
        assert len(senders) == len(set(senders)), senders
    assert_serving(s)
    print("outcomes of the final dot racing SIGTERM:", outcomes)

/* SPDX-License-Identifier: MIT */
/*
 * test_metrics.c - unit tests for io/metrics.c: increments show in the sums;
 * threads count into blocks of their own (no update lost under contention,
 * each block on its own cache lines); a thread's counts survive its exit and
 * its block is reused, so blocks stay bounded; histogram buckets take a
 * value equal to their bound (le) and the sum adds up; the helpers map
 * reasons and SMTP results to their label indexes.  Includes the source to
 * reach the registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "io/metrics.c"

static uint64_t cell(unsigned i)
{
    uint64_t v[METRICS_NCELLS];
    metrics_sum(v);
    return v[i];
}

static size_t nblocks(void)
{
    size_t n = 0;
    pthread_mutex_lock(&reg_lock);
    for (struct metrics_slot *s = reg_head; s != NULL; s = s->next)
        n++;
    pthread_mutex_unlock(&reg_lock);
    return n;
}

static void test_inc_and_sum(void **state)
{
    uint64_t before = cell(METRICS_AUTH_SUCCESS);
    metrics_inc(METRICS_AUTH_SUCCESS);
    metrics_inc(METRICS_AUTH_SUCCESS);
    assert_int_equal(cell(METRICS_AUTH_SUCCESS), before + 2);
    uint64_t b = cell(METRICS_MSG_RECEIVED_BYTES);
    metrics_received(3, 1000);
    assert_int_equal(cell(METRICS_MSG_RECEIVED_BYTES), b + 1000);
    assert_non_null(metrics_self);
    assert_int_equal((uintptr_t)metrics_self % 64, 0);
}

#define NTHREADS 8
#define PER_THREAD 200000

static void *counting_thread(void *arg)
{
    for (int i = 0; i < PER_THREAD; i++)
        metrics_inc(METRICS_DELIVERED);
    *(struct metrics_block **)arg = metrics_self;
    return NULL;
}

/* Every thread writes only its own block: nothing is lost, however the
 * threads interleave; the blocks do not share cache lines. */
static void test_threads_lose_nothing(void **state)
{
    pthread_t t[NTHREADS];
    struct metrics_block *blk[NTHREADS];
    uint64_t before = cell(METRICS_DELIVERED);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, counting_thread, &blk[i]), 0);
    /* Sums taken while they count never go backwards. */
    uint64_t last = before;
    for (int k = 0; k < 50; k++) {
        uint64_t now = cell(METRICS_DELIVERED);
        assert_true(now >= last);
        last = now;
    }
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(cell(METRICS_DELIVERED), before + (uint64_t)NTHREADS * PER_THREAD);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal((uintptr_t)blk[i] % 64, 0);
        for (int j = 0; j < i; j++) {
            uintptr_t a = (uintptr_t)blk[i], b = (uintptr_t)blk[j];
            /* Distinct, unless the first thread had exited and given its
             * block back; then no two live threads shared it anyway. */
            if (a != b)
                assert_true(a + sizeof(struct metrics_block) <= b ||
                            b + sizeof(struct metrics_block) <= a);
        }
    }
}

static void *one_thread(void *arg)
{
    metrics_add(METRICS_BOUNCED, 5);
    return NULL;
}

/* Threads that come and go reuse blocks: their number follows the threads
 * alive at once, and the counts of finished threads stay. */
static void test_blocks_reused(void **state)
{
    uint64_t before = cell(METRICS_BOUNCED);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, one_thread, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    size_t n = nblocks();
    for (int i = 0; i < 100; i++) {
        assert_int_equal(pthread_create(&t, NULL, one_thread, NULL), 0);
        assert_int_equal(pthread_join(t, NULL), 0);
    }
    assert_int_equal(nblocks(), n);
    assert_int_equal(cell(METRICS_BOUNCED), before + 5 * 101);
}

static void test_histogram(void **state)
{
    size_t n;
    const uint64_t *b = metrics_hist_bounds(METRICS_H_SPOOL_SYNC, &n);
    assert_true(n > 0 && n <= METRICS_HIST_MAX_BOUNDS);
    for (size_t i = 1; i < n; i++)
        assert_true(b[i] > b[i - 1]);
    uint64_t v0[METRICS_NCELLS], v1[METRICS_NCELLS];
    metrics_sum(v0);
    metrics_observe(METRICS_H_SPOOL_SYNC, 0);        /* first bucket */
    metrics_observe(METRICS_H_SPOOL_SYNC, b[0]);     /* le is inclusive */
    metrics_observe(METRICS_H_SPOOL_SYNC, b[0] + 1); /* second */
    metrics_observe(METRICS_H_SPOOL_SYNC, b[n - 1] + 1); /* +Inf */
    metrics_sum(v1);
    assert_int_equal(v1[metrics_hist_cell(METRICS_H_SPOOL_SYNC, 0)] -
                         v0[metrics_hist_cell(METRICS_H_SPOOL_SYNC, 0)],
                     2);
    assert_int_equal(v1[metrics_hist_cell(METRICS_H_SPOOL_SYNC, 1)] -
                         v0[metrics_hist_cell(METRICS_H_SPOOL_SYNC, 1)],
                     1);
    assert_int_equal(v1[metrics_hist_cell(METRICS_H_SPOOL_SYNC, n)] -
                         v0[metrics_hist_cell(METRICS_H_SPOOL_SYNC, n)],
                     1);
    assert_int_equal(v1[metrics_hist_sum_cell(METRICS_H_SPOOL_SYNC)] -
                         v0[metrics_hist_sum_cell(METRICS_H_SPOOL_SYNC)],
                     0 + b[0] + b[0] + 1 + b[n - 1] + 1);
    /* The journal's histogram is separate. */
    assert_int_equal(v1[metrics_hist_cell(METRICS_H_SPOOL_SYNC + 1, 0)],
                     v0[metrics_hist_cell(METRICS_H_SPOOL_SYNC + 1, 0)]);
    /* Histogram cells sit after the counters and inside the array. */
    assert_true(metrics_hist_cell(0, 0) >= METRICS_NCOUNTERS);
    assert_true(metrics_hist_sum_cell(METRICS_NHIST - 1) < METRICS_NCELLS);
}

static void test_spool_batch(void **state)
{
    uint64_t v0[METRICS_NCELLS], v1[METRICS_NCELLS];
    metrics_sum(v0);
    metrics_spool_batch(true, 3, 4096, 2000000, 0);
    metrics_spool_batch(false, 1, 64, 100000, 0);
    metrics_spool_batch(true, 9, 999, 1, -5);
    metrics_sum(v1);
    assert_int_equal(v1[METRICS_SPOOL_BYTES] - v0[METRICS_SPOOL_BYTES], 4096);
    assert_int_equal(v1[METRICS_SPOOL_BYTES + 1] - v0[METRICS_SPOOL_BYTES + 1], 64);
    assert_int_equal(v1[METRICS_SPOOL_ERRORS] - v0[METRICS_SPOOL_ERRORS], 1);
    assert_int_equal(v1[metrics_hist_sum_cell(METRICS_H_SPOOL_ENTRIES)] -
                         v0[metrics_hist_sum_cell(METRICS_H_SPOOL_ENTRIES)],
                     3);
    /* 3 entries fall in the le="4" bucket (index 2). */
    assert_int_equal(v1[metrics_hist_cell(METRICS_H_SPOOL_ENTRIES, 2)] -
                         v0[metrics_hist_cell(METRICS_H_SPOOL_ENTRIES, 2)],
                     1);
}

static void test_reasons(void **state)
{
    assert_int_equal(metrics_reject_of("no-such-user"), METRICS_REJECT_NO_SUCH_USER);
    assert_int_equal(metrics_reject_of("relay-denied"), METRICS_REJECT_RELAY_DENIED);
    assert_int_equal(metrics_reject_of("body-memory"), METRICS_REJECT_BODY_MEMORY);
    assert_int_equal(metrics_reject_of("something-new"), METRICS_REJECT_OTHER);
    assert_int_equal(metrics_reject_of(NULL), METRICS_REJECT_OTHER);
    for (unsigned i = 0; i < METRICS_REJECT_N; i++) {
        assert_non_null(metrics_reject_name(i));
        if (i != METRICS_REJECT_OTHER)
            assert_int_equal(metrics_reject_of(metrics_reject_name(i)), i);
    }
    assert_null(metrics_reject_name(METRICS_REJECT_N));
    uint64_t before = cell(METRICS_MSG_REJECTED + METRICS_REJECT_OTHER);
    metrics_rejected("unheard-of");
    assert_int_equal(cell(METRICS_MSG_REJECTED + METRICS_REJECT_OTHER), before + 1);
}

static void test_dclass(void **state)
{
    assert_int_equal(metrics_dclass_of(421, "greeting"), METRICS_DCLASS_4XX);
    assert_int_equal(metrics_dclass_of(550, "rcpt"), METRICS_DCLASS_5XX);
    assert_int_equal(metrics_dclass_of(0, "connect"), METRICS_DCLASS_CONNECT);
    assert_int_equal(metrics_dclass_of(0, "greeting"), METRICS_DCLASS_CONNECT);
    assert_int_equal(metrics_dclass_of(0, "tls"), METRICS_DCLASS_TLS);
    assert_int_equal(metrics_dclass_of(0, "tls-verify"), METRICS_DCLASS_TLS);
    assert_int_equal(metrics_dclass_of(0, "starttls"), METRICS_DCLASS_TLS);
    assert_int_equal(metrics_dclass_of(0, "data"), METRICS_DCLASS_PROTOCOL);
    assert_int_equal(metrics_dclass_of(0, NULL), METRICS_DCLASS_LOCAL);
    assert_int_equal(metrics_dclass_of(0, "none"), METRICS_DCLASS_LOCAL);
    for (unsigned i = 0; i < METRICS_DCLASS_N; i++)
        assert_non_null(metrics_dclass_name(i));
    assert_null(metrics_dclass_name(METRICS_DCLASS_N));

    uint64_t v0[METRICS_NCELLS], v1[METRICS_NCELLS];
    metrics_sum(v0);
    metrics_delivered();
    metrics_deferred(METRICS_DCLASS_DNS);
    metrics_bounced(METRICS_DCLASS_EXPIRED);
    metrics_bounced((enum metrics_dclass)99); /* out of range: local */
    metrics_sum(v1);
    assert_int_equal(v1[METRICS_DELIVERED] - v0[METRICS_DELIVERED], 1);
    assert_int_equal(v1[METRICS_DEFERRED + METRICS_DCLASS_DNS] -
                         v0[METRICS_DEFERRED + METRICS_DCLASS_DNS],
                     1);
    assert_int_equal(v1[METRICS_BOUNCED + METRICS_DCLASS_EXPIRED] -
                         v0[METRICS_BOUNCED + METRICS_DCLASS_EXPIRED],
                     1);
    assert_int_equal(v1[METRICS_BOUNCED + METRICS_DCLASS_LOCAL] -
                         v0[METRICS_BOUNCED + METRICS_DCLASS_LOCAL],
                     1);
}

static void test_tls(void **state)
{
    uint64_t v0[METRICS_NCELLS], v1[METRICS_NCELLS];
    metrics_sum(v0);
    metrics_tls_handshake(false, true, false);
    metrics_tls_handshake(false, true, true);
    metrics_tls_handshake(true, false, false);
    metrics_sum(v1);
    assert_int_equal(v1[METRICS_TLS_SERVER_FULL] - v0[METRICS_TLS_SERVER_FULL], 1);
    assert_int_equal(v1[METRICS_TLS_SERVER_RESUMED] - v0[METRICS_TLS_SERVER_RESUMED], 1);
    assert_int_equal(v1[METRICS_TLS_CLIENT_FAILED] - v0[METRICS_TLS_CLIENT_FAILED], 1);
    assert_int_equal(v1[METRICS_TLS_CLIENT_FULL] - v0[METRICS_TLS_CLIENT_FULL], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inc_and_sum),     cmocka_unit_test(test_threads_lose_nothing),
        cmocka_unit_test(test_blocks_reused),   cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_spool_batch),     cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_dclass),          cmocka_unit_test(test_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

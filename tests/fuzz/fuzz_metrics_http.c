/* SPDX-License-Identifier: MIT */
/*
 * fuzz_metrics_http.c - libFuzzer target for the metrics endpoint's request
 * parser (core/metrics_http_parse.c): any bytes, whole or split at every
 * point, must parse without a fault, within bounds; a prefix that is
 * complete must give the same answer as the whole input (the parser sees
 * the head grow a recv at a time); the status is always one the server
 * knows how to send.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/metrics_http_parse.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct metrics_http_req whole, part;
    const char *buf = (const char *)data;
    int rw = metrics_http_parse(buf, size, &whole);

    assert(rw == 0 || rw == 1);
    if (rw == 1)
        assert(whole.status == 200 || whole.status == 400 || whole.status == 404 ||
               whole.status == 405 || whole.status == 414 || whole.status == 431 ||
               whole.status == 505);
    if (rw == 0)
        assert(size < METRICS_HTTP_REQ_MAX);
    /* The first prefix that is complete decides: the server answers then. */
    for (size_t k = 0; k <= size && k <= METRICS_HTTP_REQ_MAX; k++) {
        if (metrics_http_parse(buf, k, &part) == 1) {
            if (k == size || rw == 1) {
                /* A longer input cannot change a decided answer... unless
                 * the size bound was what decided it. */
                if (part.status != 414 && part.status != 431)
                    assert(part.status == whole.status && part.target == whole.target &&
                           part.head == whole.head);
            }
            break;
        }
    }
    return 0;
}

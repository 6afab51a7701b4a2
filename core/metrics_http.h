/* SPDX-License-Identifier: MIT */
/*
 * metrics_http.h - the Prometheus endpoint: a small HTTP/1.x responder on
 * the daemon's main thread ([listen] metrics, docs/metrics.md).
 *
 * It answers GET (and HEAD) /metrics with the text exposition format 0.0.4
 * (core/stats.c renders it) and / with a line saying where the figures
 * are; anything else gets the right status: 400 for a malformed request,
 * 404 for another path, 405 for another method, 505 for another HTTP major
 * version, 414/431 for a request head over METRICS_HTTP_REQ_MAX bytes, 408
 * when the request does not arrive in time.  Every answer closes the
 * connection (Connection: close), which is what Prometheus expects of a
 * small exporter and keeps the state to one request per client.
 *
 * Not a general HTTP server: no body is read, no keep-alive, no
 * compression (a scrape is a few KB).  Written by hand because it must not
 * block the main thread, which also serves signals and the control socket:
 * every socket is non-blocking, the clients share one epoll set that joins
 * the main loop through control_watch(), at most METRICS_HTTP_MAX_CLIENTS
 * are served at once (one more is told 503 and closed), and each has
 * METRICS_HTTP_TIMEOUT_MS for the whole exchange, so a slow or silent
 * client holds one slot, never the loop.
 *
 * Threads: main thread only.
 */
#ifndef ORTOO_METRICS_HTTP_H
#define ORTOO_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

#define METRICS_HTTP_MAX_CLIENTS 16    /* served at once */
#define METRICS_HTTP_REQ_MAX 8192      /* request line and header fields */
#define METRICS_HTTP_TIMEOUT_MS 10000  /* to send the request and take the answer */

struct control;
struct stats;
struct metrics_http;

/*
 * Listen on mc->addr (start-up: blocking, before the privilege drop) and
 * serve on ctl's loop with snapshots from st (both borrowed; they must
 * outlive the result).  Returns 0 and *out, or -errno with a message in
 * err (address in use, permission).
 */
int metrics_http_start(struct control *ctl, struct stats *st, const struct config_metrics *mc,
                       struct metrics_http **out, char *err, size_t errlen);

/* The address listened on, port resolved: "127.0.0.1:9187", "[::1]:9187". */
const char *metrics_http_addr(const struct metrics_http *mh);

/* True when the address is a loopback one (127.0.0.0/8, ::1). */
bool metrics_http_loopback(const struct metrics_http *mh);

/* Close the listener and every client (answers in progress are cut). */
void metrics_http_free(struct metrics_http *mh);

/* ---- the request parser (pure; exposed for the unit tests) ---- */

enum metrics_http_target { METRICS_HTTP_T_OTHER = 0, METRICS_HTTP_T_METRICS, METRICS_HTTP_T_ROOT };

struct metrics_http_req {
    int status;                    /* 200 when it may be served, else the error status */
    bool head;                     /* HEAD: headers only */
    enum metrics_http_target target;
};

/*
 * Parse the request head in buf[0..len) (RFC 9112 2-5: request line,
 * header fields, empty line; bare LF accepted as a line end, empty lines
 * before the request line ignored).  Returns 0 when more bytes are needed,
 * 1 when the head is complete or cannot be (out->status says what to
 * answer).  len beyond METRICS_HTTP_REQ_MAX is never needed.
 */
int metrics_http_parse(const char *buf, size_t len, struct metrics_http_req *out);

#endif

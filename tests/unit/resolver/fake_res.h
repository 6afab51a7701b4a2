/* SPDX-License-Identifier: MIT */
/*
 * fake_res.h - a fake asynchronous resolver for the unit tests of the
 * modules built on resolver.h (spf.c, fcrdns.c).  The test defines
 * res_lookup and res_cancel as fake_res_lookup / fake_res_cancel before it
 * includes the module's .c, then includes this file: lookups are queued,
 * and turn() answers the oldest from an in-memory zone, as one loop turn of
 * the real resolver would (never inside the submit call).
 *
 * Zone data: zadd(name, type, text) with A / AAAA addresses, "PREF host"
 * for MX, a name for PTR, the joined text for TXT; the data "!servfail" or
 * "!timeout" makes every lookup of the name fail so.  A name with records
 * of other types only gives NODATA, an unknown name NXDOMAIN, and MX of a
 * name without MX but with A gives the implicit MX as the real resolver.
 * Answers are static (refs 0) and freed by made_free() at the end of a test.
 */

/* ---- the zone ---- */

#define ZMAX 256
struct rr {
    char name[256];
    enum res_type type;
    char data[600];   /* text form; "!servfail" / "!timeout" make the name fail */
};
static struct rr zone[ZMAX];
static size_t nzone;

static void zclear(void) { nzone = 0; }

static void zadd(const char *name, enum res_type type, const char *data)
{
    assert_true(nzone < ZMAX);
    snprintf(zone[nzone].name, sizeof(zone[nzone].name), "%s", name);
    zone[nzone].type = type;
    snprintf(zone[nzone].data, sizeof(zone[nzone].data), "%s", data);
    nzone++;
}

/* Replace the TXT records of name by one. */
__attribute__((unused)) static void zset_txt(const char *name, const char *text)
{
    for (size_t i = 0; i < nzone;)
        if (zone[i].type == RES_TXT && strcmp(zone[i].name, name) == 0)
            zone[i] = zone[--nzone];
        else
            i++;
    zadd(name, RES_TXT, text);
}

/* ---- answers (static: refs 0, freed at the end of a test) ---- */

struct made {
    struct made *next;
    struct res_answer a;
    void *arr;
    char **strs;
    size_t nstrs;
};
static struct made *made;

static char *keep(struct made *m, const char *s)
{
    m->strs = realloc(m->strs, (m->nstrs + 1) * sizeof(*m->strs));
    m->strs[m->nstrs] = strdup(s);
    return m->strs[m->nstrs++];
}

static void made_free(void)
{
    while (made != NULL) {
        struct made *n = made->next;
        for (size_t i = 0; i < made->nstrs; i++)
            free(made->strs[i]);
        free(made->strs);
        free(made->arr);
        free(made);
        made = n;
    }
}

static const struct res_answer *answer_for(enum res_type type, const char *name)
{
    struct made *m = calloc(1, sizeof(*m));
    m->next = made;
    made = m;
    struct res_answer *a = &m->a;
    a->type = type;
    a->name = a->canon = keep(m, name);
    a->rcode = 0;
    a->ttl = 300;
    bool exists = false;
    size_t n = 0;
    for (size_t i = 0; i < nzone; i++) {
        if (strcmp(zone[i].name, name) != 0)
            continue;
        exists = true;
        if (strcmp(zone[i].data, "!servfail") == 0 || strcmp(zone[i].data, "!timeout") == 0) {
            a->status = zone[i].data[1] == 's' ? RES_SERVFAIL : RES_TIMEOUT;
            a->why = "fake failure";
            return a;
        }
        if (zone[i].type == type)
            n++;
    }
    if (n == 0 && type == RES_MX && exists) {
        /* The real resolver's implicit MX (RFC 5321 5.1) when A exists. */
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == RES_A) {
                struct res_mx *mx = calloc(1, sizeof(*mx));
                mx->host = keep(m, name);
                m->arr = mx;
                a->mx = mx;
                a->n = 1;
                a->implicit_mx = true;
                a->status = RES_OK;
                return a;
            }
    }
    if (n == 0) {
        a->status = exists ? RES_NODATA : RES_NXDOMAIN;
        return a;
    }
    a->status = RES_OK;
    switch (type) {
    case RES_A: {
        struct in_addr *v = calloc(n, sizeof(*v));
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == type)
                inet_pton(AF_INET, zone[i].data, &v[a->n++]);
        m->arr = v;
        a->a = v;
        break;
    }
    case RES_AAAA: {
        struct in6_addr *v = calloc(n, sizeof(*v));
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == type)
                inet_pton(AF_INET6, zone[i].data, &v[a->n++]);
        m->arr = v;
        a->aaaa = v;
        break;
    }
    case RES_MX: {
        struct res_mx *v = calloc(n, sizeof(*v));
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == type) {
                unsigned pref;
                char host[256];
                sscanf(zone[i].data, "%u %255s", &pref, host);
                v[a->n].pref = (uint16_t)pref;
                v[a->n++].host = keep(m, host);
            }
        m->arr = v;
        a->mx = v;
        break;
    }
    case RES_PTR: {
        const char **v = calloc(n, sizeof(*v));
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == type)
                v[a->n++] = keep(m, zone[i].data);
        m->arr = v;
        a->ptr = v;
        break;
    }
    case RES_TXT: {
        struct res_txt *v = calloc(n, sizeof(*v));
        for (size_t i = 0; i < nzone; i++)
            if (strcmp(zone[i].name, name) == 0 && zone[i].type == type) {
                v[a->n].text = keep(m, zone[i].data);
                v[a->n++].len = strlen(zone[i].data);
            }
        m->arr = v;
        a->txt = v;
        break;
    }
    default:
        a->status = RES_NODATA;
    }
    return a;
}

/* ---- the fake resolver ---- */

struct pending {
    struct res_req *req;
    enum res_type type;
    char name[RES_NAME_MAX + 1];
    res_cb cb;
};
static struct pending queue[8];
static size_t nqueue;
static unsigned nlookups;
static char lookup_log[64][RES_NAME_MAX + 8];

int fake_res_lookup(struct res_ctx *ctx, struct res_req *req, enum res_type type,
                    const char *name, res_cb cb)
{
    char norm[RES_NAME_MAX + 1];
    unsigned char addr[16];
    if (req->busy)
        return -EBUSY;
    if (type == RES_PTR && inet_pton(AF_INET, name, addr) == 1)
        res_ptr_name(AF_INET, addr, norm, sizeof(norm));
    else if (type == RES_PTR && inet_pton(AF_INET6, name, addr) == 1)
        res_ptr_name(AF_INET6, addr, norm, sizeof(norm));
    else if (res_name_normalize(name, norm, sizeof(norm)) < 0)
        return -EINVAL;
    assert_true(nqueue < 8);
    queue[nqueue].req = req;
    queue[nqueue].type = type;
    snprintf(queue[nqueue].name, sizeof(queue[nqueue].name), "%s", norm);
    queue[nqueue].cb = cb;
    nqueue++;
    if (nlookups < 64)
        snprintf(lookup_log[nlookups], sizeof(lookup_log[0]), "%s %s", res_type_name(type), norm);
    nlookups++;
    req->busy = true;
    return 0;
}

void fake_res_cancel(struct res_req *req)
{
    for (size_t i = 0; i < nqueue; i++)
        if (queue[i].req == req) {
            memmove(&queue[i], &queue[i + 1], (nqueue - i - 1) * sizeof(queue[0]));
            nqueue--;
            break;
        }
    req->busy = false;
}

/* One loop turn: answer the oldest pending lookup.  False when none. */
static bool turn(void)
{
    if (nqueue == 0)
        return false;
    struct pending p = queue[0];
    memmove(&queue[0], &queue[1], (nqueue - 1) * sizeof(queue[0]));
    nqueue--;
    p.req->busy = false;
    p.cb(p.req, answer_for(p.type, p.name));
    return true;
}


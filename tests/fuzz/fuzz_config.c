/* SPDX-License-Identifier: MIT */
/*
 * fuzz_config.c - libFuzzer target for core/config.c.  The input is an
 * ortoo.conf; it goes through config_parse_buf(), the function config_load()
 * calls after reading the file: libinih's ini_parse_stream() (what
 * ini_parse_string() wraps) over our line-counting reader, the key table and
 * every value parser (addresses, sizes, numbers, paths, the [resolver]
 * names and servers of resolver/names.c).  A successful load
 * must satisfy the struct's invariants; every error must be "file:line: ..."
 * or "file: ...".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.c"
#include "io/text.c"

#define CHECK(x) do { if (!(x)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char file[] = "/fuzz/ortoo.conf";
    struct config *cfg = NULL;
    char err[256] = "";

    if (config_parse_buf("/fuzz", file, (const char *)data, size, &cfg, err, sizeof(err)) == 0) {
        CHECK(cfg != NULL && cfg->nlistens > 0 && cfg->hostname && cfg->spool[0] == '/' &&
              cfg->cert_dir[0] == '/' && cfg->log_level);
        for (size_t i = 0; i < cfg->nlistens; i++) {
            struct sockaddr_storage ss;
            socklen_t len;
            CHECK(config_parse_addr(cfg->listens[i].text, &ss, &len) == 0);
            CHECK(len == cfg->listens[i].addr_len);
        }
        /* [resolver]: what was stored is normalised (a fixed point). */
        const struct res_conf *rc = &cfg->resolver;
        char buf[RES_NAME_MAX + 64];
        CHECK(rc->trust_anchor == NULL || rc->trust_anchor[0] == '/');
        for (size_t i = 0; i < rc->nforwards; i++)
            CHECK(res_parse_server(rc->forwards[i], buf, sizeof(buf)) == 0 &&
                  strcmp(buf, rc->forwards[i]) == 0);
        for (size_t i = 0; i < rc->nstubs; i++) {
            CHECK(res_zone_normalize(rc->stubs[i].zone, buf, sizeof(buf)) > 0 &&
                  strcmp(buf, rc->stubs[i].zone) == 0);
            CHECK(res_parse_server(rc->stubs[i].addr, buf, sizeof(buf)) == 0 &&
                  strcmp(buf, rc->stubs[i].addr) == 0);
        }
        config_free(cfg);
    } else {
        CHECK(strncmp(err, file, sizeof(file) - 1) == 0 && err[sizeof(file) - 1] == ':');
    }
    /* The value parsers on their own, on a NUL-terminated copy. */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct sockaddr_storage ss;
    socklen_t len;
    uint64_t v;
    config_parse_addr(s, &ss, &len);
    config_parse_size(s, &v);
    char name[RES_NAME_MAX + 64];
    int n = res_name_normalize(s, name, sizeof(name));
    CHECK(n < 0 || (size_t)n == strlen(name));
    res_parse_server(s, name, sizeof(name));
    free(s);
    return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * test_srs.c - unit tests for core/srs.c.
 *
 * Vectors: one from postsrsd's own test suite (secret "tops3cr3t" at
 * 2020-01-01 00:01:00 UTC gives SRS0=vmyz=2W=otherdomain.com=test@...), the
 * others computed independently with Python's hmac module:
 *
 *   H = lambda key, *f: base64.b64encode(hmac.new(key.encode(),
 *           ''.join(f).lower().encode(), hashlib.sha1).digest())[:4]
 *
 *   H('tops3cr3t', 'example.com', '=vmyz=2W=otherdomain.com=test') = JO9m
 *   H('tops3cr3t', 'hop1.example', '=abcd=ZZ=orig.example=joe')    = OnWe
 *   day(2024-03-01 12:00 UTC) = 19783 -> base32 "KH"
 *   H('s3cret-2', 'KH', 'Sender.Example', 'John.Doe')             = 7o8+
 *   H('old-secret', 'KH', 'sender.example', 'john.doe')           = piAo
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/srs.h"

/* cmocka 1.1 has no assert_int_greater_than. */
#define assert_pos(x) assert_true((x) > 0)

#define T2020 ((time_t)1577836860) /* 2020-01-01 00:01:00 UTC */
#define T2024 ((time_t)1709294400) /* 2024-03-01 12:00:00 UTC */
#define DAY 86400

static const char *const one[] = {"tops3cr3t"};
static const struct srs srs1 = {one, 1, 0, 0};

static int fwd(const struct srs *s, const char *sender, const char *dom, time_t now, char *out,
               size_t cap)
{
    return srs_forward(s, sender, strlen(sender), dom, now, out, cap);
}

static int rev(const struct srs *s, const char *addr, time_t now, char *out, size_t cap)
{
    return srs_reverse(s, addr, strlen(addr), now, out, cap);
}

static void test_postsrsd_vector(void **state)
{
    char out[256];

    assert_int_equal(fwd(&srs1, "test@otherdomain.com", "example.com", T2020, out, sizeof(out)),
                     (int)strlen("SRS0=vmyz=2W=otherdomain.com=test@example.com"));
    assert_string_equal(out, "SRS0=vmyz=2W=otherdomain.com=test@example.com");
    /* A sender at the SRS domain itself stays as it is. */
    assert_int_equal(fwd(&srs1, "test@Example.COM", "example.com", T2020, out, sizeof(out)), 16);
    assert_string_equal(out, "test@Example.COM");
    assert_int_equal(fwd(&srs1, "foo", "example.com", T2020, out, sizeof(out)), -EINVAL);

    assert_int_equal(rev(&srs1, "SRS0=vmyz=2W=otherdomain.com=test@example.com", T2020, out,
                         sizeof(out)),
                     20);
    assert_string_equal(out, "test@otherdomain.com");
    assert_int_equal(rev(&srs1, "test@example.com", T2020, out, sizeof(out)), -EINVAL);
}

static void test_srs1(void **state)
{
    char out[256], back[256];

    /* SRS0 at another domain becomes SRS1 with that domain as first hop. */
    assert_pos(fwd(&srs1, "SRS0=vmyz=2W=otherdomain.com=test@example.com",
                                "forwarder.net", T2020, out, sizeof(out)));
    assert_string_equal(out, "SRS1=JO9m=example.com==vmyz=2W=otherdomain.com=test@forwarder.net");
    /* Its reversal is the SRS0 address at the first hop. */
    assert_pos(rev(&srs1, out, T2020, back, sizeof(back)));
    assert_string_equal(back, "SRS0=vmyz=2W=otherdomain.com=test@example.com");

    /* An SRS1 sender is re-signed for our domain: the hop and the rest stay. */
    assert_pos(fwd(&srs1, "SRS1=XXXX=hop1.example==abcd=ZZ=orig.example=joe@hop2.example",
                                "us.example", T2020, out, sizeof(out)));
    assert_string_equal(out, "SRS1=OnWe=hop1.example==abcd=ZZ=orig.example=joe@us.example");
    assert_pos(rev(&srs1, "srs1=onwe=hop1.example==abcd=ZZ=orig.example=joe@us.example",
                                T2020, out, sizeof(out)));
    assert_string_equal(out, "SRS0=abcd=ZZ=orig.example=joe@hop1.example");
    /* SRS1 carries no timestamp: it does not expire by itself. */
    assert_pos(rev(&srs1, "SRS1=OnWe=hop1.example==abcd=ZZ=orig.example=joe@x",
                                T2020 + 400 * DAY, out, sizeof(out)));
    assert_int_equal(rev(&srs1, "SRS1=OnWf=hop1.example==abcd=ZZ=orig.example=joe@x", T2020, out,
                         sizeof(out)),
                     -EBADMSG);
}

static void test_case_and_secrets(void **state)
{
    static const char *const two[] = {"s3cret-2", "old-secret"};
    const struct srs s = {two, 2, 0, '+'};
    char out[256], back[256];

    /* The first secret signs; the separator is the configured one; the
     * fields keep their case but hash lowercased. */
    assert_pos(fwd(&s, "John.Doe@Sender.Example", "fwd.example", T2024, out,
                                sizeof(out)));
    assert_string_equal(out, "SRS0+7o8+=KH=Sender.Example=John.Doe@fwd.example");
    assert_pos(rev(&s, out, T2024, back, sizeof(back)));
    assert_string_equal(back, "John.Doe@Sender.Example");

    /* Lowercased on the way back (hash and timestamp compare without case). */
    assert_pos(rev(&s, "srs0+7O8+=kh=sender.example=john.doe@fwd.example", T2024, out,
                                sizeof(out)));
    assert_string_equal(out, "john.doe@sender.example");
    /* An address made with the old secret still reverses. */
    assert_pos(rev(&s, "SRS0=piAo=KH=sender.example=john.doe@fwd.example", T2024,
                                out, sizeof(out)));
    assert_string_equal(out, "john.doe@sender.example");
    /* ... but not with a secret we do not have. */
    assert_int_equal(rev(&srs1, "SRS0=piAo=KH=sender.example=john.doe@fwd.example", T2024, out,
                         sizeof(out)),
                     -EBADMSG);
    /* A longer hash is compared on its first four characters (libsrs2). */
    assert_pos(rev(&s, "SRS0=piAoXY=KH=sender.example=john.doe@x", T2024, out,
                                sizeof(out)));
}

static void test_timestamps(void **state)
{
    static const char *const two[] = {"s3cret-2"};
    const struct srs s = {two, 1, 0, 0}, s5 = {two, 1, 5, 0};
    const char *a = "SRS0=7o8+=KH=Sender.Example=John.Doe@fwd.example";
    char out[256];

    assert_pos(rev(&s, a, T2024, out, sizeof(out)));
    assert_pos(rev(&s, a, T2024 + 21 * DAY, out, sizeof(out)));
    assert_int_equal(rev(&s, a, T2024 + 22 * DAY, out, sizeof(out)), -ETIMEDOUT);
    assert_pos(rev(&s5, a, T2024 + 5 * DAY, out, sizeof(out)));
    assert_int_equal(rev(&s5, a, T2024 + 6 * DAY, out, sizeof(out)), -ETIMEDOUT);
    /* A day in the future is as far as 1023 days in the past. */
    assert_int_equal(rev(&s, a, T2024 - DAY, out, sizeof(out)), -ETIMEDOUT);
    /* The 1024-day wrap: the same stamp is valid again. */
    assert_pos(rev(&s, a, T2024 + 1024 * DAY, out, sizeof(out)));
    /* A forged address is "forged" whatever its age. */
    assert_int_equal(rev(&s, "SRS0=7o8-=KH=Sender.Example=John.Doe@f", T2024 + 99 * DAY, out,
                         sizeof(out)),
                     -EBADMSG);
}

static void test_malformed(void **state)
{
    char out[256];
    static const char *const bad[] = {
        "SRS0@x", "SRS0=@x", "SRS0=abcd@x", "SRS0=abcd=KH@x", "SRS0=abcd=KH=host@x",
        "SRS0=abcd=KH=host=@x", "SRS0==KH=host=user@x", "SRS1=abcd@x", "SRS1=abcd=host@x",
        "SRS1=abcd=host=@x", "SRS2=abcd=KH=h=u@x", "SRS0", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = rev(&srs1, bad[i], T2020, out, sizeof(out));
        if (rc != -EINVAL)
            fail_msg("%s: got %d", bad[i], rc);
    }
    /* Hash too short; bad timestamp characters (checked after the hash,
     * so they need a valid hash to be reached: a short one stops first). */
    assert_int_equal(rev(&srs1, "SRS0=abc=KH=h=u@x", T2020, out, sizeof(out)), -EINVAL);
    assert_int_equal(rev(&srs1, "SRS0=abcd=K1=h=u@x", T2020, out, sizeof(out)), -EBADMSG);

    assert_true(srs_is_srs("SRS0=x", 6));
    assert_true(srs_is_srs("srs1-x", 6));
    assert_true(srs_is_srs("Srs0+", 5));
    assert_false(srs_is_srs("SRS0", 4));
    assert_false(srs_is_srs("SRS0_x", 6));
    assert_false(srs_is_srs("SRS3=x", 6));

    /* No secret. */
    const struct srs none = {NULL, 0, 0, 0};
    assert_int_equal(rev(&none, "SRS0=vmyz=2W=otherdomain.com=test@example.com", T2020, out,
                         sizeof(out)),
                     -ENOKEY);
    assert_int_equal(fwd(&none, "a@b.example", "c.example", T2020, out, sizeof(out)), -ENOKEY);
    assert_int_equal(fwd(&srs1, "@b.example", "c.example", T2020, out, sizeof(out)), -EINVAL);
    assert_int_equal(fwd(&srs1, "a@", "c.example", T2020, out, sizeof(out)), -EINVAL);
    assert_int_equal(fwd(&srs1, "a@b=c.example", "c.example", T2020, out, sizeof(out)), -EINVAL);
    assert_int_equal(fwd(&srs1, "a@b c", "c.example", T2020, out, sizeof(out)), -EINVAL);
    /* Malformed SRS1 sender. */
    assert_int_equal(fwd(&srs1, "SRS1=abcd@h.example", "c.example", T2020, out, sizeof(out)),
                     -EINVAL);
    assert_string_equal(srs_strerror(-EBADMSG), "forged");
    assert_string_equal(srs_strerror(-ETIMEDOUT), "expired");
}

static void test_buffer(void **state)
{
    char out[64];
    const char *want = "SRS0=vmyz=2W=otherdomain.com=test@example.com"; /* 45 */

    for (size_t cap = 0; cap <= 46; cap++) {
        memset(out, 'x', sizeof(out));
        int rc = fwd(&srs1, "test@otherdomain.com", "example.com", T2020, out, cap);
        if (cap <= 45) {
            assert_int_equal(rc, -ENOSPC);
            if (cap > 0)
                assert_true(strlen(out) < cap);
        } else {
            assert_int_equal(rc, 45);
            assert_string_equal(out, want);
        }
    }
    assert_int_equal(rev(&srs1, want, T2020, out, 20), -ENOSPC);
    assert_int_equal(rev(&srs1, want, T2020, out, 21), 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postsrsd_vector), cmocka_unit_test(test_srs1),
        cmocka_unit_test(test_case_and_secrets), cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_malformed),        cmocka_unit_test(test_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

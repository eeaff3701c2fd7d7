/* Task generators: each batch has the structure its task promises, checked from the definition;
 * the same seed gives the same batch; bad sizes are refused with the size named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/error.h"
#include "engine/tasks.h"

enum { N = 16 };

typedef struct batch {
    int32_t *in, *tg;
    float *mask;
    int T;
} batch;

static batch draw(const pf_task *t, uint64_t seed)
{
    batch b = {malloc((size_t)N * t->seq * 4), malloc((size_t)N * t->seq * 4),
               malloc((size_t)N * t->seq * 4), t->seq};
    pf_rng r;
    pf_rng_seed(&r, seed);
    assert_int_equal(pf_task_batch(t, &r, N, b.in, b.tg, b.mask), 0);
    /* targets are the inputs shifted by one */
    for (int s = 0; s < N; s++)
        for (int i = 0; i + 1 < b.T; i++) assert_int_equal(b.tg[s * b.T + i], b.in[s * b.T + i + 1]);
    for (int i = 0; i < N * b.T; i++) {
        assert_true(b.in[i] >= 0 && b.in[i] < t->vocab);
        assert_true(b.tg[i] >= 0 && b.tg[i] < t->vocab);
    }
    return b;
}

static void drop(batch *b)
{
    free(b->in);
    free(b->tg);
    free(b->mask);
}

static int masked(const batch *b, int s)
{
    int n = 0;
    for (int i = 0; i < b->T; i++) n += b->mask[s * b->T + i] != 0;
    return n;
}

static void test_copy(void **st)
{
    (void)st;
    pf_task *t = pf_task_copy(20, 21);
    batch b = draw(t, 1);
    for (int s = 0; s < N; s++) {
        const int32_t *x = b.in + s * b.T;
        int L = b.T / 2;
        assert_int_equal(masked(&b, s), L);
        /* every masked target is the token L+1 positions back in the input */
        for (int i = 0; i < b.T; i++)
            if (b.mask[s * b.T + i] != 0) assert_int_equal(b.tg[s * b.T + i], x[i - L]);
    }
    drop(&b);
    pf_task_free(t);
}

static void test_selective_copy(void **st)
{
    (void)st;
    pf_task *t = pf_task_selective_copy(12, 40, 6);
    batch b = draw(t, 2);
    for (int s = 0; s < N; s++) {
        const int32_t *x = b.in + s * b.T;
        /* the non-blank tokens before the separator, in order, are the masked targets */
        int32_t data[64];
        int n = 0, i = 0;
        for (; x[i] != 1; i++)
            if (x[i] != 0) data[n++] = x[i];
        assert_int_equal(n, 6);
        assert_int_equal(masked(&b, s), 6);
        int k = 0;
        for (int j = 0; j < b.T; j++)
            if (b.mask[s * b.T + j] != 0) assert_int_equal(b.tg[s * b.T + j], data[k++]);
    }
    drop(&b);
    pf_task_free(t);
}

static void test_mqar(void **st)
{
    (void)st;
    pf_task *t = pf_task_mqar(64, 64, 8);
    batch b = draw(t, 3);
    for (int s = 0; s < N; s++) {
        const int32_t *x = b.in + s * b.T;
        assert_int_equal(masked(&b, s), 8);
        for (int i = 0; i < b.T; i++) {
            if (b.mask[s * b.T + i] == 0) continue;
            /* the query key appears among the first 8 pairs, and the target is its value there */
            int found = 0;
            for (int p = 0; p < 8; p++)
                if (x[2 * p] == x[i]) {
                    assert_int_equal(b.tg[s * b.T + i], x[2 * p + 1]);
                    found = 1;
                }
            assert_true(found);
        }
    }
    drop(&b);
    pf_task_free(t);
}

static void test_induction(void **st)
{
    (void)st;
    pf_task *t = pf_task_induction(30, 32);
    batch b = draw(t, 4);
    for (int s = 0; s < N; s++) {
        const int32_t *x = b.in + s * b.T;
        assert_int_equal(masked(&b, s), 1);
        assert_true(b.mask[s * b.T + b.T - 1] != 0);
        assert_int_equal(x[b.T - 1], 0);
        int p = 0;
        while (x[p] != 0) p++;
        assert_true(p < b.T - 1);
        assert_int_equal(b.tg[s * b.T + b.T - 1], x[p + 1]);
    }
    drop(&b);
    pf_task_free(t);
}

static void test_text(void **st)
{
    (void)st;
    char path[] = "/tmp/pf_text_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *body = "the quick brown fox jumps over the lazy dog, again and again and again.";
    FILE *f = fdopen(fd, "w");
    fputs(body, f);
    fclose(f);
    pf_task *t = pf_task_text(path, 16);
    assert_non_null(t);
    batch b = draw(t, 5);
    for (int s = 0; s < N; s++) {
        assert_int_equal(masked(&b, s), 16);
        char window[17];
        for (int i = 0; i < 16; i++) window[i] = (char)b.in[s * 16 + i];
        window[16] = '\0';
        assert_non_null(strstr(body, window));
    }
    drop(&b);
    pf_task_free(t);
    assert_null(pf_task_text(path, 500));
    assert_non_null(strstr(pf_error_message(), "needs at least 501"));
    remove(path);
    assert_null(pf_task_text("/nonexistent/file.txt", 8));
    assert_non_null(strstr(pf_error_message(), "cannot open '/nonexistent/file.txt'"));
}

static void test_same_seed_same_batch(void **st)
{
    (void)st;
    pf_task *t = pf_task_mqar(64, 64, 8);
    batch a = draw(t, 9), b = draw(t, 9), c = draw(t, 10);
    assert_memory_equal(a.in, b.in, (size_t)N * 64 * 4);
    assert_memory_not_equal(a.in, c.in, (size_t)N * 64 * 4);
    drop(&a);
    drop(&b);
    drop(&c);
    pf_task_free(t);
}

static void test_bad_sizes(void **st)
{
    (void)st;
    assert_null(pf_task_mqar(64, 64, 17));
    assert_non_null(strstr(pf_error_message(), "pairs must be in"));
    assert_null(pf_task_mqar(10, 64, 8));
    assert_non_null(strstr(pf_error_message(), "needs vocab >= 17"));
    assert_null(pf_task_copy(64, -3));
    assert_non_null(strstr(pf_error_message(), "seq must be in"));
    assert_null(pf_task_selective_copy(64, 20, 11));
    assert_non_null(strstr(pf_error_message(), "tokens must be in"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_selective_copy),
        cmocka_unit_test(test_mqar),
        cmocka_unit_test(test_induction),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_same_seed_same_batch),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests_name("tasks", tests, NULL, NULL);
}

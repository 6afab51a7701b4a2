/* SPDX-License-Identifier: MIT */
/*
 * workq.c - worker threads for blocking jobs (see workq.h).
 *
 * One mutex-protected FIFO and a condition variable; invariant: head is
 * NULL exactly when the queue is empty, and tail is the last item then.
 */
#include "io/workq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct workq {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct workq_item *head, *tail;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
};

/* On the queuing loop. */
static void on_done(void *arg)
{
    struct workq_item *it = arg;
    it->done(it);
}

static void *worker_main(void *arg)
{
    struct workq *q = arg;

    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->head == NULL && !q->stopping)
            pthread_cond_wait(&q->cond, &q->mu);
        struct workq_item *it = q->head;
        if (it == NULL) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        q->head = it->next;
        pthread_mutex_unlock(&q->mu);

        it->run(it);
        /* io_loop_post fails only without memory; the completion must not
         * be lost (a message would be neither delivered nor retried). */
        while (io_loop_post(it->loop, on_done, it) < 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

struct workq *workq_new(unsigned nworkers)
{
    struct workq *q = calloc(1, sizeof(*q));
    sigset_t spipe, old;

    if (q == NULL || nworkers == 0)
        goto fail;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cond, NULL);
    q->threads = calloc(nworkers, sizeof(*q->threads));
    if (q->threads == NULL)
        goto fail;
    /* The workers inherit this mask: SIGPIPE blocked. */
    sigemptyset(&spipe);
    sigaddset(&spipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &spipe, &old);
    for (unsigned i = 0; i < nworkers; i++) {
        if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            workq_free(q);
            return NULL;
        }
        q->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return q;
fail:
    if (q != NULL)
        free(q->threads);
    free(q);
    return NULL;
}

void workq_free(struct workq *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->nthreads; i++)
        pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cond);
    free(q->threads);
    free(q);
}

int workq_submit(struct workq *q, struct io_loop *loop, struct workq_item *it)
{
    if (q == NULL || loop == NULL || it == NULL || it->run == NULL || it->done == NULL)
        return -EINVAL;
    it->loop = loop;
    it->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return -ESHUTDOWN;
    }
    if (q->head == NULL)
        q->head = it;
    else
        q->tail->next = it;
    q->tail = it;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

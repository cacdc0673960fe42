/*
 * zwatch.c - a ZeroMQ socket in a libev loop (see zwatch.h for the why).
 *
 * Per loop iteration:
 *   prepare: ask ZMQ_EVENTS.  Requested events already pending -> start the
 *            no-op idle watcher so the loop polls without blocking; otherwise
 *            start the no-op io watcher on ZMQ_FD so a state change wakes it.
 *            Asking ZMQ_EVENTS also re-arms ZMQ_FD's edge.
 *   check:   stop both, ask ZMQ_EVENTS again, call back with what is ready.
 * This is the pattern of flux-core's ev_zmq.  Interest (set_events) is read
 * afresh by every prepare and check, so it can change at any time from the
 * loop's thread, including from inside the callback.
 */
#include "zwatch.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "log.h"

struct zwatch {
    ev_io io;
    ev_prepare prepare;
    ev_check check;
    ev_idle idle;
    struct ev_loop *loop;
    void *zsock;
    int events;
    int active;
    zwatch_cb cb;
    void *arg;
};

/* ZMQ_EVENTS as libev events; -1 on error (the socket or context is gone). */
static int s_zevents(zwatch_t *w)
{
    int zev = 0;
    size_t len = sizeof zev;
    for (;;) {
        if (zmq_getsockopt(w->zsock, ZMQ_EVENTS, &zev, &len) == 0)
            break;
        if (errno != EINTR)
            return -1;
    }
    int ev = 0;
    if (zev & ZMQ_POLLIN)
        ev |= EV_READ;
    if (zev & ZMQ_POLLOUT)
        ev |= EV_WRITE;
    return ev;
}

static void s_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    /* Only here to wake the loop; the check watcher does the work. */
    (void)loop;
    (void)io;
    (void)revents;
}

static void s_idle_cb(struct ev_loop *loop, ev_idle *idle, int revents)
{
    /* Only here to keep the loop from blocking while events are pending. */
    (void)loop;
    (void)idle;
    (void)revents;
}

static void s_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    zwatch_t *w = (zwatch_t *)((char *)p - offsetof(zwatch_t, prepare));
    int ev = s_zevents(w);
    /* On error let check run at once and report it. */
    if (ev < 0 || (ev & w->events))
        ev_idle_start(loop, &w->idle);
}

static void s_check_cb(struct ev_loop *loop, ev_check *c, int revents)
{
    (void)revents;
    zwatch_t *w = (zwatch_t *)((char *)c - offsetof(zwatch_t, check));
    /* Neither ZMQ_FD fired (its watcher is pending until invoked, which
     * libev does after the checks) nor did the prepare find events: no
     * command has reached the socket since that ZMQ_EVENTS, so asking again
     * (a poll() inside ZeroMQ) would find nothing.  Should another callback
     * of this iteration touch the socket, the next prepare asks before the
     * loop sleeps. */
    int woke = ev_is_pending(&w->io) || ev_is_active(&w->idle);
    ev_idle_stop(loop, &w->idle);
    if (!woke)
        return;
    int ev = s_zevents(w);
    if (ev < 0) {
        /* A dead socket would report the same error every iteration: stop
         * watching and tell the owner once. */
        log_err("zwatch: ZMQ_EVENTS failed: %s", zmq_strerror(errno));
        zwatch_stop(w);
        w->cb(loop, w, EV_ERROR, w->arg);
        return;
    }
    ev &= w->events;
    if (ev)
        w->cb(loop, w, ev, w->arg);
}

zwatch_t *zwatch_create(struct ev_loop *loop, void *zsock, int events, zwatch_cb cb,
                        void *arg)
{
    if (!loop || !zsock || !cb) {
        errno = EINVAL;
        return NULL;
    }
    int fd = -1;
    size_t len = sizeof fd;
    if (zmq_getsockopt(zsock, ZMQ_FD, &fd, &len) < 0)
        return NULL;
    zwatch_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->loop = loop;
    w->zsock = zsock;
    w->events = events & (EV_READ | EV_WRITE);
    w->cb = cb;
    w->arg = arg;
    ev_io_init(&w->io, s_io_cb, fd, EV_READ);
    ev_prepare_init(&w->prepare, s_prepare_cb);
    /* Run after every other prepare watcher: those typically flush batched
     * output with zmq_send, which can consume the ZMQ_FD edge.  Asking
     * ZMQ_EVENTS only after them means the loop never sleeps with input
     * already waiting on the socket. */
    ev_set_priority(&w->prepare, EV_MINPRI);
    ev_check_init(&w->check, s_check_cb);
    ev_idle_init(&w->idle, s_idle_cb);
    return w;
}

void zwatch_start(zwatch_t *w)
{
    if (!w || w->active)
        return;
    ev_prepare_start(w->loop, &w->prepare);
    ev_check_start(w->loop, &w->check);
    /* ZMQ_FD is the socket's mailbox signal: readable only while commands
     * wait, and every ZMQ_EVENTS (the prepare's, right before the sleep)
     * drains it.  So it can stay in the poll set for good: it wakes the
     * loop only when the socket's state may have changed, and keeping it
     * there spares two epoll_ctl calls per loop iteration. */
    ev_io_start(w->loop, &w->io);
    w->active = 1;
}

void zwatch_stop(zwatch_t *w)
{
    if (!w || !w->active)
        return;
    ev_prepare_stop(w->loop, &w->prepare);
    ev_check_stop(w->loop, &w->check);
    ev_io_stop(w->loop, &w->io);
    ev_idle_stop(w->loop, &w->idle);
    w->active = 0;
}

void zwatch_set_events(zwatch_t *w, int events)
{
    if (!w)
        return;
    w->events = events & (EV_READ | EV_WRITE);
}

void *zwatch_socket(const zwatch_t *w)
{
    return w ? w->zsock : NULL;
}

void zwatch_destroy(zwatch_t *w)
{
    if (!w)
        return;
    zwatch_stop(w);
    free(w);
}

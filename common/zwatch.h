/*
 * zwatch.h - a ZeroMQ socket inside a libev loop.
 *
 * ZMQ_FD is edge-triggered and only says "ZMQ_EVENTS may have changed", so
 * the socket cannot simply be watched with an ev_io.  A zwatch uses the
 * pattern libev documents for such sources: an ev_prepare before each
 * sleep asks ZMQ_EVENTS; if the socket is already readable/writable for the
 * requested events it starts an ev_idle so the loop does not block; an ev_io
 * on ZMQ_FD, started with the watcher, wakes the loop when the socket's
 * state may have changed; an ev_check after
 * the sleep asks ZMQ_EVENTS again and calls the callback with the events that
 * are ready.  The callback must consume what it can (e.g. recv until EAGAIN,
 * or a bounded batch: the watcher will call again on the next iteration while
 * events remain pending, without sleeping).
 *
 * The zwatch does not own the socket.
 */
#ifndef SHOAL_ZWATCH_H
#define SHOAL_ZWATCH_H

#include <ev.h>

typedef struct zwatch zwatch_t;

/* revents: EV_READ and/or EV_WRITE (those of `events` that are ready). */
typedef void (*zwatch_cb)(struct ev_loop *loop, zwatch_t *w, int revents, void *arg);

/* Create a watcher for `zsock` interested in `events` (EV_READ|EV_WRITE).
 * Returns NULL with errno on failure.  Not started. */
zwatch_t *zwatch_create(struct ev_loop *loop, void *zsock, int events, zwatch_cb cb,
                        void *arg);
void zwatch_start(zwatch_t *w);
void zwatch_stop(zwatch_t *w);
/* Change the events of interest (e.g. add EV_WRITE while output is queued). */
void zwatch_set_events(zwatch_t *w, int events);
void *zwatch_socket(const zwatch_t *w);
/* Stop and free.  Accepts NULL. */
void zwatch_destroy(zwatch_t *w);

#endif

/*
 * supervisor.c - the parent of `--nworkers M` worker processes (see
 * supervisor.h).  One libev default loop: an ev_child watcher for every
 * child, ev_signal for SIGINT/SIGTERM, one restart timer per child slot and
 * one kill timer used during shutdown.
 */
#define _GNU_SOURCE
#include "supervisor.h"

#include <errno.h>
#include <limits.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "worker.h"

typedef struct slot {
    struct sup *sup;
    int index;
    pid_t pid;             /* 0: not running */
    int final;             /* exited for good */
    int status;            /* final exit status (for the supervisor's own) */
    double started;        /* ev_now at the last start */
    double backoff;        /* delay before the next restart */
    ev_timer restart;
    char name[WORKER_NAME_MAX + 16];
} slot_t;

typedef struct sup {
    const supervisor_config_t *cfg;
    struct ev_loop *loop;
    ev_child child;
    ev_signal sigint, sigterm;
    ev_timer killer;
    pid_t self;
    char exe[PATH_MAX];    /* our executable's path, "" if unknown */
    int stopping;
    slot_t *slots;
} sup_t;

/*
 * Start the child for slot s.  Between fork and exec only async-signal-safe
 * calls: the child of a fork is a copy of one thread of the parent.
 */
static int s_spawn(sup_t *sp, slot_t *s)
{
    const supervisor_config_t *cfg = sp->cfg;
    char **argv;
    sigset_t none;
    pid_t pid;
    int i;

    /* argv0 SUPERVISOR_CHILD_OPT NAME-i argv1 ... NULL: the hidden option
     * goes first, so it stays an option even after a "--" in argv. */
    argv = calloc((size_t)cfg->argc + 3, sizeof(*argv));
    if (!argv)
        return -1;
    argv[0] = cfg->argv[0];
    argv[1] = (char *)SUPERVISOR_CHILD_OPT;
    argv[2] = s->name;
    for (i = 1; i < cfg->argc; i++)
        argv[i + 2] = cfg->argv[i];
    argv[cfg->argc + 2] = NULL;
    sigemptyset(&none);

    pid = fork();
    if (pid < 0) {
        int e = errno;
        free(argv);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        /* Die with the supervisor (SIGTERM: an orderly BYE).  The parent may
         * have died before prctl took effect: then we are orphaned already. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != sp->self)
            _exit(WORKER_EXIT_ERROR);
        /* The signal mask survives exec; dispositions set to handlers do not. */
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (sp->exe[0])
            execv(sp->exe, argv);
        execv("/proc/self/exe", argv);
        {
            static const char msg[] = "shoal-worker: cannot exec itself for a worker\n";
            ssize_t r = write(2, msg, sizeof(msg) - 1);
            (void)r;
        }
        _exit(127);
    }
    free(argv);
    s->pid = pid;
    s->started = ev_now(sp->loop);
    log_debug("started worker %s (pid %d)", s->name, (int)pid);
    return 0;
}

static int s_all_final(const sup_t *sp)
{
    int i;

    for (i = 0; i < sp->cfg->nworkers; i++)
        if (!sp->slots[i].final)
            return 0;
    return 1;
}

static void s_check_done(sup_t *sp)
{
    if (s_all_final(sp))
        ev_break(sp->loop, EVBREAK_ALL);
}

static void s_finish(slot_t *s, int status)
{
    s->final = 1;
    s->status = status;
    s->pid = 0;
}

static void s_on_restart(struct ev_loop *loop, ev_timer *t, int revents)
{
    slot_t *s = t->data;
    sup_t *sp = s->sup;

    (void)loop;
    (void)revents;
    if (sp->stopping)
        return;
    if (s_spawn(sp, s) < 0) {
        log_err("cannot restart worker %s: %s; trying again in %.1f s", s->name,
                strerror(errno), s->backoff);
        ev_timer_set(&s->restart, s->backoff, 0.0);
        ev_timer_start(sp->loop, &s->restart);
    }
}

static slot_t *s_slot_of(sup_t *sp, pid_t pid)
{
    int i;

    for (i = 0; i < sp->cfg->nworkers; i++)
        if (sp->slots[i].pid == pid)
            return &sp->slots[i];
    return NULL;
}

static void s_on_child(struct ev_loop *loop, ev_child *c, int revents)
{
    sup_t *sp = c->data;
    slot_t *s = s_slot_of(sp, c->rpid);
    int st = c->rstatus;
    double ran;

    (void)revents;
    if (!s)
        return;     /* not one of ours (cannot happen: we fork nothing else) */
    s->pid = 0;
    ran = ev_now(loop) - s->started;

    if (WIFEXITED(st)) {
        int code = WEXITSTATUS(st);
        if (code == WORKER_EXIT_OK) {
            log_info("worker %s exited", s->name);
            s_finish(s, 0);
        } else if (code == WORKER_EXIT_CONFIG || code == WORKER_EXIT_LOST || code == 127) {
            log_err("worker %s exited with status %d (%s): not restarting", s->name, code,
                    code == WORKER_EXIT_LOST ? "scheduler lost" : "bad configuration");
            s_finish(s, code);
        } else if (sp->stopping) {
            log_warn("worker %s exited with status %d", s->name, code);
            s_finish(s, code);
        } else {
            if (ran >= SUPERVISOR_HEALTHY_AFTER)
                s->backoff = SUPERVISOR_BACKOFF_MIN;
            log_warn("worker %s died (status %d), restarting in %.1f s", s->name, code,
                     s->backoff);
            goto restart;
        }
    } else if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        if (sp->stopping) {
            /* Our own SIGTERM/SIGINT (before the child had its handlers), or
             * the SIGKILL of the grace period. */
            log_info("worker %s ended by signal %d", s->name, sig);
            s_finish(s, sig == SIGKILL ? WORKER_EXIT_ERROR : 0);
        } else {
            if (ran >= SUPERVISOR_HEALTHY_AFTER)
                s->backoff = SUPERVISOR_BACKOFF_MIN;
            log_warn("worker %s died (signal %d), restarting in %.1f s", s->name, sig,
                     s->backoff);
            goto restart;
        }
    }
    s_check_done(sp);
    return;

restart:
    ev_timer_set(&s->restart, s->backoff, 0.0);
    ev_timer_start(loop, &s->restart);
    s->backoff *= 2;
    if (s->backoff > SUPERVISOR_BACKOFF_MAX)
        s->backoff = SUPERVISOR_BACKOFF_MAX;
}

static void s_on_killer(struct ev_loop *loop, ev_timer *t, int revents)
{
    sup_t *sp = t->data;
    int i;

    (void)loop;
    (void)revents;
    for (i = 0; i < sp->cfg->nworkers; i++) {
        slot_t *s = &sp->slots[i];
        if (s->pid > 0) {
            log_warn("worker %s (pid %d) still running after %.0f s: killing it", s->name,
                     (int)s->pid, SUPERVISOR_KILL_AFTER);
            kill(s->pid, SIGKILL);
        }
    }
}

static void s_on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    sup_t *sp = w->data;
    int i;

    (void)revents;
    if (!sp->stopping)
        log_info("supervisor %s: SIG%s received, stopping %d workers", sp->cfg->name,
                 sigabbrev_np(w->signum), sp->cfg->nworkers);
    sp->stopping = 1;
    for (i = 0; i < sp->cfg->nworkers; i++) {
        slot_t *s = &sp->slots[i];
        if (s->pid > 0) {
            kill(s->pid, w->signum);
        } else if (!s->final) {
            /* Waiting for a restart that will not happen now. */
            ev_timer_stop(loop, &s->restart);
            s_finish(s, 0);
        }
    }
    if (!ev_is_active(&sp->killer)) {
        ev_timer_set(&sp->killer, SUPERVISOR_KILL_AFTER, 0.0);
        ev_timer_start(loop, &sp->killer);
    }
    s_check_done(sp);
}

int supervisor_run(const supervisor_config_t *cfg)
{
    sup_t sp;
    int i, n = cfg->nworkers, code = 0;

    memset(&sp, 0, sizeof(sp));
    sp.cfg = cfg;
    sp.self = getpid();
    /* The path, rather than /proc/self/exe itself, is what children exec
     * first: under a tool like valgrind /proc/self/exe is the tool, while
     * readlink reports our program.  /proc/self/exe stays as the fallback
     * for when that file was deleted since. */
    {
        ssize_t len = readlink("/proc/self/exe", sp.exe, sizeof(sp.exe) - 1);
        sp.exe[len > 0 ? len : 0] = '\0';
    }
    if (n < 2 || n > 1024) {
        log_err("supervisor: bad number of workers %d", n);
        return WORKER_EXIT_CONFIG;
    }
    if (!(sp.loop = ev_default_loop(EVFLAG_AUTO))) {
        log_err("supervisor: cannot create the event loop");
        return WORKER_EXIT_ERROR;
    }
    if (!(sp.slots = calloc((size_t)n, sizeof(*sp.slots)))) {
        log_err("supervisor: out of memory");
        return WORKER_EXIT_ERROR;
    }
    ev_child_init(&sp.child, s_on_child, 0, 0);
    sp.child.data = &sp;
    ev_child_start(sp.loop, &sp.child);
    ev_signal_init(&sp.sigint, s_on_signal, SIGINT);
    sp.sigint.data = &sp;
    ev_signal_start(sp.loop, &sp.sigint);
    ev_signal_init(&sp.sigterm, s_on_signal, SIGTERM);
    sp.sigterm.data = &sp;
    ev_signal_start(sp.loop, &sp.sigterm);
    ev_timer_init(&sp.killer, s_on_killer, SUPERVISOR_KILL_AFTER, 0.0);
    sp.killer.data = &sp;

    for (i = 0; i < n; i++) {
        slot_t *s = &sp.slots[i];
        s->sup = &sp;
        s->index = i;
        s->backoff = SUPERVISOR_BACKOFF_MIN;
        util_fmt(s->name, sizeof(s->name), "%s-%d", cfg->name, i);
        ev_timer_init(&s->restart, s_on_restart, 0.0, 0.0);
        s->restart.data = s;
    }
    log_info("supervisor %s (pid %d): starting %d workers", cfg->name, (int)sp.self, n);
    for (i = 0; i < n; i++) {
        slot_t *s = &sp.slots[i];
        if (s_spawn(&sp, s) < 0) {
            log_err("cannot start worker %s: %s; trying again in %.1f s", s->name,
                    strerror(errno), s->backoff);
            ev_timer_set(&s->restart, s->backoff, 0.0);
            ev_timer_start(sp.loop, &s->restart);
        }
    }

    ev_run(sp.loop, 0);

    for (i = 0; i < n; i++) {
        ev_timer_stop(sp.loop, &sp.slots[i].restart);
        if (sp.slots[i].status > code)
            code = sp.slots[i].status;
    }
    ev_timer_stop(sp.loop, &sp.killer);
    ev_signal_stop(sp.loop, &sp.sigint);
    ev_signal_stop(sp.loop, &sp.sigterm);
    ev_child_stop(sp.loop, &sp.child);
    free(sp.slots);
    log_info("supervisor %s: all workers have exited", cfg->name);
    return code;
}

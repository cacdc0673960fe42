/*
 * test_deploy_ssh.c - end to end: `shoal-ssh` against real sshd servers on
 * hosts made of network namespaces.
 *
 * The network (built once per tcase by an unchecked fixture, in Check's
 * parent process, so that it is torn down even when a test fails or times
 * out):
 *
 *      root namespace: shoal-ssh, ssh clients, the test's client
 *        | shv<PID>r  198.A.B.254/24
 *      shoaltest0-<PID>: a bridge (the "switch")
 *        | shp<PID>k1           | shp<PID>k2           | shp<PID>k3
 *      shoaltest1-<PID>       shoaltest2-<PID>       shoaltest3-<PID>
 *      198.A.B.1 sshd         198.A.B.2 sshd         198.A.B.3 sshd
 *
 * 198.A.B.0/24 is a /24 of 198.18.0.0/15 (the benchmarking range) picked from
 * our pid, skipping any already on an interface here, so that concurrent
 * runs do not clash.  198.A.B.200 has nothing behind it: the unreachable
 * host.  Each sshd has a host key, an authorized key and a configuration
 * generated in a temporary directory; the binaries are the same files in
 * every namespace (one filesystem).
 *
 * Cleanup: the teardown kills every process in our namespaces (found by
 * their network namespace, as `ip netns pids` does - they are ours by
 * construction), reaps them, deletes the namespaces (which destroys the veth
 * pairs and the bridge) and the directory.  Namespaces left by a run that
 * was killed outright (named after a pid that is no longer this test) are
 * removed at the next setup.
 *
 * Needs root (namespaces, sshd).  As another user the tests print
 * "skipped: needs root" and pass.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e.h"

#define NHOSTS 3
#define MAX_PIDS 512
#define LOG_MAX (4u << 20)
#define TEST_COMM "test_deploy_ssh"
#define NS_PREFIX "shoaltest"

typedef struct net {
    int skip;                  /* not root */
    int ok;                    /* set up completely */
    char err[2048];            /* why not */
    pid_t owner;               /* the pid in our names */
    char dir[PATH_MAX];        /* keys, configs, logs */
    char sub[16];              /* "198.A.B" */
    char ns[NHOSTS + 1][64];   /* [0] the switch, [1..] the hosts */
    char addr[NHOSTS + 1][32]; /* [0] our side (.254), [1..] the hosts */
    char unreach[32];
    char rootlink[32];
    int ssh_port;
    pid_t sshd[NHOSTS + 1];    /* [1..] */
    char key[PATH_MAX + 16];
    char ip[PATH_MAX], keygen[PATH_MAX];
} net_t;

static net_t s_net;

/* --- small helpers ------------------------------------------------------------------ */

static void __attribute__((format(printf, 1, 2))) s_fail_setup(const char *fmt, ...)
{
    va_list ap;

    if (s_net.err[0])
        return;   /* keep the first reason */
    va_start(ap, fmt);
    vsnprintf(s_net.err, sizeof s_net.err, fmt, ap);
    va_end(ap);
    fprintf(stderr, "test_deploy_ssh setup: %s\n", s_net.err);
}

/* Find a program in PATH, then in the sbin directories (a plain user's PATH
 * may lack them).  0 or -1. */
static int s_which(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char buf[8192];
    const char *p;

    snprintf(buf, sizeof buf, "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
    for (p = buf; *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && (size_t)snprintf(out, cap, "%.*s/%s", (int)n, p, name) < cap &&
            access(out, X_OK) == 0)
            return 0;
        p += n;
        if (*p == ':')
            p++;
    }
    return -1;
}

/* Run argv (argv[0] a path) to completion; 0 if it exited 0, else -1 with
 * its output in the setup error (when `quiet` is 0). */
static int s_run(const char *const argv[], int quiet)
{
    proc_result_t r;
    int rc;

    if (proc_run(argv, NULL, NULL, 0, 30, &r) < 0) {
        if (!quiet)
            s_fail_setup("cannot run %s", argv[0]);
        return -1;
    }
    rc = r.exited && r.exit_code == 0 ? 0 : -1;
    if (rc < 0 && !quiet) {
        char cmd[512] = "";
        size_t n = 0;
        for (int i = 0; argv[i] && n < sizeof cmd - 1; i++)
            n += (size_t)snprintf(cmd + n, sizeof cmd - n, "%s%s", i ? " " : "", argv[i]);
        s_fail_setup("'%s' failed (exit %d): %s%s", cmd, r.exit_code, r.err, r.out);
    }
    proc_result_free(&r);
    return rc;
}

/* `ip ARGS...` split on spaces (our arguments never contain any). */
static int __attribute__((format(printf, 2, 3))) s_ip(int quiet, const char *fmt, ...)
{
    char line[1024], *argv[32], *p;
    va_list ap;
    int n = 0;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    argv[n++] = s_net.ip;
    for (p = line; *p && n < 31;) {
        argv[n++] = p;
        p += strcspn(p, " ");
        if (*p)
            *p++ = '\0';
    }
    argv[n] = NULL;
    return s_run((const char *const *)argv, quiet);
}

static int s_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t n = strlen(text), off = 0;

    if (fd < 0)
        return -1;
    while (off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    return close(fd);
}

/* The whole file, NUL-terminated, bounded; "" if it cannot be read.  The
 * caller frees. */
static char *s_read_file(const char *path)
{
    FILE *f = fopen(path, "re");
    char *buf = calloc(1, LOG_MAX + 1);
    size_t n = 0;

    if (!buf)
        return NULL;
    if (f) {
        n = fread(buf, 1, LOG_MAX, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static int s_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static int s_comm(pid_t pid, char *out, size_t cap)
{
    char path[64];
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    if (!fgets(out, (int)cap, f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
    return 0;
}

/* --- processes by network namespace ---------------------------------------------------- */

/* The pids of the live processes in namespace `ns`.  Returns the count (at
 * most max), or -1 if the namespace does not exist. */
static int s_ns_pids(const char *ns, pid_t *out, int max)
{
    char path[PATH_MAX];
    struct stat nst;
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof path, "/run/netns/%s", ns);
    if (stat(path, &nst) < 0)
        return -1;
    d = opendir("/proc");
    if (!d)
        return -1;
    while ((e = readdir(d)) && n < max) {
        struct stat st;
        char *end;
        long v = strtol(e->d_name, &end, 10);

        if (!isdigit((unsigned char)e->d_name[0]) || *end || v <= 1)
            continue;
        snprintf(path, sizeof path, "/proc/%ld/ns/net", v);
        if (stat(path, &st) < 0 || st.st_dev != nst.st_dev || st.st_ino != nst.st_ino)
            continue;
        if (!proc_alive((pid_t)v))
            continue;
        out[n++] = (pid_t)v;
    }
    closedir(d);
    return n;
}

/* Kill every process in ns (SIGKILL, until none is left, bounded) and reap
 * those that are our children or were handed to us (subreaper). */
static void s_ns_kill_all(const char *ns)
{
    pid_t pids[MAX_PIDS];

    for (int round = 0; round < 300; round++) {
        int n = s_ns_pids(ns, pids, MAX_PIDS);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (n <= 0)
            return;
        for (int i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        e2e_sleep(0.01);
    }
    fprintf(stderr, "test_deploy_ssh: processes left in %s\n", ns);
}

static void s_ns_delete(const char *ns)
{
    char path[PATH_MAX];

    snprintf(path, sizeof path, "/run/netns/%s", ns);
    if (access(path, F_OK) < 0)
        return;
    s_ns_kill_all(ns);
    s_ip(1, "netns del %s", ns);
}

/* Namespaces named after a test process that is gone: a run killed outright
 * (its teardown never ran). */
static void s_remove_stale(void)
{
    DIR *d = opendir("/run/netns");
    struct dirent *e;
    char names[64][128];
    int n = 0;

    if (!d)
        return;
    while ((e = readdir(d)) && n < 64) {
        const char *dash, *p = e->d_name;
        char comm[64], *end;
        long pid;

        if (strncmp(p, NS_PREFIX, strlen(NS_PREFIX)) != 0)
            continue;
        dash = strrchr(p, '-');
        if (!dash)
            continue;
        pid = strtol(dash + 1, &end, 10);
        if (end == dash + 1 || *end || pid <= 1 || pid == (long)getpid())
            continue;
        if (s_comm((pid_t)pid, comm, sizeof comm) == 0 && !strcmp(comm, TEST_COMM))
            continue;   /* a live run */
        if (strlen(p) < sizeof names[0])
            memcpy(names[n++], p, strlen(p) + 1);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "test_deploy_ssh: removing stale namespace %s\n", names[i]);
        s_ns_delete(names[i]);
    }
}

/* --- the fixture ------------------------------------------------------------------------- */

/* A /24 of 198.18.0.0/15 not on any interface here, starting from our pid. */
static int s_pick_subnet(void)
{
    const char *argv[] = {s_net.ip, "-o", "-4", "addr", "show", NULL};
    proc_result_t r;

    if (proc_run(argv, NULL, NULL, 0, 10, &r) < 0 || !r.exited || r.exit_code != 0) {
        s_fail_setup("ip addr show failed: %s", r.err ? r.err : "");
        proc_result_free(&r);
        return -1;
    }
    for (int i = 0; i < 512; i++) {
        int x = (int)((s_net.owner + i) % 512);
        char probe[48];

        snprintf(s_net.sub, sizeof s_net.sub, "198.%d.%d", 18 + x / 256, x % 256);
        snprintf(probe, sizeof probe, "inet %s.", s_net.sub);
        if (!strstr(r.out, probe)) {
            proc_result_free(&r);
            return 0;
        }
    }
    proc_result_free(&r);
    s_fail_setup("no free /24 in 198.18.0.0/15");
    return -1;
}

static int s_make_network(void)
{
    pid_t me = s_net.owner;

    for (int k = 0; k <= NHOSTS; k++) {
        snprintf(s_net.ns[k], sizeof s_net.ns[k], NS_PREFIX "%d-%d", k, (int)me);
        if (s_ip(0, "netns add %s", s_net.ns[k]) < 0)
            return -1;
        if (s_ip(0, "-n %s link set lo up", s_net.ns[k]) < 0)
            return -1;
    }
    if (s_ip(0, "-n %s link add br0 type bridge", s_net.ns[0]) < 0 ||
        s_ip(0, "-n %s link set br0 up", s_net.ns[0]) < 0)
        return -1;
    for (int k = 1; k <= NHOSTS; k++) {
        char a[32], b[32];

        snprintf(a, sizeof a, "shv%dk%d", (int)me, k);
        snprintf(b, sizeof b, "shp%dk%d", (int)me, k);
        snprintf(s_net.addr[k], sizeof s_net.addr[k], "%s.%d", s_net.sub, k);
        if (s_ip(0, "link add %s type veth peer name %s", a, b) < 0)
            return -1;
        if (s_ip(0, "link set %s netns %s", a, s_net.ns[0]) < 0 ||
            s_ip(0, "link set %s netns %s", b, s_net.ns[k]) < 0) {
            s_ip(1, "link del %s", a);
            return -1;
        }
        if (s_ip(0, "-n %s link set %s master br0 up", s_net.ns[0], a) < 0 ||
            s_ip(0, "-n %s addr add %s/24 dev %s", s_net.ns[k], s_net.addr[k], b) < 0 ||
            s_ip(0, "-n %s link set %s up", s_net.ns[k], b) < 0)
            return -1;
    }
    /* Our own leg: the root end keeps the name, the other goes to the switch. */
    snprintf(s_net.rootlink, sizeof s_net.rootlink, "shv%dr", (int)me);
    snprintf(s_net.addr[0], sizeof s_net.addr[0], "%s.254", s_net.sub);
    snprintf(s_net.unreach, sizeof s_net.unreach, "%s.200", s_net.sub);
    {
        char peer[32];
        snprintf(peer, sizeof peer, "shp%dr", (int)me);
        if (s_ip(0, "link add %s type veth peer name %s", s_net.rootlink, peer) < 0)
            return -1;
        if (s_ip(0, "link set %s netns %s", peer, s_net.ns[0]) < 0 ||
            s_ip(0, "-n %s link set %s master br0 up", s_net.ns[0], peer) < 0 ||
            s_ip(0, "addr add %s/24 dev %s", s_net.addr[0], s_net.rootlink) < 0 ||
            s_ip(0, "link set %s up", s_net.rootlink) < 0)
            return -1;
    }
    return 0;
}

static int s_make_keys(void)
{
    char hk[PATH_MAX + 16], pub[PATH_MAX + 32], auth[PATH_MAX + 32];
    char *text;
    int rc;

    snprintf(hk, sizeof hk, "%s/host_key", s_net.dir);
    snprintf(s_net.key, sizeof s_net.key, "%s/id_ed25519", s_net.dir);
    {
        const char *a1[] = {s_net.keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                            "shoal-test-host", "-f", hk, NULL};
        const char *a2[] = {s_net.keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                            "shoal-test-client", "-f", s_net.key, NULL};
        if (s_run(a1, 0) < 0 || s_run(a2, 0) < 0)
            return -1;
    }
    snprintf(pub, sizeof pub, "%s.pub", s_net.key);
    snprintf(auth, sizeof auth, "%s/authorized_keys", s_net.dir);
    text = s_read_file(pub);
    rc = text && text[0] ? s_write_file(auth, text) : -1;
    free(text);
    if (rc < 0)
        s_fail_setup("cannot write %s", auth);
    return rc;
}

/* Start sshd in host namespace k: `ip netns exec NS sshd -D -e -f CONF`
 * (ip execs sshd in place: the pid is sshd's). */
static pid_t s_start_sshd(int k)
{
    /* Three copies of the directory path go into the config. */
    char conf[PATH_MAX + 32], log[PATH_MAX + 32], text[3 * PATH_MAX + 512];
    pid_t parent = getpid(), pid;
    int fd, n;

    snprintf(conf, sizeof conf, "%s/sshd_config.%d", s_net.dir, k);
    snprintf(log, sizeof log, "%s/sshd.%d.log", s_net.dir, k);
    n = snprintf(text, sizeof text,
             "Port %d\n"
             "ListenAddress %s\n"
             "HostKey %s/host_key\n"
             "AuthorizedKeysFile %s/authorized_keys\n"
             "PermitRootLogin prohibit-password\n"
             "PubkeyAuthentication yes\n"
             "PasswordAuthentication no\n"
             "KbdInteractiveAuthentication no\n"
             "UsePAM no\n"
             "StrictModes no\n"
             "PrintMotd no\n"
             "PidFile %s/sshd.%d.pid\n"
             "MaxStartups 50\n",
             s_net.ssh_port, s_net.addr[k], s_net.dir, s_net.dir, s_net.dir, k);
    if (n < 0 || (size_t)n >= sizeof text || s_write_file(conf, text) < 0) {
        s_fail_setup("cannot write %s", conf);
        return -1;
    }
    fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        const char *argv[] = {s_net.ip, "netns", "exec", s_net.ns[k], "/usr/sbin/sshd",
                              "-D", "-e", "-f", conf, NULL};
        sigset_t none;
        int devnull = open("/dev/null", O_RDONLY);

        setpgid(0, 0);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    if (pid < 0)
        s_fail_setup("fork: %s", strerror(errno));
    return pid;
}

/* Wait until a TCP connection to addr:port succeeds (from here). */
static int s_wait_listening(const char *addr, int port, double timeout)
{
    double end = e2e_now() + timeout;
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return -1;
    while (e2e_now() < end) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int rc = fd >= 0 ? connect(fd, (struct sockaddr *)&sa, sizeof sa) : -1;
        if (fd >= 0)
            close(fd);
        if (rc == 0)
            return 0;
        e2e_sleep(0.05);
    }
    return -1;
}

static void s_setup(void)
{
    char tmpl[PATH_MAX];

    cluster_fixture_setup();
    memset(&s_net, 0, sizeof s_net);
    s_net.owner = getpid();
    if (geteuid() != 0) {
        s_net.skip = 1;
        return;
    }
    /* The processes of the ssh sessions are handed to us when their sshd is
     * killed; we reap them in the teardown. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (s_which("ip", s_net.ip, sizeof s_net.ip) < 0) {
        s_fail_setup("'ip' not found (install iproute2: make deps)");
        return;
    }
    if (s_which("ssh-keygen", s_net.keygen, sizeof s_net.keygen) < 0 ||
        access("/usr/sbin/sshd", X_OK) < 0) {
        s_fail_setup("ssh-keygen or /usr/sbin/sshd not found (install openssh-client and "
                     "openssh-server: make deps)");
        return;
    }
    {
        char ssh[PATH_MAX];
        if (s_which("ssh", ssh, sizeof ssh) < 0) {
            s_fail_setup("ssh not found (install openssh-client: make deps)");
            return;
        }
    }
    s_remove_stale();
    snprintf(tmpl, sizeof tmpl, "%s/ssh-XXXXXX", cluster_tmpbase());
    if (!mkdtemp(tmpl)) {
        s_fail_setup("mkdtemp %s: %s", tmpl, strerror(errno));
        return;
    }
    memcpy(s_net.dir, tmpl, strlen(tmpl) + 1);
    /* sshd's privilege separation directory (made by the service scripts,
     * which a container may never run). */
    if (mkdir("/run/sshd", 0755) < 0 && errno != EEXIST) {
        s_fail_setup("mkdir /run/sshd: %s", strerror(errno));
        return;
    }
    s_net.ssh_port = 20000 + (int)(s_net.owner % 20000);
    if (s_make_keys() < 0 || s_pick_subnet() < 0 || s_make_network() < 0)
        return;
    for (int k = 1; k <= NHOSTS; k++) {
        s_net.sshd[k] = s_start_sshd(k);
        if (s_net.sshd[k] < 0)
            return;
    }
    for (int k = 1; k <= NHOSTS; k++) {
        if (s_wait_listening(s_net.addr[k], s_net.ssh_port, 15) < 0) {
            char path[PATH_MAX + 32], *log;
            snprintf(path, sizeof path, "%s/sshd.%d.log", s_net.dir, k);
            log = s_read_file(path);
            s_fail_setup("sshd on %s:%d is not listening: %s", s_net.addr[k],
                         s_net.ssh_port, log ? log : "");
            free(log);
            return;
        }
    }
    s_net.ok = 1;
}

static void s_teardown(void)
{
    if (!s_net.skip) {
        for (int k = 1; k <= NHOSTS; k++)
            if (s_net.sshd[k] > 0)
                kill(s_net.sshd[k], SIGKILL);
        for (int k = NHOSTS; k >= 0; k--)
            if (s_net.ns[k][0])
                s_ns_delete(s_net.ns[k]);
        for (int k = 1; k <= NHOSTS; k++)
            if (s_net.sshd[k] > 0)
                waitpid(s_net.sshd[k], NULL, 0);
        /* Gone with the switch namespace already; this is for a setup that
         * stopped half-way. */
        if (s_net.rootlink[0])
            s_ip(1, "link del %s", s_net.rootlink);
        for (int k = 1; k <= NHOSTS; k++) {
            char a[32];
            snprintf(a, sizeof a, "shv%dk%d", (int)s_net.owner, k);
            s_ip(1, "link del %s", a);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (s_net.dir[0] && !getenv("SHOAL_E2E_KEEP"))
            nftw(s_net.dir, s_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
    cluster_fixture_teardown();
}

/* In each test: skip as non-root, fail with the setup's reason otherwise. */
#define NEED_NET()                                                                       \
    do {                                                                                 \
        if (s_net.skip) {                                                                \
            printf("%.*s: skipped: needs root (network namespaces, sshd)\n",             \
                   (int)strlen(__func__) - 3, __func__);                                 \
            return;                                                                      \
        }                                                                                \
        ck_assert_msg(s_net.ok, "network setup failed: %s", s_net.err);                  \
    } while (0)

/* --- running shoal-ssh --------------------------------------------------------------------- */

typedef struct run {
    pid_t pid;
    double t0;
    char log[PATH_MAX + 32];
    char sfile[PATH_MAX + 32];
} run_t;

/* Start shoal-ssh with the test's ssh options, `extra` options (NULL-
 * terminated) and hosts; its stdout and stderr go to a log file. */
static void s_start(run_t *run, const char *tag, const char *const extra[],
                    const char *const hosts[])
{
    static char port[16];
    const char *argv[64];
    int n = 0, fd;

    snprintf(port, sizeof port, "%d", s_net.ssh_port);
    snprintf(run->log, sizeof run->log, "%s/%s.log", s_net.dir, tag);
    snprintf(run->sfile, sizeof run->sfile, "%s/%s.json", s_net.dir, tag);
    ck_assert_msg(cluster_bin("shoal-ssh") != NULL, "bin/ not found");
    argv[n++] = cluster_bin("shoal-ssh");
    argv[n++] = "--ssh-port";
    argv[n++] = port;
    argv[n++] = "--ssh-identity";
    argv[n++] = s_net.key;
    argv[n++] = "--ssh-option";
    argv[n++] = "StrictHostKeyChecking=no";
    argv[n++] = "--ssh-option";
    argv[n++] = "UserKnownHostsFile=/dev/null";
    argv[n++] = "--ssh-option";
    argv[n++] = "GlobalKnownHostsFile=/dev/null";
    argv[n++] = "--ssh-option";
    argv[n++] = "IdentitiesOnly=yes";
    argv[n++] = "--ssh-option";
    argv[n++] = "LogLevel=ERROR";
    argv[n++] = "--connect-timeout";
    argv[n++] = "3";
    argv[n++] = "--scheduler-file";
    argv[n++] = run->sfile;
    for (int i = 0; extra && extra[i] && n < 50; i++)
        argv[n++] = extra[i];
    for (int i = 0; hosts[i] && n < 62; i++)
        argv[n++] = hosts[i];
    argv[n] = NULL;
    fd = open(run->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "%s: %s", run->log, strerror(errno));
    run->t0 = e2e_now();
    run->pid = proc_spawn(argv, NULL, -1, fd, fd, s_net.dir);
    close(fd);
    ck_assert_msg(run->pid > 0, "cannot start shoal-ssh");
}

/* Poll the log until it contains every one of the needles (NULL-terminated);
 * returns the seconds since the start, or -1 after `timeout` (or when
 * shoal-ssh has exited and the text is still missing). */
static double s_wait_log(const run_t *run, const char *const needles[], double timeout)
{
    double end = e2e_now() + timeout;

    for (;;) {
        char *log = s_read_file(run->log);
        int all = log != NULL;
        int alive = proc_alive(run->pid);

        for (int i = 0; all && needles[i]; i++)
            if (!strstr(log, needles[i]))
                all = 0;
        free(log);
        if (all)
            return e2e_now() - run->t0;
        if (e2e_now() >= end || !alive)
            return -1;
        e2e_sleep(0.05);
    }
}

static void s_fail_with_log(const run_t *run, const char *what)
{
    char *log;

    /* Give shoal-ssh a moment to report what went wrong on its side. */
    if (proc_alive(run->pid))
        e2e_sleep(1.5);
    log = s_read_file(run->log);
    ck_abort_msg("%s; shoal-ssh output:\n%s", what, log ? log : "");
}

static void s_wait_sfile(const run_t *run, double timeout)
{
    double end = e2e_now() + timeout;

    while (access(run->sfile, F_OK) < 0) {
        if (e2e_now() >= end || !proc_alive(run->pid))
            s_fail_with_log(run, "no scheduler file");
        e2e_sleep(0.05);
    }
}

/* Wait for shoal-ssh to exit; returns its wait status (asserts it did). */
static int s_wait_exit(run_t *run, double timeout)
{
    int st = cluster_waitpid(run->pid, timeout);
    if (st < 0)
        s_fail_with_log(run, "shoal-ssh did not exit");
    run->pid = 0;
    return st;
}

/* The processes in host k's namespace other than its sshd listener, as
 * "pid:comm" text in out; returns their number. */
static int s_leftovers(int k, char *out, size_t cap)
{
    pid_t pids[MAX_PIDS];
    int n = s_ns_pids(s_net.ns[k], pids, MAX_PIDS), left = 0;
    size_t len = 0;

    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char comm[64] = "?";
        if (pids[i] == s_net.sshd[k])
            continue;
        s_comm(pids[i], comm, sizeof comm);
        if (len < cap)
            len += (size_t)snprintf(out + len, cap - len, " %d:%s", (int)pids[i], comm);
        left++;
    }
    return left;
}

/* Every host namespace holds nothing but its sshd listener within
 * `timeout` (the session processes end just after the clients do). */
static void s_assert_hosts_clean(double timeout)
{
    double end = e2e_now() + timeout;
    char text[4096];

    for (;;) {
        int left = 0, k;
        for (k = 1; k <= NHOSTS; k++) {
            left = s_leftovers(k, text, sizeof text);
            if (left)
                break;
        }
        if (!left)
            return;
        ck_assert_msg(e2e_now() < end, "processes left on host %s:%s", s_net.addr[k], text);
        e2e_sleep(0.05);
    }
}

/* pids of the processes in host k's namespace whose name starts with
 * "shoal-".  Returns the count. */
static int s_shoal_pids(int k, pid_t *out, int max)
{
    pid_t pids[MAX_PIDS];
    int n = s_ns_pids(s_net.ns[k], pids, MAX_PIDS), m = 0;

    for (int i = 0; i < n && m < max; i++) {
        char comm[64];
        if (s_comm(pids[i], comm, sizeof comm) == 0 && !strncmp(comm, "shoal-", 6))
            out[m++] = pids[i];
    }
    return m;
}

/* The host (1..NHOSTS) whose namespace holds pid, or 0. */
static int s_host_of_pid(pid_t pid)
{
    for (int k = 1; k <= NHOSTS; k++) {
        pid_t pids[MAX_PIDS];
        int n = s_ns_pids(s_net.ns[k], pids, MAX_PIDS);
        for (int i = 0; i < n; i++)
            if (pids[i] == pid)
                return k;
    }
    return 0;
}

/* Children of `parent` named `comm`. */
static int s_children(pid_t parent, const char *comm, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) && n < max) {
        char c[64], *end;
        long v = strtol(e->d_name, &end, 10);
        if (!isdigit((unsigned char)e->d_name[0]) || *end)
            continue;
        if (cluster_ppid((pid_t)v) == parent && s_comm((pid_t)v, c, sizeof c) == 0 &&
            !strcmp(c, comm))
            out[n++] = (pid_t)v;
    }
    closedir(d);
    return n;
}

static shoal_client_t *s_connect(const run_t *run)
{
    shoal_connect_opts_t co;
    shoal_error_t err;
    shoal_client_t *c;

    memset(&co, 0, sizeof co);
    memset(&err, 0, sizeof err);
    co.scheduler_file = run->sfile;
    co.timeout = 20;
    c = shoal_connect_opts(&co, &err);
    if (!c) {
        char what[PATH_MAX + 1024];
        snprintf(what, sizeof what, "cannot connect through %s: %s", run->sfile, err.msg);
        s_fail_with_log(run, what);
    }
    return c;
}

/* --- tests ------------------------------------------------------------------------------------ */

/* Scheduler on host 1, two worker processes on each of hosts 2 and 3, an
 * unreachable host among them; tasks run on both worker hosts; SIGTERM
 * stops every remote process. */
START_TEST(ssh_cluster_across_hosts)
{
    const char *extra[] = {"--scheduler-port", "0", "--nworkers", "2", "--nthreads", "1",
                           NULL};
    const char *hosts[] = {s_net.addr[1], s_net.addr[2], s_net.unreach, s_net.addr[3], NULL};
    char want_sched[128], want_unreach_err[128], want_unreach_ssh[128], want_prefix[2][64];
    pid_t shoal_pids[3][64], ssh_pids[16];
    int nshoal[3], nssh, per_host[NHOSTS + 1] = {0};
    shoal_status_info_t st;
    shoal_future_t *fs[100];
    const void *args[100];
    size_t lens[100];
    shoal_error_t err;
    shoal_client_t *c;
    msgpack_sbuffer sb;
    run_t run;
    double t;

    NEED_NET();
    s_start(&run, "cluster", extra, hosts);
    s_wait_sfile(&run, 30);
    c = s_connect(&run);
    if (shoal_wait_for_workers(c, 4, 30, &err) < 0)
        s_fail_with_log(&run, "4 workers did not connect");

    /* The address is host 1's, as given; lines carry their host. */
    snprintf(want_sched, sizeof want_sched, "scheduler at tcp://%s:", s_net.addr[1]);
    snprintf(want_prefix[0], sizeof want_prefix[0], "[%s] ", s_net.addr[1]);
    snprintf(want_prefix[1], sizeof want_prefix[1], "[%s] ", s_net.addr[2]);
    {
        const char *need[] = {want_sched, want_prefix[0], want_prefix[1], "shoal-scheduler[",
                              "shoal-worker[", NULL};
        if (s_wait_log(&run, need, 10) < 0)
            s_fail_with_log(&run, "missing the address or host-prefixed lines");
    }
    ck_assert_msg(strncmp(shoal_client_address(c), want_sched + strlen("scheduler at "),
                          strlen(want_sched) - strlen("scheduler at ")) == 0,
                  "client address %s, expected host %s", shoal_client_address(c),
                  s_net.addr[1]);

    /* The unreachable host: reported with ssh's own error within seconds. */
    snprintf(want_unreach_err, sizeof want_unreach_err, "workers on %s gone", s_net.unreach);
    snprintf(want_unreach_ssh, sizeof want_unreach_ssh, "[%s] ssh: connect to host %s",
             s_net.unreach, s_net.unreach);
    {
        const char *need[] = {want_unreach_err, want_unreach_ssh, NULL};
        t = s_wait_log(&run, need, 20);
        if (t < 0)
            s_fail_with_log(&run, "the unreachable host was not reported");
        ck_assert_msg(t < 15, "the unreachable host was reported after %.1f s", t);
    }

    /* Workers: named after their host, and really in that host's namespace. */
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 4);
    for (int i = 0; i < st.nworkers; i++) {
        int k = s_host_of_pid(st.workers[i].pid);
        char prefix[64];

        ck_assert_msg(k == 2 || k == 3, "worker %s (pid %d) is in no worker host",
                      st.workers[i].name, st.workers[i].pid);
        snprintf(prefix, sizeof prefix, "%s-", s_net.addr[k]);
        ck_assert_msg(!strncmp(st.workers[i].name, prefix, strlen(prefix)),
                      "worker %s runs on %s", st.workers[i].name, s_net.addr[k]);
    }
    shoal_status_free(&st);

    /* 100 tasks; each host runs some. */
    for (int i = 0; i < 100; i++) {
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        msgpack_pack_double(&pk, 0.01);
        args[i] = sb.data;
        lens[i] = sb.size;
    }
    ck_assert_msg(shoal_map(c, "shoal.sleep", args, lens, 100, NULL, fs, &err) == 0,
                  "map: %s", err.msg);
    for (int i = 0; i < 100; i++)
        free((void *)args[i]);
    ck_assert_msg(shoal_gather(fs, 100, 60, &err) == 0, "gather: %s", err.msg);
    for (int i = 0; i < 100; i++)
        shoal_release(fs[i]);
    /* Where they ran: the workers' task counts, by host. */
    STATUS(c, &st);
    for (int i = 0; i < st.nworkers; i++) {
        int k = s_host_of_pid(st.workers[i].pid);
        if (k >= 2)
            per_host[k] += (int)st.workers[i].completed;
    }
    shoal_status_free(&st);
    ck_assert_msg(per_host[2] > 0 && per_host[3] > 0 && per_host[2] + per_host[3] == 100,
                  "tasks per host: %s %d, %s %d", s_net.addr[2], per_host[2], s_net.addr[3],
                  per_host[3]);
    shoal_disconnect(c);

    /* What runs now: the scheduler on host 1, a supervisor and two workers
     * on each worker host, one ssh client per reachable host. */
    for (int k = 1; k <= NHOSTS; k++)
        nshoal[k - 1] = s_shoal_pids(k, shoal_pids[k - 1], 64);
    ck_assert_int_eq(nshoal[0], 1);
    ck_assert_int_eq(nshoal[1], 3);
    ck_assert_int_eq(nshoal[2], 3);
    nssh = s_children(run.pid, "ssh", ssh_pids, 16);
    ck_assert_int_eq(nssh, 3);

    kill(run.pid, SIGTERM);
    {
        int status = s_wait_exit(&run, 40);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "shoal-ssh exit status %d", status);
    }
    for (int k = 0; k < NHOSTS; k++)
        for (int i = 0; i < nshoal[k]; i++)
            ck_assert_msg(!proc_alive(shoal_pids[k][i]), "pid %d on %s still running",
                          shoal_pids[k][i], s_net.addr[k + 1]);
    for (int i = 0; i < nssh; i++)
        ck_assert_msg(!proc_alive(ssh_pids[i]), "ssh client %d still running", ssh_pids[i]);
    s_assert_hosts_clean(10);
    ck_assert_msg(access(run.sfile, F_OK) < 0, "the scheduler file was not removed");
    {
        const char *need[] = {"all remote processes stopped", NULL};
        if (s_wait_log(&run, need, 1) < 0)
            s_fail_with_log(&run, "no final message");
    }
}
END_TEST

/* The scheduler's host cannot be reached: a clear error, exit status 1,
 * within seconds, and nothing started on the other hosts. */
START_TEST(ssh_scheduler_unreachable)
{
    const char *hosts[] = {s_net.unreach, s_net.addr[2], NULL};
    char want[128];
    run_t run;
    int status;
    double t;

    NEED_NET();
    s_start(&run, "unreach", NULL, hosts);
    status = s_wait_exit(&run, 30);
    t = e2e_now() - run.t0;
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d", status);
    ck_assert_msg(t < 15, "took %.1f s", t);
    snprintf(want, sizeof want, "cannot start the scheduler on %s", s_net.unreach);
    {
        const char *need[] = {want, "ssh: connect to host", NULL};
        if (s_wait_log(&run, need, 0) < 0)
            s_fail_with_log(&run, "no clear message");
    }
    ck_assert_msg(access(run.sfile, F_OK) < 0, "a scheduler file was written");
    s_assert_hosts_clean(5);
}
END_TEST

/* One host: scheduler and workers there.  The working directory has a
 * name the remote shell must not interpret; Ctrl-C (SIGINT) stops all. */
START_TEST(ssh_one_host_sigint_quoting)
{
    char dir[PATH_MAX + 64], extra_dir[PATH_MAX + 80], link[64], cwd[PATH_MAX];
    const char *extra[] = {"--local-directory", extra_dir, NULL};
    const char *hosts[] = {s_net.addr[1], NULL};
    shoal_status_info_t st;
    shoal_error_t err;
    shoal_client_t *c;
    run_t run;
    ssize_t n;
    int status;

    NEED_NET();
    snprintf(dir, sizeof dir, "%s/we ird $(touch pwned) `touch pwned2` 'q\" ;x", s_net.dir);
    snprintf(extra_dir, sizeof extra_dir, "%s", dir);
    s_start(&run, "one", extra, hosts);
    s_wait_sfile(&run, 30);
    c = s_connect(&run);
    if (shoal_wait_for_workers(c, 1, 30, &err) < 0)
        s_fail_with_log(&run, "the worker did not connect");
    STATUS(c, &st);
    ck_assert_int_eq(st.nworkers, 1);
    ck_assert_str_eq(st.workers[0].name, s_net.addr[1]);
    ck_assert_int_eq(s_host_of_pid(st.workers[0].pid), 1);
    /* The directory was made with exactly that name, and the worker is in it. */
    snprintf(link, sizeof link, "/proc/%d/cwd", st.workers[0].pid);
    n = readlink(link, cwd, sizeof cwd - 1);
    ck_assert_msg(n > 0, "readlink %s: %s", link, strerror(errno));
    cwd[n] = '\0';
    ck_assert_str_eq(cwd, dir);
    shoal_status_free(&st);
    {
        char p1[PATH_MAX + 96], p2[PATH_MAX + 96];
        snprintf(p1, sizeof p1, "%s/pwned", dir);
        snprintf(p2, sizeof p2, "%s/pwned2", dir);
        ck_assert_msg(access(p1, F_OK) < 0 && access(p2, F_OK) < 0 &&
                          access("/root/pwned", F_OK) < 0 && access("/root/pwned2", F_OK) < 0,
                      "the remote shell ran text from the directory name");
    }
    {
        shoal_future_t *f = SUB_I(c, "shoal.echo", NULL, 42);
        ck_assert_int_eq(I64(f), 42);
        shoal_release(f);
    }
    shoal_disconnect(c);
    kill(run.pid, SIGINT);
    status = s_wait_exit(&run, 40);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    s_assert_hosts_clean(10);
}
END_TEST

/* The primes example runs on the cluster through the scheduler file; then
 * shoal-ssh is killed outright: its ssh clients go with it, and the remote
 * wrapper stops the remote processes when the session ends. */
START_TEST(ssh_killed_launcher_leaves_nothing)
{
    const char *extra[] = {"--nthreads", "1", NULL};
    const char *hosts[] = {s_net.addr[1], s_net.addr[2], s_net.addr[3], NULL};
    pid_t before[3][64];
    int nb[3];
    shoal_error_t err;
    shoal_client_t *c;
    run_t run;

    NEED_NET();
    s_start(&run, "killed", extra, hosts);
    s_wait_sfile(&run, 30);
    c = s_connect(&run);
    if (shoal_wait_for_workers(c, 2, 30, &err) < 0)
        s_fail_with_log(&run, "the workers did not connect");
    shoal_disconnect(c);
    /* A user's program finds the cluster through the scheduler file. */
    {
        char primes[PATH_MAX + 64], env[PATH_MAX + 64];
        const char *argv[] = {primes, NULL};
        const char *envx[] = {env, "SHOAL_SCHEDULER", NULL};
        proc_result_t r;

        snprintf(primes, sizeof primes, "%s/../build/examples/primes", cluster_bindir());
        snprintf(env, sizeof env, "SHOAL_SCHEDULER_FILE=%s", run.sfile);
        ck_assert_int_eq(proc_run(argv, envx, NULL, 0, 60, &r), 0);
        ck_assert_msg(r.exited && r.exit_code == 0, "primes: exit %d: %s", r.exit_code,
                      r.err);
        CONTAINS(r.out, "100000 : Sum = 454396537");
        CONTAINS(r.out, "300000 : Sum = 3709507114");
        proc_result_free(&r);
    }
    for (int k = 1; k <= NHOSTS; k++) {
        nb[k - 1] = s_shoal_pids(k, before[k - 1], 64);
        ck_assert_int_eq(nb[k - 1], 1);
    }
    kill(run.pid, SIGKILL);
    s_wait_exit(&run, 10);
    s_assert_hosts_clean(20);
    for (int k = 0; k < NHOSTS; k++)
        ck_assert(!proc_alive(before[k][0]));
    unlink(run.sfile);   /* left by a killed shoal-ssh, as by any killed program */
}
END_TEST

/* Bad input is refused with a message and exit status 2; the host file and
 * quoting, checked through --dry-run.  Needs no network and no root. */
START_TEST(ssh_bad_input_and_dry_run)
{
    char hf[PATH_MAX], text[PATH_MAX + 64], longline[2100];
    const char *ssh = cluster_bin("shoal-ssh");
    proc_result_t r;
    static const struct {
        const char *a1, *a2, *a3, *expect;
    } bad[] = {
        {"a;b", NULL, NULL, "not allowed in a host name"},
        {"--", "-oProxyCommand=touch_x", NULL, "must start with a letter"},
        {"--ssh-port", "0", "h", "--ssh-port"},
        {"--ssh-port", "65536", "h", "--ssh-port"},
        {"--nworkers", "x", "h", "--nworkers"},
        {"--scheduler-port", "-1", "h", "--scheduler-port"},
        {"--remote-prefix", "relative/dir", "h", "--remote-prefix"},
        {"--ssh-option", "-F/tmp/x", "h", "--ssh-option"},
        {"--ssh-identity", "/nonexistent/key", "h", "--ssh-identity"},
        {"--log-level", "loud", "h", "--log-level"},
        {"--hostfile", "/nonexistent/hosts", NULL, "/nonexistent/hosts"},
        {"bob@", NULL, NULL, "no host after"},
        {"--bogus", NULL, NULL, "unknown option"},
        {"--nthreads", NULL, NULL, "needs a value"},
    };

    ck_assert_msg(ssh != NULL, "bin/ not found");
    {
        const char *argv[] = {ssh, NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_int_eq(r.exit_code, 2);
        CONTAINS(r.err, "no hosts");
        proc_result_free(&r);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {ssh, bad[i].a1, bad[i].a2, bad[i].a3, NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_msg(r.exited && r.exit_code == 2, "%s %s: exit %d", bad[i].a1,
                      bad[i].a2 ? bad[i].a2 : "", r.exit_code);
        CONTAINS(r.err, bad[i].expect);
        proc_result_free(&r);
    }

    /* A host file: comments, blanks, user@host; one host per line. */
    snprintf(hf, sizeof hf, "%s/hosts-%d", cluster_tmpbase(), (int)getpid());
    s_write_file(hf, "# the cluster\n\n  alpha   # the scheduler\nbob@beta\n\t gamma\n");
    {
        const char *argv[] = {ssh, "--dry-run", "--hostfile", hf, "--remote-prefix",
                              "/opt/my shoal", "--nworkers", "2", "--scheduler-port",
                              "9000", NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_msg(r.exit_code == 0, "dry run: %s", r.err);
        CONTAINS(r.out, "# scheduler on alpha\n");
        CONTAINS(r.out, "# workers on bob@beta\n");
        CONTAINS(r.out, "# workers on gamma\n");
        ck_assert_msg(!strstr(r.out, "# workers on alpha"), "alpha runs workers:\n%s", r.out);
        CONTAINS(r.out, " -- bob@beta ");
        CONTAINS(r.out, "tcp://alpha:9000");
        CONTAINS(r.out, "--nworkers 2");
        CONTAINS(r.out, "BatchMode=yes");
        CONTAINS(r.out, "ConnectTimeout=5");
        /* The prefix with a space is quoted for the remote shell (and the
         * whole command once more for printing). */
        CONTAINS(r.out, "'\\''/opt/my shoal/bin/shoal-worker'\\''");
        proc_result_free(&r);
    }
    /* Errors name the file and line. */
    s_write_file(hf, "alpha\nbeta gamma\n");
    {
        const char *argv[] = {ssh, "--dry-run", "--hostfile", hf, NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_int_eq(r.exit_code, 2);
        snprintf(text, sizeof text, "%s:2: one host per line", hf);
        CONTAINS(r.err, text);
        proc_result_free(&r);
    }
    memset(longline, 'a', sizeof longline - 2);
    longline[sizeof longline - 2] = '\n';
    longline[sizeof longline - 1] = '\0';
    s_write_file(hf, longline);
    {
        const char *argv[] = {ssh, "--dry-run", "--hostfile", hf, NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_int_eq(r.exit_code, 2);
        CONTAINS(r.err, ":1: line longer than");
        proc_result_free(&r);
    }
    s_write_file(hf, "alpha\nbeta$(reboot)\n");
    {
        const char *argv[] = {ssh, "--dry-run", "--hostfile", hf, NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_int_eq(r.exit_code, 2);
        CONTAINS(r.err, ":2: invalid host");
        proc_result_free(&r);
    }
    /* One host: the workers run there too. */
    {
        const char *argv[] = {ssh, "--dry-run", "solo", NULL};
        ck_assert_int_eq(proc_run(argv, NULL, NULL, 0, 10, &r), 0);
        ck_assert_int_eq(r.exit_code, 0);
        CONTAINS(r.out, "# scheduler on solo\n");
        CONTAINS(r.out, "# workers on solo\n");
        CONTAINS(r.out, "tcp://solo:8686");
        proc_result_free(&r);
    }
    unlink(hf);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deploy_ssh");
    TCase *net = tcase_create("ssh_hosts");
    TCase *input = e2e_tcase("ssh_input");

    /* The fixture replaces e2e_tcase's: it wraps the cluster fixture. */
    tcase_set_timeout(net, 120);
    tcase_add_unchecked_fixture(net, s_setup, s_teardown);
    e2e_add(net, ssh_cluster_across_hosts);
    e2e_add(net, ssh_scheduler_unreachable);
    e2e_add(net, ssh_one_host_sigint_quoting);
    e2e_add(net, ssh_killed_launcher_leaves_nothing);
    suite_add_tcase(s, net);
    e2e_add(input, ssh_bad_input_and_dry_run);
    suite_add_tcase(s, input);
    return e2e_run(s);
}

/*
 * ct_launch_run: the job's command (mpirun, or a lone worker) as a child of ctrain-launch, in
 * its own process group and dying with the launcher (PR_SET_PDEATHSIG), whose stderr passes
 * through while mpirun's report of a failed rank is read from it, and which gets the
 * launcher's stop signals as described at on_stop_signal (docs/launching.md, "Signals").
 * launch_cli.c decides from the result whether to restart.
 */
#define _GNU_SOURCE /* strsignal and friends */
#include "launcher/launcher_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- a supervised run */

/* The launcher's stop signals. The first of SIGINT, SIGTERM, SIGHUP or SIGUSR1 asks the job
 * to save and stop: mpirun gets SIGUSR1, which it forwards to every rank (Open MPI 4.1 forwards
 * SIGUSR1, SIGUSR2, SIGTSTP and SIGCONT; on SIGTERM or SIGINT it kills the ranks within a
 * second), a lone worker the signal itself (SIGHUP as SIGTERM). Each later SIGINT, SIGTERM or
 * SIGHUP goes one step further: SIGTERM (mpirun kills its ranks; a worker that was already
 * asked stops at once), then SIGKILL. The state lives for the whole process, so a signal
 * between two attempts stops the relaunches too. Handlers only use async-signal-safe calls. */
static volatile sig_atomic_t child_pid;    /* the running child, or 0 */
static volatile sig_atomic_t child_mpirun; /* whether it is mpirun (else a lone worker) */
static volatile sig_atomic_t first_stop;   /* the first stop signal received, or 0 */
static volatile sig_atomic_t stop_level;   /* 1 after the first, +1 per later hard signal */
static volatile sig_atomic_t sent_level;   /* the stop_level the child has been sent */
static volatile sig_atomic_t last_hard;    /* the latest SIGINT, SIGTERM or SIGHUP */
/* mpirun has reported a rank's end: it is taking the job down by itself, and a SIGTERM in its
 * teardown can crash it (Open MPI 4.1.4: a segfault in PMIx_Finalize, exit 139). */
static volatile sig_atomic_t job_ending;
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGTSTP, SIGCONT};
#define N_STOP_SIGNALS ((int)CT_ARRAY_LEN(stop_signals))
static struct sigaction default_actions[N_STOP_SIGNALS]; /* as found: restored in the child */
static bool signals_caught;

const char *ct_launch_signal_name(int sig) {
    switch (sig) {
    case SIGINT:
        return "SIGINT";
    case SIGTERM:
        return "SIGTERM";
    case SIGHUP:
        return "SIGHUP";
    case SIGUSR1:
        return "SIGUSR1";
    case SIGKILL:
        return "SIGKILL";
    default:
        return "a signal";
    }
}

/* write(2) of the concatenated strings (NULL-terminated list): safe in a signal handler. */
static void say(const char *first, ...) {
    char line[256];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        for (; *s && n + 1 < sizeof(line); s++)
            line[n++] = *s;
    va_end(ap);
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, n);
    (void)ignored;
}

/* Sends the child what stop_level asks for, once per level. */
static void deliver_stop(void) {
    pid_t pid = (pid_t)child_pid;
    int level = stop_level;
    if (pid <= 0 || level <= sent_level) return;
    sent_level = level;
    int sig = SIGKILL;
    if (level == 1)
        sig = child_mpirun ? SIGUSR1 : (first_stop == SIGHUP ? SIGTERM : first_stop);
    else if (level == 2)
        sig = child_mpirun || last_hard == SIGHUP ? SIGTERM : last_hard;
    if (sig == SIGTERM && child_mpirun && job_ending) return;
    kill(pid, sig);
}

static void on_stop_signal(int sig) {
    int saved_errno = errno;
    const char *name = ct_launch_signal_name(sig);
    const char *who = child_mpirun ? "the ranks" : "the worker";
    if (sig == SIGTSTP) { /* the terminal's Ctrl-Z: the job pauses with this launcher */
        if (child_pid > 0) kill((pid_t)child_pid, SIGTSTP);
        raise(SIGSTOP);
    } else if (sig == SIGCONT) {
        if (child_pid > 0) kill((pid_t)child_pid, SIGCONT);
    } else if (first_stop == 0) {
        first_stop = sig;
        stop_level = 1;
        if (sig != SIGUSR1) last_hard = sig;
        if (child_pid > 0)
            say("ctrain-launch: ", name, ": asking ", who,
                " to save a checkpoint and stop (send it again to stop at once)", NULL);
        else
            say("ctrain-launch: ", name, ": stopping; no further attempt starts", NULL);
        deliver_stop();
    } else if (sig == SIGUSR1) {
        say("ctrain-launch: SIGUSR1: ", who,
            " were already asked to stop (SIGINT or SIGTERM stops them at once)", NULL);
    } else {
        last_hard = sig;
        stop_level = stop_level + 1;
        if (stop_level == 2 && child_mpirun && job_ending)
            say("ctrain-launch: ", name,
                " again: mpirun is already ending the job (once more: "
                "SIGKILL)",
                NULL);
        else if (stop_level == 2 && child_mpirun)
            say("ctrain-launch: ", name,
                " again: stopping the ranks at once (SIGTERM to mpirun; "
                "once more: SIGKILL)",
                NULL);
        else if (stop_level == 2)
            say("ctrain-launch: ", name,
                " again: stopping the worker at once (once more: "
                "SIGKILL)",
                NULL);
        else
            say("ctrain-launch: ", name, " again: killing ", child_mpirun ? "mpirun" : "the worker",
                " (SIGKILL)", NULL);
        deliver_stop();
    }
    errno = saved_errno;
}

void ct_launch_catch_signals(void) {
    if (signals_caught) return;
    signals_caught = true;
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask); /* one handler at a time: they share the state above */
    for (int i = 0; i < N_STOP_SIGNALS; i++)
        sigaddset(&sa.sa_mask, stop_signals[i]);
    for (int i = 0; i < N_STOP_SIGNALS; i++) {
        sigaction(stop_signals[i], NULL, &default_actions[i]);
        /* nohup's ignored SIGHUP stays ignored: the user asked for it. */
        if (stop_signals[i] == SIGHUP && default_actions[i].sa_handler == SIG_IGN) continue;
        sigaction(stop_signals[i], &sa, NULL);
    }
}

int ct_launch_stop_signal(void) {
    return first_stop;
}

/* Reads what mpirun says about the failed rank from one line of its stderr (Open MPI 4.1):
 *   mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).
 *   MPI_ABORT was invoked on rank 1 in communicator MPI_COMM_WORLD
 *   with errorcode 3.
 *     Process name: [[25359,1],1]
 *     Exit code:    2
 * The first report wins; later ones are the same failure seen again. */
static void scan_line(const char *line, ct_launch_result *r, bool *abort_pending) {
    int rank, value;
    const char *p;
    if (*abort_pending && sscanf(line, "with errorcode %d", &value) == 1) {
        r->rank_code = value;
        *abort_pending = false;
    }
    if (r->rank >= 0) {
        if (r->how == CT_LAUNCH_RANK_EXITED && sscanf(line, " Exit code: %d", &value) == 1)
            r->rank_code = value;
        return;
    }
    if ((p = strstr(line, "mpirun noticed that process rank ")) &&
        sscanf(p,
               "mpirun noticed that process rank %d with PID %*d on node %*s exited on "
               "signal %d",
               &rank, &value) == 2) {
        r->rank = rank;
        r->rank_signal = value;
        r->how = CT_LAUNCH_RANK_KILLED;
    } else if ((p = strstr(line, "MPI_ABORT was invoked on rank ")) &&
               sscanf(p, "MPI_ABORT was invoked on rank %d", &rank) == 1) {
        r->rank = rank;
        r->how = CT_LAUNCH_RANK_ABORTED;
        *abort_pending = true;
    } else if ((p = strstr(line, "Process name: [[")) &&
               sscanf(p, "Process name: [[%*d,%*d],%d]", &rank) == 1) {
        r->rank = rank;
        r->how = CT_LAUNCH_RANK_EXITED;
    }
}

/* Copies what is readable on fd to stderr and feeds whole lines to scan_line; false at the end
 * of the stream (or when nothing is readable on a non-blocking fd). */
static bool pass_stderr(int fd, char *line, size_t line_bytes, size_t *used, ct_launch_result *r,
                        bool *abort_pending) {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) return false;
    for (ssize_t done = 0; done < n;) {
        ssize_t w = write(STDERR_FILENO, buf + done, (size_t)(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break; /* our stderr is gone: keep reading so the child is not blocked */
        done += w;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            line[*used] = '\0';
            scan_line(line, r, abort_pending);
            if (r->rank >= 0 || strstr(line, "Primary job")) job_ending = 1;
            *used = 0;
        } else if (*used + 1 < line_bytes) {
            line[(*used)++] = buf[i];
        }
    }
    return true;
}

/* The child's side of the fork; never returns. Its own process group, so that a terminal's
 * Ctrl-C reaches only this launcher, which decides what the job gets (mpirun kills its ranks
 * at once on SIGINT); SIGTERM when the launcher dies, even by SIGKILL (mpirun then ends its
 * ranks; PR_SET_PDEATHSIG fires when the forking thread ends: this launcher's only one); stdin
 * from /dev/null (a background process group that reads the terminal is stopped); stderr into
 * the pipe; the signal handlers and mask as this launcher found them. */
static _Noreturn void exec_child(const ct_argv *args, pid_t parent, int err_fd, int exec_fd,
                                 const sigset_t *mask) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127); /* the launcher died before prctl: nobody to run for */
    if (signals_caught)
        for (int i = 0; i < N_STOP_SIGNALS; i++)
            sigaction(stop_signals[i], &default_actions[i], NULL);
    sigprocmask(SIG_SETMASK, mask, NULL);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0 && null_fd != STDIN_FILENO) {
        dup2(null_fd, STDIN_FILENO);
        close(null_fd);
    }
    dup2(err_fd, STDERR_FILENO);
    close(err_fd);
    execvp(args->argv[0], args->argv);
    int err = errno;
    ssize_t ignored = write(exec_fd, &err, sizeof(err));
    (void)ignored;
    _exit(127);
}

ct_status ct_launch_run(const ct_argv *args, bool mpirun, ct_launch_result *result) {
    *result = (ct_launch_result){.rank = -1};
    CT_CHECK(ct_launch_allow_root());
    int fds[2], exec_err[2];
    if (pipe(fds) != 0) return ct_error(CT_ERR_EXTERNAL, "pipe: %s", strerror(errno));
    /* The child reports a failed exec through a close-on-exec pipe: an exec that works closes
     * it with nothing written. */
    if (pipe(exec_err) != 0 || fcntl(exec_err[1], F_SETFD, FD_CLOEXEC) != 0) {
        close(fds[0]);
        close(fds[1]);
        return ct_error(CT_ERR_EXTERNAL, "pipe: %s", strerror(errno));
    }
    /* SIGCHLD ignored (inherited so) would reap the child before waitpid could see it. */
    struct sigaction chld = {.sa_handler = SIG_DFL}, old_chld;
    sigemptyset(&chld.sa_mask);
    sigaction(SIGCHLD, &chld, &old_chld);
    /* Stop signals wait until child_pid is set, so that none is lost between fork and then. */
    sigset_t block, old_mask;
    sigemptyset(&block);
    for (int i = 0; i < N_STOP_SIGNALS; i++)
        sigaddset(&block, stop_signals[i]);
    sigprocmask(SIG_BLOCK, &block, &old_mask);
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        close(exec_err[0]);
        exec_child(args, parent, fds[1], exec_err[1], &old_mask);
    }
    if (pid > 0) {
        setpgid(pid, pid); /* as the child does: whichever runs first */
        child_mpirun = mpirun;
        sent_level = 0;
        job_ending = 0;
        child_pid = pid;
        deliver_stop(); /* one that came before the pid: the child gets it now */
    }
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    close(fds[1]);
    close(exec_err[1]);
    ct_status status = CT_OK;
    if (pid < 0) {
        status = ct_error(CT_ERR_EXTERNAL, "fork: %s", strerror(errno));
        close(fds[0]);
        close(exec_err[0]);
    } else {
        int err = 0;
        ssize_t got;
        while ((got = read(exec_err[0], &err, sizeof(err))) < 0 && errno == EINTR) {
        }
        if (got == (ssize_t)sizeof(err)) status = ct_launch_exec_error(args->argv[0], err);
        close(exec_err[0]);
        /* Pass stderr through until the child has ended, then take what is left without
         * waiting: a rank that outlives mpirun could hold the pipe open. */
        char line[1024];
        size_t used = 0;
        bool abort_pending = false, open = true;
        int wstatus = 0;
        for (;;) {
            if (open) {
                struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
                if (poll(&pfd, 1, 200) > 0)
                    open = pass_stderr(fds[0], line, sizeof(line), &used, result, &abort_pending);
            } else {
                usleep(50000);
            }
            pid_t done = waitpid(pid, &wstatus, WNOHANG);
            if (done == pid) break;
            if (done < 0 && errno != EINTR) {
                status =
                    ct_error(CT_ERR_EXTERNAL, "waitpid for %s: %s", args->argv[0], strerror(errno));
                wstatus = 1 << 8; /* counted as a failure (exit code 1) */
                break;
            }
        }
        sigprocmask(SIG_BLOCK, &block, NULL);
        child_pid = 0;
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
        while (open && pass_stderr(fds[0], line, sizeof(line), &used, result, &abort_pending)) {
        }
        close(fds[0]);
        if (used > 0) { /* a last line without its newline */
            line[used] = '\0';
            scan_line(line, result, &abort_pending);
        }
        if (WIFSIGNALED(wstatus)) {
            result->signal = WTERMSIG(wstatus);
            result->exit_code = 128 + result->signal;
        } else {
            result->exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 1;
        }
        result->stop_signal = first_stop;
    }
    sigaction(SIGCHLD, &old_chld, NULL);
    return status;
}

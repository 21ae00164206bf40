/*
 * The mpirun command line of `ctrain-launch`. From --nproc, --hostfile and --mpirun-args and the
 * loaded job it builds
 *
 *   mpirun -np N [--hostfile F] [--oversubscribe] --bind-to none
 *          -x OMP_NUM_THREADS=t -x OPENBLAS_NUM_THREADS=t [-x CTRAIN_...] [extra words]
 *          /abs/path/ctrain worker /abs/path/JOB.toml [k=v ...]
 *
 * and runs it as a child (ct_launch_run). mpirun binds nothing (--bind-to none): each worker
 * binds itself to its block of cores with hwloc (comm/bind.c), which knows the node-local
 * rank. Threads per rank are device.threads_per_rank, or the cores of this machine divided by
 * the ranks placed on the busiest node (nodes are assumed alike). Every CTRAIN_* variable set
 * here is forwarded, so CTRAIN_LOG=debug reaches ranks on other machines too. Also here: the
 * argument vector type, shell-like splitting and quoting, the core count, and ct_launch_run:
 * mpirun (or a lone worker) as a child in its own process group that dies with the launcher,
 * whose stderr passes through while its failure report is read, and which gets the launcher's
 * stop signals as described at on_stop_signal (docs/launching.md, "Signals").
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_* */
#include "launcher/launch_internal.h"
#include "launcher/launcher_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define HOSTFILE_MAX_HOSTS 4096

/* ---------------------------------------------------------------- argument vectors */

void ct_argv_init(ct_argv *args) {
    memset(args, 0, sizeof(*args));
}

void ct_argv_free(ct_argv *args) {
    for (int i = 0; i < args->argc; i++)
        ct_free(CT_MEM_OTHER, args->argv[i], strlen(args->argv[i]) + 1);
    if (args->argv) ct_free(CT_MEM_OTHER, args->argv, (size_t)args->capacity * sizeof(char *));
    ct_argv_init(args);
}

/* Appends the first `bytes` bytes of `arg` as a new string. */
static ct_status argv_push_bytes(ct_argv *args, const char *arg, size_t bytes) {
    if (args->argc + 2 > args->capacity) { /* room for the new word and the NULL after it */
        int capacity = args->capacity ? 2 * args->capacity : 32;
        char **grown = ct_alloc(CT_MEM_OTHER, (size_t)capacity * sizeof(char *));
        if (!grown) return ct_error(CT_ERR_NOMEM, "out of memory building a command line");
        if (args->argv) {
            memcpy(grown, args->argv, (size_t)args->argc * sizeof(char *));
            ct_free(CT_MEM_OTHER, args->argv, (size_t)args->capacity * sizeof(char *));
        }
        args->argv = grown;
        args->capacity = capacity;
    }
    char *copy = ct_alloc(CT_MEM_OTHER, bytes + 1); /* zero-filled: terminated */
    if (!copy) return ct_error(CT_ERR_NOMEM, "out of memory building a command line");
    memcpy(copy, arg, bytes);
    args->argv[args->argc++] = copy;
    args->argv[args->argc] = NULL;
    return CT_OK;
}

ct_status ct_argv_push(ct_argv *args, const char *arg) {
    return argv_push_bytes(args, arg, strlen(arg));
}

ct_status ct_argv_pushf(ct_argv *args, const char *fmt, ...) {
    char word[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(word, sizeof(word), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(word))
        return ct_error(CT_ERR_INVALID, "a command-line word of %d bytes is too long", n);
    return argv_push_bytes(args, word, (size_t)n);
}

ct_status ct_argv_split(ct_argv *args, const char *text) {
    size_t word_bytes = strlen(text) + 1; /* no word is longer than the text */
    char *word = ct_alloc(CT_MEM_OTHER, word_bytes);
    if (!word) return ct_error(CT_ERR_NOMEM, "out of memory splitting '%s'", text);
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p) break;
        size_t n = 0;
        char quote = 0;
        for (; *p && (quote || (*p != ' ' && *p != '\t' && *p != '\n')); p++) {
            if (quote == '\'') {
                if (*p == '\'')
                    quote = 0;
                else
                    word[n++] = *p;
            } else if (quote == '"') {
                if (*p == '"')
                    quote = 0;
                else if (*p == '\\' && p[1] && strchr("\"\\$`", p[1]))
                    word[n++] = *++p;
                else
                    word[n++] = *p;
            } else if (*p == '\'' || *p == '"') {
                quote = *p;
            } else if (*p == '\\' && p[1]) {
                word[n++] = *++p;
            } else {
                word[n++] = *p;
            }
        }
        if (quote) {
            ct_free(CT_MEM_OTHER, word, word_bytes);
            return ct_error(CT_ERR_INVALID, "unterminated %c quote in '%s'", quote, text);
        }
        ct_status status = argv_push_bytes(args, word, n);
        if (status != CT_OK) {
            ct_free(CT_MEM_OTHER, word, word_bytes);
            return status;
        }
    }
    ct_free(CT_MEM_OTHER, word, word_bytes);
    return CT_OK;
}

static bool shell_safe(const char *word) {
    if (!*word) return false;
    for (const char *p = word; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=,+@%-", *p))
            return false;
    return true;
}

void ct_argv_print(const ct_argv *args, FILE *out) {
    for (int i = 0; i < args->argc; i++) {
        const char *w = args->argv[i];
        if (i) fputc(' ', out);
        if (shell_safe(w)) {
            fputs(w, out);
            continue;
        }
        fputc('\'', out); /* a ' inside becomes '\'' : close, escaped quote, reopen */
        for (const char *p = w; *p; p++)
            if (*p == '\'')
                fputs("'\\''", out);
            else
                fputc(*p, out);
        fputc('\'', out);
    }
    fputc('\n', out);
}

/* ---------------------------------------------------------------- this machine */

/* One CPU's "package:core" from sysfs, or false when sysfs does not say. */
static bool cpu_core_id(int cpu, long *package, long *core) {
    char path[128];
    long values[2];
    const char *names[2] = {"physical_package_id", "core_id"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "/sys/devices/system/cpu/cpu%d/topology/%s", cpu, names[i]);
        FILE *f = fopen(path, "r");
        if (!f) return false;
        int got = fscanf(f, "%ld", &values[i]);
        fclose(f);
        if (got != 1) return false;
    }
    *package = values[0];
    *core = values[1];
    return true;
}

int ct_launch_core_count(void) {
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        return online > 0 ? (int)online : 1;
    }
    /* Hyperthreads of one core share its (package, core) pair: count distinct pairs. */
    static long seen[CPU_SETSIZE][2];
    int cores = 0, cpus = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &mask)) continue;
        cpus++;
        long package, core;
        if (!cpu_core_id(cpu, &package, &core)) return CPU_COUNT(&mask);
        bool known = false;
        for (int i = 0; i < cores && !known; i++)
            known = seen[i][0] == package && seen[i][1] == core;
        if (!known) {
            seen[cores][0] = package;
            seen[cores][1] = core;
            cores++;
        }
    }
    return cores > 0 ? cores : (cpus > 0 ? cpus : 1);
}

int ct_launch_threads_per_rank(const ct_job *job, int cores, int ranks_per_node) {
    if (job->device_threads_per_rank > 0) return job->device_threads_per_rank;
    int t = cores / (ranks_per_node > 0 ? ranks_per_node : 1);
    return t > 0 ? t : 1;
}

const char *ct_launch_outer_job(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID"};
    for (size_t i = 0; i < CT_ARRAY_LEN(vars); i++)
        if (getenv(vars[i])) return vars[i];
    return NULL;
}

ct_status ct_launch_ctrain_path(char *out, size_t out_bytes) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0) return ct_error(CT_ERR_IO, "cannot read /proc/self/exe: %s", strerror(errno));
    self[n] = '\0';
    int len = snprintf(out, out_bytes, "%s/ctrain", dirname(self));
    if (len < 0 || (size_t)len >= out_bytes)
        return ct_error(CT_ERR_INVALID, "the path of the ctrain binary is too long");
    if (access(out, X_OK) != 0)
        return ct_error(CT_ERR_IO,
                        "%s: %s (ctrain-launch starts the ctrain binary that sits beside it; "
                        "build both targets)",
                        out, strerror(errno));
    return CT_OK;
}

/* ---------------------------------------------------------------- the command */

/* The most ranks that mpirun's default by-slot mapping puts on one host of `path`: hosts are
 * filled in file order up to their slots (slots=N; a host without it counts this machine's
 * cores, as Open MPI does). Hosts named twice add up. Past the total slots mpirun would
 * oversubscribe, spreading ranks evenly. */
static ct_status hostfile_ranks_per_node(const char *path, int nproc, int cores, int *out) {
    typedef struct {
        char name[256];
        int slots;
    } host;
    FILE *f = fopen(path, "r");
    if (!f) return ct_error(CT_ERR_IO, "cannot read hostfile %s: %s", path, strerror(errno));
    const size_t table_bytes = HOSTFILE_MAX_HOSTS * sizeof(host);
    host *table = ct_alloc(CT_MEM_OTHER, table_bytes);
    ct_status status = table ? CT_OK : ct_error(CT_ERR_NOMEM, "out of memory reading %s", path);
    int hosts = 0, line_no = 0;
    char line[1024];
    while (status == CT_OK && fgets(line, sizeof(line), f)) {
        line_no++;
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL, *name = strtok_r(line, " \t\r\n", &save);
        if (!name) continue;
        int n = cores;
        for (char *tok = strtok_r(NULL, " \t\r\n", &save); tok && status == CT_OK;
             tok = strtok_r(NULL, " \t\r\n", &save))
            if (strncmp(tok, "slots=", 6) == 0 && !ct_cli_parse_int(tok + 6, 1, 1 << 20, &n))
                status = ct_error(CT_ERR_INVALID, "%s:%d: bad '%s' (expected slots=N, N >= 1)",
                                  path, line_no, tok);
        int i = 0;
        while (i < hosts && strcmp(table[i].name, name) != 0)
            i++;
        if (status == CT_OK && i == hosts && hosts == HOSTFILE_MAX_HOSTS)
            status = ct_error(CT_ERR_INVALID, "%s: more than %d hosts", path, HOSTFILE_MAX_HOSTS);
        if (status != CT_OK) break;
        if (i == hosts) snprintf(table[hosts++].name, sizeof(table[i].name), "%s", name);
        table[i].slots += n;
    }
    fclose(f);
    if (status == CT_OK && hosts == 0)
        status = ct_error(CT_ERR_INVALID, "hostfile %s names no host", path);
    if (status == CT_OK) {
        long total = 0;
        int most = 0;
        for (int i = 0; i < hosts; i++) {
            total += table[i].slots;
            long before = total - table[i].slots;
            most = CT_MAX(most, (int)CT_MIN((long)table[i].slots, CT_MAX(0L, nproc - before)));
        }
        if (total < nproc) most = (nproc + hosts - 1) / hosts;
        *out = CT_MAX(most, 1);
    }
    if (table) ct_free(CT_MEM_OTHER, table, table_bytes);
    return status;
}

ct_status ct_launch_worker_argv(ct_argv *args, const char *job_path, int n_overrides,
                                char *const *overrides) {
    char ctrain[PATH_MAX], job_abs[PATH_MAX];
    CT_CHECK(ct_launch_ctrain_path(ctrain, sizeof(ctrain)));
    /* Absolute, so that a rank started in another directory (or on another machine with the
     * same file system) finds the job. */
    if (!realpath(job_path, job_abs))
        return ct_error(CT_ERR_IO, "%s: %s", job_path, strerror(errno));
    CT_CHECK(ct_argv_push(args, ctrain));
    CT_CHECK(ct_argv_push(args, "worker"));
    CT_CHECK(ct_argv_push(args, job_abs));
    for (int i = 0; i < n_overrides; i++)
        CT_CHECK(ct_argv_push(args, overrides[i]));
    return CT_OK;
}

ct_status ct_launch_mpirun_argv(ct_argv *args, const ct_launch_options *opts, const ct_job *job,
                                int n_overrides, char *const *overrides) {
    int cores = ct_launch_core_count();
    int ranks_per_node = opts->nproc;
    if (opts->hostfile)
        CT_CHECK(hostfile_ranks_per_node(opts->hostfile, opts->nproc, cores, &ranks_per_node));
    int threads = ct_launch_threads_per_rank(job, cores, ranks_per_node);

    CT_CHECK(ct_argv_push(args, "mpirun"));
    CT_CHECK(ct_argv_push(args, "-np"));
    CT_CHECK(ct_argv_pushf(args, "%d", opts->nproc));
    if (opts->hostfile) {
        CT_CHECK(ct_argv_push(args, "--hostfile"));
        CT_CHECK(ct_argv_push(args, opts->hostfile));
    } else if (opts->nproc > cores) {
        CT_CHECK(ct_argv_push(args, "--oversubscribe"));
    }
    CT_CHECK(ct_argv_push(args, "--bind-to"));
    CT_CHECK(ct_argv_push(args, "none"));
    CT_CHECK(ct_argv_push(args, "-x"));
    CT_CHECK(ct_argv_pushf(args, "OMP_NUM_THREADS=%d", threads));
    CT_CHECK(ct_argv_push(args, "-x"));
    CT_CHECK(ct_argv_pushf(args, "OPENBLAS_NUM_THREADS=%d", threads));
    for (char **env = environ; *env; env++) {
        if (strncmp(*env, "CTRAIN_", 7) != 0) continue;
        const char *eq = strchr(*env, '=');
        if (!eq) continue;
        CT_CHECK(ct_argv_push(args, "-x"));
        CT_CHECK(ct_argv_pushf(args, "%.*s", (int)(eq - *env), *env));
    }
    if (opts->mpirun_args) CT_CHECK(ct_argv_split(args, opts->mpirun_args));
    return ct_launch_worker_argv(args, job->source_path, n_overrides, overrides);
}

/* Open MPI refuses to start as root unless told twice; containers often run as root. */
static ct_status allow_root(void) {
    if (setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1) != 0 ||
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1) != 0)
        return ct_error(CT_ERR_NOMEM, "setenv: %s", strerror(errno));
    return CT_OK;
}

/* The error of an execvp that returned. */
static ct_status exec_error(const char *program, int err) {
    if (err == ENOENT)
        return ct_error(CT_ERR_IO,
                        "%s not found on PATH: install Open MPI (Debian: apt-get install "
                        "openmpi-bin) or put its bin/ directory on PATH",
                        program);
    /* Out of memory or processes may pass; anything else fails every attempt the same way. */
    return ct_error(err == ENOMEM || err == EAGAIN ? CT_ERR_EXTERNAL : CT_ERR_IO,
                    "cannot run %s: %s", program, strerror(err));
}

ct_status ct_launch_exec(const ct_argv *args) {
    CT_CHECK(allow_root());
    fflush(stdout);
    fflush(stderr);
    execvp(args->argv[0], args->argv);
    return exec_error(args->argv[0], errno);
}

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
    CT_CHECK(allow_root());
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
        if (got == (ssize_t)sizeof(err)) status = exec_error(args->argv[0], err);
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

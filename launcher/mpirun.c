/*
 * The mpirun command line of `ctrain-launch`. From --nproc, --hostfile and --mpirun-args and the
 * loaded job it builds
 *
 *   mpirun -np N [--hostfile F] [--oversubscribe] --bind-to none
 *          -x OMP_NUM_THREADS=t -x OPENBLAS_NUM_THREADS=t [-x CTRAIN_...] [extra words]
 *          /abs/path/ctrain worker /abs/path/JOB.toml [k=v ...]
 *
 * which supervise.c runs as a child (ct_launch_run). mpirun binds nothing (--bind-to none): each
 * worker binds itself to its block of cores with hwloc (comm/bind.c), which knows the node-local
 * rank. Threads per rank are device.threads_per_rank, or the cores of this machine divided by
 * the ranks placed on the busiest node (nodes are assumed alike). Every CTRAIN_* variable set
 * here is forwarded, so CTRAIN_LOG=debug reaches ranks on other machines too. Also here: the
 * argument vector type, shell-like splitting and quoting, and the core count. Running the
 * command as a supervised child is supervise.c.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_* */
#include "launcher/launcher_internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
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
ct_status ct_launch_allow_root(void) {
    if (setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1) != 0 ||
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1) != 0)
        return ct_error(CT_ERR_NOMEM, "setenv: %s", strerror(errno));
    return CT_OK;
}

/* The error of an execvp that returned. */
ct_status ct_launch_exec_error(const char *program, int err) {
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
    CT_CHECK(ct_launch_allow_root());
    fflush(stdout);
    fflush(stderr);
    execvp(args->argv[0], args->argv);
    return ct_launch_exec_error(args->argv[0], errno);
}

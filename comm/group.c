/*
 * Groups, whatever their backend. MPI runs at MPI_THREAD_MULTIPLE: each group owns a
 * communication thread that takes its queued requests in FIFO order and hands each to the
 * backend's run (MPI: the blocking MPI call, so collectives overlap the caller's compute;
 * NCCL: polling the request's CUDA event). One thread per group keeps the order of collectives
 * on each communicator identical on every rank (MPI's and NCCL's rule) while different groups
 * proceed independently, so HSDP's two groups cannot deadlock each other; the watchdog
 * (watchdog.c) talks on a communicator of its own.
 *
 * Every group has an MPI communicator of its own with MPI_ERRORS_RETURN (so CT_MPI sees
 * failures instead of MPI killing the process): the world's is a duplicate of MPI_COMM_WORLD,
 * a split group's comes from MPI_Comm_split, and a backend with a communicator of its own
 * (NCCL) makes that beside it and splits it too (its table's split). While a communicator is
 * made the ranks agree on success (ct_comm_agree), so that a rank that fails returns an error
 * on every rank instead of leaving the others waiting in a collective it never joins.
 */
#include "comm/comm_internal.h"
#include "common/fault.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the communication thread */

/* Runs queued requests in order; on `stopping` it drains the queue, then returns. */
static void *comm_thread(void *arg) {
    ct_comm *comm = arg;
    for (;;) {
        pthread_mutex_lock(&comm->lock);
        while (!comm->queue_head && !comm->stopping)
            pthread_cond_wait(&comm->work, &comm->lock);
        ct_comm_request *r = comm->queue_head;
        if (!r) {
            pthread_mutex_unlock(&comm->lock);
            return NULL;
        }
        comm->queue_head = r->next;
        if (!comm->queue_head) comm->queue_tail = NULL;
        pthread_mutex_unlock(&comm->lock);

        ct_comm_mark_running(r);
        ct_error_clear();
        ct_status status = comm->ops->run(comm, r);
        ct_comm_mark_done(r, status, ct_error_message());
    }
}

void ct_comm_enqueue(ct_comm *comm, ct_comm_request *req) {
    pthread_mutex_lock(&comm->lock);
    req->state = CT_REQ_QUEUED;
    req->next = NULL;
    if (comm->queue_tail)
        comm->queue_tail->next = req;
    else
        comm->queue_head = req;
    comm->queue_tail = req;
    pthread_cond_signal(&comm->work);
    pthread_mutex_unlock(&comm->lock);
}

void ct_comm_drain(ct_comm *comm) {
    pthread_mutex_lock(&comm->lock);
    for (;;) {
        bool busy = comm->queue_head != NULL;
        for (int i = 0; i < CT_COMM_POOL && !busy; i++)
            busy = comm->pool[i].state == CT_REQ_QUEUED || comm->pool[i].state == CT_REQ_RUNNING;
        if (!busy) break;
        pthread_cond_wait(&comm->done, &comm->lock);
    }
    pthread_mutex_unlock(&comm->lock);
}

/* ---------------------------------------------------------------- making groups */

ct_status ct_comm_mpi_error(int code, const char *call, const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof(text), "MPI error code %d", code);
    int name_len = (int)strcspn(call, "(");
    return ct_error_at(CT_ERR_EXTERNAL, file, line, "[rank %d] %.*s failed at %s:%d: %s",
                       ct_comm_world_rank(), name_len, call, file, line, text);
}

ct_status ct_comm_group_new(MPI_Comm mpi, bool is_world, ct_comm **out) {
    *out = NULL;
    ct_comm *comm = ct_alloc(CT_MEM_COMM, sizeof(ct_comm));
    if (!comm) {
        MPI_Comm_free(&mpi);
        return CT_ERR_NOMEM;
    }
    comm->mpi = mpi;
    comm->is_world = is_world;
    comm->ops = &ct_comm_mpi_ops;
    pthread_mutex_init(&comm->lock, NULL);
    pthread_cond_init(&comm->work, NULL);
    pthread_cond_init(&comm->done, NULL);
    ct_comm_pool_init(comm);
    *out = comm; /* from here ct_comm_free releases it */
    CT_MPI(MPI_Comm_set_errhandler(mpi, MPI_ERRORS_RETURN));
    CT_MPI(MPI_Comm_rank(mpi, &comm->rank));
    CT_MPI(MPI_Comm_size(mpi, &comm->size));
    MPI_Comm local;
    CT_MPI(MPI_Comm_split_type(mpi, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &local));
    int rc = MPI_Comm_rank(local, &comm->local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(local, &comm->local_size);
    MPI_Comm_free(&local);
    CT_MPI(rc);
    if (pthread_create(&comm->thread, NULL, comm_thread, comm) != 0)
        return ct_error(CT_ERR_EXTERNAL, "[rank %d] cannot start the communication thread",
                        ct_comm_world_rank());
    comm->thread_started = true;
    ct_comm_register(comm);
    return CT_OK;
}

ct_status ct_comm_agree(ct_comm *group, ct_status mine, const char *what) {
    int size = 0;
    CT_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    int failed = mine == CT_OK ? size : ct_comm_world_rank(), first = size;
    CT_MPI(MPI_Allreduce(&failed, &first, 1, MPI_INT, MPI_MIN, group->mpi));
    if (mine != CT_OK) return mine; /* its own message stands */
    if (first == size) return CT_OK;
    return ct_error(CT_ERR_EXTERNAL, "[rank %d] %s failed on rank %d (its message says why)",
                    ct_comm_world_rank(), what, first);
}

ct_status ct_comm_setup_broadcast(ct_comm *group, void *buf, size_t bytes) {
    CT_ASSERT(bytes <= INT_MAX, "%zu bytes", bytes);
    CT_MPI(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, group->mpi));
    return CT_OK;
}

/* ---------------------------------------------------------------- public: lifecycle */

ct_status ct_comm_init_world(ct_comm **world, int *argc, char ***argv) {
    *world = NULL;
    CT_CHECK(ct_comm_mpi_backend_read_env());
    CT_CHECK(ct_fault_init()); /* a malformed CTRAIN_FAULT fails before MPI starts */
    int initialized = 0, provided = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS) return ct_error(CT_ERR_EXTERNAL, "MPI_Init_thread failed (%d)", rc);
    } else {
        CT_MPI(MPI_Query_thread(&provided));
    }
    CT_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    CT_MPI(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    int rank;
    CT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    ct_comm_set_world_rank(rank);
    ct_log_set_rank(rank);
    if (provided < MPI_THREAD_MULTIPLE)
        return ct_error(CT_ERR_EXTERNAL,
                        "[rank %d] MPI granted thread level %d, ctrain needs "
                        "MPI_THREAD_MULTIPLE (%d): use an MPI built with thread support",
                        rank, provided, MPI_THREAD_MULTIPLE);
    CT_CHECK(ct_comm_mpi_backend_init());
    MPI_Comm dup;
    CT_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    ct_comm *comm;
    ct_status status = ct_comm_group_new(dup, true, &comm);
    if (status == CT_OK) status = ct_comm_watchdog_start(comm);
    if (status != CT_OK) {
        ct_comm_free(comm);
        return status;
    }
    *world = comm;
    return CT_OK;
}

ct_status ct_comm_split(ct_comm *parent, int color, int key, ct_comm **group) {
    *group = NULL;
    if (!parent) return ct_error(CT_ERR_INVALID, "ct_comm_split of a NULL group");
    if (color < 0) return ct_error(CT_ERR_INVALID, "ct_comm_split: color %d < 0", color);
    ct_comm_drain(parent);
    MPI_Comm mpi;
    CT_MPI(MPI_Comm_split(parent->mpi, color, key, &mpi));
    ct_comm *comm;
    ct_status status = ct_comm_group_new(mpi, false, &comm);
    if (parent->ops->split) status = parent->ops->split(parent, color, key, comm, status);
    if (status != CT_OK) {
        ct_comm_free(comm);
        return status;
    }
    *group = comm;
    return CT_OK;
}

void ct_comm_free(ct_comm *comm) {
    if (!comm) return;
    if (comm->watchdog) ct_comm_watchdog_stop(comm);
    if (comm->thread_started) {
        pthread_mutex_lock(&comm->lock);
        comm->stopping = true;
        pthread_cond_signal(&comm->work);
        pthread_mutex_unlock(&comm->lock);
        pthread_join(comm->thread, NULL);
        ct_comm_unregister(comm);
    }
    if (comm->ops->release) comm->ops->release(comm);
    if (comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
    pthread_cond_destroy(&comm->done);
    pthread_cond_destroy(&comm->work);
    pthread_mutex_destroy(&comm->lock);
    ct_free(CT_MEM_COMM, comm, sizeof(ct_comm));
}

void ct_comm_finalize(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) return;
    int alive = ct_comm_live_groups();
    if (alive > 0)
        ct_log(CT_LOG_WARN, "comm", "ct_comm_finalize with %d group(s) not freed", alive);
    ct_comm_mpi_backend_finalize();
    MPI_Finalize();
}

_Noreturn void ct_comm_abort(ct_comm *comm, int code) {
    (void)comm; /* Open MPI ends the whole job whichever communicator is named */
    fflush(stdout);
    fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    ct_comm_abort_backends();
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort returned, or there is no MPI to end */
}

/* ---------------------------------------------------------------- public: queries */

int ct_comm_rank(const ct_comm *comm) {
    return comm ? comm->rank : 0;
}

int ct_comm_size(const ct_comm *comm) {
    return comm ? comm->size : 1;
}

int ct_comm_local_rank(const ct_comm *comm) {
    return comm ? comm->local_rank : 0;
}

int ct_comm_local_size(const ct_comm *comm) {
    return comm ? comm->local_size : 1;
}

const char *ct_comm_backend(const ct_comm *comm) {
    return comm ? comm->ops->name : "mpi";
}

void *ct_comm_stream(const ct_comm *comm) {
    return comm && comm->ops->stream ? comm->ops->stream(comm) : NULL;
}

/*
 * ckpt_tools: one complete checkpoint as a whole, for `ctrain ckpt info|verify|export`. It
 * finds the checkpoint (a step directory, or the newest complete one of a checkpoint
 * directory), opens its manifest and every rank file (each checked against the manifest),
 * verifies it end to end (every frame decoded and checksummed, every unit and kind tiled
 * exactly once by the files' frames), and consolidates the parameters of all ranks into one
 * full model, whatever world size and strategy saved them.
 */
#include "checkpoint/checkpoint.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- helpers */

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Every frame of every file names a unit of the manifest and lies inside it. */
static ct_status check_entries(const ct_ckpt_step *ck) {
    const ct_ckpt_manifest *m = &ck->manifest;
    for (int r = 0; r < m->world_size; r++)
        for (int i = 0; i < ct_ckpt_reader_entry_count(ck->readers[r]); i++) {
            const ct_ckpt_entry *e = ct_ckpt_reader_entry(ck->readers[r], i);
            if (e->unit >= (uint32_t)m->n_units || e->hi > (uint64_t)m->units[e->unit].numel)
                return ct_error(CT_ERR_FORMAT,
                                "%s/%s: frame %d holds unit %u [%llu, %llu), outside the "
                                "manifest's %d units%s%s",
                                ck->path, m->ranks[r].file, i, e->unit, (unsigned long long)e->lo,
                                (unsigned long long)e->hi, m->n_units,
                                e->unit < (uint32_t)m->n_units ? " or beyond the size of " : "",
                                e->unit < (uint32_t)m->n_units ? m->units[e->unit].name : "");
        }
    return CT_OK;
}

/* ---------------------------------------------------------------- public functions */

ct_status ct_ckpt_find(const char *path, char *step_dir, size_t step_dir_bytes) {
    char manifest[CT_CKPT_STEP_PATH_BYTES + 16];
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", path);
    if (is_file(manifest)) {
        if ((size_t)snprintf(step_dir, step_dir_bytes, "%s", path) >= step_dir_bytes)
            return ct_error(CT_ERR_INVALID, "checkpoint path too long: %s", path);
        return CT_OK;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return ct_error(CT_ERR_IO, "%s: no such checkpoint or checkpoint directory", path);
    bool found;
    int64_t step;
    CT_CHECK(ct_ckpt_latest(path, &found, &step, step_dir, step_dir_bytes));
    if (!found)
        return ct_error(CT_ERR_INVALID,
                        "%s: neither a checkpoint (no manifest.json) nor a checkpoint directory "
                        "holding a complete step_NNNNNNNN/",
                        path);
    return CT_OK;
}

ct_status ct_ckpt_step_open(ct_ckpt_step *ck, const char *step_dir) {
    memset(ck, 0, sizeof(*ck));
    if ((size_t)snprintf(ck->path, sizeof(ck->path), "%s", step_dir) >= sizeof(ck->path))
        return ct_error(CT_ERR_INVALID, "checkpoint path too long: %s", step_dir);
    char file[CT_CKPT_STEP_PATH_BYTES + 32];
    snprintf(file, sizeof(file), "%s/manifest.json", step_dir);
    CT_CHECK(ct_ckpt_manifest_read(file, &ck->manifest));
    int W = ck->manifest.world_size;
    ck->readers = ct_alloc(CT_MEM_OTHER, (size_t)W * sizeof(ct_ckpt_reader *));
    if (!ck->readers) return ct_error(CT_ERR_NOMEM, "%s: %d readers", step_dir, W);
    for (int r = 0; r < W; r++) {
        snprintf(file, sizeof(file), "%s/%s", step_dir, ck->manifest.ranks[r].file);
        CT_CHECK(ct_ckpt_reader_open(&ck->readers[r], file));
        CT_CHECK(ct_ckpt_check_rank_file(&ck->manifest, r, ck->readers[r]));
    }
    return CT_OK;
}

void ct_ckpt_step_close(ct_ckpt_step *ck) {
    if (ck->readers)
        for (int r = 0; r < ck->manifest.world_size; r++)
            ct_ckpt_reader_close(ck->readers[r]);
    ct_free(CT_MEM_OTHER, ck->readers, (size_t)ck->manifest.world_size * sizeof(ct_ckpt_reader *));
    ct_ckpt_manifest_free(&ck->manifest);
    memset(ck, 0, sizeof(*ck));
}

ct_status ct_ckpt_step_verify(ct_ckpt_step *ck, ct_ckpt_verify_counts *counts) {
    const ct_ckpt_manifest *m = &ck->manifest;
    memset(counts, 0, sizeof(*counts));
    CT_CHECK(check_entries(ck));
    int64_t max_numel = 0;
    for (int u = 0; u < m->n_units; u++)
        max_numel = CT_MAX(max_numel, m->units[u].numel);
    size_t bytes = (size_t)max_numel * sizeof(float) + 1;
    float *buf = ct_alloc(CT_MEM_OTHER, bytes);
    if (!buf) return ct_error(CT_ERR_NOMEM, "%s: verify buffer of %zu bytes", ck->path, bytes);
    /* Reading each whole (unit, kind) checks the tiling, then decodes each of its frames once:
     * together every frame of every file (check_entries ruled out frames outside a unit). */
    ct_status st = CT_OK;
    for (int u = 0; st == CT_OK && u < m->n_units; u++)
        for (int k = 0; st == CT_OK && k < CT_CKPT_KIND_COUNT; k++)
            if (m->units[u].numel > 0)
                st = ct_ckpt_read_range(ck->readers, m->world_size, u, m->units[u].name,
                                        (ct_ckpt_kind)k, 0, m->units[u].numel, buf);
    ct_free(CT_MEM_OTHER, buf, bytes);
    CT_CHECK(st);
    counts->files = m->world_size;
    counts->units = m->n_units;
    for (int r = 0; r < m->world_size; r++) {
        counts->file_bytes += ct_ckpt_reader_file_bytes(ck->readers[r]);
        for (int i = 0; i < ct_ckpt_reader_entry_count(ck->readers[r]); i++) {
            counts->frames++;
            counts->raw_bytes += ct_ckpt_reader_entry(ck->readers[r], i)->raw_bytes;
        }
    }
    return CT_OK;
}

ct_status ct_ckpt_step_read_params(ct_ckpt_step *ck, ct_gpt *gpt) {
    const ct_ckpt_manifest *m = &ck->manifest;
    if (m->n_units != gpt->n_units)
        return ct_error(CT_ERR_FORMAT, "%s: %d units, the model of its saved job has %d", ck->path,
                        m->n_units, gpt->n_units);
    for (int u = 0; u < m->n_units; u++) {
        const ct_unit *unit = &gpt->units[u];
        if (m->units[u].numel != unit->numel || strcmp(m->units[u].name, unit->name) != 0)
            return ct_error(CT_ERR_FORMAT,
                            "%s: unit %d is %s of %lld elements, the model of its saved job has "
                            "%s of %lld",
                            ck->path, u, m->units[u].name, (long long)m->units[u].numel, unit->name,
                            (long long)unit->numel);
        CT_CHECK(ct_ckpt_read_range(ck->readers, m->world_size, u, unit->name, CT_CKPT_PARAMS, 0,
                                    unit->numel, unit->data));
    }
    return CT_OK;
}

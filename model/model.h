/*
 * model: tensors, the autograd tape, parameter units with their hooks, the ops, GPT-2, AdamW
 * and learning-rate schedules. It knows nothing of communication or sharding: those plug in
 * through the unit hooks (ct_unit_hooks), which fire on the tape's unit markers.
 *
 * One header per concern, each beside its .c files; this one includes them all:
 *   model/tensor.h    tensors: views with a dtype and a device (memory never owned)
 *   model/unit.h      units (one flat buffer of parameters each) and their hooks
 *   model/tape.h      the autograd tape and its two arenas (host records, device data)
 *   model/ops/ops.h   the ops
 *   model/gpt.h       GPT-2
 *   model/optim.h     AdamW, learning-rate schedules, gradient clipping
 */
#ifndef CT_MODEL_H
#define CT_MODEL_H

#include "model/optim.h"

#endif

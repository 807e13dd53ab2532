/* quant/budget_impl.h — internals of the size-budget planner shared by its
 * files (quant/budget_sens.c, quant/budget_state.c). */
#ifndef NB_QUANT_BUDGET_IMPL_H
#define NB_QUANT_BUDGET_IMPL_H

#include "quant/budget.h"

#include <stdbool.h>

/* Open (or create) the measurement journal at path for key: tensors it holds
 * are filled into s and flagged in done[] (s->tensors[i].planned must be set
 * first); *fd_out is the open, locked journal positioned for appending.
 * Errors: a journal of another key (NB_ERR_RANGE), a damaged one
 * (NB_ERR_FORMAT naming the line), one in use (NB_ERR_IO), I/O. */
nb_status nb_sens_state_open(const char *path, const unsigned char key[32], nb_sens *s, bool *done, size_t *n_loaded,
                             int *fd_out, nb_ctx *ctx);
/* Append tensor i's measurement. */
nb_status nb_sens_state_append(int fd, const char *path, size_t i, const nb_sens_tensor *t, nb_ctx *ctx);

#endif

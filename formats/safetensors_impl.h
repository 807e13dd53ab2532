/* formats/safetensors_impl.h — shared between the safetensors reader and writer (internal). */
#ifndef NB_FORMATS_SAFETENSORS_IMPL_H
#define NB_FORMATS_SAFETENSORS_IMPL_H

#include <stddef.h>

/* First duplicate in a list of n strings (sorts `v`), or NULL. */
const char *nb_st_find_duplicate(const char **v, size_t n);

#endif

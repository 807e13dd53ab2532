/* cli/cmd_version.c — `nibble --version` / `nibble version [--json]`: the
 * version, the git commit the binary was built from, the build type and the
 * features compiled in. The commit and build type come from
 * generated/nb_build_info.h (cmake/build_info.cmake, rewritten at build time). */
#include "cli/cli.h"
#include "kernels/cpu/matmul.h"
#ifdef NB_HAVE_CUDA
#include "kernels/cuda/cuda.h"
#endif
#include "nb_build_info.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef NB_HAVE_CUDA
#define CUDA_ON true
#define CUDA_DEVICES() nb_cuda_device_count()
#else
#define CUDA_ON false
#define CUDA_DEVICES() 0
#endif

/* OpenMP's spec version from _OPENMP (a yyyymm date), e.g. "4.5"; NULL without OpenMP. */
static const char *openmp_version(void) {
#ifdef _OPENMP
    static const struct { long date; const char *v; } known[] = {
        {202111, "5.2"}, {202011, "5.1"}, {201811, "5.0"}, {201511, "4.5"}, {201307, "4.0"}, {201107, "3.1"},
    };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (_OPENMP >= known[i].date) return known[i].v;
    return "< 3.1";
#else
    return NULL;
#endif
}

static int print_json(void) {
    const char *isa[8];
    size_t n = nb_kernels_compiled(isa, 8);
    cJSON *j = cJSON_CreateObject();
    if (!j) return NB_EXIT_IO;
    cJSON_AddStringToObject(j, "version", NB_VERSION);
    cJSON_AddStringToObject(j, "commit", NB_BUILD_COMMIT);
    cJSON_AddBoolToObject(j, "modified", NB_BUILD_DIRTY);
    cJSON_AddStringToObject(j, "build_type", NB_BUILD_TYPE);
    cJSON_AddBoolToObject(j, "cuda", CUDA_ON);
    cJSON_AddNumberToObject(j, "cuda_devices", CUDA_DEVICES());
    cJSON *a = cJSON_AddArrayToObject(j, "cpu_kernels");
    for (size_t i = 0; i < n && i < 8 && a; i++) cJSON_AddItemToArray(a, cJSON_CreateString(isa[i]));
    cJSON_AddStringToObject(j, "cpu_kernels_active", nb_kernels_active());
    if (openmp_version()) cJSON_AddStringToObject(j, "openmp", openmp_version());
    else cJSON_AddNullToObject(j, "openmp");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!s) return NB_EXIT_IO;
    puts(s);
    free(s);
    return NB_EXIT_OK;
}

int nb_cmd_version(int argc, char **argv) {
    nb_ctx ctx;
    nb_ctx_init(&ctx);
    bool json = false;
    const nb_opt opts[] = {
        {.name = "json", .type = NB_OPT_FLAG, .dest = &json, .help = "print one JSON object instead"},
    };
    const nb_cmd_spec spec = {
        .name = "version",
        .usage = "[--json]",
        .about = "Print the version, the git commit the binary was built from (\"unknown\" outside a git\n"
                 "checkout; \"(modified)\" when tracked files differed from it), the build type and the\n"
                 "features compiled in: CUDA (and, when on, how many GPUs this process sees), the CPU\n"
                 "kernel ISAs (the one in use on this CPU, after NB_KERNELS, in brackets) and OpenMP.\n"
                 "`nibble --version` is the same.",
        NB_OPTS_TABLE(opts),
    };
    nb_args args = {0};
    int rc = nb_opts_parse(&spec, argc, argv, &args, &ctx);
    nb_ctx_free(&ctx);
    if (rc != NB_OPTS_RUN) return rc;
    if (json) return print_json();
    const char *isa[8];
    size_t n = nb_kernels_compiled(isa, 8);
    printf("nibble %s\ncommit:   %s%s\nbuild:    %s\nfeatures: CUDA %s", NB_VERSION, NB_BUILD_COMMIT,
           NB_BUILD_DIRTY ? " (modified)" : "", NB_BUILD_TYPE, CUDA_ON ? "on" : "off");
    if (CUDA_ON) {
        const int nd = CUDA_DEVICES();
        printf(" (%d device%s found)", nd, nd == 1 ? "" : "s");
    }
    printf("; CPU kernels");
    for (size_t i = 0; i < n && i < 8; i++) printf("%s %s", i ? "," : "", isa[i]);
    printf(" (in use: %s); OpenMP %s\n", nb_kernels_active(), openmp_version() ? openmp_version() : "off");
    return NB_EXIT_OK;
}

/* pipeline/build.h — `nibble build`: one recipe (pipeline/recipe.h) from a
 * checkpoint (+ adapters) to a validated, bundled variant.
 *
 * Stages, each a library call of the stage it names:
 *   merge      distill/merge.h       when the recipe has adapters
 *   prune      distill/prune_job.h   when the recipe prunes experts
 *   calibrate  calib/calibrate.h     method imatrix: the importance matrix
 *   quantize   calib/job.h           the plan (mix or plan file) and the write
 *   reference  engine/ppl.h          log-probs of the model before pruning and
 *                                    quantization (after merging: the variant is
 *                                    judged against what it should reproduce)
 *   validate   engine/ppl.h          PPL and KLD of the variant against them
 *                                    (both in the engine's precise arithmetic, so the KLD
 *                                    measures the variant, not the engine's rounding),
 *                                    with the per-token KLD histogram
 *   export-F   calib/export.h        one per Hugging Face layout in outputs.formats
 * then the quality gate, the report (report.html), and the bundle
 * (pipeline/bundle.h).
 *
 * Resumable. Every stage writes into OUT/.work/<stage>-<key>/, where key is
 * the first 16 hex digits of a SHA-256 over the stage's name, nibble's
 * version, its options and the keys of its inputs (a file input is keyed by
 * its resolved path, size and modification time — not its contents, which
 * would cost a full read of a large source). A stage is finished when its
 * done.json exists (written atomically last); a rerun skips finished stages
 * and redoes an interrupted one from scratch (its directory is emptied
 * first). `force` redoes everything. Changing an option or an input changes
 * the key, so stale results are never reused.
 *
 * The quality gate compares the validation figures with the recipe's limits
 * (max mean KLD, max PPL increase in %, min same-top-token %); a miss is
 * reported in result->gate_msg and the build returns NB_OK with
 * result->gate_failed set (the CLI exits 4), outputs kept for inspection.
 *
 * Outputs in OUT/: the model (a hard link to the quantize stage's file when
 * the filesystem allows, else a copy; unless outputs.formats leaves "gguf"
 * out), each Hugging Face directory of outputs.formats (an export stage per
 * layout, keyed by the quantize stage's key and the format, writing through
 * calib/export.h from the quantize stage's GGUF and job; its files linked into
 * OUT/<name>/), report.html, manifest.json (every file, a directory's as
 * DIR/FILE) and, when the recipe asks, NAME.tar.zst with all of them. HF
 * outputs are checked against the recipe's job before any stage runs.
 */
#ifndef NB_PIPELINE_BUILD_H
#define NB_PIPELINE_BUILD_H

#include "core/ctx.h"
#include "engine/ppl.h"
#include "pipeline/recipe.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum nb_build_event_kind {
    NB_BUILD_STAGE_START = 0, /* stage begins (name, index, n_stages, detail) */
    NB_BUILD_STAGE_SKIP,      /* finished in an earlier run (dir) */
    NB_BUILD_STAGE_DONE,      /* finished now (seconds) */
} nb_build_event_kind;

typedef struct nb_build_event {
    nb_build_event_kind kind;
    const char *stage;
    int index, n_stages;
    const char *detail;       /* what the stage does, one line */
    const char *dir;          /* its work directory */
    double seconds;
} nb_build_event;

typedef struct nb_build_opts {
    const char *recipe_path;      /* required */
    const nb_recipe_var *vars;    /* --var NAME=VALUE */
    size_t n_vars;
    const char *source;           /* sets ${SOURCE} (and replaces a recipe's literal source) */
    const char *out_dir;          /* NULL: "nibble-out/<recipe name>" */
    const char *work_dir;         /* stage cache; NULL: OUT/.work. Stages are keyed by their inputs, so
                                     builds of several recipes may share one (calibration and the
                                     reference log-probs are then computed once) */
    bool force;                   /* redo every stage */
    const char *commit;           /* nibble's git commit, for the manifest (may be NULL) */
    void (*on_event)(void *user, const nb_build_event *ev);
    void *user;
} nb_build_opts;

#define NB_BUILD_MAX_STAGES 12 /* merge ... validate, and an export per HF layout */

typedef struct nb_build_stage {
    const char *name;
    bool skipped;
    double seconds;
} nb_build_stage;

/* One Hugging Face output directory (recipe outputs.formats). */
typedef struct nb_build_output {
    const char *format;   /* "hf", "bnb-nf4", "gptq", "awq" */
    char *dir;            /* OUT/<name> */
    char **names;         /* its files, sorted */
    size_t n_files;
    uint64_t bytes;       /* their total size */
} nb_build_output;

typedef struct nb_build_result {
    nb_recipe recipe;
    char *out_dir;
    char *model_path, *report_path, *manifest_path, *bundle_path; /* bundle_path NULL when none */
    uint64_t model_bytes, source_bytes, n_elements;
    double bpw;
    unsigned char model_sha256[32];
    bool validated;
    double ppl_ref, ppl, ppl_err, kld, kld_err, same_top; /* same_top: fraction */
    double same_top_err;                                  /* fraction */
    double kld_pct[11];    /* KLD percentiles in engine/ppl.h's nb_kld_pct_at order (max ... min) */
    bool has_kld_pct;
    uint64_t kld_hist[NB_KLD_HIST_BINS]; /* tokens per KLD bin (engine/ppl.h nb_kld_hist_bin) */
    bool has_kld_hist;
    size_t n_outputs;
    nb_build_output outputs[NB_RECIPE_MAX_OUTPUTS];
    char *budget_json;     /* planner targets: the totals (quant/budget.h nb_budget_result_json) */
    char *errors_json;     /* planner targets: [{"name","type","predicted","measured"}] per tensor it chose */
    bool gate_failed;
    char gate_msg[512];
    int n_stages;
    nb_build_stage stages[NB_BUILD_MAX_STAGES];
    double seconds;
} nb_build_result;

/* Run a recipe (see above). `r` is filled as far as the build got; free it
 * with nb_build_result_free. Errors: the recipe's, and every stage's. */
nb_status nb_build_run(const nb_build_opts *o, nb_build_result *r, nb_ctx *ctx);
void nb_build_result_free(nb_build_result *r);

/* The result as JSON (malloc'd; NULL on allocation failure). */
char *nb_build_result_json(const nb_build_result *r);

/* report.html of a build: self-contained (inline SVG and CSS, no scripts). */
char *nb_build_report_html(const nb_build_result *r, const char *plan_json);

#endif

/*
 * faulty — misbehaves on purpose, for the host's fault tests.
 *
 * CONFIG
 *   init_sleep_ms = 0    # init sleeps this long before it returns
 *   init_fail = false    # init returns SERPENS_EINVAL
 *   init_fail_while = "" # init returns SERPENS_EINVAL while this file exists
 *                        # (relative to the chain file): a refusal that
 *                        # comes and goes under a running host
 *   crash_after = 0      # process() dereferences NULL once this many packets
 *                        # passed (0: never)
 */
#define _POSIX_C_SOURCE 200809L
#include <serpens/nf.h>

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct faulty {
    int64_t crash_after;
    int64_t seen;
};

static int faulty_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    int64_t sleep_ms = 0;
    int fail = 0;
    char path[4096];
    struct faulty *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = f;
    h->config_int(config, "init_sleep_ms", &sleep_ms);
    h->config_bool(config, "init_fail", &fail);
    if (h->config_path(config, "init_fail_while", path, sizeof path) == SERPENS_OK && access(path, F_OK) == 0) {
        h->log(ctx, SERPENS_LOG_ERROR, "%s exists: refusing to start", path);
        return SERPENS_EINVAL;
    }
    h->config_int(config, "crash_after", &f->crash_after);
    if (sleep_ms > 0) {
        struct timespec ts;
        ts.tv_sec = (time_t)(sleep_ms / 1000);
        ts.tv_nsec = (long)(sleep_ms % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    if (fail) {
        h->log(ctx, SERPENS_LOG_ERROR, "init_fail is set: refusing to start");
        return SERPENS_EINVAL;
    }
    return SERPENS_OK;
}

static void faulty_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct faulty *f = ctx->priv;
    f->seen += batch->count;
    if (f->crash_after > 0 && f->seen >= f->crash_after) {
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
}

static void faulty_fini(struct serpens_nf_ctx *ctx) { free(ctx->priv); }

static const struct serpens_nf_descriptor faulty_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "faulty",
    .version = "1.0",
    .summary = "sleeps in init, fails init or crashes in process, as configured",
    .n_ports = 1,
    .init = faulty_init,
    .process = faulty_process,
    .fini = faulty_fini,
};

SERPENS_NF_REGISTER(faulty_descriptor)

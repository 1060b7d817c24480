/*
 * One source, many broken plugins: each BAD_* macro breaks the descriptor in
 * exactly one way the loader (or the chain runtime) must refuse.
 */
#include <serpens/nf.h>

#include <stdlib.h>

static int bad_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    (void)config;
#if defined(BAD_INIT)
    ctx->host->log(ctx, SERPENS_LOG_ERROR, "bad_init: refusing on purpose");
    return SERPENS_EINVAL;
#else
    (void)ctx;
    return SERPENS_OK;
#endif
}

#if !defined(BAD_NO_PROCESS)
static void bad_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    (void)ctx;
    (void)batch;
}
#endif

#if defined(BAD_INIT)
/* Counts fini calls so a test can check fini runs once after a failed init. */
SERPENS_EXPORT int bad_init_fini_calls;
int bad_init_fini_calls = 0;
static void bad_fini(struct serpens_nf_ctx *ctx)
{
    (void)ctx;
    ++bad_init_fini_calls;
}
#else
#define bad_fini NULL
#endif

static const struct serpens_nf_descriptor bad_descriptor = {
#if defined(BAD_ABI_MAJOR)
    .abi_major = SERPENS_ABI_MAJOR + 1,
    .abi_minor = 0,
    .struct_size = (uint32_t)sizeof(struct serpens_nf_descriptor),
#elif defined(BAD_SMALL)
    .abi_major = SERPENS_ABI_MAJOR,
    .abi_minor = SERPENS_ABI_MINOR,
    .struct_size = 16,
#else
    SERPENS_NF_DESCRIPTOR_HEADER,
#endif
    .name = BAD_NAME,
    .version = "0",
#if defined(BAD_FLAGS)
    .flags = 0x80,
#endif
    .n_ports = 1,
    .init = bad_init,
#if !defined(BAD_NO_PROCESS)
    .process = bad_process,
#endif
    .fini = bad_fini,
#if defined(BAD_NEW_HOST)
    .min_host_minor = SERPENS_ABI_MINOR + 1,
#elif defined(BAD_RESERVED_1_4)
    .reserved2 = 1,
#endif
};

#if defined(BAD_NO_ENTRY)
/* Exports the descriptor under another name: the entry symbol is missing. */
SERPENS_EXPORT const struct serpens_nf_descriptor *not_the_entry(void);
const struct serpens_nf_descriptor *not_the_entry(void) { return &bad_descriptor; }
#else
SERPENS_NF_REGISTER(bad_descriptor)
#endif

/*
 * noop — passes every packet to its default next hop.
 *
 * Built as C99 against plugin-api/ alone (no DPDK, no host headers): the test
 * that the ABI header is self-contained for NF authors.
 */
#include <serpens/nf.h>

static int noop_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    (void)ctx;
    (void)config;
    return SERPENS_OK;
}

static void noop_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    (void)ctx;
    (void)batch;
}

static const struct serpens_nf_descriptor noop_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = NOOP_NAME,
    .version = "1.0",
    .summary = "passes packets on unchanged",
    .n_ports = 1,
    .init = noop_init,
    .process = noop_process,
};

SERPENS_NF_REGISTER(noop_descriptor)

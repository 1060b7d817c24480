/*
 * abi10 — a plugin built against the frozen ABI 1.0 header
 * (tests/plugins/abi-1.0/serpens/nf.h), as a 1.0 plugin in the field was:
 * it indexes batch->pkts[i] and knows no field appended since.
 *
 * Per packet: the first byte decides.  Even: port 0, and the byte is
 * replaced by 0x10 (so a test sees the plugin wrote the packet).  Odd: drop.
 */
#include <serpens/nf.h>

/* C99 has no _Static_assert: a negative array size fails the build instead.
 * These are the 1.0 sizes the host's SERPENS_*_V1_0_SIZE literals freeze. */
#define ABI10_ASSERT(name, cond) typedef char abi10_##name[(cond) ? 1 : -1]
ABI10_ASSERT(minor_is_0, SERPENS_ABI_MINOR == 0);
ABI10_ASSERT(descriptor, sizeof(struct serpens_nf_descriptor) == 120);
ABI10_ASSERT(host_api, sizeof(struct serpens_host_api) == 200);
ABI10_ASSERT(ctx, sizeof(struct serpens_nf_ctx) == 48);
ABI10_ASSERT(batch, sizeof(struct serpens_batch) == 48);
ABI10_ASSERT(pkt, sizeof(struct serpens_pkt) == 48);

static int abi10_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    (void)ctx;
    (void)config;
    return SERPENS_OK;
}

static void abi10_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    uint32_t i;
    (void)ctx;
    for (i = 0; i < batch->count; ++i) {
        struct serpens_pkt *pkt = &batch->pkts[i]; /* 1.0: indexed at its sizeof */
        if (batch->labels[i] != batch->self || pkt->len == 0) {
            continue;
        }
        if (pkt->data[0] % 2 != 0) {
            batch->ports[i] = SERPENS_PORT_DROP;
        } else {
            pkt->data[0] = 0x10;
        }
    }
}

static const struct serpens_nf_descriptor abi10_desc = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "abi10",
    .version = "1.0",
    .summary = "built against the frozen ABI 1.0 header",
    .n_ports = 1,
    .init = abi10_init,
    .process = abi10_process,
};

SERPENS_NF_REGISTER(abi10_desc)

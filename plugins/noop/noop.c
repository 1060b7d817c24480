/*
 * noop — the pass-through NF.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "pass"
 *   plugin = "noop"
 *
 * DESCRIPTION
 *   Sends every packet it sees to its default next hop (port 0) without
 *   reading or writing the packet.  It takes no configuration and keeps no
 *   state or counters, so a chain of noops measures the chaining runtime
 *   alone: serpens-bench uses it to cost one NF hop.  Also useful as a
 *   placeholder NF while writing a chain file.
 *
 * PORTS
 *   0  every packet (the runtime resets ports to 0 before each NF, so
 *      process() has nothing to write).
 *
 * Builds against plugin-api/ alone, as C with pedantic warnings.
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
    /* Ports arrive as SERPENS_PORT_DEFAULT: "pass on" needs no store. */
    (void)ctx;
    (void)batch;
}

/* ---- registration ---------------------------------------------------- */

static const struct serpens_nf_descriptor noop_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "noop",
    .version = "1.0",
    .summary = "passes every packet to its default next hop unchanged",
    .n_ports = 1,
    .init = noop_init,
    .process = noop_process,
};

SERPENS_NF_REGISTER(noop_descriptor)

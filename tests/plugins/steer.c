/*
 * steer — picks an output port per packet and tags it like trace does, for
 * branching-chain tests.
 *
 * Config:
 *   by     = "byte" (default) | "proto"
 *   offset = byte offset read when by = "byte" (default 0); port = byte % 4,
 *            and a byte of 0xff means drop.
 *   by = "proto": TCP -> 0, UDP -> 1, anything else -> 2 (from the host's
 *            parse of the packet: serpens_pkt.l4_proto).
 *   tag    = the byte appended (default 0xA0 + label).
 */
#include <serpens/nf.h>

#include <stdlib.h>
#include <string.h>

struct steer_priv {
    int by_proto;
    uint32_t offset;
    int tag;
};

static int steer_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *host = ctx->host;
    struct steer_priv *priv = calloc(1, sizeof(*priv));
    const char *by = "byte";
    int64_t offset = 0, tag = -1;
    if (priv == NULL) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = priv;
    host->config_string(config, "by", &by);
    host->config_int(config, "offset", &offset);
    host->config_int(config, "tag", &tag);
    if (strcmp(by, "byte") != 0 && strcmp(by, "proto") != 0) {
        char where[256] = "?";
        host->config_where(config, "by", where, sizeof where);
        host->log(ctx, SERPENS_LOG_ERROR, "%s: 'by' must be \"byte\" or \"proto\", not \"%s\"", where, by);
        return SERPENS_EINVAL;
    }
    priv->by_proto = strcmp(by, "proto") == 0;
    priv->offset = (uint32_t)offset;
    priv->tag = (int)tag;
    return SERPENS_OK;
}

static void steer_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    const struct steer_priv *priv = ctx->priv;
    uint8_t tag = (uint8_t)(priv->tag >= 0 ? priv->tag : 0xA0 + batch->self);
    uint32_t i;
    for (i = 0; i < batch->count; ++i) {
        struct serpens_pkt *pkt = serpens_batch_pkt(batch, i);
        uint8_t port;
        uint8_t *tail;
        if (batch->labels[i] != batch->self) {
            continue;
        }
        if (priv->by_proto) {
            uint8_t proto = (pkt->flags & SERPENS_PKT_F_PARSED) != 0 ? pkt->l4_proto : 0;
            port = proto == 6 ? 0 : proto == 17 ? 1 : 2;
        } else if (priv->offset < pkt->len) {
            uint8_t byte = pkt->data[priv->offset];
            port = byte == 0xff ? SERPENS_PORT_DROP : (uint8_t)(byte % 4);
        } else {
            port = SERPENS_PORT_DROP;
        }
        tail = ctx->host->pkt_append(pkt, 1);
        if (tail != NULL) {
            *tail = tag;
        }
        batch->ports[i] = port;
    }
}

static void steer_fini(struct serpens_nf_ctx *ctx) { free(ctx->priv); }

static const struct serpens_nf_descriptor steer_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "steer",
    .version = "1.0",
    .summary = "branches packets by a byte or by protocol (tests)",
    .n_ports = 4,
    .init = steer_init,
    .process = steer_process,
    .fini = steer_fini,
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
};

SERPENS_NF_REGISTER(steer_descriptor)

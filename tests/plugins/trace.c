/*
 * trace — appends one tag byte to every packet it sees, so a test can read,
 * from the packet itself, which NFs it went through and in which order.
 *
 * Config: tag (integer 0..255, default: 0xA0 + the NF's label);
 *         by_instance = true: the tag is 0xC0 + the instance id instead, so
 *         a test can tell which instance of a chain ran each packet.
 * Counters: "seen".
 */
#include <serpens/nf.h>

#include <stdlib.h>

struct trace_priv {
    int tag; /* -1: use the label */
    uint64_t *seen;
};

static int trace_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    struct trace_priv *priv = calloc(1, sizeof(*priv));
    int64_t tag = -1;
    if (priv == NULL) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = priv;
    if (ctx->host->config_int(config, "tag", &tag) == SERPENS_EINVAL || tag > 255) {
        char where[256] = "?";
        ctx->host->config_where(config, "tag", where, sizeof where);
        ctx->host->log(ctx, SERPENS_LOG_ERROR, "%s: 'tag' must be an integer 0..255", where);
        return SERPENS_EINVAL;
    }
    priv->tag = (int)tag;
    {
        int by_instance = 0;
        ctx->host->config_bool(config, "by_instance", &by_instance);
        if (by_instance) {
            priv->tag = 0xC0 + (int)(ctx->instance_id & 0x3f);
        }
    }
    priv->seen = ctx->host->counter(ctx, "seen");
    return priv->seen != NULL ? SERPENS_OK : SERPENS_ENOMEM;
}

static void trace_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    struct trace_priv *priv = ctx->priv;
    uint8_t tag = (uint8_t)(priv->tag >= 0 ? priv->tag : 0xA0 + batch->self);
    uint32_t i;
    for (i = 0; i < batch->count; ++i) {
        if (batch->labels[i] == batch->self) {
            uint8_t *tail = ctx->host->pkt_append(serpens_batch_pkt(batch, i), 1);
            if (tail != NULL) {
                *tail = tag;
            } else {
                batch->ports[i] = SERPENS_PORT_DROP;
            }
            ++*priv->seen;
        }
    }
}

/* Counts fini calls so a test can check fini runs for an NF refused after
 * its init succeeded (an unknown config key). */
SERPENS_EXPORT int trace_fini_calls;
int trace_fini_calls = 0;

static void trace_fini(struct serpens_nf_ctx *ctx)
{
    ++trace_fini_calls;
    free(ctx->priv);
    ctx->priv = NULL;
}

static const struct serpens_nf_descriptor trace_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "trace",
    .version = "1.0",
    .summary = "tags each packet with one byte per NF visited",
    .n_ports = 1,
    .init = trace_init,
    .process = trace_process,
    .fini = trace_fini,
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, /* serpens_batch_pkt */
};

SERPENS_NF_REGISTER(trace_descriptor)

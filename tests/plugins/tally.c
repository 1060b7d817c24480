/*
 * tally — counts each flow's packets in the chain's flow table and appends,
 * to every packet it sees, one byte naming its build (TALLY_BUILD) and the
 * flow's count after this packet (4 bytes, little endian).  So a test reads
 * from the packets themselves which build ran each one, and whether a new
 * build carried on the counts of the old one: the hot-swap test.
 *
 * It also keeps a table "seen" (GLOBAL|WRITE|EVENTUAL, value TALLY_VALUE
 * bytes) that it never uses on the data path: a build that declares it with
 * another value size is a build whose state is not compatible.
 *
 * With `marks = [m0, m1, ...]` (0-254) in its config, it loads them into a
 * GLOBAL|READ table "marks" (key: the index) and appends two more bytes to
 * every packet, read from that table per packet: marks[0] and marks[1]
 * (255 for an entry the table does not have).  So a test reads from the
 * packets whose global/read state the instance that ran them had.
 */
#include <serpens/nf.h>

#include <stdio.h>

#ifndef TALLY_BUILD
#define TALLY_BUILD 1
#endif
#ifndef TALLY_VALUE
#define TALLY_VALUE 8
#endif
#define TALLY_TEXT(x) #x
#define TALLY_STRING(x) TALLY_TEXT(x)

static int tally_init(struct serpens_nf_ctx *ctx, const serpens_config *config)
{
    const struct serpens_host_api *h = ctx->host;
    size_t n_marks = 0;
    uint32_t i;
    serpens_table *marks;
    if (h->create_table(ctx, "seen", SERPENS_STATE_GLOBAL | SERPENS_STATE_WRITE | SERPENS_STATE_EVENTUAL, 4,
                        TALLY_VALUE, 64) == NULL) {
        return SERPENS_EINVAL;
    }
    if (h->config_array_size(config, "marks", &n_marks) != SERPENS_OK) {
        return SERPENS_OK;
    }
    marks = h->create_table(ctx, "marks", SERPENS_STATE_GLOBAL | SERPENS_STATE_READ, 4, 4, 64);
    if (marks == NULL || n_marks > 64) {
        return SERPENS_EINVAL;
    }
    for (i = 0; i < n_marks; ++i) {
        char path[32];
        int64_t mark = 0;
        uint32_t value;
        snprintf(path, sizeof(path), "marks[%u]", i);
        if (h->config_int(config, path, &mark) != SERPENS_OK || mark < 0 || mark > 254) {
            h->log(ctx, SERPENS_LOG_ERROR, "%s must be an integer 0-254", path);
            return SERPENS_EINVAL;
        }
        value = (uint32_t)mark;
        if (h->put_state(marks, &i, &value) != SERPENS_OK) {
            return SERPENS_EINVAL;
        }
    }
    ctx->priv = marks;
    return SERPENS_OK;
}

static uint8_t tally_mark(struct serpens_nf_ctx *ctx, uint32_t index)
{
    uint32_t value = 255;
    ctx->host->get_state((serpens_table *)ctx->priv, &index, &value);
    return (uint8_t)value;
}

static void tally_process(struct serpens_nf_ctx *ctx, struct serpens_batch *batch)
{
    uint32_t i;
    for (i = 0; i < batch->count; ++i) {
        uint64_t *count;
        uint8_t *tail;
        uint32_t n;
        if (batch->labels[i] != batch->self) {
            continue;
        }
        count = serpens_batch_flow(batch, i);
        n = count != NULL ? (uint32_t)++ * count : 0;
        tail = ctx->host->pkt_append(serpens_batch_pkt(batch, i), ctx->priv != NULL ? 7 : 5);
        if (tail == NULL) {
            batch->ports[i] = SERPENS_PORT_DROP;
            continue;
        }
        tail[0] = (uint8_t)TALLY_BUILD;
        tail[1] = (uint8_t)n;
        tail[2] = (uint8_t)(n >> 8);
        tail[3] = (uint8_t)(n >> 16);
        tail[4] = (uint8_t)(n >> 24);
        if (ctx->priv != NULL) {
            tail[5] = tally_mark(ctx, 0);
            tail[6] = tally_mark(ctx, 1);
        }
    }
}

static const struct serpens_nf_descriptor tally_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "tally",
    .version = "build " TALLY_STRING(TALLY_BUILD),
    .summary = "counts each flow's packets in the flow table; tags packets with its build and the count",
    .n_ports = 1,
    .init = tally_init,
    .process = tally_process,
    .min_host_minor = SERPENS_ABI_MINOR_FLOW_STATE,
    .flow_state_size = 8,
};

SERPENS_NF_REGISTER(tally_descriptor)

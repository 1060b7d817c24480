/*
 * nat_config.c — reads the nat NF's [nf.config] (SYNOPSIS in nat.c) into
 * struct nat.  Cold path.
 */
#include "nat_internal.h"

#include <stdlib.h>
#include <string.h>

/* Logs "file:line:col: nat: <path>: <message>" and returns SERPENS_EINVAL. */
#define nat_config_error(ctx, cfg, path, ...) serpens_config_error(ctx, cfg, "nat", path, __VA_ARGS__)

static int parse_ipv4(const char *text, uint32_t *out_h)
{
    struct in_addr a;
    if (inet_pton(AF_INET, text, &a) != 1) {
        return -1;
    }
    *out_h = ntohl(a.s_addr);
    return 0;
}

static int add_inside(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct nat *n = arg;
    uint32_t net = 0, mask = 0;
    char why[256];
    if (serpens_parse_prefix4(value, &net, &mask, why, sizeof why) != SERPENS_OK) {
        return nat_config_error(n->ctx, cfg, path, "%s", why);
    }
    if (n->n_inside == NAT_MAX_INSIDE) {
        return nat_config_error(n->ctx, cfg, path, "more than %d inside prefixes", NAT_MAX_INSIDE);
    }
    n->inside[n->n_inside].net = net;
    n->inside[n->n_inside].mask = mask;
    ++n->n_inside;
    return SERPENS_OK;
}

static int add_external(void *arg, const serpens_config *cfg, const char *path, const char *value)
{
    struct nat *n = arg;
    uint32_t first = 0, last = 0;
    const char *dash = strchr(value, '-');
    if (dash != NULL) {
        char a[64];
        size_t la = (size_t)(dash - value);
        if (la >= sizeof a) {
            return nat_config_error(n->ctx, cfg, path, "'%s' is not an address range (a.b.c.d-e.f.g.h)", value);
        }
        memcpy(a, value, la);
        a[la] = '\0';
        if (parse_ipv4(a, &first) != 0 || parse_ipv4(dash + 1, &last) != 0 || last < first) {
            return nat_config_error(n->ctx, cfg, path, "'%s' is not an address range (a.b.c.d-e.f.g.h, low-high)",
                                    value);
        }
    } else {
        uint32_t mask = 0;
        char why[256];
        if (serpens_parse_prefix4(value, &first, &mask, why, sizeof why) != SERPENS_OK) {
            return nat_config_error(n->ctx, cfg, path, "%s (or a range a.b.c.d-e.f.g.h)", why);
        }
        last = first | ~mask;
    }
    if ((uint64_t)last - first + 1 > NAT_MAX_EXTERNAL_IPS - n->n_ext) {
        return nat_config_error(n->ctx, cfg, path, "more than %d external addresses in all", NAT_MAX_EXTERNAL_IPS);
    }
    for (uint64_t ip = first; ip <= last; ++ip) {
        n->ext_ip[n->n_ext++] = (uint32_t)ip;
    }
    return SERPENS_OK;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t fnv1a(uint32_t h, const void *data, size_t len)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < len; ++i) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

int nat_configure(struct nat *n, const serpens_config *cfg)
{
    int rc;
    if ((rc = serpens_config_for_each_string(n->ctx, cfg, "nat", "inside", add_inside, n)) != SERPENS_OK) {
        return rc;
    }
    if ((rc = serpens_config_for_each_string(n->ctx, cfg, "nat", "external", add_external, n)) != SERPENS_OK) {
        return rc;
    }
    qsort(n->ext_ip, n->n_ext, sizeof n->ext_ip[0], cmp_u32);
    for (uint32_t i = 1; i < n->n_ext; ++i) {
        if (n->ext_ip[i] == n->ext_ip[i - 1]) {
            struct in_addr a = {htonl(n->ext_ip[i])};
            return nat_config_error(n->ctx, cfg, "external", "address %s is listed twice", inet_ntoa(a));
        }
    }
    for (uint32_t i = 0; i < n->n_ext; ++i) {
        struct in_addr a = {htonl(n->ext_ip[i])};
        if (nat_inside(n, n->ext_ip[i])) {
            return nat_config_error(n->ctx, cfg, "external", "address %s lies inside an inside prefix", inet_ntoa(a));
        }
        /* No reply could come back to these. */
        const uint32_t ip = n->ext_ip[i];
        if ((ip >> 24) == 0 || (ip >> 24) == 127 || (ip >> 28) >= 0xe) {
            return nat_config_error(n->ctx, cfg, "external",
                                    "address %s is not a unicast address a reply could reach (0/8, 127/8, "
                                    "multicast, 240/4 and broadcast are not)",
                                    inet_ntoa(a));
        }
    }

    int64_t port_lo = 1024, port_hi = 65535;
    size_t n_ports = 0;
    rc = n->host->config_array_size(cfg, "ports", &n_ports);
    if (rc == SERPENS_OK) {
        if (n_ports != 2) {
            return nat_config_error(n->ctx, cfg, "ports", "expected [first, last], got %zu elements", n_ports);
        }
        if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "ports[0]", 1, 65535, &port_lo)) != SERPENS_OK ||
            (rc = serpens_config_int_range(n->ctx, cfg, "nat", "ports[1]", 1, 65535, &port_hi)) != SERPENS_OK) {
            return rc;
        }
        if (port_hi < port_lo) {
            return nat_config_error(n->ctx, cfg, "ports", "last port %lld is below first port %lld", (long long)port_hi,
                                    (long long)port_lo);
        }
    } else if (rc != SERPENS_ENOENT) {
        return nat_config_error(n->ctx, cfg, "ports", "expected [first, last]");
    }
    n->port_min = (uint32_t)port_lo;
    n->n_ports = (uint32_t)(port_hi - port_lo + 1);
    uint64_t items = (uint64_t)n->n_ext * n->n_ports;
    if (items > (uint64_t)NAT_CHUNK_ITEMS * NAT_MAX_CHUNKS) {
        return nat_config_error(n->ctx, cfg, "external", "%llu (address, port) items exceed the limit of %llu",
                                (unsigned long long)items, (unsigned long long)NAT_CHUNK_ITEMS * NAT_MAX_CHUNKS);
    }
    n->n_items = (uint32_t)items;
    n->n_chunks = (n->n_items + NAT_CHUNK_ITEMS - 1) / NAT_CHUNK_ITEMS;

    int64_t max_mappings = 1048576;
    if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "max_mappings", 1, 1ll << 26, &max_mappings)) !=
        SERPENS_OK) {
        return rc;
    }
    n->max_mappings = (uint64_t)max_mappings;
    int64_t rebalance_ms = 0;
    if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", "rebalance_ms", 0, 3600000, &rebalance_ms)) != SERPENS_OK) {
        return rc;
    }
    n->rebalance_ns = (uint64_t)rebalance_ms * 1000000ull;

    static const char *const timeout_keys[NAT_N_TIMEOUTS] = {"timeouts.tcp", "timeouts.tcp_closed", "timeouts.udp",
                                                             "timeouts.icmp"};
    static const int64_t timeout_defaults[NAT_N_TIMEOUTS] = {7440, 240, 300, 60};
    uint64_t shortest = ~0ull;
    for (int t = 0; t < NAT_N_TIMEOUTS; ++t) {
        int64_t s = timeout_defaults[t];
        if ((rc = serpens_config_int_range(n->ctx, cfg, "nat", timeout_keys[t], 1, NAT_MAX_TIMEOUT_S, &s)) !=
            SERPENS_OK) {
            return rc;
        }
        n->timeout_ns[t] = (uint64_t)s * 1000000000ull;
        if (n->timeout_ns[t] < shortest) {
            shortest = n->timeout_ns[t];
        }
    }
    /* Stamps at 1/16 of the shortest timeout cost little precision; sweeps
     * twice per shortest timeout bound how late a mapping is freed. */
    n->refresh_ns = shortest / 16 < NAT_REFRESH_MAX_NS ? shortest / 16 : NAT_REFRESH_MAX_NS;
    n->sweep.period_ns = shortest / 2;

    uint32_t fp = fnv1a(2166136261u, n->ext_ip, (size_t)n->n_ext * sizeof n->ext_ip[0]);
    fp = fnv1a(fp, &n->port_min, sizeof n->port_min);
    n->fingerprint = fnv1a(fp, &n->n_ports, sizeof n->n_ports);
    return SERPENS_OK;
}

/*
 * serpens/nf_util.h — small helpers NF plugins share, header-only.
 *
 * Optional: nothing here is part of the ABI.  Every helper is a static inline
 * function (or a macro) built from serpens/nf.h, the C standard library and
 * (for files) POSIX open/fstat/read, so a plugin compiles it into itself and
 * still links against nothing of the host.  Pure C99, usable from C and C++
 * plugins.
 *
 * Contents:
 *  - unaligned loads and stores of packet fields, as in memory or big-endian;
 *  - Internet checksums: a full one (RFC 1071), partial sums with the
 *    TCP/UDP pseudo header, and incremental updates
 *    (RFC 1624, HC' = ~(~HC + ~m + m'));
 *  - IPv4/IPv6 prefixes: the one parser (host bits refused) and match, for
 *    plugins and the host alike;
 *  - cold-path configuration helpers that log "file:line:col: <nf>: <path>:
 *    <message>" through the host and return SERPENS_EINVAL;
 *  - a bounded reader for the files a config names (rules, signatures):
 *    regular files only, up to a size limit;
 *  - counter registration for a table of names;
 *  - a bulk state lookup that falls back to one get_state per key.
 *
 * Thread safety: the packet and checksum helpers touch only their arguments
 * and may run on any thread.  The configuration and counter helpers call the
 * host's config and counter services, which are for init (the control
 * thread) only.
 */
#ifndef SERPENS_NF_UTIL_H
#define SERPENS_NF_UTIL_H

#include <serpens/nf.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Packet fields                                                             */
/* ------------------------------------------------------------------------ */

/* Loads/stores 16 or 32 bits at any alignment, bytes as they sit in memory
 * (no byte swap: network order stays network order). */
static inline uint16_t serpens_ld16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint32_t serpens_ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void serpens_st16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

static inline void serpens_st32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Big-endian (network order) fields as host integers, at any alignment. */
static inline uint16_t serpens_ld_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline uint32_t serpens_ld_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void serpens_st_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void serpens_st_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An NF's 8-byte word in a flow's area (nf.h, "Per-flow state of the
 * chain"), read into / written from 8 bytes at `word`: one load and one
 * store, never torn, so a crash leaves the old word or the new one.  The
 * store releases: what the NF wrote before it (its table entries) is seen
 * by whoever sees the new word. */
static inline void serpens_flow_word_load(const void *area, void *word)
{
    const uint64_t w = __atomic_load_n((const uint64_t *)area, __ATOMIC_RELAXED);
    memcpy(word, &w, 8);
}

static inline void serpens_flow_word_store(void *area, const void *word)
{
    uint64_t w;
    memcpy(&w, word, 8);
    __atomic_store_n((uint64_t *)area, w, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Internet checksums                                                        */
/* ------------------------------------------------------------------------ */

/*
 * One's complement sums do not depend on byte order as long as every 16-bit
 * word is taken the same way (RFC 1071 §2(B)), so these helpers take and
 * return words as they sit in memory: load a checksum field with
 * serpens_ld16, store the result with serpens_st16.
 */

/* Adds len bytes at data to a running one's complement sum, unfolded.  An
 * odd last byte is padded with zero, so only the last piece of a checksummed
 * range may have an odd length. */
static inline uint64_t serpens_csum_add(uint64_t sum, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    size_t i = 0;
    for (; i + 1 < len; i += 2) {
        sum += serpens_ld16(p + i);
    }
    if (i < len) {
        uint8_t last[2] = {p[i], 0};
        sum += serpens_ld16(last);
    }
    return sum;
}

/* Folds a running sum to 16 bits and complements it: the checksum to store. */
static inline uint16_t serpens_csum_fold(uint64_t sum)
{
    while (sum >> 16) {
        sum = (sum & 0xffffu) + (sum >> 16);
    }
    return (uint16_t)~sum;
}

/* The Internet checksum of len bytes at data (an odd last byte is padded
 * with zero), ready to store in a header whose checksum field was zero; a
 * range that includes a correct checksum gives 0. */
static inline uint16_t serpens_csum(const void *data, size_t len)
{
    return serpens_csum_fold(serpens_csum_add(0, data, len));
}

/* The running sum of the pseudo header TCP, UDP and ICMPv6 checksums cover:
 * the addresses of the IPv4 (v6 = 0) or IPv6 header at ip, the protocol
 * and the L4 length (RFC 793, RFC 768, RFC 8200 §8.1).  Add the L4 bytes
 * with serpens_csum_add and store serpens_csum_fold of the result. */
static inline uint64_t serpens_csum_pseudo(const uint8_t *ip, int v6, uint8_t proto, uint32_t l4_len)
{
    uint8_t tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (v6) {
        serpens_st_be32(tail, l4_len);
        tail[7] = proto;
        return serpens_csum_add(serpens_csum_add(0, ip + 8, 32), tail, 8);
    }
    tail[1] = proto;
    serpens_st_be16(tail + 2, (uint16_t)l4_len);
    return serpens_csum_add(serpens_csum_add(0, ip + 12, 8), tail, 4);
}

/*
 * Incremental checksum updates (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
 * A change is a delta, the sum of ~m + m' over its 16-bit words; deltas of
 * several fields add up (below 2^24), and serpens_csum_apply folds one into
 * a checksum.  Adding the deltas first gives exactly what updating field by
 * field gives, with one fold instead of one per word: a NAT rewriting an
 * address and a port updates two checksums from one address delta.
 */
static inline uint32_t serpens_csum_delta16(uint16_t old, uint16_t now) { return (uint32_t)(uint16_t)~old + now; }

/* The delta of a 32-bit field (an IPv4 address), as two 16-bit words. */
static inline uint32_t serpens_csum_delta32(uint32_t old, uint32_t now)
{
    return serpens_csum_delta16((uint16_t)old, (uint16_t)now) +
           serpens_csum_delta16((uint16_t)(old >> 16), (uint16_t)(now >> 16));
}

/* The checksum hc after the changes whose deltas add up to delta.  Never
 * turns a valid checksum into a wrong one, and keeps the -0/+0 distinction
 * RFC 1624 §3 discusses. */
static inline uint16_t serpens_csum_apply(uint16_t hc, uint32_t delta)
{
    uint32_t s = (uint32_t)(uint16_t)~hc + delta;
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)~s;
}

/* The checksum hc updated for one 16-bit word changed from old to now. */
static inline uint16_t serpens_csum_replace16(uint16_t hc, uint16_t old, uint16_t now)
{
    return serpens_csum_apply(hc, serpens_csum_delta16(old, now));
}

/* The same for a 32-bit field (an IPv4 address). */
static inline uint16_t serpens_csum_replace32(uint16_t hc, uint32_t old, uint32_t now)
{
    return serpens_csum_apply(hc, serpens_csum_delta32(old, now));
}

/* Sets the IPv4 address at ip + addr_at (source 12, destination 16), given
 * in network order, and updates the header checksum incrementally. */
static inline void serpens_ipv4_set_addr(uint8_t *ip, unsigned addr_at, uint32_t new_ip)
{
    const uint32_t old_ip = serpens_ld32(ip + addr_at);
    serpens_st32(ip + addr_at, new_ip);
    serpens_st16(ip + 10, serpens_csum_replace32(serpens_ld16(ip + 10), old_ip, new_ip));
}

/* An L4 checksum hc after changes whose deltas add up to delta.  udp: a
 * zero checksum means "none sent" and stays zero, and a computed zero is
 * sent as 0xffff (RFC 768). */
static inline uint16_t serpens_l4_csum_apply(uint16_t hc, int udp, uint32_t delta)
{
    /* `&`, not `&&`: an NF handling TCP and UDP alike would otherwise branch
     * on the protocol, and mispredict it about every other packet. */
    const int udp_bit = udp != 0;
    if (udp_bit & (hc == 0)) {
        return 0; /* no UDP checksum was sent: nothing to keep right */
    }
    hc = serpens_csum_apply(hc, delta);
    return (udp_bit & (hc == 0)) ? 0xffff : hc; /* zero would mean "no checksum" */
}

/* The same after an address change (delta `address`) that the checksum
 * covers when `pseudo` (TCP, UDP), and a change of a field it covers. */
static inline uint16_t serpens_l4_csum_after(uint16_t hc, int pseudo, int udp, uint32_t address, uint32_t field)
{
    /* A mask, not a branch on the protocol (see serpens_l4_csum_apply). */
    return serpens_l4_csum_apply(hc, udp, (address & (0u - (uint32_t)(pseudo != 0))) + field);
}

/*
 * An L4 checksum hc after its packet's IPv4 address changed from old_ip to
 * new_ip and a 16-bit field it covers (a port, an echo id) from old_field to
 * new_field, all in network order.  pseudo: the checksum covers the
 * addresses (TCP, UDP).  udp: as serpens_l4_csum_apply.
 */
static inline uint16_t serpens_l4_csum_update(uint16_t hc, int pseudo, int udp, uint32_t old_ip, uint32_t new_ip,
                                              uint16_t old_field, uint16_t new_field)
{
    return serpens_l4_csum_after(hc, pseudo, udp, serpens_csum_delta32(old_ip, new_ip),
                                 serpens_csum_delta16(old_field, new_field));
}

/*
 * Rewrites the IPv4 address at ip + addr_at (source 12, destination 16) and
 * the 16-bit field at l4 + port_at (a port, an ICMP echo id), both given and
 * stored in network order, and updates incrementally the IPv4 header checksum
 * and the L4 checksum at l4 + csum_at (TCP 16, UDP 6, ICMP 2).  pseudo: the L4
 * checksum covers the addresses (TCP, UDP).  udp: a zero checksum means "none
 * sent" and stays zero, and a computed zero is sent as 0xffff (RFC 768).
 * The caller has checked that the headers are all there.
 */
static inline void serpens_ipv4_rewrite(uint8_t *ip, unsigned addr_at, uint8_t *l4, unsigned csum_at, unsigned port_at,
                                        int pseudo, int udp, uint32_t new_ip, uint16_t new_port)
{
    const uint32_t address = serpens_csum_delta32(serpens_ld32(ip + addr_at), new_ip);
    const uint32_t port = serpens_csum_delta16(serpens_ld16(l4 + port_at), new_port);
    serpens_st32(ip + addr_at, new_ip);
    serpens_st16(ip + 10, serpens_csum_apply(serpens_ld16(ip + 10), address));
    serpens_st16(l4 + port_at, new_port);
    serpens_st16(l4 + csum_at, serpens_l4_csum_after(serpens_ld16(l4 + csum_at), pseudo, udp, address, port));
}

/* An ICMP error, which quotes the packet it is about: destination
 * unreachable, time exceeded or parameter problem (ICMP), and also packet
 * too big (ICMPv6). */
static inline int serpens_is_icmp_error(const struct serpens_pkt *p)
{
    /* The protocol first: most packets are not ICMP, and their data stays
     * untouched. */
    if ((p->l4_proto != 1 && p->l4_proto != 58) || p->l4_offset == SERPENS_OFFSET_NONE || p->l4_offset >= p->len) {
        return 0;
    }
    const uint8_t type = p->data[p->l4_offset];
    return (p->l4_proto == 1 && (type == 3 || type == 11 || type == 12)) ||
           (p->l4_proto == 58 && type >= 1 && type <= 4);
}

/* ------------------------------------------------------------------------ */
/* IPv4/IPv6 prefixes                                                        */
/* ------------------------------------------------------------------------ */

/* The netmask of an IPv4 prefix length (0..32), in host order, for NFs that
 * keep IPv4 prefixes as host-order net and mask words. */
static inline uint32_t serpens_prefix_mask4(unsigned len) { return len == 0 ? 0 : ~0u << (32 - len); }

/* One meaning everywhere (host.toml, chain files, rules files): a prefix is
 * "a.b.c.d/len", an IPv6 "x::/len", or a bare address (= /32 or /128).  An
 * address with bits set past len is refused, not masked: "10.1.2.3/8" is
 * almost always a typo, and silently reading it as 10.0.0.0/8 in one file
 * and refusing it in another made the same text mean two things.  An
 * IPv4-mapped IPv6 address (::ffff:a.b.c.d) is IPv6 and matches only IPv6
 * packets. */
struct serpens_prefix {
    uint8_t family;   /* 4 or 6 */
    uint8_t len;      /* bits, 0..32 or 0..128 */
    uint8_t addr[16]; /* network order; IPv4 in addr[0..3], the rest zero */
};

/* The longest text serpens_parse_prefix reads: a full IPv6 address with an
 * embedded IPv4 one (45 characters) and "/128". */
#define SERPENS_PREFIX_TEXT_MAX 49

/* Parses text into *out: SERPENS_OK, or SERPENS_EINVAL with why (cut to
 * why_len) saying what is wrong, quoting text, e.g. "'10.1.2.3/8' has host
 * bits set; did you mean 10.0.0.0/8?".  Cold path. */
static inline int serpens_parse_prefix(const char *text, struct serpens_prefix *out, char *why, size_t why_len)
{
    char buf[SERPENS_PREFIX_TEXT_MAX + 1];
    size_t n = 0;
    while (n < sizeof buf && text[n] != '\0') {
        ++n;
    }
    if (n == sizeof buf) {
        snprintf(why, why_len, "'%.*s...' is too long for an IPv4 or IPv6 prefix", SERPENS_PREFIX_TEXT_MAX, text);
        return SERPENS_EINVAL;
    }
    memcpy(buf, text, n + 1);
    char *slash = strchr(buf, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    memset(out, 0, sizeof *out);
    /* ':' decides the family: inet_pton's IPv6 form never lacks one. */
    const int v6 = strchr(buf, ':') != NULL;
    const unsigned max = v6 ? 128u : 32u;
    if (inet_pton(v6 ? AF_INET6 : AF_INET, buf, out->addr) != 1) {
        snprintf(why, why_len,
                 "'%s' is not an IPv4 or IPv6 address or prefix (like 10.0.0.0/8, 2001:db8::/32 or 192.0.2.1)", text);
        return SERPENS_EINVAL;
    }
    unsigned len = max;
    if (slash != NULL) {
        const char *d = slash + 1;
        len = 0;
        /* Decimal digits only: no sign, space or hex strtoul would take. */
        if (*d == '\0' || strlen(d) > 3) {
            len = max + 1;
        }
        for (; *d != '\0' && len <= max; ++d) {
            len = *d >= '0' && *d <= '9' ? len * 10 + (unsigned)(*d - '0') : max + 1;
        }
        if (len > max) {
            snprintf(why, why_len, "'%s' has a bad prefix length (0..%u)", text, max);
            return SERPENS_EINVAL;
        }
    }
    out->family = v6 ? 6 : 4;
    out->len = (uint8_t)len;
    uint8_t net[16];
    int host_bits = 0;
    memcpy(net, out->addr, sizeof net);
    for (unsigned b = len; b < max; ++b) {
        const uint8_t bit = (uint8_t)(0x80u >> (b % 8));
        host_bits |= (net[b / 8] & bit) != 0;
        net[b / 8] &= (uint8_t)~bit;
    }
    if (host_bits) {
        char fix[64] = "?";
        inet_ntop(v6 ? AF_INET6 : AF_INET, net, fix, sizeof fix);
        snprintf(why, why_len, "'%s' has host bits set; did you mean %s/%u?", text, fix, len);
        return SERPENS_EINVAL;
    }
    return SERPENS_OK;
}

/* serpens_parse_prefix for NFs that handle IPv4 only and keep a prefix as
 * host-order words: *net_h and *mask_h (see serpens_prefix_mask4). */
static inline int serpens_parse_prefix4(const char *text, uint32_t *net_h, uint32_t *mask_h, char *why, size_t why_len)
{
    struct serpens_prefix p;
    if (serpens_parse_prefix(text, &p, why, why_len) != SERPENS_OK) {
        return SERPENS_EINVAL;
    }
    if (p.family != 4) {
        snprintf(why, why_len, "'%s' is IPv6; expected an IPv4 address or prefix", text);
        return SERPENS_EINVAL;
    }
    *net_h = serpens_ld_be32(p.addr);
    *mask_h = serpens_prefix_mask4(p.len);
    return SERPENS_OK;
}

/*
 * A rule's address selector, as fw, ids and vpn rules write it: "any" (addr
 * zero, *len 0, which matches every address) or a prefix read by
 * serpens_parse_prefix into addr (16 bytes) and *len.  Addresses of one rule
 * share a family: *family starts at 0, a prefix sets it to 4 or 6, and a
 * prefix of the other family is refused.  SERPENS_OK or SERPENS_EINVAL with
 * why.  Cold path.
 */
static inline int serpens_parse_selector(const char *text, uint8_t *family, uint8_t *addr, uint8_t *len, char *why,
                                         size_t why_len)
{
    struct serpens_prefix p;
    if (strcmp(text, "any") == 0) {
        memset(&p, 0, sizeof p);
    } else if (serpens_parse_prefix(text, &p, why, why_len) != SERPENS_OK) {
        return SERPENS_EINVAL;
    } else if (*family != 0 && *family != p.family) {
        snprintf(why, why_len, "'%s' is IPv%u, the rule's other address IPv%u", text, (unsigned)p.family,
                 (unsigned)*family);
        return SERPENS_EINVAL;
    } else {
        *family = p.family;
    }
    memcpy(addr, p.addr, sizeof p.addr);
    *len = p.len;
    return SERPENS_OK;
}

/* Whether addr (network order, 4 or 16 bytes) lies in the len-bit prefix
 * net; the caller compares families.  Hot path. */
static inline int serpens_prefix_match(const uint8_t *net, unsigned len, const uint8_t *addr)
{
    const unsigned full = len / 8;
    const unsigned rest = len % 8;
    if (memcmp(net, addr, full) != 0) {
        return 0;
    }
    if (rest == 0) {
        return 1;
    }
    const uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (net[full] & mask) == (addr[full] & mask);
}

/* ------------------------------------------------------------------------ */
/* Configuration (init only)                                                 */
/* ------------------------------------------------------------------------ */

/* Writes where path sits in the chain file ("file:line:col", from the host)
 * into buf; when the host cannot say, "chain '<chain>', nf '<name>'". */
static inline void serpens_config_where(const struct serpens_nf_ctx *ctx, const serpens_config *cfg, const char *path,
                                        char *buf, size_t len)
{
    if (ctx->host->config_where(cfg, path, buf, len) != SERPENS_OK || buf[0] == '\0') {
        snprintf(buf, len, "chain '%s', nf '%s'", ctx->chain_name, ctx->nf_name);
    }
}

/* Logs "<where>: <nf>: <path>: <message>" at SERPENS_LOG_ERROR, where is the
 * host's "file:line:col" of path (or "(chain file)"), and returns
 * SERPENS_EINVAL.  Messages longer than 511 bytes are cut. */
#if defined(__GNUC__)
__attribute__((format(printf, 5, 6)))
#endif
static inline int
serpens_config_error(const struct serpens_nf_ctx *ctx, const serpens_config *cfg, const char *nf, const char *path,
                     const char *fmt, ...)
{
    char where[512];
    char message[512];
    if (ctx->host->config_where(cfg, path, where, sizeof where) != SERPENS_OK) {
        snprintf(where, sizeof where, "%s", "(chain file)");
    }
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    ctx->host->log(ctx, SERPENS_LOG_ERROR, "%s: %s: %s: %s", where, nf, path, message);
    return SERPENS_EINVAL;
}

/* An optional integer key within [lo, hi]: SERPENS_OK with *out set, or left
 * at its default when the key is absent; otherwise logs why (another type,
 * out of range) and returns SERPENS_EINVAL. */
static inline int serpens_config_int_range(const struct serpens_nf_ctx *ctx, const serpens_config *cfg, const char *nf,
                                           const char *path, int64_t lo, int64_t hi, int64_t *out)
{
    int64_t v = 0;
    int rc = ctx->host->config_int(cfg, path, &v);
    if (rc == SERPENS_ENOENT) {
        return SERPENS_OK;
    }
    if (rc != SERPENS_OK) {
        return serpens_config_error(ctx, cfg, nf, path, "expected an integer");
    }
    if (v < lo || v > hi) {
        return serpens_config_error(ctx, cfg, nf, path, "%lld is out of range [%lld, %lld]", (long long)v,
                                    (long long)lo, (long long)hi);
    }
    *out = v;
    return SERPENS_OK;
}

/* The longest idle timeout an NF's per-flow state takes, in seconds (a
 * year): longer means never, which is 0, and its nanoseconds would overflow
 * in the arithmetic of whoever adds it to a clock. */
#define SERPENS_MAX_IDLE_TIMEOUT_S 31536000

/* An optional idle timeout in whole seconds, 0 (never) to a year, as
 * nanoseconds: SERPENS_OK with *out_ns set, or left at its default when the
 * key is absent; otherwise logs why and returns SERPENS_EINVAL. */
static inline int serpens_config_idle_timeout(const struct serpens_nf_ctx *ctx, const serpens_config *cfg,
                                              const char *nf, const char *path, uint64_t *out_ns)
{
    int64_t v = 0;
    int rc = ctx->host->config_int(cfg, path, &v);
    if (rc == SERPENS_ENOENT) {
        return SERPENS_OK;
    }
    if (rc != SERPENS_OK || v < 0 || v > SERPENS_MAX_IDLE_TIMEOUT_S) {
        return serpens_config_error(ctx, cfg, nf, path, "expected a number of seconds in 0..%d (a year; 0: never)",
                                    SERPENS_MAX_IDLE_TIMEOUT_S);
    }
    *out_ns = (uint64_t)v * 1000000000ull;
    return SERPENS_OK;
}

/* Called for each string of a string-or-array key with the element's path
 * ("key" or "key[i]", for error messages); a non-OK return stops the walk. */
typedef int (*serpens_config_string_fn)(void *arg, const serpens_config *cfg, const char *path, const char *value);

/* Calls fn for the string at key, or for each string of the array at key.
 * Logs and returns SERPENS_EINVAL when the key is absent, of another type,
 * an empty array or holds a non-string; otherwise returns the first non-OK
 * code of fn, or SERPENS_OK. */
static inline int serpens_config_for_each_string(const struct serpens_nf_ctx *ctx, const serpens_config *cfg,
                                                 const char *nf, const char *key, serpens_config_string_fn fn,
                                                 void *arg)
{
    const struct serpens_host_api *h = ctx->host;
    const char *value = NULL;
    int rc = h->config_string(cfg, key, &value);
    if (rc == SERPENS_OK) {
        return fn(arg, cfg, key, value);
    }
    if (rc == SERPENS_ENOENT) {
        return serpens_config_error(ctx, cfg, nf, key, "required: a string or an array of strings");
    }
    size_t count = 0;
    if (h->config_array_size(cfg, key, &count) != SERPENS_OK) {
        return serpens_config_error(ctx, cfg, nf, key, "expected a string or an array of strings");
    }
    if (count == 0) {
        return serpens_config_error(ctx, cfg, nf, key, "must not be empty");
    }
    for (size_t i = 0; i < count; ++i) {
        char path[128];
        snprintf(path, sizeof path, "%s[%zu]", key, i);
        if (h->config_string(cfg, path, &value) != SERPENS_OK) {
            return serpens_config_error(ctx, cfg, nf, path, "expected a string");
        }
        if ((rc = fn(arg, cfg, path, value)) != SERPENS_OK) {
            return rc;
        }
    }
    return SERPENS_OK;
}

/* ------------------------------------------------------------------------ */
/* Files named by a config (init only)                                       */
/* ------------------------------------------------------------------------ */

/* The size limit NFs use for a rules or signatures file. */
#define SERPENS_CONFIG_FILE_MAX ((size_t)64 << 20)

/*
 * Reads the whole file at path into a malloc'd buffer: SERPENS_OK with
 * *data (NUL-terminated, free() it) and *size set.  Otherwise *data is NULL,
 * err holds "<path>: <why>" (cut to err_len) and the return is
 * SERPENS_ENOENT (cannot open), SERPENS_EINVAL (not a regular file, over
 * max_size bytes, a read error) or SERPENS_ENOMEM.
 *
 * Only regular files: a directory, /dev/zero, a FIFO or a socket is refused
 * after open (the open itself does not block on a FIFO), and the read stops
 * past max_size bytes even when the file grows meanwhile, so the call takes
 * bounded time and memory whatever the path names.  A file every local user
 * may write to (mode o+w) is refused too (SERPENS_EINVAL): any of them could
 * rewrite the rules or settings of a host that often runs as root.
 */
static inline int serpens_read_config_file(const char *path, size_t max_size, char **data, size_t *size, char *err,
                                           size_t err_len)
{
    int flags = O_RDONLY | O_NONBLOCK; /* O_NONBLOCK: a FIFO with no writer must not hang init */
#ifdef O_CLOEXEC
    flags |= O_CLOEXEC;
#endif
    struct stat st;
    char *buf = NULL;
    size_t cap = 0;
    size_t len = 0;
    int fd = -1;
    const char *kind = NULL;
    *data = NULL;
    *size = 0;
    fd = open(path, flags);
    if (fd < 0) {
        snprintf(err, err_len, "%s: cannot read: %s", path, strerror(errno));
        return SERPENS_ENOENT;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(err, err_len, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return SERPENS_EINVAL;
    }
    if (!S_ISREG(st.st_mode)) {
        kind = S_ISDIR(st.st_mode)    ? "a directory"
               : S_ISCHR(st.st_mode)  ? "a character device"
               : S_ISBLK(st.st_mode)  ? "a block device"
               : S_ISFIFO(st.st_mode) ? "a FIFO"
                                      : "a special file";
        snprintf(err, err_len, "%s: is %s, expected a regular file", path, kind);
        close(fd);
        return SERPENS_EINVAL;
    }
    if ((st.st_mode & S_IWOTH) != 0) {
        snprintf(err, err_len,
                 "%s: every local user may write to it (mode %o), and so change what it sets; run chmod o-w on it",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return SERPENS_EINVAL;
    }
    if (st.st_size < 0 || (unsigned long long)st.st_size > (unsigned long long)max_size) {
        snprintf(err, err_len, "%s: %lld bytes, over the limit of %zu bytes", path, (long long)st.st_size, max_size);
        close(fd);
        return SERPENS_EINVAL;
    }
    /* st_size is a hint (a /proc file says 0, a file may grow): read to EOF
     * into a buffer of st_size + 1 bytes, growing it only when more comes,
     * and never holding more than max_size bytes. */
    cap = (size_t)st.st_size + 1;
    buf = (char *)malloc(cap);
    if (buf == NULL) {
        snprintf(err, err_len, "%s: out of memory for %zu bytes", path, cap);
        close(fd);
        return SERPENS_ENOMEM;
    }
    for (;;) {
        char probe[4096];
        const int full = len + 1 >= cap;
        ssize_t got = read(fd, full ? probe : buf + len, full ? sizeof probe : cap - 1 - len);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            snprintf(err, err_len, "%s: cannot read: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return SERPENS_EINVAL;
        }
        if (got == 0) {
            break;
        }
        if ((size_t)got > max_size - len) {
            snprintf(err, err_len, "%s: more than the limit of %zu bytes", path, max_size);
            free(buf);
            close(fd);
            return SERPENS_EINVAL;
        }
        if (full) {
            size_t want = cap * 2 > len + (size_t)got + 1 ? cap * 2 : len + (size_t)got + 1;
            char *grown;
            want = want > max_size + 1 ? max_size + 1 : want;
            grown = (char *)realloc(buf, want);
            if (grown == NULL) {
                snprintf(err, err_len, "%s: out of memory for %zu bytes", path, want);
                free(buf);
                close(fd);
                return SERPENS_ENOMEM;
            }
            buf = grown;
            cap = want;
            memcpy(buf + len, probe, (size_t)got);
        }
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    *data = buf;
    *size = len;
    return SERPENS_OK;
}

/*
 * The file the config string at `key` names, as serpens_read_config_file
 * gives it (a malloc'd, NUL-terminated copy: free() it), where `path` is
 * that string resolved by config_path.  A host with config_file (ABI 1.9)
 * hands every instance of one chain version the same bytes, so a scale-out
 * after the file was edited runs what the chain's other instances run;
 * an older host leaves the file to be read now.
 */
static inline int serpens_config_file_copy(const struct serpens_host_api *h, const serpens_config *cfg, const char *key,
                                           const char *path, size_t max_size, char **data, size_t *size, char *err,
                                           size_t err_len)
{
    const char *bytes = NULL;
    size_t n = 0;
    int rc;
    if (!SERPENS_HOST_HAS(h, config_file)) {
        return serpens_read_config_file(path, max_size, data, size, err, err_len);
    }
    *data = NULL;
    *size = 0;
    if ((rc = h->config_file(cfg, key, max_size, &bytes, &n, err, err_len)) != SERPENS_OK) {
        return rc;
    }
    if ((*data = (char *)malloc(n + 1)) == NULL) {
        snprintf(err, err_len, "%s: out of memory for %zu bytes", path, n + 1);
        return SERPENS_ENOMEM;
    }
    memcpy(*data, bytes, n + 1);
    *size = n;
    return SERPENS_OK;
}

/* ------------------------------------------------------------------------ */
/* Counters (init only)                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Registers the n counters names[0..n) into slots[0..n).  A counter the host
 * refuses goes to spare[i] when spare is not NULL (the NF counts into memory
 * nobody reads, and runs on); with spare NULL the helper logs "<nf>: counter
 * '<name>' refused" and returns SERPENS_ENOMEM at the first refusal.
 */
static inline int serpens_register_counters(struct serpens_nf_ctx *ctx, const char *nf, const char *const *names, int n,
                                            uint64_t **slots, uint64_t *spare)
{
    for (int i = 0; i < n; ++i) {
        slots[i] = ctx->host->counter(ctx, names[i]);
        if (slots[i] != NULL) {
            continue;
        }
        if (spare == NULL) {
            ctx->host->log(ctx, SERPENS_LOG_ERROR, "%s: counter '%s' refused", nf, names[i]);
            return SERPENS_ENOMEM;
        }
        slots[i] = &spare[i];
    }
    return SERPENS_OK;
}

/*
 * For counters kept as an X-macro table, X(SYM, "name", "description"): the
 * X that yields the names, in table order, for serpens_register_counters:
 *
 *     static const char *const lb_counter_names[LB_N_COUNTERS] = {
 *         LB_COUNTERS(SERPENS_COUNTER_NAME)
 *     };
 */
#define SERPENS_COUNTER_NAME(sym, name, desc) name,

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * get_state_bulk when the host has it, else one get_state per key: looks up
 * n (<= 64) keys of key_size bytes laid out back to back, copies the hits to
 * values (value_size bytes each, at the key's index) and returns their bit
 * mask.  Hot path, same thread rules as get_state.
 */
static inline uint64_t serpens_get_state_bulk(const struct serpens_host_api *host, serpens_table *t, const void *keys,
                                              uint32_t n, void *values, size_t key_size, size_t value_size)
{
    if (n == 0) {
        return 0;
    }
    if (host->get_state_bulk != NULL) {
        return host->get_state_bulk(t, keys, n, values);
    }
    uint64_t hit = 0;
    for (uint32_t j = 0; j < n; ++j) {
        if (host->get_state(t, (const unsigned char *)keys + j * key_size, (unsigned char *)values + j * value_size) ==
            SERPENS_OK) {
            hit |= 1ull << j;
        }
    }
    return hit;
}

/*
 * The keys an NF wrote since its last bulk lookup (get_state_bulk), so that a
 * later packet of the same run reads its entry again: the bulk result is
 * older than that write.  The caller gives the storage (cap keys of key_size
 * bytes); a one-word filter keeps the common check (no such key) to a hash.
 * serpens_written_reset before each bulk lookup.
 */
struct serpens_written {
    void *keys;
    uint32_t key_size;
    uint32_t cap;
    uint32_t n;
    int overflow; /* more keys than cap: every key counts as written */
    uint64_t bits;
};

static inline uint64_t serpens_written_bit(const struct serpens_written *w, const void *key)
{
    const unsigned char *p = (const unsigned char *)key;
    uint64_t h = 0;
    uint32_t i = 0;
    for (; i + 8 <= w->key_size; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        h = (h ^ word) * 0x9e3779b97f4a7c15ull;
    }
    for (; i < w->key_size; ++i) {
        h = (h ^ p[i]) * 0x9e3779b97f4a7c15ull;
    }
    return 1ull << (h >> 58);
}

static inline void serpens_written_reset(struct serpens_written *w)
{
    w->n = 0;
    w->overflow = 0;
    w->bits = 0;
}

/* Remembers key.  Beyond cap keys every key counts as written (a re-read
 * is never wrong, only slower): size the storage for the run. */
static inline void serpens_written_add(struct serpens_written *w, const void *key)
{
    if (w->n == w->cap) {
        w->overflow = 1;
        return;
    }
    memcpy((unsigned char *)w->keys + (size_t)w->n * w->key_size, key, w->key_size);
    ++w->n;
    w->bits |= serpens_written_bit(w, key);
}

static inline int serpens_written_has(const struct serpens_written *w, const void *key)
{
    if (w->overflow) {
        return 1;
    }
    if (w->n == 0 || !(w->bits & serpens_written_bit(w, key))) {
        return 0;
    }
    for (uint32_t i = 0; i < w->n; ++i) {
        if (memcmp((const unsigned char *)w->keys + (size_t)i * w->key_size, key, w->key_size) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * A sweep over a table's slots (or any `total` positions) in small slices, for
 * NFs that expire or fold their own entries.  Paced by the batch clock so a
 * whole pass takes period_ns whatever the packet rate: call
 * serpens_sweep_budget once per batch for the positions this batch may visit
 * (at most cap), then serpens_sweep_next for the live entries among them.
 * Runs only when batches arrive.  Zero-initialise; set period_ns (> 0) and,
 * to start the clock, last_ns.
 */
struct serpens_sweep {
    uint64_t pos;       /* next position (slot or item) */
    uint64_t last_ns;   /* batch clock at the last budget handed out */
    uint64_t period_ns; /* one whole pass */
};

static inline uint64_t serpens_sweep_budget(struct serpens_sweep *s, uint64_t total, uint64_t now, uint64_t cap)
{
    if (now < s->last_ns || s->period_ns == 0) {
        s->last_ns = now;
        return 0;
    }
    uint64_t elapsed = now - s->last_ns;
    if (elapsed > s->period_ns) {
        elapsed = s->period_ns;
    }
    /* double: total * elapsed overflows 64 bits for week-long periods */
    uint64_t budget = (uint64_t)((double)total * (double)elapsed / (double)s->period_ns);
    if (budget == 0) {
        return 0; /* too soon: let time accumulate */
    }
    s->last_ns = now;
    return budget < cap ? budget : cap;
}

/*
 * The next live entry of `t` (ABI 1.2 scan_state) within *budget slots of the
 * sweep's position: SERPENS_OK with its key and value copied out, and
 * *budget reduced by the slots passed; SERPENS_ENOENT when those slots hold
 * no more entries.  `slots` is host->table_slots(t).
 */
static inline int serpens_sweep_next(const struct serpens_host_api *host, serpens_table *t, struct serpens_sweep *s,
                                     uint64_t slots, uint64_t *budget, void *key_out, void *value_out)
{
    if (*budget == 0 || slots == 0) {
        return SERPENS_ENOENT;
    }
    const uint64_t before = s->pos;
    const uint32_t max = *budget < UINT32_MAX ? (uint32_t)*budget : UINT32_MAX;
    if (host->scan_state(t, &s->pos, max, key_out, value_out) != SERPENS_OK) {
        *budget = 0;
        return SERPENS_ENOENT;
    }
    uint64_t seen = (s->pos + slots - before % slots) % slots;
    seen = seen == 0 ? slots : seen;
    *budget = seen < *budget ? *budget - seen : 0;
    return SERPENS_OK;
}

#ifdef __cplusplus
}
#endif

#endif /* SERPENS_NF_UTIL_H */

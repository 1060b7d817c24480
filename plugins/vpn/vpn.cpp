/*
 * vpn — IPsec ESP tunnel mode with AES-128-GCM (RFC 4303, RFC 4106).
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "vpn"
 *   plugin = "vpn"
 *   [[nf.config.sa]]              # one table per security association
 *   spi       = 0x1001            # 256..4294967295
 *   direction = "out"             # "out": encrypt toward the peer; "in": decrypt from it
 *   key       = "0x<32 hex digits of AES-128 key><8 hex digits of salt>"   # 20 bytes, RFC 4106
 *   local     = "192.0.2.1"       # this gateway's tunnel address (outer source when out)
 *   remote    = "198.51.100.2"    # the peer's tunnel address (outer destination when out)
 *   src       = "10.1.0.0/16"     # out only: traffic selector, IPv4 or IPv6 prefix (default any)
 *   dst       = "10.2.0.0/16"     #   "
 *   [nf.config]
 *   state = "host"                # "host": sequence numbers and replay windows in the host's
 *                                 # shared memory (default); "local": per instance, from zero
 *                                 # after a restart (so never with a key used before)
 *
 * DESCRIPTION
 *   Outbound: an IPv4/IPv6 packet matching an "out" SA's selectors (first SA
 *   in config order) is wrapped: [L2][outer IPv4][ESP SPI, seq][IV 8][inner IP
 *   packet, padding, pad length, next header][ICV 16], encrypted and
 *   authenticated with the SA's key; nonce = salt || IV, AAD = SPI || seq.
 *   The IV is (instance id << 32 | seq), unique per key even when several
 *   instances share an SA.  The packet grows with the host's pkt_prepend /
 *   pkt_append; the L2 header is kept (its EtherType set to IPv4).
 *   Inbound: an ESP packet (outer IPv4, not a fragment) is looked up by SPI,
 *   checked against a 64-packet anti-replay window (RFC 4303 §3.4.3),
 *   authenticated and decrypted, and the inner packet replaces it (the
 *   window advances only after the ICV verifies).  The packet view is
 *   re-parsed for the inner header so later NFs see the inner 5-tuple.
 *   Anything else (non-IP, no SA matches) passes unchanged.
 *   Drops: unknown SPI, bad ICV, replayed or too-old sequence numbers,
 *   truncated ESP, bad trailer, sequence number exhaustion (no ESN: 2^32-1
 *   packets per SA), no buffer room.
 *
 * STATE (paper Table I)
 *   Both tables are NF_EXPIRY: keyed by SA, never removed for being idle.
 *   "sas"     per-flow/read  key {spi, direction}: index of the SA; the SAs
 *             (keys, addresses, selectors) are read-only after init, and
 *             each instance keeps its own cipher contexts built from them.
 *   "seq"     per-flow/write key {spi, direction}: outbound last sequence
 *             number; inbound highest authenticated number + 64-bit window.
 *   With the host's state API, "seq" lives in the executor's shared memory:
 *   a restarted instance continues the sequence instead of reusing nonces
 *   (fatal for GCM) and keeps its replay window.  Without it (state =
 *   "local") both restart from zero — use fresh keys after a restart then.
 *   Inbound ESP of one tunnel hashes to one instance (outer addresses), so
 *   a window has one writer; outbound packets of one SA may come from several
 *   instances, whose sequence numbers then interleave (the peer's replay
 *   window may drop some): run one instance per outbound SA for strict order.
 *
 * PORTS     0 (everything not dropped).
 * COUNTERS  encrypted, decrypted, bypassed, unknown_spi, bad_icv, replay,
 *           malformed, bad_trailer, seq_exhausted, no_room, state_full.
 */
#include "gcm.h"

#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

namespace {

using serpens_vpn::Gcm;

constexpr uint32_t kEspHeader = 8, kIv = 8, kIcv = 16, kOuter = 20;
constexpr uint64_t kWindow = 64;

struct SaKey {
    uint32_t spi;
    uint32_t dir; // 0 out, 1 in
};
struct SaRef {
    uint32_t index;
    uint32_t pad;
};
struct SeqState {
    uint64_t seq;    // out: last sent; in: highest authenticated
    uint64_t window; // in: bit i = (seq - i) was received
};

struct Sa {
    uint32_t spi = 0;
    bool out = false;
    uint8_t key[16] = {};
    uint8_t salt[4] = {};
    uint8_t local[4] = {}, remote[4] = {};
    uint8_t sel_family = 0; // 0 any, 4, 6 (from src/dst)
    uint8_t src[16] = {}, dst[16] = {};
    uint8_t src_len = 0, dst_len = 0;
    Gcm gcm;
    SeqState local_state{}; // used when state lives in the instance
};

enum Counter {
    C_ENCRYPTED,
    C_DECRYPTED,
    C_BYPASSED,
    C_UNKNOWN_SPI,
    C_BAD_ICV,
    C_REPLAY,
    C_MALFORMED,
    C_BAD_TRAILER,
    C_SEQ_EXHAUSTED,
    C_NO_ROOM,
    C_STATE_FULL,
    C_COUNT
};
const char *const counter_names[C_COUNT] = {"encrypted",     "decrypted", "bypassed",  "unknown_spi",
                                            "bad_icv",       "replay",    "malformed", "bad_trailer",
                                            "seq_exhausted", "no_room",   "state_full"};

struct Vpn {
    std::vector<Sa *> sas;
    const serpens_host_api *api = nullptr;
    serpens_table *sa_table = nullptr;
    serpens_table *seq_table = nullptr;
    uint32_t instance = 0;
    uint64_t *c[C_COUNT] = {};
    uint64_t spare[C_COUNT] = {};
    ~Vpn()
    {
        for (Sa *sa : sas) {
            delete sa;
        }
    }
};

// ---- state: host table or the SA's own copy -----------------------------

void seq_get(const Vpn &v, Sa &sa, SeqState &st) noexcept
{
    SaKey k{sa.spi, sa.out ? 0u : 1u};
    if (v.seq_table == nullptr || v.api->get_state(v.seq_table, &k, &st) != SERPENS_OK) {
        st = v.seq_table == nullptr ? sa.local_state : SeqState{};
    }
}

bool seq_put(Vpn &v, Sa &sa, const SeqState &st) noexcept
{
    if (v.seq_table == nullptr) {
        sa.local_state = st;
        return true;
    }
    SaKey k{sa.spi, sa.out ? 0u : 1u};
    return v.api->put_state(v.seq_table, &k, &st) == SERPENS_OK;
}

Sa *find_inbound(const Vpn &v, uint32_t spi) noexcept
{
    if (v.sa_table != nullptr) {
        SaKey k{spi, 1};
        SaRef ref;
        if (v.api->get_state(v.sa_table, &k, &ref) != SERPENS_OK || ref.index >= v.sas.size()) {
            return nullptr;
        }
        Sa *sa = v.sas[ref.index];
        return sa->spi == spi && !sa->out ? sa : nullptr;
    }
    for (Sa *sa : v.sas) {
        if (!sa->out && sa->spi == spi) {
            return sa;
        }
    }
    return nullptr;
}

Sa *find_outbound(const Vpn &v, const serpens_pkt &p) noexcept
{
    uint8_t family = p.l3_type == SERPENS_L3_IPV4 ? 4 : 6;
    uint32_t l3 = p.l3_offset, alen = family == 4 ? 4 : 16;
    if (l3 + (family == 4 ? 20u : 40u) > p.len) {
        return nullptr;
    }
    const uint8_t *src = p.data + l3 + (family == 4 ? 12 : 8);
    const uint8_t *dst = src + alen;
    for (Sa *sa : v.sas) {
        if (sa->out && (sa->sel_family == 0 || sa->sel_family == family) &&
            serpens_prefix_match(sa->src, sa->src_len, src) && serpens_prefix_match(sa->dst, sa->dst_len, dst)) {
            return sa;
        }
    }
    return nullptr;
}

// Points the view at an IP packet starting at l3 (after decapsulation).
void parse_inner(serpens_pkt &p, uint32_t l3) noexcept
{
    p.l3_offset = static_cast<uint16_t>(l3);
    p.l4_offset = p.payload_offset = SERPENS_OFFSET_NONE;
    p.l4_proto = 0;
    p.flags &= ~(SERPENS_PKT_F_PARSED | SERPENS_PKT_F_FRAGMENT);
    const uint8_t *ip = p.data + l3;
    uint32_t l4 = 0, end = p.len;
    if ((ip[0] >> 4) == 4) {
        p.l3_type = SERPENS_L3_IPV4;
        l4 = l3 + (ip[0] & 0xfu) * 4;
        p.l4_proto = ip[9];
        if ((serpens_ld_be16(ip + 6) & 0x1fff) != 0) {
            p.flags |= SERPENS_PKT_F_PARSED | SERPENS_PKT_F_FRAGMENT;
            return;
        }
    } else {
        p.l3_type = SERPENS_L3_IPV6;
        l4 = l3 + 40;
        p.l4_proto = ip[6];
    }
    if (l4 > end) {
        return;
    }
    p.l4_offset = static_cast<uint16_t>(l4);
    uint32_t hdr = p.l4_proto == 6 && l4 + 20 <= end ? (p.data[l4 + 12] >> 4) * 4u
                   : (p.l4_proto == 17 || p.l4_proto == 1 || p.l4_proto == 58) && l4 + 8 <= end ? 8u
                                                                                                : 0u;
    if (hdr != 0 && l4 + hdr <= end) {
        p.payload_offset = static_cast<uint16_t>(l4 + hdr);
    }
    p.flags |= SERPENS_PKT_F_PARSED;
}

// ---- data path -----------------------------------------------------------

uint8_t encrypt(serpens_nf_ctx *ctx, Vpn &v, Sa &sa, serpens_pkt &p) noexcept
{
    const serpens_host_api *h = ctx->host;
    const uint32_t l2 = p.l3_offset;
    const uint8_t *ip = p.data + l2;
    uint32_t inner = p.l3_type == SERPENS_L3_IPV4 ? serpens_ld_be16(ip + 2) : 40u + serpens_ld_be16(ip + 4);
    if (l2 + inner > p.len || inner < 20) {
        ++*v.c[C_MALFORMED];
        return SERPENS_PORT_DROP;
    }
    SeqState st;
    seq_get(v, sa, st);
    if (st.seq >= 0xffffffffull) {
        ++*v.c[C_SEQ_EXHAUSTED]; // RFC 4303 §3.3.3: never wrap without ESN
        return SERPENS_PORT_DROP;
    }
    ++st.seq;
    // Persist before sending: a crash may skip a number, never reuse one.
    if (!seq_put(v, sa, st)) {
        ++*v.c[C_STATE_FULL];
        return SERPENS_PORT_DROP;
    }
    if (p.len > l2 + inner && h->pkt_trim(&p, p.len - (l2 + inner)) != SERPENS_OK) { // Ethernet padding
        ++*v.c[C_NO_ROOM];
        return SERPENS_PORT_DROP;
    }
    const uint32_t pad = (4 - (inner + 2) % 4) % 4, plain = inner + pad + 2;
    uint8_t *head = h->pkt_prepend(&p, kOuter + kEspHeader + kIv);
    uint8_t *tail = head != nullptr ? h->pkt_append(&p, pad + 2 + kIcv) : nullptr;
    if (tail == nullptr) {
        ++*v.c[C_NO_ROOM];
        return SERPENS_PORT_DROP;
    }
    std::memmove(head, head + kOuter + kEspHeader + kIv, l2); // the L2 header to the new front
    serpens_st_be16(head + l2 - 2, 0x0800);
    uint8_t *outer = head + l2, *esp = outer + kOuter, *iv = esp + kEspHeader, *payload = iv + kIv;
    const uint8_t next_header = p.l3_type == SERPENS_L3_IPV4 ? 4 : 41;
    for (uint32_t i = 0; i < pad; ++i) {
        tail[i] = static_cast<uint8_t>(i + 1); // RFC 4303 §2.4 default padding
    }
    tail[pad] = static_cast<uint8_t>(pad);
    tail[pad + 1] = next_header;
    serpens_st_be32(esp, sa.spi);
    serpens_st_be32(esp + 4, static_cast<uint32_t>(st.seq));
    serpens_st_be32(iv, v.instance);
    serpens_st_be32(iv + 4, static_cast<uint32_t>(st.seq));
    uint8_t nonce[Gcm::nonce_size];
    std::memcpy(nonce, sa.salt, 4);
    std::memcpy(nonce + 4, iv, kIv);
    if (!sa.gcm.seal(nonce, esp, kEspHeader, payload, plain, payload + plain)) {
        ++*v.c[C_NO_ROOM];
        return SERPENS_PORT_DROP;
    }
    const uint32_t total = kOuter + kEspHeader + kIv + plain + kIcv;
    outer[0] = 0x45;
    outer[1] = 0;
    serpens_st_be16(outer + 2, static_cast<uint16_t>(total));
    serpens_st_be16(outer + 4, static_cast<uint16_t>(st.seq));
    serpens_st_be16(outer + 6, 0);
    outer[8] = 64;
    outer[9] = 50; // ESP
    serpens_st_be16(outer + 10, 0);
    std::memcpy(outer + 12, sa.local, 4);
    std::memcpy(outer + 16, sa.remote, 4);
    serpens_st16(outer + 10, serpens_csum(outer, kOuter));
    p.l3_type = SERPENS_L3_IPV4;
    p.l3_offset = static_cast<uint16_t>(l2);
    p.l4_offset = static_cast<uint16_t>(l2 + kOuter);
    p.payload_offset = SERPENS_OFFSET_NONE;
    p.l4_proto = 50;
    p.flags = (p.flags & ~SERPENS_PKT_F_FRAGMENT) | SERPENS_PKT_F_PARSED;
    ++*v.c[C_ENCRYPTED];
    return SERPENS_PORT_DEFAULT;
}

uint8_t decrypt(serpens_nf_ctx *ctx, Vpn &v, serpens_pkt &p) noexcept
{
    const serpens_host_api *h = ctx->host;
    const uint32_t l2 = p.l3_offset;
    uint8_t *outer = p.data + l2;
    const uint32_t ihl = (outer[0] & 0xfu) * 4, total = serpens_ld_be16(outer + 2);
    if (ihl < 20 || total < ihl || l2 + total > p.len || total - ihl < kEspHeader + kIv + 2 + kIcv) {
        ++*v.c[C_MALFORMED];
        return SERPENS_PORT_DROP;
    }
    uint8_t *esp = outer + ihl, *payload = esp + kEspHeader + kIv;
    const uint32_t spi = serpens_ld_be32(esp), seq = serpens_ld_be32(esp + 4);
    const uint32_t cipher = total - ihl - kEspHeader - kIv - kIcv;
    Sa *sa = find_inbound(v, spi);
    if (sa == nullptr) {
        ++*v.c[C_UNKNOWN_SPI];
        return SERPENS_PORT_DROP;
    }
    // Anti-replay before the (costlier) decryption, RFC 4303 §3.4.3.
    SeqState st;
    seq_get(v, *sa, st);
    if (seq == 0 || (seq <= st.seq && (st.seq - seq >= kWindow || (st.window >> (st.seq - seq) & 1)))) {
        ++*v.c[C_REPLAY];
        return SERPENS_PORT_DROP;
    }
    uint8_t nonce[Gcm::nonce_size];
    std::memcpy(nonce, sa->salt, 4);
    std::memcpy(nonce + 4, esp + kEspHeader, kIv);
    if (!sa->gcm.open(nonce, esp, kEspHeader, payload, cipher, payload + cipher)) {
        ++*v.c[C_BAD_ICV];
        return SERPENS_PORT_DROP;
    }
    // Authenticated: only now does the window move.
    if (seq > st.seq) {
        uint64_t shift = seq - st.seq;
        st.window = shift >= kWindow ? 1 : (st.window << shift) | 1;
        st.seq = seq;
    } else {
        st.window |= uint64_t{1} << (st.seq - seq);
    }
    if (!seq_put(v, *sa, st)) {
        ++*v.c[C_STATE_FULL];
        return SERPENS_PORT_DROP;
    }
    const uint32_t pad = payload[cipher - 2], next_header = payload[cipher - 1];
    const uint32_t inner = cipher >= pad + 2 ? cipher - pad - 2 : 0;
    const uint8_t version = inner > 0 ? payload[0] >> 4 : 0;
    if (inner < 20 || !((next_header == 4 && version == 4) || (next_header == 41 && version == 6 && inner >= 40))) {
        ++*v.c[C_BAD_TRAILER];
        return SERPENS_PORT_DROP;
    }
    // [L2][outer][ESP][IV][inner][trailer][ICV] -> [L2][inner]
    const uint32_t strip = ihl + kEspHeader + kIv;
    std::memmove(p.data + strip, p.data, l2);
    if (h->pkt_adj(&p, strip) != SERPENS_OK || h->pkt_trim(&p, p.len - (l2 + inner)) != SERPENS_OK) {
        ++*v.c[C_NO_ROOM];
        return SERPENS_PORT_DROP;
    }
    serpens_st_be16(p.data + l2 - 2, version == 4 ? 0x0800 : 0x86dd);
    parse_inner(p, l2);
    ++*v.c[C_DECRYPTED];
    return SERPENS_PORT_DEFAULT;
}

// ---- config ----------------------------------------------------------------

bool parse_hex(const char *s, uint8_t *out, std::size_t n)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
    }
    if (std::strlen(s) != 2 * n) {
        return false;
    }
    for (std::size_t i = 0; i < n; ++i) {
        unsigned v = 0;
        if (std::sscanf(s + 2 * i, "%2x", &v) != 1 || !std::isxdigit(static_cast<unsigned char>(s[2 * i])) ||
            !std::isxdigit(static_cast<unsigned char>(s[2 * i + 1]))) {
            return false;
        }
        out[i] = static_cast<uint8_t>(v);
    }
    return true;
}

int vpn_init(serpens_nf_ctx *ctx, const serpens_config *cfg)
{
    const serpens_host_api *h = ctx->host;
    Vpn *v = new (std::nothrow) Vpn;
    if (v == nullptr) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = v;
    v->api = h;
    v->instance = ctx->instance_id;
    auto bad = [&](const std::string &key, const std::string &what) {
        char where[512];
        serpens_config_where(ctx, cfg, key.c_str(), where, sizeof where);
        h->log(ctx, SERPENS_LOG_ERROR, "%s: %s", where, what.c_str());
        return SERPENS_EINVAL;
    };
    bool local = false;
    const char *s = nullptr;
    int rc = h->config_string(cfg, "state", &s);
    if (rc == SERPENS_OK) {
        if (std::strcmp(s, "local") != 0 && std::strcmp(s, "host") != 0) {
            return bad("state", "`state` must be \"host\" (the default: sequence numbers in the host's shared "
                                "memory) or \"local\" (per instance)");
        }
        local = std::strcmp(s, "local") == 0;
    }
    if (rc == SERPENS_EINVAL) {
        return bad("state", "`state` must be a string");
    }
    std::size_t n = 0;
    if (h->config_array_size(cfg, "sa", &n) != SERPENS_OK || n == 0) {
        return bad("sa", "vpn needs at least one [[nf.config.sa]] table (spi, direction, key, local, remote)");
    }
    try {
        for (std::size_t i = 0; i < n; ++i) {
            std::string base = "sa[" + std::to_string(i) + "].";
            auto key = [&](const char *k) { return base + k; };
            auto *sa = new Sa;
            v->sas.push_back(sa);
            int64_t spi = 0;
            if (h->config_int(cfg, key("spi").c_str(), &spi) != SERPENS_OK || spi < 256 || spi > 0xffffffffll) {
                return bad(key("spi"), "`spi` must be an integer in 256..4294967295 (1..255 are reserved, RFC 4303)");
            }
            sa->spi = static_cast<uint32_t>(spi);
            if (h->config_string(cfg, key("direction").c_str(), &s) != SERPENS_OK ||
                (std::strcmp(s, "out") != 0 && std::strcmp(s, "in") != 0)) {
                return bad(key("direction"), "`direction` must be \"out\" (encrypt) or \"in\" (decrypt)");
            }
            sa->out = std::strcmp(s, "out") == 0;
            uint8_t km[20];
            if (h->config_string(cfg, key("key").c_str(), &s) != SERPENS_OK || !parse_hex(s, km, sizeof km)) {
                return bad(key("key"), "`key` must be 40 hex digits (0x optional): a 16-byte AES-128 key, then "
                                       "the 4-byte salt (RFC 4106)");
            }
            std::memcpy(sa->key, km, 16);
            std::memcpy(sa->salt, km + 16, 4);
            for (const char *k : {"local", "remote"}) {
                uint8_t *dst = std::strcmp(k, "local") == 0 ? sa->local : sa->remote;
                if (h->config_string(cfg, key(k).c_str(), &s) != SERPENS_OK || inet_pton(AF_INET, s, dst) != 1) {
                    return bad(key(k), std::string("`") + k + "` must be the IPv4 address of a tunnel end point");
                }
                // A tunnel end is one host: no ESP packet goes to or from these.
                const uint8_t first = dst[0];
                if (first == 0 || first == 127 || first >= 224) {
                    return bad(key(k), std::string("`") + k + "` " + s +
                                           " is not a unicast address (0/8, 127/8, multicast, 240/4 and broadcast "
                                           "are not)");
                }
            }
            if (std::memcmp(sa->local, sa->remote, 4) == 0) {
                return bad(key("remote"), "`remote` is `local`: a tunnel has two ends");
            }
            for (const char *k : {"src", "dst"}) {
                rc = h->config_string(cfg, key(k).c_str(), &s);
                if (rc == SERPENS_ENOENT) {
                    continue;
                }
                bool src = std::strcmp(k, "src") == 0;
                if (!sa->out) {
                    return bad(key(k), std::string("`") + k + "` is a traffic selector of \"out\" SAs only");
                }
                if (rc != SERPENS_OK) {
                    return bad(key(k), std::string("`") + k +
                                           "` must be an IPv4 or IPv6 prefix (e.g. \"10.1.0.0/16\") or \"any\"");
                }
                char why[256];
                if (serpens_parse_selector(s, &sa->sel_family, src ? sa->src : sa->dst,
                                           src ? &sa->src_len : &sa->dst_len, why, sizeof why) != SERPENS_OK) {
                    return bad(key(k), std::string("`") + k + "`: " + why);
                }
            }
            for (std::size_t j = 0; j < i; ++j) {
                if (v->sas[j]->spi == sa->spi && v->sas[j]->out == sa->out) {
                    return bad(key("spi"), "two SAs with the same spi and direction");
                }
            }
            if (!sa->gcm.init(sa->key)) {
                return bad(key("key"), "OpenSSL could not set up AES-128-GCM");
            }
        }
    } catch (const std::bad_alloc &) {
        return SERPENS_ENOMEM;
    }
    if (!local) {
        // Keyed by SA, not by flow: the host's idle expiry must never take
        // them.  An SA quiet for longer than the flow timeout would lose its
        // inbound entry (every later packet an unknown SPI) and its sequence
        // number, which would restart at 0 and reuse GCM nonces.
        const uint32_t never_idle = SERPENS_STATE_PER_FLOW | SERPENS_STATE_NF_EXPIRY;
        v->sa_table = h->create_table(ctx, "sas", never_idle | SERPENS_STATE_READ, sizeof(SaKey), sizeof(SaRef), 256);
        v->seq_table =
            h->create_table(ctx, "seq", never_idle | SERPENS_STATE_WRITE, sizeof(SaKey), sizeof(SeqState), 256);
        if (v->sa_table == nullptr || v->seq_table == nullptr) {
            // Never a silent fallback to per-instance sequence numbers: after
            // a restart they would reuse GCM nonces under the same key.
            h->log(ctx, SERPENS_LOG_ERROR,
                   "the host could not create the vpn tables (state = \"local\" keeps them per instance, "
                   "restarting from zero: only with fresh keys)");
            return SERPENS_ENOTSUP;
        }
        for (uint32_t i = 0; i < v->sas.size(); ++i) {
            SaKey k{v->sas[i]->spi, v->sas[i]->out ? 0u : 1u};
            SaRef ref{i, 0};
            if (h->put_state(v->sa_table, &k, &ref) != SERPENS_OK) {
                h->log(ctx, SERPENS_LOG_ERROR, "cannot store SA %u in the host's table", v->sas[i]->spi);
                return SERPENS_ENOSPC;
            }
        }
    }
    serpens_register_counters(ctx, "vpn", counter_names, C_COUNT, v->c, v->spare);
    h->log(ctx, SERPENS_LOG_INFO, "%zu SAs, %s state", v->sas.size(),
           v->seq_table != nullptr ? "host" : "per-instance");
    return SERPENS_OK;
}

void vpn_process(serpens_nf_ctx *ctx, serpens_batch *b)
{
    Vpn &v = *static_cast<Vpn *>(ctx->priv);
    for (uint32_t i = 0; i < b->count; ++i) {
        if (b->labels[i] != b->self) {
            continue;
        }
        serpens_pkt &p = *serpens_batch_pkt(b, i);
        if (!(p.flags & SERPENS_PKT_F_PARSED) || (p.l3_type != SERPENS_L3_IPV4 && p.l3_type != SERPENS_L3_IPV6)) {
            ++*v.c[C_BYPASSED];
            continue;
        }
        if (p.l3_type == SERPENS_L3_IPV4 && p.l4_proto == 50) {
            b->ports[i] = (p.flags & SERPENS_PKT_F_FRAGMENT) ? (++*v.c[C_MALFORMED], uint8_t{SERPENS_PORT_DROP})
                                                             : decrypt(ctx, v, p);
            continue;
        }
        Sa *sa = find_outbound(v, p);
        if (sa == nullptr) {
            ++*v.c[C_BYPASSED];
            continue;
        }
        b->ports[i] = encrypt(ctx, v, *sa, p);
    }
}

void vpn_fini(serpens_nf_ctx *ctx)
{
    delete static_cast<Vpn *>(ctx->priv);
    ctx->priv = nullptr;
}

const serpens_nf_descriptor vpn_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "vpn",
    .version = "1.0",
    .summary = "IPsec ESP tunnel mode, AES-128-GCM (RFC 4303/4106), 64-packet anti-replay window",
    .flags = 0,
    .n_ports = 1,
    .reserved0 = 0,
    .init = vpn_init,
    .process = vpn_process,
    .fini = vpn_fini,
    .split = nullptr, // no global/write tables
    .merge = nullptr,
    .update = nullptr,
    .reserved = {},
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, // serpens_batch_pkt
    .reserved1 = 0,
    .reserved2 = 0,
    .flow_state_size = 0, // keeps no per-flow state in the chain's flow table
    .reserved3 = 0,
    .flow_expired = nullptr,
    .flow_visit = nullptr,
    .flow_visit_ms = 0,
    .reserved4 = 0,
    .table_layouts = nullptr,
    .n_table_layouts = 0,
    .reserved5 = 0,
};

} // namespace

extern "C" {
SERPENS_NF_REGISTER(vpn_descriptor)
}

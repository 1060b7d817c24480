/*
 * fw — a 5-tuple firewall: first-match rules, a per-flow verdict cache and an
 * optional stateful mode.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "fw"
 *   plugin = "fw"
 *   [nf.config]
 *   rules      = "../rules/fw.rules"  # required; relative to the chain file
 *   stateful   = false     # true: admit the replies of connections opened through allow rules
 *   non_ip     = "deny"    # "allow" | "deny": packets the host did not parse as IPv4/IPv6
 *   cache_size = 1048576   # flows in the verdict cache (and the connection table)
 *   idle_timeout = 300     # seconds; expiry of the per-instance cache (state = "local")
 *   state      = "host"    # "host": per-flow tables in the host's shared memory (default);
 *                          # "local": per-instance caches, lost when the instance restarts
 *
 * DESCRIPTION
 *   Rules (format in fw_rules.h, example conf/rules/fw.rules) match protocol,
 *   IPv4/IPv6 source and destination prefixes and port ranges; the first match
 *   decides: allow -> port 0, `allow suspicious` -> port 1 (to branch the chain,
 *   e.g. into an IDS), deny -> dropped; no match -> the file's `default`.
 *   A malformed rules file fails init with "file:line: what was expected".
 *   Every instance of a chain version runs on the file as its first instance
 *   read it (host ABI 1.9); an edit takes effect at `serpensctl reload`.
 *
 *   The first packet of a flow is classified by tuple-space search (one hash
 *   lookup per distinct prefix-length pair, see fw_rules.h; a per-tuple bit
 *   filter answers most misses without touching the map) and its verdict is
 *   cached by the directional 5-tuple; every later packet costs one cache
 *   lookup, whatever the number of rules.  Cached verdicts carry a fingerprint
 *   of the rules file, so a host restarted with other rules re-decides.
 *
 *   Stateful mode: a flow allowed by a rule (or an allow default) opens a
 *   connection; a packet the rules deny is admitted when it is the reverse
 *   5-tuple of an open connection (a reply).  Connections expire with the
 *   host's per-flow idle timeout.  An ICMP or ICMPv6 error the rules deny is
 *   admitted when it goes to the sender of the packet it quotes and that
 *   packet belongs to an open connection (RELATED, as conntrack says), so
 *   path MTU discovery and traceroute work through a default-deny policy;
 *   errors are decided one by one, never cached.  Non-first IP fragments
 *   carry no ports and are classified on addresses and protocol alone.
 *
 * STATE (paper Table I)
 *   rules        global/read  — per instance, parsed at init (read-only after)
 *   per flow     8 B of the chain's flow table (1.5 hosts, state = "host"):
 *                the verdict of each direction of the flow (verdict + 1,
 *                why; 1 B each) and the rules fingerprint both were
 *                decided under, one word.  The host
 *                looked the flow up for the whole chain, so a packet of a
 *                known flow costs fw no lookup; a stateful reply is admitted
 *                when the flow's other direction opened the connection.
 *                SCTP flows are classified per packet (the host's flow key
 *                has no SCTP ports).
 *   "verdicts"   per-flow/read  (key 40 B 5-tuple, value 8 B) — written once
 *                per flow; older hosts and state = "local" only
 *   "conns"      per-flow/write (stateful only; key: the expected reply 5-tuple);
 *                with the flow table, only ICMP errors (RELATED) and flows the
 *                full flow table left out read it
 *   With state = "host" the state lives in the host's shared memory and
 *   survives instance restarts, and init fails when the host cannot create
 *   it; with state = "local" the tables are per-instance caches.
 *
 * PORTS   0 allowed, 1 allowed + suspicious, DROP denied.
 * COUNTERS
 *   allowed, suspicious, denied, replies (admitted as replies), related (ICMP
 *   errors admitted for the open connection they quote), cache_hits,
 *   cache_misses, malformed (IP packet whose L4 header is cut), non_ip,
 *   cache_full (a verdict the host table had no room for; still applied).
 */
#include "flow_table.h"
#include "fw_rules.h"

#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <cstring>
#include <new>
#include <string>

namespace {

using namespace serpens_fw;

// The cache key: the directional 5-tuple, 40 bytes, padding zeroed.
struct FlowKey {
    uint8_t family;
    uint8_t proto;
    uint8_t has_ports;
    uint8_t pad0;
    uint16_t sport, dport; // host order
    uint8_t src[16];
    uint8_t dst[16];
};
static_assert(sizeof(FlowKey) == 40);

enum : uint8_t { V_ALLOW = 0, V_SUSPICIOUS = 1, V_DENY = 2 };
enum : uint8_t { WHY_RULE = 0, WHY_DEFAULT = 1, WHY_REPLY = 2, WHY_RELATED = 3 };

struct Verdict {
    uint8_t verdict;
    uint8_t why;
    uint16_t pad;
    uint32_t gen; // the rules fingerprint it was decided under
};
static_assert(sizeof(Verdict) == 8);

struct Conn {
    uint64_t opened_ns;
    uint32_t gen;
    uint32_t pad;
};

// Its state in the chain's flow table (a 1.5 host): the verdict of each
// direction of the flow and the rules fingerprint both were decided under,
// one 8-byte word written in one store (never torn), so that an entry of
// FW -> MON -> NAT stays two cache lines.  code[d] is the verdict + 1: the
// zeroed area of a new flow has none.  [0]: the direction of the flow's
// first packet, [1]: its replies.
struct FlowVerdicts {
    uint8_t code[2];
    uint8_t why[2];
    uint32_t gen;
};
static_assert(sizeof(FlowVerdicts) == 8);
constexpr uint16_t kStored = 1;

enum Counter {
    C_ALLOWED,
    C_SUSPICIOUS,
    C_DENIED,
    C_REPLIES,
    C_RELATED,
    C_HITS,
    C_MISSES,
    C_MALFORMED,
    C_NON_IP,
    C_CACHE_FULL,
    C_COUNT
};
const char *const counter_names[C_COUNT] = {"allowed",    "suspicious",   "denied",    "replies", "related",
                                            "cache_hits", "cache_misses", "malformed", "non_ip",  "cache_full"};

struct Fw {
    RuleSet rules;
    Classifier classifier;
    FlowTable verdicts;
    FlowTable conns;
    bool chain_flows = false; // verdicts live in the chain's flow table
    bool stateful = false;
    uint8_t non_ip_port = SERPENS_PORT_DROP;
    uint64_t *c[C_COUNT] = {};
    uint64_t spare[C_COUNT] = {}; // where counters go if the host refuses one
    // One run of packets for a bulk verdict lookup (fw_process).
    FlowKey keys[FlowTable::kMaxBulk];
    Verdict cached[FlowTable::kMaxBulk];
    uint32_t at[FlowTable::kMaxBulk];
    // Verdict keys written (put or deleted) by decide() since the bulk
    // lookup: their looked-up values may be stale.
    FlowKey written_keys[2 * FlowTable::kMaxBulk];
    serpens_written written{written_keys, sizeof(FlowKey), 2 * FlowTable::kMaxBulk, 0, 0, 0};
};

uint8_t port_of(uint8_t verdict)
{
    return verdict == V_ALLOW ? SERPENS_PORT_DEFAULT : verdict == V_SUSPICIOUS ? 1 : SERPENS_PORT_DROP;
}

// One batch's counts, added to the published counters at its end.  A
// packet's verdict is one increment of `settled` (by verdict and reason):
// four counters bumped through their pointers per packet were a fifth of
// fw's instructions in serpens-host.
struct Tally {
    uint64_t n[C_COUNT] = {};
    uint64_t settled[4][4] = {}; // [verdict][why], both masked to 2 bits

    void settle(const Verdict &v) noexcept { ++settled[v.verdict & 3u][v.why & 3u]; }

    void publish(const Fw &fw) noexcept
    {
        for (unsigned verdict = 0; verdict < 4; ++verdict) {
            for (unsigned why = 0; why < 4; ++why) {
                const uint64_t k = settled[verdict][why];
                n[verdict == V_DENY ? C_DENIED : C_ALLOWED] += k;
                n[C_SUSPICIOUS] += verdict == V_SUSPICIOUS ? k : 0;
                n[C_REPLIES] += why == WHY_REPLY ? k : 0;
                n[C_RELATED] += why == WHY_RELATED ? k : 0;
            }
        }
        for (unsigned c = 0; c < C_COUNT; ++c) {
            if (n[c] != 0) {
                *fw.c[c] += n[c];
            }
        }
    }
};

enum class KeyResult { ok, non_ip, malformed };

// Reads the 5-tuple out of the host-parsed view, bounds-checked.
KeyResult make_key(const serpens_pkt &p, FlowKey &k) noexcept
{
    std::memset(&k, 0, sizeof k);
    if (!(p.flags & SERPENS_PKT_F_PARSED) || (p.l3_type != SERPENS_L3_IPV4 && p.l3_type != SERPENS_L3_IPV6)) {
        return KeyResult::non_ip;
    }
    uint32_t l3 = p.l3_offset;
    if (p.l3_type == SERPENS_L3_IPV4) {
        if (l3 + 20 > p.len) {
            return KeyResult::malformed;
        }
        k.family = 4;
        std::memcpy(k.src, p.data + l3 + 12, 4);
        std::memcpy(k.dst, p.data + l3 + 16, 4);
    } else {
        if (l3 + 40 > p.len) {
            return KeyResult::malformed;
        }
        k.family = 6;
        std::memcpy(k.src, p.data + l3 + 8, 16);
        std::memcpy(k.dst, p.data + l3 + 24, 16);
    }
    k.proto = p.l4_proto;
    bool porty = k.proto == 6 || k.proto == 17 || k.proto == 132;
    if (porty && !(p.flags & SERPENS_PKT_F_FRAGMENT)) {
        uint32_t l4 = p.l4_offset;
        if (l4 == SERPENS_OFFSET_NONE || l4 + 4 > p.len) {
            return KeyResult::malformed;
        }
        k.has_ports = 1;
        k.sport = static_cast<uint16_t>(p.data[l4] << 8 | p.data[l4 + 1]);
        k.dport = static_cast<uint16_t>(p.data[l4 + 2] << 8 | p.data[l4 + 3]);
    }
    return KeyResult::ok;
}

FlowKey reversed(const FlowKey &k) noexcept
{
    FlowKey r = k;
    std::memcpy(r.src, k.dst, 16);
    std::memcpy(r.dst, k.src, 16);
    r.sport = k.dport;
    r.dport = k.sport;
    return r;
}

// What the rules (or the file's default) say of flow k.
Verdict rule_verdict(const Fw &fw, const FlowKey &k) noexcept
{
    PacketKey pk;
    pk.family = k.family;
    pk.proto = k.proto;
    pk.has_ports = k.has_ports != 0;
    pk.sport = k.sport;
    pk.dport = k.dport;
    std::memcpy(pk.src, k.src, 16);
    std::memcpy(pk.dst, k.dst, 16);
    int32_t idx = fw.classifier.classify(pk);
    Verdict v{};
    v.gen = fw.rules.fingerprint;
    if (idx >= 0) {
        const Rule &r = fw.rules.rules[static_cast<uint32_t>(idx)];
        v.verdict = r.action == Action::deny ? V_DENY : r.suspicious ? V_SUSPICIOUS : V_ALLOW;
        v.why = WHY_RULE;
    } else {
        v.verdict = fw.rules.default_action == Action::deny ? V_DENY : V_ALLOW;
        v.why = WHY_DEFAULT;
    }
    return v;
}

// Cache miss: classify, consult/open connections, remember the verdict (in
// the verdicts table; with the chain's flow table, the caller does).
Verdict decide(Fw &fw, const FlowKey &k, uint64_t now) noexcept
{
    Verdict v = rule_verdict(fw, k);
    if (fw.stateful) {
        if (v.verdict == V_DENY) {
            Conn c;
            if (fw.conns.get(&k, &c, now) == SERPENS_OK && c.gen == fw.rules.fingerprint) {
                v.verdict = V_ALLOW;
                v.why = WHY_REPLY;
            }
        } else {
            FlowKey rk = reversed(k);
            Conn c{now, fw.rules.fingerprint, 0};
            if (fw.conns.put(&rk, &c, now) != SERPENS_OK) {
                ++*fw.c[C_CACHE_FULL];
            }
            if (!fw.chain_flows) {
                fw.verdicts.del(&rk, now); // a reply denied earlier is re-decided
            }
        }
    }
    if (!fw.chain_flows && fw.verdicts.put(&k, &v, now) != SERPENS_OK) {
        ++*fw.c[C_CACHE_FULL];
    }
    return v;
}

FlowVerdicts load_flow(const FlowVerdicts *flow) noexcept
{
    FlowVerdicts f;
    serpens_flow_word_load(flow, &f);
    return f;
}

void store_flow(FlowVerdicts *flow, const FlowVerdicts &f) noexcept { serpens_flow_word_store(flow, &f); }

// Direction d's verdict (pad kStored when there is one).
Verdict load_verdict(const FlowVerdicts *flow, unsigned d) noexcept
{
    const FlowVerdicts f = load_flow(flow);
    Verdict v{};
    if (f.code[d] != 0) {
        v.verdict = static_cast<uint8_t>(f.code[d] - 1);
        v.why = f.why[d];
        v.pad = kStored;
        v.gen = f.gen;
    }
    return v;
}

// Stores direction d's verdict; the other direction's goes when it was
// decided under other rules (`clear_other`: in any case).
void store_verdict(FlowVerdicts *flow, unsigned d, const Verdict &v, bool clear_other = false) noexcept
{
    FlowVerdicts f = load_flow(flow);
    if (clear_other || f.gen != v.gen) {
        f.code[1 - d] = 0;
        f.why[1 - d] = 0;
    }
    f.code[d] = static_cast<uint8_t>(v.verdict + 1);
    f.why[d] = v.why;
    f.gen = v.gen;
    store_flow(flow, f);
}

bool current(const Fw &fw, const Verdict &v) noexcept { return v.pad == kStored && v.gen == fw.rules.fingerprint; }

// Cache miss with the flow's entry (`flow`, nullptr when the table had no
// room; `dir` 1 for a reply): as decide(), the other direction of the flow
// being the connection a reply belongs to.
Verdict decide_in_flow(Fw &fw, const FlowKey &k, FlowVerdicts *flow, unsigned dir, uint64_t now) noexcept
{
    if (flow == nullptr) {
        ++*fw.c[C_CACHE_FULL];
        return decide(fw, k, now); // connections are still in conns
    }
    Verdict v = rule_verdict(fw, k);
    bool clear_other = false;
    if (fw.stateful) {
        const Verdict other = load_verdict(flow, 1 - dir);
        if (v.verdict == V_DENY) {
            // A reply: the other direction opened the connection.
            if (current(fw, other) && other.verdict != V_DENY && (other.why == WHY_RULE || other.why == WHY_DEFAULT)) {
                v.verdict = V_ALLOW;
                v.why = WHY_REPLY;
            }
        } else {
            // Opens a connection: a reply denied earlier is re-decided, and
            // ICMP errors quoting this flow find it (conns).
            clear_other = current(fw, other) && other.verdict == V_DENY;
            const FlowKey rk = reversed(k);
            Conn c{now, fw.rules.fingerprint, 0};
            if (fw.conns.put(&rk, &c, now) != SERPENS_OK) {
                ++*fw.c[C_CACHE_FULL];
            }
        }
    }
    store_verdict(flow, dir, v, clear_other);
    return v;
}

// ---- the NF ------------------------------------------------------------

int fw_init(serpens_nf_ctx *ctx, const serpens_config *cfg)
{
    const serpens_host_api *h = ctx->host;
    Fw *fw = new (std::nothrow) Fw;
    if (fw == nullptr) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = fw;
    auto bad = [&](const char *key, const char *what) {
        char where[512];
        serpens_config_where(ctx, cfg, key, where, sizeof where);
        h->log(ctx, SERPENS_LOG_ERROR, "%s: %s", where, what);
        return SERPENS_EINVAL;
    };

    char path[4096];
    int rc = h->config_path(cfg, "rules", path, sizeof path);
    if (rc == SERPENS_ENOENT) {
        return bad("rules", "fw needs `rules = \"<file>\"` (a rules file, relative to the chain file)");
    }
    if (rc != SERPENS_OK) {
        return bad("rules", "`rules` must be a string: the path of a rules file");
    }
    int flag = 0;
    if ((rc = h->config_bool(cfg, "stateful", &flag)) == SERPENS_EINVAL) {
        return bad("stateful", "`stateful` must be true or false");
    }
    fw->stateful = flag != 0;
    const char *s = nullptr;
    if ((rc = h->config_string(cfg, "non_ip", &s)) == SERPENS_OK) {
        if (std::strcmp(s, "allow") != 0 && std::strcmp(s, "deny") != 0) {
            return bad("non_ip", "`non_ip` must be \"allow\" or \"deny\"");
        }
        fw->non_ip_port = std::strcmp(s, "allow") == 0 ? SERPENS_PORT_DEFAULT : SERPENS_PORT_DROP;
    } else if (rc == SERPENS_EINVAL) {
        return bad("non_ip", "`non_ip` must be \"allow\" or \"deny\"");
    }
    int64_t cache_size = 1048576;
    uint64_t idle_ns = 300 * 1000000000ull;
    if (h->config_int(cfg, "cache_size", &cache_size) == SERPENS_EINVAL || cache_size < 16 ||
        cache_size > (int64_t{1} << 26)) {
        return bad("cache_size", "`cache_size` must be an integer in 16..67108864");
    }
    if (serpens_config_idle_timeout(ctx, cfg, "fw", "idle_timeout", &idle_ns) != SERPENS_OK) {
        return SERPENS_EINVAL;
    }
    bool local = false;
    if ((rc = h->config_string(cfg, "state", &s)) == SERPENS_OK) {
        if (std::strcmp(s, "local") != 0 && std::strcmp(s, "host") != 0) {
            return bad("state", "`state` must be \"host\" (the default: tables in the host's shared memory) or "
                                "\"local\" (per-instance caches)");
        }
        local = std::strcmp(s, "local") == 0;
    }
    if (rc == SERPENS_EINVAL) {
        return bad("state", "`state` must be a string");
    }

    std::string err;
    try {
        err = load_rules(h, cfg, "rules", path, fw->rules);
        if (err.empty()) {
            fw->classifier.build(fw->rules);
        }
    } catch (const std::exception &e) {
        err = std::string(path) + ": " + e.what();
    }
    if (!err.empty()) {
        h->log(ctx, SERPENS_LOG_ERROR, "%s", err.c_str());
        return SERPENS_EINVAL;
    }

    // On a 1.5 host the verdicts live in the chain's flow table: the host
    // has looked the flow up already, so a packet of a known flow costs no
    // lookup of fw's own.
    fw->chain_flows = !local && SERPENS_HOST_HAS(h, flow_state);
    if (fw->chain_flows) {
        if ((rc = h->flow_state(ctx, sizeof(FlowVerdicts))) != SERPENS_OK) {
            return rc;
        }
    } else if (!fw->verdicts.open(ctx, "verdicts", SERPENS_STATE_PER_FLOW | SERPENS_STATE_READ, sizeof(FlowKey),
                                  sizeof(Verdict), static_cast<uint64_t>(cache_size), local, idle_ns)) {
        return SERPENS_ENOMEM;
    }
    if (fw->stateful && !fw->conns.open(ctx, "conns", SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE, sizeof(FlowKey),
                                        sizeof(Conn), static_cast<uint64_t>(cache_size), local, idle_ns)) {
        return SERPENS_ENOMEM;
    }
    if (fw->rules.rules.empty() && !fw->rules.default_given) {
        // A truncated or emptied file most likely: fail closed, but say so.
        h->log(ctx, SERPENS_LOG_WARN, "%s has no rules and no 'default' line: every packet is denied", path);
    }
    serpens_register_counters(ctx, "fw", counter_names, C_COUNT, fw->c, fw->spare);
    h->log(ctx, SERPENS_LOG_INFO, "%zu rules from %s (default %s, %zu classifier tuples, %s, verdicts in %s)",
           fw->rules.rules.size(), path, fw->rules.default_action == Action::deny ? "deny" : "allow",
           fw->classifier.tuples(), fw->stateful ? "stateful" : "stateless",
           fw->chain_flows                                      ? "the chain's flow table"
           : fw->verdicts.backend() == FlowTable::Backend::host ? "host tables"
                                                                : "per-instance caches");
    return SERPENS_OK;
}

// Packet i's flow key; false (its port and counter set) when it has none.
bool key_of(const Fw &fw, Tally &t, serpens_batch *b, uint32_t i, FlowKey &k) noexcept
{
    KeyResult kr = make_key(*serpens_batch_pkt(b, i), k);
    if (kr == KeyResult::ok) {
        return true;
    }
    if (kr == KeyResult::non_ip) {
        ++t.n[C_NON_IP];
        b->ports[i] = fw.non_ip_port;
    } else {
        ++t.n[C_MALFORMED];
        b->ports[i] = SERPENS_PORT_DROP;
    }
    return false;
}

// Sets packet i's port from its verdict and counts it.
void settle(Tally &t, serpens_batch *b, uint32_t i, const Verdict &v) noexcept
{
    b->ports[i] = port_of(v.verdict);
    t.settle(v);
}

// The ports of a quoted packet starting its L4 header at `l4`, for the
// protocols that have them; false when the quote is cut before them.
bool quoted_ports(const serpens_pkt &p, uint32_t l4, bool later_fragment, FlowKey &q) noexcept
{
    if ((q.proto != 6 && q.proto != 17 && q.proto != 132) || later_fragment) {
        return true;
    }
    if (l4 + 4 > p.len) {
        return false;
    }
    q.has_ports = 1;
    q.sport = static_cast<uint16_t>(p.data[l4] << 8 | p.data[l4 + 1]);
    q.dport = static_cast<uint16_t>(p.data[l4 + 2] << 8 | p.data[l4 + 3]);
    return true;
}

// The flow key of the packet an ICMP error quotes (as make_key would give
// it); false when the quote is cut short.  An IPv6 quote's extension
// headers are not followed: its key then names the first one, which no
// connection has.
bool quoted_key(const serpens_pkt &p, FlowKey &q) noexcept
{
    std::memset(&q, 0, sizeof q);
    const uint32_t at = p.l4_offset + 8; // past the ICMP header
    const uint8_t *ip = p.data + at;
    if (p.l3_type == SERPENS_L3_IPV4) {
        const uint32_t ihl = at < p.len ? (ip[0] & 15u) * 4u : 0;
        if (at + 20 > p.len || (ip[0] >> 4) != 4 || ihl < 20) {
            return false;
        }
        q.family = 4;
        q.proto = ip[9];
        std::memcpy(q.src, ip + 12, 4);
        std::memcpy(q.dst, ip + 16, 4);
        return quoted_ports(p, at + ihl, ((ip[6] & 0x1f) << 8 | ip[7]) != 0, q);
    }
    if (at + 40 > p.len || (ip[0] >> 4) != 6) {
        return false;
    }
    q.family = 6;
    q.proto = ip[6];
    std::memcpy(q.src, ip + 8, 16);
    std::memcpy(q.dst, ip + 24, 16);
    return quoted_ports(p, at + 40, false, q);
}

// Stateful mode: an ICMP error the rules deny is admitted when it goes to
// the sender of the packet it quotes and that packet belongs to an open
// connection (conntrack's RELATED), so path MTU discovery and traceroute
// work through a default-deny firewall.  Errors are decided one by one and
// never cached: the verdict depends on the quote, not on the error's own
// addresses.
void apply_icmp_error(Fw &fw, Tally &t, serpens_batch *b, uint32_t i, const FlowKey &k, uint64_t now) noexcept
{
    Verdict v = rule_verdict(fw, k);
    FlowKey q;
    if (v.verdict == V_DENY && quoted_key(*serpens_batch_pkt(b, i), q) && q.family == k.family &&
        std::memcmp(q.src, k.dst, sizeof q.src) == 0) {
        const FlowKey reply = reversed(q);
        Conn c;
        if (fw.conns.get(&reply, &c, now) == SERPENS_OK && c.gen == fw.rules.fingerprint) {
            v.verdict = V_ALLOW;
            v.why = WHY_RELATED;
        }
    }
    settle(t, b, i, v);
}

// Packet i of flow k, given its cached verdict when `hit`: decides on a miss
// (or a verdict of older rules), sets the port, counts.
void apply(Fw &fw, Tally &t, serpens_batch *b, uint32_t i, const FlowKey &k, Verdict v, bool hit, uint64_t now) noexcept
{
    if (hit && v.gen == fw.rules.fingerprint) {
        ++t.n[C_HITS];
    } else {
        ++t.n[C_MISSES];
        v = decide(fw, k, now);
    }
    settle(t, b, i, v);
}

// One bulk verdict lookup per run of up to 64 packets.  A packet then sees
// what a get of its own would have: a miss, or a key that decide() wrote or
// deleted for an earlier packet of the run (its flow's verdict, or the
// reverse flow's), is looked up again.
void fw_process_bulk(Fw &fw, Tally &t, serpens_batch *b, uint64_t now) noexcept
{
    uint32_t i = 0;
    while (i < b->count) {
        uint32_t n = 0;
        for (; i < b->count && n < FlowTable::kMaxBulk; ++i) {
            if (b->labels[i] != b->self || !key_of(fw, t, b, i, fw.keys[n])) {
                continue;
            }
            if (fw.stateful && serpens_is_icmp_error(serpens_batch_pkt(b, i))) {
                apply_icmp_error(fw, t, b, i, fw.keys[n], now);
                continue;
            }
            fw.at[n++] = i;
        }
        if (n == 0) {
            continue;
        }
        uint64_t hits = fw.verdicts.get_bulk(fw.keys, n, fw.cached);
        serpens_written_reset(&fw.written);
        for (uint32_t j = 0; j < n; ++j) {
            const FlowKey &k = fw.keys[j];
            Verdict v = fw.cached[j];
            bool hit = (hits >> j) & 1;
            if (!hit || serpens_written_has(&fw.written, &k)) {
                hit = fw.verdicts.get(&k, &v, now) == SERPENS_OK;
            }
            if (!hit || v.gen != fw.rules.fingerprint) {
                serpens_written_add(&fw.written, &k);
                if (fw.stateful) {
                    const FlowKey r = reversed(k);
                    serpens_written_add(&fw.written, &r);
                }
            }
            apply(fw, t, b, fw.at[j], k, v, hit, now);
        }
    }
}

// With the chain's flow table: each packet's verdict is in its flow's entry.
// SCTP is classified packet by packet: the host's flow key has no SCTP ports,
// so one entry may hold flows the rules tell apart.
void fw_process_chain_flows(Fw &fw, Tally &t, serpens_batch *b, uint64_t now) noexcept
{
    const serpens_flow_view flows = serpens_batch_flow_view(b);
    for (uint32_t i = 0; i < b->count; ++i) {
        if (b->labels[i] != b->self) {
            continue;
        }
        // A packet with an entry parsed as IP, so its key is well formed:
        // a current verdict needs no key (an ICMP error is judged by the
        // flow it quotes, SCTP packet by packet).
        const serpens_pkt &p = *serpens_batch_pkt(b, i);
        auto *area = static_cast<FlowVerdicts *>(serpens_flow_area(&flows, i));
        const unsigned dir = (serpens_flow_flags(&flows, i) & SERPENS_FLOW_REPLY) != 0 ? 1 : 0;
        const bool judged_by_quote = fw.stateful && serpens_is_icmp_error(&p);
        if (area != nullptr && p.l4_proto != 132 && !judged_by_quote) {
            const Verdict v = load_verdict(area, dir);
            if (current(fw, v)) {
                ++t.n[C_HITS];
                settle(t, b, i, v);
                continue;
            }
        }
        FlowKey k;
        if (!key_of(fw, t, b, i, k)) {
            continue;
        }
        if (judged_by_quote) {
            apply_icmp_error(fw, t, b, i, k, now);
            continue;
        }
        // A miss: no entry, no current verdict in it, or SCTP.
        ++t.n[C_MISSES];
        settle(t, b, i, k.proto == 132 ? decide(fw, k, now) : decide_in_flow(fw, k, area, dir, now));
    }
}

// Without bulk lookups: one get per packet.
void fw_process_each(Fw &fw, Tally &t, serpens_batch *b, uint64_t now) noexcept
{
    for (uint32_t i = 0; i < b->count; ++i) {
        if (b->labels[i] != b->self) {
            continue;
        }
        FlowKey k;
        if (!key_of(fw, t, b, i, k)) {
            continue;
        }
        if (fw.stateful && serpens_is_icmp_error(serpens_batch_pkt(b, i))) {
            apply_icmp_error(fw, t, b, i, k, now);
            continue;
        }
        Verdict v;
        bool hit = fw.verdicts.get(&k, &v, now) == SERPENS_OK;
        apply(fw, t, b, i, k, v, hit, now);
    }
}

void fw_process(serpens_nf_ctx *ctx, serpens_batch *b)
{
    Fw &fw = *static_cast<Fw *>(ctx->priv);
    const uint64_t now = b->now_ns;
    Tally t;
    if (fw.chain_flows) {
        fw_process_chain_flows(fw, t, b, now);
    } else if (fw.verdicts.has_bulk()) {
        fw_process_bulk(fw, t, b, now);
    } else {
        fw_process_each(fw, t, b, now);
    }
    t.publish(fw);
}

void fw_fini(serpens_nf_ctx *ctx)
{
    delete static_cast<Fw *>(ctx->priv);
    ctx->priv = nullptr;
}

// ---- registration ------------------------------------------------------

const serpens_nf_descriptor fw_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "fw",
    .version = "1.1",
    .summary = "5-tuple firewall: first-match rules, per-flow verdict cache, optional stateful replies",
    .flags = 0,
    .n_ports = 2,
    .reserved0 = 0,
    .init = fw_init,
    .process = fw_process,
    .fini = fw_fini,
    .split = nullptr, // no global/write tables: no state-manager hooks
    .merge = nullptr,
    .update = nullptr,
    .reserved = {},
    .min_host_minor = SERPENS_ABI_MINOR_PKT_STRIDE, // serpens_batch_pkt
    .reserved1 = 0,
    .reserved2 = 0,
    .flow_state_size = 0, // asked for in init (flow_state) on a 1.5 host
    .reserved3 = 0,
    .flow_expired = nullptr, // a verdict holds nothing to give back
    .flow_visit = nullptr,
    .flow_visit_ms = 0,
    .reserved4 = 0,
    .table_layouts = nullptr,
    .n_table_layouts = 0,
    .reserved5 = 0,
};

} // namespace

extern "C" {
SERPENS_NF_REGISTER(fw_descriptor)
}

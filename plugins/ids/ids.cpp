/*
 * ids — signature matching over flow payloads with Hyperscan in streaming
 * mode, so a signature split across packets of one flow is still found.
 *
 * SYNOPSIS
 *   [[nf]]
 *   name   = "ids"
 *   plugin = "ids"
 *   [nf.config]
 *   rules        = "../rules/ids.rules"  # required; relative to the chain file
 *   max_flows    = 16384   # streams kept per instance (bounded; LRU eviction)
 *   idle_timeout = 120     # seconds after which a flow's stream is forgotten
 *
 * RULES (a subset of Snort syntax; one rule per line, '#' comments)
 *   alert <proto> <src> <sport> -> <dst> <dport> (<options>)
 *   proto  tcp | udp | ip (any of tcp/udp)
 *   src, dst   any | IPv4/IPv6 address or prefix;  sport, dport  any | N | LO:HI
 *   `<>` instead of `->` matches both directions.
 *   options, each ending in ';':
 *     msg:"text";            free text (logged at init)
 *     content:"abc|0d 0a|";  a literal; |..| holds hex bytes
 *     nocase;                the content is matched case-insensitively
 *     pcre:"/regex/flags";   flags i (caseless), s (dot matches \n), m (multiline)
 *     sid:N;                 required, unique, 1..2^31-1
 *     rev:N; classtype:x;    accepted and ignored
 *   Exactly one content or pcre per rule (v1; Snort ANDs several — not yet).
 *   A malformed file fails init with "file:line: what was expected".
 *   Every instance of a chain version runs on the file as its first instance
 *   read it (host ABI 1.9); an edit takes effect at `serpensctl reload`.
 *
 * DESCRIPTION
 *   TCP/UDP payloads (the bytes after the L4 header up to the IP length) are
 *   fed, in arrival order, into one Hyperscan stream per direction of a flow
 *   (no TCP reassembly: out-of-order segments are scanned as they come).
 *   Each rule reports at most once per stream (HS_FLAG_SINGLEMATCH); the
 *   packet that completes a match leaves on port 1 (e.g. to a drop, a
 *   monitor or a mirror), every other packet on port 0.  Packets without a
 *   TCP/UDP payload pass on port 0 unscanned.  Where Hyperscan cannot run on
 *   the CPU (hs_valid_platform fails: it needs SSSE3), init fails.
 *
 * STATE (paper Table I)
 *   signatures  global/read: compiled once per instance at init, read-only.
 *   streams     per-flow/write: Hyperscan stream state holds pointers, so it
 *               cannot live in the host's shared-memory tables; each instance
 *               keeps a bounded pool of pre-opened streams (max_flows), with
 *               idle expiry and eviction when it runs out (hs_reset_stream:
 *               no allocation per flow).
 *   per flow    16 B of the chain's flow table: for each direction, the
 *               pool slot of its stream and the tag the slot had when it was
 *               given, so the flow's own entry finds its streams with no
 *               lookup of ids' own; a tag that no longer matches (the slot
 *               went to another flow, another instance owns the flow now, or
 *               the process restarted) starts a new stream.  The host's
 *               expiry gives the slots back (flow_expired).  A packet without
 *               an entry (the chain's table full, flow_full = "pass") finds
 *               its stream in a 4-way set-associative index of the same pool
 *               keyed by the directional 5-tuple, LRU within the set.
 *               Nothing per-flow survives an instance restart: a signature
 *               split across the restart point is missed; later matches in
 *               the same flow are found (hs_compress_stream into a host
 *               table would lift this — not done in v1).
 *
 * PORTS     0 clean, 1 matched a signature.
 * COUNTERS  scanned (packets with payload), alerts (packets sent to port 1),
 *           matches (rule matches), sid_<N> per rule (the first 48 rules of
 *           the file; the host allows 64 counters per NF), evicted (streams
 *           recycled while still live), scan_errors.
 */
#include <serpens/nf.h>
#include <serpens/nf_util.h>

#include <hs/hs.h>

#include <cctype>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include <sys/random.h>

namespace {

constexpr unsigned kWays = 4;
constexpr std::size_t kMaxSidCounters = 48;

struct Rule {
    uint32_t sid = 0;
    uint32_t line = 0;
    int proto = -1;    // -1 tcp or udp, 6, 17
    bool both = false; // <>
    uint8_t family = 0;
    uint8_t src[16] = {}, dst[16] = {};
    uint8_t src_len = 0, dst_len = 0;
    uint16_t sport_lo = 0, sport_hi = 65535, dport_lo = 0, dport_hi = 65535;
    std::string msg;
    std::string expr;
    unsigned flags = 0;
    uint64_t *counter = nullptr;
};

struct FlowKey {
    uint8_t family, proto;
    uint16_t sport, dport;
    uint16_t pad;
    uint8_t src[16], dst[16];
};
static_assert(sizeof(FlowKey) == 40);

struct Slot {
    FlowKey key;      // for the 5-tuple index; family 0 when a flow entry holds it
    uint64_t last_ns; // 0: free
    hs_stream_t *stream;
    uint32_t tag; // changes whenever the slot goes to another flow direction
};

// ids' area in a flow entry: per direction (0: as the flow's first packet,
// 1: reply), slot + 1 of its stream (0: none) and the slot's tag then.  Tags
// start at a random value in each instance, so an area written by another
// instance or an earlier process (or torn by a crash) matches no slot here.
struct FlowArea {
    uint32_t slot1[2];
    uint32_t tag[2];
};
static_assert(sizeof(FlowArea) == 16);

enum Counter { C_SCANNED, C_ALERTS, C_MATCHES, C_EVICTED, C_SCAN_ERRORS, C_COUNT };
const char *const counter_names[C_COUNT] = {"scanned", "alerts", "matches", "evicted", "scan_errors"};

struct Ids {
    std::vector<Rule> rules;
    hs_database_t *db = nullptr;
    hs_scratch_t *scratch = nullptr;
    std::vector<Slot> slots;
    std::vector<uint32_t> free_slots; // for flow entries: given back by expiry
    uint32_t hand = 0;                // the next slot a flow entry takes when none is free
    uint32_t next_tag = 0;            // random at init: tags of another process never match
    uint64_t mask = 0;
    uint64_t idle_ns = 0;
    uint64_t *c[C_COUNT] = {};
    uint64_t spare[C_COUNT + 1] = {};
    ~Ids()
    {
        for (Slot &s : slots) {
            if (s.stream != nullptr) {
                hs_close_stream(s.stream, scratch, nullptr, nullptr);
            }
        }
        hs_free_scratch(scratch);
        hs_free_database(db);
    }
};

// What the match callback needs about the packet being scanned.
struct ScanCtx {
    Ids *ids;
    const FlowKey *key;
    bool alerted;
};

// ---- rules file -------------------------------------------------------------

std::string at(const std::string &file, uint32_t line, const std::string &what)
{
    return file + ":" + std::to_string(line) + ": " + what;
}

bool parse_ports(const std::string &s, uint16_t &lo, uint16_t &hi)
{
    if (s == "any") {
        return true;
    }
    auto num = [](const std::string &t, unsigned long &v) {
        char *end = nullptr;
        v = std::strtoul(t.c_str(), &end, 10);
        return !t.empty() && *end == '\0' && v <= 65535;
    };
    unsigned long a = 0, b = 0;
    auto colon = s.find(':');
    if (colon == std::string::npos) {
        if (!num(s, a)) {
            return false;
        }
        b = a;
    } else if (!num(s.substr(0, colon), a) || !num(s.substr(colon + 1), b) || a > b) {
        return false;
    }
    lo = static_cast<uint16_t>(a);
    hi = static_cast<uint16_t>(b);
    return true;
}

// content:"..." -> a Hyperscan expression matching the bytes literally.
bool content_to_expr(const std::string &c, std::string &expr)
{
    static const char hexd[] = "0123456789abcdef";
    auto emit = [&](unsigned char b) {
        expr += "\\x";
        expr += hexd[b >> 4];
        expr += hexd[b & 15];
    };
    bool in_hex = false;
    std::string hexbuf;
    for (char ch : c) {
        if (ch == '|') {
            if (in_hex) {
                if (hexbuf.size() % 2 != 0) {
                    return false;
                }
                for (std::size_t i = 0; i < hexbuf.size(); i += 2) {
                    emit(static_cast<unsigned char>(std::stoul(hexbuf.substr(i, 2), nullptr, 16)));
                }
                hexbuf.clear();
            }
            in_hex = !in_hex;
        } else if (in_hex) {
            if (std::isxdigit(static_cast<unsigned char>(ch))) {
                hexbuf += ch;
            } else if (ch != ' ') {
                return false;
            }
        } else {
            emit(static_cast<unsigned char>(ch)); // every byte escaped: no metacharacter survives
        }
    }
    return !in_hex && !expr.empty();
}

// Splits "(k:v; k2; ...)" honouring quotes and backslash escapes.
bool split_options(const std::string &body, std::vector<std::pair<std::string, std::string>> &out)
{
    std::string cur;
    bool quoted = false;
    for (std::size_t i = 0; i < body.size(); ++i) {
        char ch = body[i];
        // Snort escapes only '"', ';' and '\\' inside values; any other
        // backslash belongs to the value (a pcre's \. or \/ must survive).
        if (ch == '\\' && quoted && i + 1 < body.size() &&
            (body[i + 1] == '"' || body[i + 1] == ';' || body[i + 1] == '\\')) {
            cur += body[++i];
            continue;
        }
        if (ch == '"') {
            quoted = !quoted;
            cur += ch;
            continue;
        }
        if (ch == ';' && !quoted) {
            std::size_t b = cur.find_first_not_of(" \t");
            if (b == std::string::npos) {
                return false;
            }
            cur = cur.substr(b);
            auto colon = cur.find(':');
            std::string k = cur.substr(0, colon), v = colon == std::string::npos ? "" : cur.substr(colon + 1);
            while (!k.empty() && std::isspace(static_cast<unsigned char>(k.back()))) {
                k.pop_back();
            }
            std::size_t vb = v.find_first_not_of(" \t");
            v = vb == std::string::npos ? "" : v.substr(vb);
            while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) {
                v.pop_back();
            }
            out.emplace_back(k, v);
            cur.clear();
            continue;
        }
        cur += ch;
    }
    return !quoted && cur.find_first_not_of(" \t") == std::string::npos;
}

bool unquote(const std::string &v, std::string &out)
{
    if (v.size() < 2 || v.front() != '"' || v.back() != '"') {
        return false;
    }
    out = v.substr(1, v.size() - 2);
    return true;
}

std::string parse_rules(const std::string &text, const std::string &file, std::vector<Rule> &rules)
{
    std::istringstream in(text);
    std::string line;
    uint32_t lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        // Parts go on as C strings: a NUL would cut one short unseen.
        if (line.find('\0') != std::string::npos) {
            return at(file, lineno, "a NUL byte: a rules file is text");
        }
        std::size_t b = line.find_first_not_of(" \t\r");
        if (b == std::string::npos || line[b] == '#') {
            continue;
        }
        line = line.substr(b);
        auto open = line.find('('), close = line.rfind(')');
        if (open == std::string::npos || close == std::string::npos || close < open ||
            line.find_first_not_of(" \t\r", close + 1) != std::string::npos) {
            return at(file, lineno, "expected 'alert <proto> <src> <sport> -> <dst> <dport> (<options>)'");
        }
        std::istringstream head(line.substr(0, open));
        std::string action, proto, src, sport, dir, dst, dport, extra;
        head >> action >> proto >> src >> sport >> dir >> dst >> dport;
        if (action != "alert") {
            return at(file, lineno, "expected 'alert' at the start of a rule, got '" + action + "'");
        }
        if (dport.empty() || (head >> extra)) {
            return at(file, lineno, "expected '<proto> <src> <sport> -> <dst> <dport>' before the options");
        }
        Rule r;
        r.line = lineno;
        if (proto == "tcp") {
            r.proto = 6;
        } else if (proto == "udp") {
            r.proto = 17;
        } else if (proto != "ip") {
            return at(file, lineno, "expected protocol tcp, udp or ip, got '" + proto + "'");
        }
        if (dir != "->" && dir != "<>") {
            return at(file, lineno, "expected direction '->' or '<>', got '" + dir + "'");
        }
        r.both = dir == "<>";
        char why[256];
        if (serpens_parse_selector(src.c_str(), &r.family, r.src, &r.src_len, why, sizeof why) != SERPENS_OK ||
            serpens_parse_selector(dst.c_str(), &r.family, r.dst, &r.dst_len, why, sizeof why) != SERPENS_OK) {
            return at(file, lineno, why);
        }
        if (!parse_ports(sport, r.sport_lo, r.sport_hi) || !parse_ports(dport, r.dport_lo, r.dport_hi)) {
            return at(file, lineno, "expected a port as 'any', N or LO:HI (0..65535)");
        }
        std::vector<std::pair<std::string, std::string>> opts;
        if (!split_options(line.substr(open + 1, close - open - 1), opts)) {
            return at(file, lineno, "expected options as 'key:value;' each ending in ';' with balanced quotes");
        }
        bool have_pattern = false, have_sid = false;
        for (auto &[k, v] : opts) {
            std::string s;
            if (k == "msg") {
                if (!unquote(v, r.msg)) {
                    return at(file, lineno, "expected msg:\"text\";");
                }
            } else if (k == "content" || k == "pcre") {
                if (have_pattern) {
                    return at(file, lineno, "only one content or pcre per rule is supported");
                }
                have_pattern = true;
                if (!unquote(v, s)) {
                    return at(file, lineno, "expected " + k + ":\"...\";");
                }
                if (k == "content") {
                    if (!content_to_expr(s, r.expr)) {
                        return at(file, lineno, "expected content with balanced |hex| bytes, e.g. \"GET|20|/\"");
                    }
                } else {
                    auto last = s.rfind('/');
                    if (s.size() < 3 || s.front() != '/' || last == 0) {
                        return at(file, lineno, "expected pcre:\"/regex/flags\";");
                    }
                    r.expr = s.substr(1, last - 1);
                    for (char f : s.substr(last + 1)) {
                        if (f == 'i') {
                            r.flags |= HS_FLAG_CASELESS;
                        } else if (f == 's') {
                            r.flags |= HS_FLAG_DOTALL;
                        } else if (f == 'm') {
                            r.flags |= HS_FLAG_MULTILINE;
                        } else {
                            return at(file, lineno,
                                      std::string("unsupported pcre flag '") + f + "' (supported: i, s, m)");
                        }
                    }
                }
            } else if (k == "nocase") {
                if (!have_pattern) {
                    return at(file, lineno, "'nocase' must follow a content");
                }
                r.flags |= HS_FLAG_CASELESS;
            } else if (k == "sid") {
                char *end = nullptr;
                unsigned long sid = std::strtoul(v.c_str(), &end, 10);
                if (v.empty() || *end != '\0' || sid == 0 || sid > 0x7fffffffUL) {
                    return at(file, lineno, "expected sid:N; with N in 1..2147483647");
                }
                r.sid = static_cast<uint32_t>(sid);
                have_sid = true;
            } else if (k != "rev" && k != "classtype" && k != "priority" && k != "reference") {
                return at(file, lineno,
                          "unsupported option '" + k +
                              "' (supported: msg, content, nocase, pcre, sid, rev, classtype)");
            }
        }
        if (!have_pattern) {
            return at(file, lineno, "a rule needs a content:\"...\" or pcre:\"/.../\" option");
        }
        if (!have_sid) {
            return at(file, lineno, "a rule needs sid:N;");
        }
        for (const Rule &o : rules) {
            if (o.sid == r.sid) {
                return at(file, lineno,
                          "sid " + std::to_string(r.sid) + " already used on line " + std::to_string(o.line));
            }
        }
        rules.push_back(std::move(r));
    }
    if (rules.empty()) {
        return file + ": no rules (an IDS without signatures is a mistake in the chain)";
    }
    return "";
}

// ---- data path ----------------------------------------------------------------

bool header_matches_dir(const Rule &r, const uint8_t *src, const uint8_t *dst, uint16_t sport, uint16_t dport)
{
    return serpens_prefix_match(r.src, r.src_len, src) && serpens_prefix_match(r.dst, r.dst_len, dst) &&
           sport >= r.sport_lo && sport <= r.sport_hi && dport >= r.dport_lo && dport <= r.dport_hi;
}

bool header_matches(const Rule &r, const FlowKey &k)
{
    if ((r.proto >= 0 && r.proto != k.proto) || (r.family != 0 && r.family != k.family)) {
        return false;
    }
    return header_matches_dir(r, k.src, k.dst, k.sport, k.dport) ||
           (r.both && header_matches_dir(r, k.dst, k.src, k.dport, k.sport));
}

int on_match(unsigned int id, unsigned long long, unsigned long long, unsigned int, void *ctx)
{
    auto *sc = static_cast<ScanCtx *>(ctx);
    Rule &r = sc->ids->rules[id];
    if (header_matches(r, *sc->key)) {
        ++*r.counter;
        ++*sc->ids->c[C_MATCHES];
        sc->alerted = true;
    }
    return 0; // keep scanning: other rules may match in the same packet
}

uint64_t key_hash(const FlowKey &k)
{
    uint64_t h = 0x9e3779b97f4a7c15ull, w;
    const uint8_t *p = reinterpret_cast<const uint8_t *>(&k);
    for (unsigned i = 0; i < sizeof k; i += 8) {
        std::memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return h;
}

// Whether slot s holds a stream in use: taken, and not idle past idle_timeout.
bool live(const Ids &ids, const Slot &s, uint64_t now)
{
    return s.last_ns != 0 && (ids.idle_ns == 0 || now <= s.last_ns || now - s.last_ns <= ids.idle_ns);
}

void touch(Slot &s, uint64_t now) { s.last_ns = now != 0 ? now : 1; } // last_ns 0 means free

// Slot s starts a new stream for another flow direction.  No callback:
// matches pending at the end of the old one are not reported.
bool restart(Ids &ids, Slot &s, uint64_t now)
{
    if (hs_reset_stream(s.stream, 0, nullptr, nullptr, nullptr) != HS_SUCCESS) {
        return false;
    }
    s.tag = ++ids.next_tag;
    touch(s, now);
    return true;
}

// The stream of this flow direction in the 5-tuple index: found, or a
// recycled slot reset for it.
Slot *stream_for(Ids &ids, const FlowKey &k, uint64_t now)
{
    Slot *set = &ids.slots[(key_hash(k) & ids.mask) * kWays];
    Slot *victim = set;
    for (unsigned w = 0; w < kWays; ++w) {
        Slot &s = set[w];
        if (s.last_ns != 0 && std::memcmp(&s.key, &k, sizeof k) == 0) {
            if (live(ids, s, now)) {
                touch(s, now);
                return &s;
            }
            victim = &s; // expired: start the flow afresh
            break;
        }
        if (s.last_ns < victim->last_ns) {
            victim = &s;
        }
    }
    if (live(ids, *victim, now)) {
        ++*ids.c[C_EVICTED];
    }
    if (!restart(ids, *victim, now)) {
        return nullptr;
    }
    victim->key = k;
    return victim;
}

// The slot area's direction `dir` was given, while it still has that stream:
// same tag, and neither the 5-tuple index nor expiry took it since.
Slot *held_slot(Ids &ids, const FlowArea &area, unsigned dir)
{
    const uint32_t at = area.slot1[dir];
    if (at == 0 || at > ids.slots.size()) {
        return nullptr;
    }
    Slot &s = ids.slots[at - 1];
    return s.tag == area.tag[dir] && s.key.family == 0 && s.last_ns != 0 ? &s : nullptr;
}

// The stream of this direction of the flow whose entry holds `area`: its
// slot while the tag still matches and it was not idle too long, else a
// free slot (or the next in turn when none is free) reset for it.
Slot *stream_of_entry(Ids &ids, FlowArea &area, unsigned dir, uint64_t now)
{
    if (Slot *held = held_slot(ids, area, dir)) {
        if (!live(ids, *held, now)) { // idle too long: starts afresh in place
            if (!restart(ids, *held, now)) {
                return nullptr;
            }
            area.tag[dir] = held->tag;
        }
        touch(*held, now);
        return held;
    }
    uint32_t i;
    if (!ids.free_slots.empty()) {
        i = ids.free_slots.back();
        ids.free_slots.pop_back();
    } else {
        i = ids.hand;
        ids.hand = (ids.hand + 1) % static_cast<uint32_t>(ids.slots.size());
    }
    Slot &s = ids.slots[i];
    if (live(ids, s, now)) {
        ++*ids.c[C_EVICTED];
    }
    if (!restart(ids, s, now)) {
        return nullptr;
    }
    s.key.family = 0; // out of the 5-tuple index
    area.slot1[dir] = i + 1;
    area.tag[dir] = s.tag;
    return &s;
}

// A flow entry goes: its streams' slots are free again (unless they went to
// another flow meanwhile, or this ran before for the same area).
void ids_flow_expired(serpens_nf_ctx *ctx, void *state)
{
    Ids &ids = *static_cast<Ids *>(ctx->priv);
    auto &area = *static_cast<FlowArea *>(state);
    for (unsigned dir = 0; dir < 2; ++dir) {
        if (Slot *held = held_slot(ids, area, dir)) {
            held->last_ns = 0;
            ++held->tag;
            ids.free_slots.push_back(area.slot1[dir] - 1);
        }
    }
}

void ids_process(serpens_nf_ctx *ctx, serpens_batch *b)
{
    Ids &ids = *static_cast<Ids *>(ctx->priv);
    const serpens_flow_view flows = serpens_batch_flow_view(b);
    for (uint32_t i = 0; i < b->count; ++i) {
        if (b->labels[i] != b->self) {
            continue;
        }
        const serpens_pkt &p = *serpens_batch_pkt(b, i);
        if (!(p.flags & SERPENS_PKT_F_PARSED) || (p.flags & SERPENS_PKT_F_FRAGMENT) ||
            (p.l4_proto != 6 && p.l4_proto != 17) || p.payload_offset == SERPENS_OFFSET_NONE ||
            p.l4_offset == SERPENS_OFFSET_NONE) {
            continue;
        }
        const uint8_t *ip = p.data + p.l3_offset;
        FlowKey k;
        std::memset(&k, 0, sizeof k);
        uint32_t end;
        if (p.l3_type == SERPENS_L3_IPV4 && p.l3_offset + 20u <= p.len) {
            k.family = 4;
            std::memcpy(k.src, ip + 12, 4);
            std::memcpy(k.dst, ip + 16, 4);
            end = p.l3_offset + (static_cast<uint32_t>(ip[2]) << 8 | ip[3]);
        } else if (p.l3_type == SERPENS_L3_IPV6 && p.l3_offset + 40u <= p.len) {
            k.family = 6;
            std::memcpy(k.src, ip + 8, 16);
            std::memcpy(k.dst, ip + 24, 16);
            end = p.l3_offset + 40 + (static_cast<uint32_t>(ip[4]) << 8 | ip[5]);
        } else {
            continue;
        }
        if (end > p.len) {
            end = p.len; // a cut packet: scan what is there
        }
        if (p.payload_offset >= end || p.l4_offset + 4u > p.len) {
            continue;
        }
        k.proto = p.l4_proto;
        k.sport = static_cast<uint16_t>(p.data[p.l4_offset] << 8 | p.data[p.l4_offset + 1]);
        k.dport = static_cast<uint16_t>(p.data[p.l4_offset + 2] << 8 | p.data[p.l4_offset + 3]);
        auto *area = static_cast<FlowArea *>(serpens_flow_area(&flows, i));
        Slot *s =
            area != nullptr
                ? stream_of_entry(ids, *area, serpens_flow_flags(&flows, i) & SERPENS_FLOW_REPLY ? 1 : 0, b->now_ns)
                : stream_for(ids, k, b->now_ns);
        ScanCtx sc{&ids, &k, false};
        ++*ids.c[C_SCANNED];
        if (s == nullptr || hs_scan_stream(s->stream, reinterpret_cast<const char *>(p.data + p.payload_offset),
                                           end - p.payload_offset, 0, ids.scratch, on_match, &sc) != HS_SUCCESS) {
            ++*ids.c[C_SCAN_ERRORS];
            continue;
        }
        if (sc.alerted) {
            ++*ids.c[C_ALERTS];
            b->ports[i] = 1;
        }
    }
}

int ids_init(serpens_nf_ctx *ctx, const serpens_config *cfg)
{
    const serpens_host_api *h = ctx->host;
    Ids *ids = new (std::nothrow) Ids;
    if (ids == nullptr) {
        return SERPENS_ENOMEM;
    }
    ctx->priv = ids;
    auto bad = [&](const char *key, const std::string &what) {
        char where[512];
        serpens_config_where(ctx, cfg, key, where, sizeof where);
        h->log(ctx, SERPENS_LOG_ERROR, "%s: %s", where, what.c_str());
        return SERPENS_EINVAL;
    };
    if (hs_valid_platform() != HS_SUCCESS) {
        h->log(ctx, SERPENS_LOG_ERROR, "Hyperscan cannot run on this CPU (hs_valid_platform failed: it needs SSSE3)");
        return SERPENS_ENOTSUP;
    }
    char path[4096];
    int rc = h->config_path(cfg, "rules", path, sizeof path);
    if (rc != SERPENS_OK) {
        return bad("rules", "ids needs `rules = \"<file>\"` (Snort-style signatures, relative to the chain file)");
    }
    int64_t max_flows = 16384;
    if (h->config_int(cfg, "max_flows", &max_flows) == SERPENS_EINVAL || max_flows < 4 || max_flows > (1 << 22)) {
        return bad("max_flows", "`max_flows` must be an integer in 4..4194304");
    }
    ids->idle_ns = 120 * 1000000000ull;
    if (serpens_config_idle_timeout(ctx, cfg, "ids", "idle_timeout", &ids->idle_ns) != SERPENS_OK) {
        return SERPENS_EINVAL;
    }
    try {
        char *data = nullptr;
        std::size_t size = 0;
        char why[sizeof path + 256]; // the path and the reason, never cut
        if (serpens_config_file_copy(h, cfg, "rules", path, SERPENS_CONFIG_FILE_MAX, &data, &size, why, sizeof why) !=
            SERPENS_OK) {
            h->log(ctx, SERPENS_LOG_ERROR, "%s", why);
            return SERPENS_EINVAL;
        }
        std::unique_ptr<char, decltype(&std::free)> owned(data, &std::free);
        std::string err = parse_rules(std::string(data, size), path, ids->rules);
        if (!err.empty()) {
            h->log(ctx, SERPENS_LOG_ERROR, "%s", err.c_str());
            return SERPENS_EINVAL;
        }
        std::vector<const char *> exprs;
        std::vector<unsigned> flags, idv;
        for (std::size_t i = 0; i < ids->rules.size(); ++i) {
            exprs.push_back(ids->rules[i].expr.c_str());
            flags.push_back(ids->rules[i].flags | HS_FLAG_SINGLEMATCH);
            idv.push_back(static_cast<unsigned>(i));
        }
        hs_compile_error_t *cerr = nullptr;
        if (hs_compile_multi(exprs.data(), flags.data(), idv.data(), static_cast<unsigned>(exprs.size()),
                             HS_MODE_STREAM, nullptr, &ids->db, &cerr) != HS_SUCCESS) {
            std::string what = cerr != nullptr ? cerr->message : "unknown error";
            int which = cerr != nullptr ? cerr->expression : -1;
            hs_free_compile_error(cerr);
            if (which >= 0) {
                h->log(ctx, SERPENS_LOG_ERROR, "%s:%u: Hyperscan cannot compile this pattern: %s", path,
                       ids->rules[static_cast<std::size_t>(which)].line, what.c_str());
            } else {
                h->log(ctx, SERPENS_LOG_ERROR, "%s: Hyperscan compile failed: %s", path, what.c_str());
            }
            return SERPENS_EINVAL;
        }
        if (hs_alloc_scratch(ids->db, &ids->scratch) != HS_SUCCESS) {
            return SERPENS_ENOMEM;
        }
        uint64_t sets = 1;
        while (sets * kWays < static_cast<uint64_t>(max_flows)) {
            sets <<= 1;
        }
        ids->mask = sets - 1;
        ids->slots.assign(sets * kWays, Slot{});
        ids->free_slots.reserve(ids->slots.size());
        for (uint32_t i = static_cast<uint32_t>(ids->slots.size()); i-- > 0;) {
            ids->free_slots.push_back(i);
        }
        if (getrandom(&ids->next_tag, sizeof ids->next_tag, 0) != sizeof ids->next_tag) {
            ids->next_tag = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(ids) >> 4); // still per instance
        }
        // Every stream opened now, recycled later with hs_reset_stream: the
        // hot path never allocates.
        for (Slot &s : ids->slots) {
            if (hs_open_stream(ids->db, 0, &s.stream) != HS_SUCCESS) {
                return SERPENS_ENOMEM;
            }
        }
    } catch (const std::bad_alloc &) {
        return SERPENS_ENOMEM;
    }
    serpens_register_counters(ctx, "ids", counter_names, C_COUNT, ids->c, ids->spare);
    for (std::size_t i = 0; i < ids->rules.size(); ++i) {
        Rule &r = ids->rules[i];
        r.counter = i < kMaxSidCounters ? h->counter(ctx, ("sid_" + std::to_string(r.sid)).c_str()) : nullptr;
        if (r.counter == nullptr) {
            r.counter = &ids->spare[C_COUNT]; // beyond the host's counter budget: only `matches`
        }
    }
    std::size_t stream_size = 0;
    hs_stream_size(ids->db, &stream_size);
    h->log(ctx, SERPENS_LOG_INFO, "%zu signatures from %s; %zu streams of %zu bytes", ids->rules.size(), path,
           ids->slots.size(), stream_size);
    return SERPENS_OK;
}

void ids_fini(serpens_nf_ctx *ctx)
{
    delete static_cast<Ids *>(ctx->priv);
    ctx->priv = nullptr;
}

const serpens_nf_descriptor ids_descriptor = {
    SERPENS_NF_DESCRIPTOR_HEADER,
    .name = "ids",
    .version = "1.0",
    .summary = "signature IDS: Snort-style content/pcre rules, Hyperscan streaming across packets",
    .flags = 0,
    .n_ports = 2,
    .reserved0 = 0,
    .init = ids_init,
    .process = ids_process,
    .fini = ids_fini,
    .split = nullptr, // no global/write tables
    .merge = nullptr,
    .update = nullptr,
    .reserved = {},
    .min_host_minor = SERPENS_ABI_MINOR_FLOW_STATE, // serpens_batch_pkt, flow_state_size
    .reserved1 = 0,
    .reserved2 = 0,
    .flow_state_size = sizeof(FlowArea),
    .reserved3 = 0,
    .flow_expired = ids_flow_expired,
    .flow_visit = nullptr,
    .flow_visit_ms = 0,
    .reserved4 = 0,
    .table_layouts = nullptr,
    .n_table_layouts = 0,
    .reserved5 = 0,
};

} // namespace

extern "C" {
SERPENS_NF_REGISTER(ids_descriptor)
}

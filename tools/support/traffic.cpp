// Synthetic traffic generation; see traffic.h for what is generated.
#include "support/traffic.h"

#include "net/wire.h"

#include <serpens/nf_util.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <set>
#include <stdexcept>

namespace serpens::net {

namespace {

constexpr const char *kClassNames[kTrafficClassCount] = {"tcp", "udp", "icmp", "tcp6", "udp6", "icmp6"};
constexpr const char *kCorruptionNames[kCorruptionCount] = {
    "none",          "truncate_l2", "truncate_vlan",  "truncate_l3",    "bad_ip_header",
    "bad_ip_length", "truncate_l4", "bad_tcp_offset", "bad_udp_length",
};

constexpr uint32_t kMinFrame = 60; // Ethernet minimum without FCS
constexpr uint32_t kMaxFrame = 16384;

constexpr uint8_t kTcpFin = 0x01;
constexpr uint8_t kTcpSyn = 0x02;
constexpr uint8_t kTcpPsh = 0x08;
constexpr uint8_t kTcpAck = 0x10;

bool is_v6(TrafficClass c) noexcept
{
    return c == TrafficClass::tcp6 || c == TrafficClass::udp6 || c == TrafficClass::icmp6;
}
bool is_tcp(TrafficClass c) noexcept { return c == TrafficClass::tcp || c == TrafficClass::tcp6; }
bool is_udp(TrafficClass c) noexcept { return c == TrafficClass::udp || c == TrafficClass::udp6; }

// xoshiro256** seeded through splitmix64: fully specified, so identical
// streams everywhere (std::uniform_*_distribution is implementation-defined).
class Rng {
public:
    explicit Rng(uint64_t seed)
    {
        for (auto &w : _s) {
            seed += 0x9e3779b97f4a7c15ull;
            uint64_t z = seed;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            w = z ^ (z >> 31);
        }
    }
    uint64_t next() noexcept
    {
        const uint64_t result = rotl(_s[1] * 5, 7) * 9;
        const uint64_t t = _s[1] << 17;
        _s[2] ^= _s[0];
        _s[3] ^= _s[1];
        _s[1] ^= _s[2];
        _s[0] ^= _s[3];
        _s[2] ^= t;
        _s[3] = rotl(_s[3], 45);
        return result;
    }
    // Uniform in [0, n), n > 0 (Lemire's multiply; the tiny bias is irrelevant here
    // and keeps the stream length fixed per call).
    uint64_t below(uint64_t n) noexcept
    {
        return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
    }
    uint64_t between(uint64_t lo, uint64_t hi) noexcept { return lo + below(hi - lo + 1); }
    double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    bool chance(double p) noexcept { return unit() < p; }

private:
    static uint64_t rotl(uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
    uint64_t _s[4];
};

// Sums of words as they sit in memory (RFC 1071 §2(B)): store with serpens_st16.
void ipv4_header_checksum(uint8_t *ip) noexcept
{
    const uint32_t hlen = static_cast<uint32_t>(ip[0] & 0x0f) * 4;
    serpens_st16(ip + 10, 0);
    serpens_st16(ip + 10, serpens_csum(ip, std::max<uint32_t>(hlen, 20)));
}

// TCP/UDP/ICMPv6 checksum over the pseudo header and [l4, l4 + l4_len).
uint16_t l4_checksum(const uint8_t *ip, bool v6, uint8_t proto, const uint8_t *l4, uint32_t l4_len) noexcept
{
    return serpens_csum_fold(serpens_csum_add(serpens_csum_pseudo(ip, v6 ? 1 : 0, proto, l4_len), l4, l4_len));
}

struct Flow {
    TrafficClass cls = TrafficClass::tcp;
    uint8_t tags = 0; // 0, 1 or 2 VLAN tags
    uint16_t vlan_outer = 0;
    uint16_t vlan_inner = 0;
    std::array<uint8_t, 16> client{};
    std::array<uint8_t, 16> server{};
    uint16_t client_port = 0;
    uint16_t server_port = 0; // ICMP: echo identifier
    uint32_t packets = 0;     // planned
    uint32_t sent = 0;
    uint32_t client_seq = 0; // TCP: next sequence number each side sends
    uint32_t server_seq = 0;
    uint16_t ip_id_client = 0;
    uint16_t ip_id_server = 0;
    uint16_t icmp_seq = 0;
};

// Largest-remainder apportionment: exact per-class flow counts from weights,
// so small runs still honour the mix as closely as integers allow.
std::array<uint32_t, kTrafficClassCount> apportion(const TrafficMix &mix, uint32_t flows)
{
    double total = 0;
    for (double w : mix) {
        total += w;
    }
    std::array<uint32_t, kTrafficClassCount> n{};
    std::array<double, kTrafficClassCount> rem{};
    uint32_t given = 0;
    for (std::size_t i = 0; i < kTrafficClassCount; ++i) {
        const double exact = mix[i] / total * flows;
        n[i] = static_cast<uint32_t>(std::floor(exact));
        rem[i] = exact - n[i];
        given += n[i];
    }
    while (given < flows) {
        std::size_t best = 0;
        for (std::size_t i = 1; i < kTrafficClassCount; ++i) {
            if (rem[i] > rem[best]) {
                best = i;
            }
        }
        ++n[best];
        rem[best] = -1;
        ++given;
    }
    return n;
}

std::array<uint8_t, 16> random_v4(Rng &rng, const Ipv4Prefix &p)
{
    const uint32_t host_bits = 32u - p.len;
    uint32_t host = 0;
    if (host_bits > 0) {
        const uint64_t span = uint64_t{1} << host_bits;
        // Skip the all-zeros and all-ones host parts when the prefix has room.
        host = span > 2 ? static_cast<uint32_t>(rng.between(1, span - 2)) : static_cast<uint32_t>(rng.below(span));
    }
    std::array<uint8_t, 16> a{};
    serpens_st_be32(a.data(), p.addr | host);
    return a;
}

std::array<uint8_t, 16> random_v6(Rng &rng, const Ipv6Prefix &p)
{
    std::array<uint8_t, 16> a = p.addr;
    for (unsigned bit = p.len; bit < 128; ++bit) {
        if ((rng.next() >> 63) != 0) {
            a[bit / 8] |= static_cast<uint8_t>(0x80u >> (bit % 8));
        }
    }
    if (p.len < 128 && a[15] == 0) {
        a[15] = 1; // avoid the subnet-router anycast address
    }
    return a;
}

} // namespace

const char *traffic_class_name(TrafficClass c) noexcept
{
    const auto i = static_cast<std::size_t>(c);
    return i < kTrafficClassCount ? kClassNames[i] : "?";
}

const char *corruption_name(Corruption c) noexcept
{
    const auto i = static_cast<std::size_t>(c);
    return i < kCorruptionCount ? kCorruptionNames[i] : "?";
}

// ---------------------------------------------------------------------------
// Config parsing
// ---------------------------------------------------------------------------

namespace {

// serpens_parse_prefix, as the gateway and the NFs read prefixes, of one family.
serpens_prefix parse_family(std::string_view text, uint8_t family)
{
    serpens_prefix p;
    char why[256];
    if (serpens_parse_prefix(std::string(text).c_str(), &p, why, sizeof why) != SERPENS_OK) {
        throw std::invalid_argument(why);
    }
    if (p.family != family) {
        throw std::invalid_argument("'" + std::string(text) + "' is not an IPv" + std::to_string(family) + " prefix");
    }
    return p;
}

} // namespace

Ipv4Prefix parse_ipv4_prefix(std::string_view text)
{
    const serpens_prefix p = parse_family(text, 4);
    return Ipv4Prefix{serpens_ld_be32(p.addr), p.len};
}

Ipv6Prefix parse_ipv6_prefix(std::string_view text)
{
    const serpens_prefix p = parse_family(text, 6);
    Ipv6Prefix out;
    std::copy(std::begin(p.addr), std::end(p.addr), out.addr.begin());
    out.len = p.len;
    return out;
}

TrafficMix parse_traffic_mix(std::string_view text)
{
    TrafficMix mix{};
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const auto comma = std::min(text.find(',', pos), text.size());
        const std::string_view item = text.substr(pos, comma - pos);
        pos = comma + 1;
        if (item.empty()) {
            if (comma == text.size()) {
                break;
            }
            continue;
        }
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
            throw std::invalid_argument("mix item '" + std::string(item) + "' is not class=weight");
        }
        const std::string key(item.substr(0, eq));
        const std::string value(item.substr(eq + 1));
        double w = -1;
        std::size_t used = 0;
        try {
            w = std::stod(value, &used);
        } catch (const std::exception &) {
            used = 0;
        }
        if (value.empty() || used != value.size() || !(w >= 0) || !std::isfinite(w)) {
            throw std::invalid_argument("mix weight '" + value + "' for '" + key + "' is not a non-negative number");
        }
        if (key == "ipv6") {
            mix[3] += w * 0.6;
            mix[4] += w * 0.3;
            mix[5] += w * 0.1;
            continue;
        }
        const auto *it =
            std::find_if(std::begin(kClassNames), std::end(kClassNames), [&](const char *n) { return key == n; });
        if (it == std::end(kClassNames)) {
            throw std::invalid_argument("unknown mix class '" + key +
                                        "' (known: tcp, udp, icmp, tcp6, udp6, icmp6, ipv6)");
        }
        mix[static_cast<std::size_t>(it - std::begin(kClassNames))] += w;
    }
    double total = 0;
    for (double w : mix) {
        total += w;
    }
    if (total <= 0) {
        throw std::invalid_argument("mix '" + std::string(text) + "' has no positive weight");
    }
    return mix;
}

std::string format_traffic_mix(const TrafficMix &mix)
{
    std::string out;
    for (std::size_t i = 0; i < kTrafficClassCount; ++i) {
        if (!out.empty()) {
            out += ',';
        }
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s=%g", kClassNames[i], mix[i]);
        out += buf;
    }
    return out;
}

void TrafficConfig::validate() const
{
    if (packets == 0) {
        throw std::invalid_argument("packets must be > 0");
    }
    if (packets > (uint64_t{1} << 32)) {
        throw std::invalid_argument("packets must be <= 2^32");
    }
    if (flows == 0) {
        throw std::invalid_argument("flows must be > 0");
    }
    if (size_min < kMinFrame || size_max > kMaxFrame || size_min > size_max) {
        throw std::invalid_argument("frame sizes must satisfy " + std::to_string(kMinFrame) +
                                    " <= size-min <= size-max <= " + std::to_string(kMaxFrame) + " (got " +
                                    std::to_string(size_min) + ".." + std::to_string(size_max) + ")");
    }
    if (!(vlan_ratio >= 0 && vlan_ratio <= 1)) {
        throw std::invalid_argument("vlan-ratio must be within [0, 1]");
    }
    if (!(malformed_ratio >= 0 && malformed_ratio <= 1)) {
        throw std::invalid_argument("malformed-ratio must be within [0, 1]");
    }
    double total = 0;
    for (double w : mix) {
        if (!(w >= 0) || !std::isfinite(w)) {
            throw std::invalid_argument("mix weights must be finite and >= 0");
        }
        total += w;
    }
    if (total <= 0) {
        throw std::invalid_argument("mix needs at least one positive weight");
    }
    if (src_net.len > 32 || dst_net.len > 32 || src_net6.len > 128 || dst_net6.len > 128) {
        throw std::invalid_argument("prefix length out of range");
    }
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

std::string TrafficSummary::to_json() const
{
    // ordered_json: the keys stay in this order, so equal runs print equal bytes.
    nlohmann::ordered_json j;
    j["packets"] = packets;
    j["bytes"] = bytes;
    j["flows"] = flows;
    j["malformed"] = malformed();
    j["vlan"] = vlan;
    j["qinq"] = qinq;
    j["tcp_syn"] = tcp_syn;
    j["tcp_fin"] = tcp_fin;
    j["from_server"] = from_server;
    auto counts = [](auto name, std::size_t n, auto value) {
        nlohmann::ordered_json o = nlohmann::ordered_json::object();
        for (std::size_t i = 0; i < n; ++i) {
            o[name(i)] = value(i);
        }
        return o;
    };
    j["packets_by_class"] = counts([](std::size_t i) { return kClassNames[i]; }, kTrafficClassCount,
                                   [&](std::size_t i) { return packets_by_class[i]; });
    j["flows_by_class"] = counts([](std::size_t i) { return kClassNames[i]; }, kTrafficClassCount,
                                 [&](std::size_t i) { return flows_by_class[i]; });
    j["corruptions"] = counts([](std::size_t i) { return kCorruptionNames[i]; }, kCorruptionCount,
                              [&](std::size_t i) { return by_corruption[i]; });
    j["expected_parse"] = counts([](std::size_t i) { return parse_result_name(static_cast<ParseResult>(i)); },
                                 kParseResultCount, [&](std::size_t i) { return expected.by_result[i]; });
    j["malformed_frames"] = malformed_frames;
    return j.dump(2) + "\n";
}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

struct TrafficGenerator::Impl {
    TrafficConfig cfg;
    Rng rng;
    std::vector<Flow> flows;
    std::vector<uint32_t> schedule; // flow index per frame
    uint64_t pos = 0;
    std::vector<uint8_t> buf;
    TrafficSummary summary;

    explicit Impl(TrafficConfig c) : cfg(std::move(c)), rng(cfg.seed)
    {
        cfg.validate();
        plan_flows();
        plan_schedule();
        buf.reserve(kMaxFrame);
    }

    void plan_flows()
    {
        const auto per_class = apportion(cfg.mix, cfg.flows);
        std::vector<TrafficClass> classes;
        classes.reserve(cfg.flows);
        for (std::size_t c = 0; c < kTrafficClassCount; ++c) {
            classes.insert(classes.end(), per_class[c], static_cast<TrafficClass>(c));
        }
        shuffle(classes);
        // 5-tuples must be unique, or two "flows" would be one and counts lie.
        std::set<std::array<uint8_t, 40>> seen;
        flows.resize(cfg.flows);
        for (uint32_t i = 0; i < cfg.flows; ++i) {
            Flow &f = flows[i];
            f.cls = classes[i];
            if (rng.chance(cfg.vlan_ratio)) {
                f.tags = rng.below(4) == 0 ? 2 : 1;
                f.vlan_outer = static_cast<uint16_t>(rng.between(1, 4094));
                f.vlan_inner = static_cast<uint16_t>(rng.between(1, 4094));
            }
            for (int attempt = 0;; ++attempt) {
                if (attempt == 1000) {
                    throw std::invalid_argument("cannot make " + std::to_string(cfg.flows) +
                                                " distinct flows in the given address ranges; widen "
                                                "--src-net/--dst-net or lower --flows");
                }
                const bool v6 = is_v6(f.cls);
                f.client = v6 ? random_v6(rng, cfg.src_net6) : random_v4(rng, cfg.src_net);
                f.server = v6 ? random_v6(rng, cfg.dst_net6) : random_v4(rng, cfg.dst_net);
                if (is_tcp(f.cls)) {
                    static constexpr uint16_t kPorts[] = {80, 443, 8080, 5201};
                    f.client_port = static_cast<uint16_t>(rng.between(32768, 60999));
                    f.server_port = kPorts[rng.below(std::size(kPorts))];
                } else if (is_udp(f.cls)) {
                    // A range no common dissector claims, so payloads stay opaque.
                    f.client_port = static_cast<uint16_t>(rng.between(32768, 60999));
                    f.server_port = static_cast<uint16_t>(rng.between(20000, 29999));
                } else {
                    f.client_port = 0;
                    f.server_port = static_cast<uint16_t>(rng.below(65536)); // echo id
                }
                std::array<uint8_t, 40> k{};
                std::memcpy(k.data(), f.client.data(), 16);
                std::memcpy(k.data() + 16, f.server.data(), 16);
                serpens_st_be16(k.data() + 32, f.client_port);
                serpens_st_be16(k.data() + 34, f.server_port);
                k[36] = static_cast<uint8_t>(f.cls);
                if (f.client != f.server && seen.insert(k).second) {
                    break;
                }
            }
            f.client_seq = static_cast<uint32_t>(rng.next());
            f.server_seq = static_cast<uint32_t>(rng.next());
            f.ip_id_client = static_cast<uint16_t>(rng.next());
            f.ip_id_server = static_cast<uint16_t>(rng.next());
        }
    }

    void plan_schedule()
    {
        const uint64_t base = cfg.packets / cfg.flows;
        const uint64_t extra = cfg.packets % cfg.flows;
        // Flow order is already shuffled, so "the first `extra` flows" is random.
        schedule.reserve(cfg.packets);
        for (uint32_t i = 0; i < cfg.flows; ++i) {
            flows[i].packets = static_cast<uint32_t>(base + (i < extra ? 1 : 0));
            schedule.insert(schedule.end(), flows[i].packets, i);
            if (flows[i].packets > 0) {
                ++summary.flows;
                ++summary.flows_by_class[static_cast<std::size_t>(flows[i].cls)];
            }
        }
        shuffle(schedule);
    }

    template<class T>
    void shuffle(std::vector<T> &v)
    {
        for (std::size_t i = v.size(); i > 1; --i) {
            std::swap(v[i - 1], v[rng.below(i)]);
        }
    }

    uint32_t data_payload(uint32_t headers)
    {
        const auto size = static_cast<uint32_t>(rng.between(cfg.size_min, cfg.size_max));
        return size > headers ? size - headers : 0;
    }

    std::optional<GeneratedPacket> next();
    void build(Flow &f, GeneratedPacket &out);
    void corrupt(const Flow &f, uint32_t l3, uint32_t l4, GeneratedPacket &out);
};

std::optional<GeneratedPacket> TrafficGenerator::Impl::next()
{
    if (pos == schedule.size()) {
        return std::nullopt;
    }
    Flow &f = flows[schedule[pos]];
    GeneratedPacket out;
    out.frame = pos + 1;
    out.flow = schedule[pos];
    out.ts_ns = cfg.start_ns + pos * cfg.gap_ns;
    out.cls = f.cls;
    ++pos;
    build(f, out);
    out.data = std::span<const uint8_t>(buf.data(), buf.size());

    TrafficSummary &s = summary;
    ++s.packets;
    s.bytes += buf.size();
    ++s.packets_by_class[static_cast<std::size_t>(f.cls)];
    s.vlan += f.tags > 0 ? 1 : 0;
    s.qinq += f.tags == 2 ? 1 : 0;
    s.from_server += out.from_client ? 0 : 1;
    ++s.by_corruption[static_cast<std::size_t>(out.corruption)];
    s.expected.count(out.expected);
    if (out.corruption != Corruption::none) {
        s.malformed_frames.push_back(out.frame);
    }
    return out;
}

void TrafficGenerator::Impl::build(Flow &f, GeneratedPacket &out)
{
    const bool v6 = is_v6(f.cls);
    const uint32_t step = f.sent++;

    // Decide direction, TCP flags and payload size from the flow's script.
    bool from_client = true;
    uint8_t tcp_flags = kTcpAck;
    bool has_data = true;
    if (is_tcp(f.cls)) {
        // Script positions: 0 SYN, 1 SYN-ACK, 2 ACK, data..., then FIN, FIN, ACK.
        static constexpr uint8_t kShort[] = {kTcpSyn,           kTcpSyn | kTcpAck, kTcpAck,
                                             kTcpFin | kTcpAck, kTcpFin | kTcpAck, kTcpAck};
        static constexpr bool kShortFromClient[] = {true, false, true, true, false, true};
        int slot; // index into kShort, or -1 for data
        if (f.packets < 6) {
            slot = static_cast<int>(step);
        } else if (step < 3) {
            slot = static_cast<int>(step);
        } else if (step >= f.packets - 3) {
            slot = static_cast<int>(step - (f.packets - 3)) + 3;
        } else {
            slot = -1;
        }
        if (slot >= 0) {
            tcp_flags = kShort[slot];
            from_client = kShortFromClient[slot];
            has_data = false;
        } else {
            tcp_flags = kTcpPsh | kTcpAck;
            from_client = rng.below(2) == 0;
        }
        summary.tcp_syn += (tcp_flags & kTcpSyn) ? 1 : 0;
        summary.tcp_fin += (tcp_flags & kTcpFin) ? 1 : 0;
    } else if (is_udp(f.cls)) {
        from_client = step == 0 || rng.below(2) == 0;
    } else {
        from_client = step % 2 == 0; // request, reply, request, ...
    }
    out.from_client = from_client;

    const uint32_t l2 = 14 + 4u * f.tags;
    const uint32_t l3_len = v6 ? 40 : 20;
    const uint32_t l4_hdr = is_tcp(f.cls) ? 20 : 8;
    const uint32_t headers = l2 + l3_len + l4_hdr;
    const uint32_t payload = has_data ? data_payload(headers) : 0;
    const uint32_t frame = std::max(headers + payload, kMinFrame);

    buf.assign(frame, 0); // zero tail = Ethernet padding for short frames
    uint8_t *p = buf.data();

    // L2: locally administered MACs, one per side.
    static constexpr uint8_t kClientMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    static constexpr uint8_t kServerMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
    std::memcpy(p, from_client ? kServerMac : kClientMac, 6);
    std::memcpy(p + 6, from_client ? kClientMac : kServerMac, 6);
    uint32_t off = 12;
    if (f.tags == 2) {
        serpens_st_be16(p + off, kEtherQinQ);
        serpens_st_be16(p + off + 2, f.vlan_outer);
        serpens_st_be16(p + off + 4, kEtherVlan);
        serpens_st_be16(p + off + 6, f.vlan_inner);
        off += 8;
    } else if (f.tags == 1) {
        serpens_st_be16(p + off, kEtherVlan);
        serpens_st_be16(p + off + 2, f.vlan_outer);
        off += 4;
    }
    serpens_st_be16(p + off, v6 ? kEtherIpv6 : kEtherIpv4);
    off += 2;

    const uint32_t l3 = off;
    const uint32_t l4 = l3 + l3_len;
    const uint32_t l4_len = l4_hdr + payload;
    const auto &src = from_client ? f.client : f.server;
    const auto &dst = from_client ? f.server : f.client;
    uint8_t proto;
    switch (f.cls) {
    case TrafficClass::tcp:
    case TrafficClass::tcp6:
        proto = kProtoTcp;
        break;
    case TrafficClass::udp:
    case TrafficClass::udp6:
        proto = kProtoUdp;
        break;
    case TrafficClass::icmp:
        proto = kProtoIcmp;
        break;
    default:
        proto = kProtoIcmpv6;
        break;
    }
    uint8_t *ip = p + l3;
    if (v6) {
        ip[0] = 0x60;
        serpens_st_be16(ip + 4, static_cast<uint16_t>(l4_len));
        ip[6] = proto;
        ip[7] = 64;
        std::memcpy(ip + 8, src.data(), 16);
        std::memcpy(ip + 24, dst.data(), 16);
    } else {
        ip[0] = 0x45;
        serpens_st_be16(ip + 2, static_cast<uint16_t>(20 + l4_len));
        uint16_t &id = from_client ? f.ip_id_client : f.ip_id_server;
        serpens_st_be16(ip + 4, id++);
        serpens_st_be16(ip + 6, 0x4000); // DF
        ip[8] = 64;
        ip[9] = proto;
        std::memcpy(ip + 12, src.data(), 4);
        std::memcpy(ip + 16, dst.data(), 4);
        ipv4_header_checksum(ip);
    }

    uint8_t *h = p + l4;
    // Payload: opaque random bytes, drawn 8 at a time.
    for (uint32_t i = 0; i < payload; i += 8) {
        const uint64_t r = rng.next();
        std::memcpy(h + l4_hdr + i, &r, std::min<uint32_t>(8, payload - i));
    }
    if (is_tcp(f.cls)) {
        uint32_t &seq = from_client ? f.client_seq : f.server_seq;
        const uint32_t ack = from_client ? f.server_seq : f.client_seq;
        serpens_st_be16(h, from_client ? f.client_port : f.server_port);
        serpens_st_be16(h + 2, from_client ? f.server_port : f.client_port);
        serpens_st_be32(h + 4, seq);
        serpens_st_be32(h + 8, (tcp_flags & kTcpAck) ? ack : 0);
        h[12] = 5 << 4;
        h[13] = tcp_flags;
        serpens_st_be16(h + 14, 64240);
        seq += payload + ((tcp_flags & (kTcpSyn | kTcpFin)) ? 1 : 0);
        serpens_st16(h + 16, l4_checksum(ip, v6, proto, h, l4_len));
    } else if (is_udp(f.cls)) {
        serpens_st_be16(h, from_client ? f.client_port : f.server_port);
        serpens_st_be16(h + 2, from_client ? f.server_port : f.client_port);
        serpens_st_be16(h + 4, static_cast<uint16_t>(l4_len));
        uint16_t c = l4_checksum(ip, v6, proto, h, l4_len);
        serpens_st16(h + 6, c == 0 ? 0xffff : c); // 0 means "no checksum" in UDP
    } else {
        const bool request = from_client;
        h[0] = v6 ? (request ? 128 : 129) : (request ? 8 : 0);
        serpens_st_be16(h + 4, f.server_port);
        serpens_st_be16(h + 6, request ? ++f.icmp_seq : f.icmp_seq);
        if (v6) {
            serpens_st16(h + 2, l4_checksum(ip, true, proto, h, l4_len));
        } else {
            serpens_st16(h + 2, serpens_csum(h, l4_len));
        }
    }

    out.corruption = Corruption::none;
    out.expected = ParseResult::ok;
    if (cfg.malformed_ratio > 0 && rng.chance(cfg.malformed_ratio)) {
        corrupt(f, l3, l4, out);
    }
}

void TrafficGenerator::Impl::corrupt(const Flow &f, uint32_t l3, uint32_t l4, GeneratedPacket &out)
{
    const bool v6 = is_v6(f.cls);
    Corruption kinds[kCorruptionCount];
    std::size_t n = 0;
    kinds[n++] = Corruption::truncate_l2;
    if (f.tags > 0) {
        kinds[n++] = Corruption::truncate_vlan;
    }
    kinds[n++] = Corruption::truncate_l3;
    kinds[n++] = Corruption::bad_ip_header;
    kinds[n++] = Corruption::bad_ip_length;
    kinds[n++] = Corruption::truncate_l4;
    if (is_tcp(f.cls)) {
        kinds[n++] = Corruption::bad_tcp_offset;
    }
    if (is_udp(f.cls)) {
        kinds[n++] = Corruption::bad_udp_length;
    }
    const Corruption kind = kinds[rng.below(n)];
    out.corruption = kind;

    uint8_t *ip = buf.data() + l3;
    uint8_t *h = buf.data() + l4;
    const uint32_t l3_len = l4 - l3;
    // Bytes of IP datagram (header + L4) actually present, padding excluded.
    const uint32_t ip_total = v6 ? 40u + ((ip[4] << 8) | ip[5]) : static_cast<uint32_t>((ip[2] << 8) | ip[3]);
    switch (kind) {
    case Corruption::none:
        break;
    case Corruption::truncate_l2:
        buf.resize(rng.between(1, 13));
        out.expected = ParseResult::truncated_l2;
        break;
    case Corruption::truncate_vlan:
        // Cut inside one of the tags: the parser has read the TPID announcing
        // it (bytes 12..13, or 16..17 for the inner one) but not its 4 bytes.
        buf.resize(14 + rng.below(4u * f.tags));
        out.expected = ParseResult::truncated_vlan;
        break;
    case Corruption::truncate_l3:
        buf.resize(l3 + rng.below(l3_len));
        out.expected = v6 ? ParseResult::truncated_ipv6 : ParseResult::truncated_ipv4;
        break;
    case Corruption::bad_ip_header:
        if (v6) {
            uint8_t version = static_cast<uint8_t>(rng.below(15));
            version = version >= 6 ? version + 1 : version;
            ip[0] = static_cast<uint8_t>((version << 4) | (ip[0] & 0x0f));
            out.expected = ParseResult::bad_ipv6_header;
        } else {
            ip[0] = static_cast<uint8_t>(0x40 | rng.below(5));
            ipv4_header_checksum(ip);
            out.expected = ParseResult::bad_ipv4_header;
        }
        break;
    case Corruption::bad_ip_length: {
        const auto beyond = static_cast<uint32_t>(buf.size() - l3 + rng.between(1, 64));
        if (v6) {
            serpens_st_be16(ip + 4, static_cast<uint16_t>(beyond - 40));
            out.expected = ParseResult::bad_ipv6_length;
        } else {
            serpens_st_be16(ip + 2,
                            rng.below(2) == 0 ? static_cast<uint16_t>(beyond) : static_cast<uint16_t>(rng.below(20)));
            ipv4_header_checksum(ip);
            out.expected = ParseResult::bad_ipv4_length;
        }
        break;
    }
    case Corruption::truncate_l4: {
        const uint32_t l4_min = is_tcp(f.cls) ? 20 : 8;
        const auto keep = static_cast<uint32_t>(rng.below(l4_min));
        if (v6) {
            serpens_st_be16(ip + 4, static_cast<uint16_t>(keep));
        } else {
            serpens_st_be16(ip + 2, static_cast<uint16_t>(20 + keep));
            ipv4_header_checksum(ip);
        }
        buf.resize(l4 + keep);
        out.expected = ParseResult::truncated_l4;
        break;
    }
    case Corruption::bad_tcp_offset:
        h[12] = static_cast<uint8_t>((rng.below(5) << 4) | (h[12] & 0x0f));
        out.expected = ParseResult::bad_tcp_offset;
        break;
    case Corruption::bad_udp_length: {
        const uint32_t avail = ip_total - l3_len;
        serpens_st_be16(h + 4, rng.below(2) == 0 ? static_cast<uint16_t>(avail + rng.between(1, 64))
                                                 : static_cast<uint16_t>(rng.below(8)));
        out.expected = ParseResult::bad_udp_length;
        break;
    }
    }
}

TrafficGenerator::TrafficGenerator(TrafficConfig cfg) : _impl(std::make_unique<Impl>(std::move(cfg))) {}
TrafficGenerator::~TrafficGenerator() = default;
TrafficGenerator::TrafficGenerator(TrafficGenerator &&) noexcept = default;
TrafficGenerator &TrafficGenerator::operator=(TrafficGenerator &&) noexcept = default;

std::optional<GeneratedPacket> TrafficGenerator::next() { return _impl->next(); }

const TrafficConfig &TrafficGenerator::config() const noexcept { return _impl->cfg; }

const TrafficSummary &TrafficGenerator::summary() const noexcept { return _impl->summary; }

GeneratedTraffic generate_traffic(const TrafficConfig &cfg)
{
    TrafficGenerator gen(cfg);
    GeneratedTraffic out;
    out.packets.reserve(cfg.packets);
    while (auto p = gen.next()) {
        out.packets.push_back(PcapRecord{std::vector<uint8_t>(p->data.begin(), p->data.end()), p->ts_ns,
                                         static_cast<uint32_t>(p->data.size())});
    }
    out.summary = gen.summary();
    return out;
}

TrafficSummary write_traffic_pcap(const TrafficConfig &cfg, const std::string &path)
{
    TrafficGenerator gen(cfg);
    PcapWriter w(path);
    while (auto p = gen.next()) {
        w.write(p->data, p->ts_ns);
    }
    w.close();
    return gen.summary();
}

} // namespace serpens::net

#pragma once
// fw rules: the rules-file parser and the packet classifier (control plane of
// the fw NF; fw.cpp is the data plane).  Pure C++, no host types, so the unit
// test compiles it directly and checks the classifier against a linear scan.
//
// Rules file format (one rule per line, first match wins):
//
//   # a comment; blank lines are ignored; '#' also ends a line
//   default deny                         # policy when no rule matches (default: deny)
//   allow proto=tcp src=10.0.0.0/8 dport=80
//   allow suspicious proto=udp dst=2001:db8::/32 sport=1000-2000
//   deny  src=192.0.2.7
//
//   action   allow | deny; `allow suspicious` sends the packet to output port 1
//   proto    tcp | udp | icmp | icmpv6 | sctp | esp | gre | 0..255 | any
//   src, dst an IPv4 or IPv6 prefix (a bare address is /32 or /128) | any;
//            host bits must be zero; src and dst must be of the same family
//   sport, dport  a port or an inclusive range lo-hi, 0..65535 | any
//
// Each key at most once per rule.  A rule with a prefix only matches packets
// of that family.  A rule with sport/dport only matches packets that carry
// ports (TCP, UDP, SCTP, not a non-first fragment); with proto set it must be
// one of those protocols.
//
// Thread safety: parse/build on one thread; classify() is const and may run
// concurrently from any number of threads.

#include <serpens/nf.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace serpens_fw {

enum class Action : uint8_t { allow, deny };

struct Rule {
    Action action = Action::deny;
    bool suspicious = false;
    uint8_t family = 0;   // 0 any, 4, 6
    int16_t proto = -1;   // -1 any
    uint8_t src[16] = {}; // IPv4 in the first 4 bytes, network order
    uint8_t dst[16] = {};
    uint8_t src_len = 0; // prefix length in bits, 0 = any
    uint8_t dst_len = 0;
    bool needs_ports = false; // sport or dport restricted
    uint16_t sport_lo = 0, sport_hi = 65535;
    uint16_t dport_lo = 0, dport_hi = 65535;
    uint32_t line = 0; // where it came from, for logs
};

struct RuleSet {
    std::vector<Rule> rules;
    Action default_action = Action::deny;
    bool default_given = false; // a 'default' line, not deny for want of one
    uint32_t fingerprint = 0;   // FNV-1a of the file text: cached verdicts carry it
};

// What a packet looks like to the classifier.  Ports in host order.
struct PacketKey {
    uint8_t family = 0; // 4 or 6
    uint8_t proto = 0;
    bool has_ports = false;
    uint16_t sport = 0, dport = 0;
    uint8_t src[16] = {};
    uint8_t dst[16] = {};
};

// Parses `text`; on error returns "file:line: what was expected" and leaves
// `out` unspecified; on success returns "".
std::string parse_rules(std::string_view text, std::string_view file, RuleSet &out);
// Reads and parses the file the config string at `key` names, resolved to
// `path`, as the chain version read it first (serpens_config_file_copy);
// errors as above, "file: why" when the file is not a regular file of at
// most SERPENS_CONFIG_FILE_MAX bytes or cannot be read.
std::string load_rules(const serpens_host_api *h, const serpens_config *cfg, const char *key, const std::string &path,
                       RuleSet &out);

// The reference: index of the first matching rule, or -1.
int32_t classify_linear(const RuleSet &set, const PacketKey &pkt) noexcept;
bool rule_matches(const Rule &r, const PacketKey &pkt) noexcept;

// Tuple-space search (Srinivasan et al., SIGCOMM'99): rules are grouped by
// (family, src length, dst length, proto given?); inside a group an exact
// hash lookup on the masked addresses and proto finds the candidates, whose
// port ranges are checked in rule order.  Groups are visited in order of
// their best rule, so the search stops as soon as no later group can win.
// Cost: one hash lookup per distinct prefix-length pair, not per rule.
class Classifier {
public:
    void build(const RuleSet &set);
    // Same answer as classify_linear (the unit test checks it); no allocation.
    int32_t classify(const PacketKey &pkt) const noexcept;
    std::size_t tuples() const noexcept { return _tuples[0].size() + _tuples[1].size(); }

private:
    struct Key {
        uint64_t w[5];
        bool operator==(const Key &o) const noexcept
        {
            return w[0] == o.w[0] && w[1] == o.w[1] && w[2] == o.w[2] && w[3] == o.w[3] && w[4] == o.w[4];
        }
    };
    struct KeyHash {
        std::size_t operator()(const Key &k) const noexcept;
    };
    // A packet's key misses most tuples: a bit per hash value, set for each
    // key of the tuple, answers that without walking the map's buckets.
    static constexpr unsigned kFilterBits = 1u << 13; // 1 KiB per tuple
    // An address as two words, its bytes in memory order (IPv4: 4 bytes,
    // then zeros); a prefix's mask the same way.
    struct Words {
        uint64_t w[2];
    };
    static Words address_words(uint8_t family, const uint8_t *addr) noexcept;
    static Words prefix_mask(uint8_t len) noexcept;
    struct Tuple {
        uint8_t src_len, dst_len;
        bool has_proto;
        uint32_t best; // smallest rule index inside
        Words src_mask, dst_mask;
        std::unordered_map<Key, std::vector<uint32_t>, KeyHash> buckets;
        std::vector<uint64_t> filter = std::vector<uint64_t>(kFilterBits / 64);
        static std::size_t filter_bit(std::size_t hash) noexcept { return (hash >> 7) % kFilterBits; }
        void mark(std::size_t hash) noexcept { filter[filter_bit(hash) / 64] |= 1ull << filter_bit(hash) % 64; }
        bool may_hold(std::size_t hash) const noexcept
        {
            return (filter[filter_bit(hash) / 64] >> filter_bit(hash) % 64) & 1u;
        }
    };
    // A key of tuple t: the masked addresses and the proto (-1: any).
    static Key make_key(const Tuple &t, const Words &src, const Words &dst, int proto) noexcept;

    const RuleSet *_set = nullptr;
    std::vector<Tuple> _tuples[2]; // [0] IPv4, [1] IPv6, sorted by `best`
};

} // namespace serpens_fw

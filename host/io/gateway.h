#pragma once
// The gateway: classifies each arriving packet to a chain by match rules.
// First match wins; unmatched packets follow the configured default (drop,
// or leave on a port untouched).  One gateway per dispatching lcore, so its
// counters have a single writer.

#include "config/host_config.h"
#include "core/cache_line.h"
#include "core/counter.h"
#include "net/parse.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace serpens::io {

struct Prefix {
    uint8_t version = 0; // 0: any, 4 or 6
    uint8_t length = 0;
    std::array<uint8_t, 16> addr{};

    bool matches(uint8_t ip_version, const std::array<uint8_t, 16> &ip) const noexcept;
};

// Parses "10.0.0.0/8", "2001:db8::/32" or a bare address as serpens_parse_prefix
// does (host bits refused).  Throws std::invalid_argument saying why.
Prefix parse_prefix(const std::string &text);

struct GatewayRule {
    std::string name;
    uint32_t chain_tag = 0;
    int32_t in_port = -1; // -1: any
    Prefix src;
    Prefix dst;
    int16_t proto = -1;
    bool has_src_ports = false;
    bool has_dst_ports = false;
    PortRange src_ports;
    PortRange dst_ports;
    int32_t vlan = -1;
    bool needs_l3 = false; // tests addresses, protocol or ports (set by the Gateway)

    bool matches_everything() const noexcept { return in_port < 0 && vlan < 0 && !needs_l3; }
};

inline constexpr int32_t gateway_no_match = -1;

// Packets per rule, kept by each dispatcher (one writer each) and summed for
// stats.
struct RuleCounts {
    explicit RuleCounts(std::size_t rules) : matched(rules) {}
    LineVector<Counter> matched; // a line of its own: its dispatcher's lcore writes it
    Counter unmatched{0};
};

class Gateway {
public:
    // Resolves names in the config: chain names to tags and port names to
    // port indexes.  Throws ConfigError (host.toml:line) for an unknown chain.
    Gateway(const HostConfig &cfg, const std::function<int32_t(const std::string &)> &chain_tag_of,
            const std::function<int32_t(const std::string &)> &port_index_of);

    // Returns the index of the first matching rule or gateway_no_match, and
    // counts it in `counts`.  `parsed` is false for packets without usable
    // L3/L4 headers: then only rules that test nothing but the ingress port
    // (and VLAN) can match.
    int32_t classify(uint16_t in_port, uint16_t vlan, bool has_vlan, bool parsed, const net::FlowKey &key,
                     RuleCounts &counts) const noexcept;

    // True when the first rule tests nothing (one chain for all traffic):
    // then every packet's verdict is rule 0, and a dispatcher may skip
    // classify() and count a burst at once.
    bool first_rule_matches_everything() const noexcept
    {
        return !_rules.empty() && _rules.front().matches_everything();
    }

    const std::vector<GatewayRule> &rules() const noexcept { return _rules; }
    int32_t default_port() const noexcept { return _default_port; } // -1: drop

private:
    std::vector<GatewayRule> _rules;
    int32_t _default_port = -1;
};

} // namespace serpens::io

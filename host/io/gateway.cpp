#include "io/gateway.h"

#include "core/error.h"

#include <serpens/nf_util.h>

#include <algorithm>
#include <iterator>
#include <stdexcept>

namespace serpens::io {

bool Prefix::matches(uint8_t ip_version, const std::array<uint8_t, 16> &ip) const noexcept
{
    if (version == 0) {
        return true;
    }
    return version == ip_version && serpens_prefix_match(addr.data(), length, ip.data()) != 0;
}

Prefix parse_prefix(const std::string &text)
{
    serpens_prefix parsed;
    char why[256];
    // The NFs' parser: host.toml and chain files read a prefix the same way.
    if (serpens_parse_prefix(text.c_str(), &parsed, why, sizeof why) != SERPENS_OK) {
        throw std::invalid_argument(why);
    }
    Prefix prefix;
    prefix.version = parsed.family;
    prefix.length = parsed.len;
    std::copy(std::begin(parsed.addr), std::end(parsed.addr), prefix.addr.begin());
    return prefix;
}

Gateway::Gateway(const HostConfig &cfg, const std::function<int32_t(const std::string &)> &chain_tag_of,
                 const std::function<int32_t(const std::string &)> &port_index_of)
{
    for (const GatewayRuleConfig &rc : cfg.rules) {
        GatewayRule rule;
        rule.name = rc.name;
        int32_t tag = chain_tag_of(rc.chain);
        if (tag < 0) {
            throw ConfigError(cfg.file, rc.line, 0,
                              "[[gateway.rule]] '" + rc.name + "': unknown chain '" + rc.chain +
                                  "' (no chain of that name in " + cfg.chains_dir + ")");
        }
        rule.chain_tag = static_cast<uint32_t>(tag);
        if (rc.in_port) {
            rule.in_port = port_index_of(*rc.in_port);
        }
        try {
            if (rc.src) {
                rule.src = parse_prefix(*rc.src);
            }
            if (rc.dst) {
                rule.dst = parse_prefix(*rc.dst);
            }
        } catch (const std::invalid_argument &e) {
            throw ConfigError(cfg.file, rc.line, 0, "[[gateway.rule]] '" + rc.name + "': " + e.what());
        }
        if (rule.src.version != 0 && rule.dst.version != 0 && rule.src.version != rule.dst.version) {
            throw ConfigError(cfg.file, rc.line, 0,
                              "[[gateway.rule]] '" + rc.name + "': src and dst are of different IP versions");
        }
        if (rc.proto) {
            rule.proto = *rc.proto;
        }
        if (rc.src_ports) {
            rule.has_src_ports = true;
            rule.src_ports = *rc.src_ports;
        }
        if (rc.dst_ports) {
            rule.has_dst_ports = true;
            rule.dst_ports = *rc.dst_ports;
        }
        if (rc.vlan) {
            rule.vlan = *rc.vlan;
        }
        // Rules that can never match are refused, as fw refuses them: only
        // TCP, UDP and SCTP have ports, ICMP is IPv4's and ICMPv6 IPv6's.
        const bool has_ports = rule.proto < 0 || rule.proto == 6 || rule.proto == 17 || rule.proto == 132;
        if ((rule.has_src_ports || rule.has_dst_ports) && !has_ports) {
            throw ConfigError(cfg.file, rc.line, 0,
                              "[[gateway.rule]] '" + rc.name +
                                  "': src_port/dst_port need proto \"tcp\", \"udp\" or \"sctp\" (or no proto)");
        }
        const int version = rule.src.version != 0 ? rule.src.version : rule.dst.version;
        if ((rule.proto == 1 && version == 6) || (rule.proto == 58 && version == 4)) {
            throw ConfigError(cfg.file, rc.line, 0,
                              "[[gateway.rule]] '" + rc.name +
                                  "': proto does not fit the addresses' IP version (icmp is IPv4's, icmpv6 IPv6's)");
        }
        rule.needs_l3 = rule.src.version != 0 || rule.dst.version != 0 || rule.proto >= 0 || rule.has_src_ports ||
                        rule.has_dst_ports;
        _rules.push_back(rule);
    }
    if (cfg.gateway_default != "drop") {
        _default_port = port_index_of(cfg.gateway_default);
    }
}

int32_t Gateway::classify(uint16_t in_port, uint16_t vlan, bool has_vlan, bool parsed, const net::FlowKey &key,
                          RuleCounts &counts) const noexcept
{
    for (std::size_t i = 0; i < _rules.size(); ++i) {
        const GatewayRule &r = _rules[i];
        if (r.in_port >= 0 && r.in_port != in_port) {
            continue;
        }
        if (r.vlan >= 0 && (!has_vlan || r.vlan != vlan)) {
            continue;
        }
        if (r.needs_l3) {
            if (!parsed || !r.src.matches(key.ip_version, key.src) || !r.dst.matches(key.ip_version, key.dst)) {
                continue;
            }
            if (r.proto >= 0 && r.proto != key.proto) {
                continue;
            }
            // Port ranges speak of TCP/UDP/SCTP; an ICMP echo id is no port.
            bool has_ports = key.proto == 6 || key.proto == 17 || key.proto == 132;
            if ((r.has_src_ports || r.has_dst_ports) && !has_ports) {
                continue;
            }
            if (r.has_src_ports && (key.src_port < r.src_ports.low || key.src_port > r.src_ports.high)) {
                continue;
            }
            if (r.has_dst_ports && (key.dst_port < r.dst_ports.low || key.dst_port > r.dst_ports.high)) {
                continue;
            }
        }
        bump(counts.matched[i]);
        return static_cast<int32_t>(i);
    }
    bump(counts.unmatched);
    return gateway_no_match;
}

} // namespace serpens::io

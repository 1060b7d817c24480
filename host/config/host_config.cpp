#include "config/host_config.h"

#include "config/toml_reader.h"
#include "core/log_level.h"

#include <arpa/inet.h>
#include <linux/magic.h>
#include <sys/vfs.h>
#include <sys/un.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <grp.h>
#include <map>
#include <unistd.h>
#include <vector>

namespace serpens {
namespace {

namespace fs = std::filesystem;

// A chain's flow table: at least a few flows, at most what 32-bit slot
// indexes per part reach; idle times are 16-bit units (state/flow_table.h).
constexpr int64_t min_flow_capacity = 16;
constexpr int64_t max_flow_capacity = int64_t{1} << 32;
constexpr double max_flow_idle_s = 34000;

// flow_full: what a chain does with a new flow its full flow table refuses.
std::string flow_full_policy(config::TableReader &r, const std::string &fallback)
{
    std::string policy = r.string_or("flow_full", fallback);
    if (policy != "drop" && policy != "pass") {
        r.fail("flow_full", "'flow_full' must be \"drop\" (the packet, before any NF) or \"pass\" (through the "
                            "chain with no flow entry)");
    }
    return policy;
}

std::string resolve(const fs::path &base, const std::string &value)
{
    fs::path p(value);
    return (p.is_relative() ? base / p : p).lexically_normal().string();
}

uint32_t line_of(const toml::node &node) { return node.source().begin.line; }

std::optional<uint8_t> parse_proto(config::TableReader &reader)
{
    const toml::node *node = reader.table().get("proto");
    if (node == nullptr) {
        reader.optional_string("proto"); // registers the key as known
        return std::nullopt;
    }
    if (node->is_integer()) {
        return static_cast<uint8_t>(reader.integer_or("proto", 0, 0, 255));
    }
    std::string name = reader.required_string("proto");
    static const std::map<std::string, uint8_t> names = {{"icmp", 1}, {"tcp", 6},  {"udp", 17},  {"icmpv6", 58},
                                                         {"esp", 50}, {"gre", 47}, {"sctp", 132}};
    auto it = names.find(name);
    if (it == names.end()) {
        reader.fail("proto",
                    "'proto' must be tcp, udp, icmp, icmpv6, esp, gre, sctp or a number 0..255, not '" + name + "'");
    }
    return it->second;
}

std::optional<PortRange> parse_port_range(config::TableReader &reader, std::string_view key)
{
    const toml::node *node = reader.table().get(key);
    if (node == nullptr) {
        reader.optional_string(key);
        return std::nullopt;
    }
    if (node->is_integer()) {
        auto port = static_cast<uint16_t>(reader.integer_or(key, 0, 0, 65535));
        return PortRange{port, port};
    }
    std::string text = reader.required_string(key);
    auto dash = text.find('-');
    PortRange range;
    auto parse = [&](std::string_view part, uint16_t &out) {
        unsigned value = 0;
        auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
        if (ec != std::errc() || ptr != part.data() + part.size() || value > 65535) {
            reader.fail(key, "'" + std::string(key) + "' must be a port (0..65535) or a range \"low-high\", not '" +
                                 text + "'");
        }
        out = static_cast<uint16_t>(value);
    };
    if (dash == std::string::npos) {
        parse(text, range.low);
        range.high = range.low;
    } else {
        parse(std::string_view(text).substr(0, dash), range.low);
        parse(std::string_view(text).substr(dash + 1), range.high);
    }
    if (range.low > range.high) {
        reader.fail(key, "'" + std::string(key) + "' range \"" + text + "\" is empty (low > high)");
    }
    return range;
}

// The gid of a group name, from the system's group database.
gid_t resolve_group(config::TableReader &reader, const std::string &name)
{
    long hint = sysconf(_SC_GETGR_R_SIZE_MAX);
    std::vector<char> buf(hint > 0 ? static_cast<std::size_t>(hint) : 1024);
    for (;;) {
        group entry{};
        group *found = nullptr;
        int rc = getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found);
        if (rc == ERANGE && buf.size() < (1u << 20)) {
            buf.resize(buf.size() * 2); // a group with many members
            continue;
        }
        if (rc != 0) {
            reader.fail("control_group", "cannot look up group '" + name + "': " + std::strerror(rc));
        }
        if (found == nullptr) {
            reader.fail("control_group", "'control_group' names no group: '" + name + "' is not in the group database");
        }
        return found->gr_gid;
    }
}

struct Endpoint {
    std::string address;
    uint16_t port = 0;
};

// A numeric "<IPv4>:<port>", or with `ipv6` also "[<IPv6>]:<port>" (a name
// would make the start depend on a resolver); `example` shows the form.
Endpoint parse_endpoint(config::TableReader &reader, std::string_view key, bool ipv6, std::string_view example)
{
    const std::string text = reader.required_string(key);
    const std::string name = "'" + std::string(key) + "'";
    const std::string expected = name + " must be \"<IPv4>:<port>\"" + (ipv6 ? " or \"[<IPv6>]:<port>\"" : "") +
                                 " with a numeric address and a port 1..65535 (e.g. " + std::string(example) +
                                 "), not '" + text + "'";
    Endpoint out;
    std::string_view port_text;
    if (ipv6 && !text.empty() && text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            reader.fail(key, expected);
        }
        out.address = text.substr(1, close - 1);
        port_text = std::string_view(text).substr(close + 2);
        in6_addr v6{};
        if (inet_pton(AF_INET6, out.address.c_str(), &v6) != 1) {
            reader.fail(key, name + ": '" + out.address + "' is not an IPv6 address; " + expected);
        }
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string::npos) {
            reader.fail(key, name + " has no port; " + expected);
        }
        out.address = text.substr(0, colon);
        port_text = std::string_view(text).substr(colon + 1);
        if (ipv6 && out.address.find(':') != std::string::npos) {
            reader.fail(key, name + ": an IPv6 address goes in brackets; " + expected);
        }
        in_addr v4{};
        if (inet_pton(AF_INET, out.address.c_str(), &v4) != 1) {
            reader.fail(key, name + ": '" + out.address + "' is not an IPv4 address; " + expected);
        }
    }
    unsigned port = 0;
    auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
        reader.fail(key, name + ": port '" + std::string(port_text) + "' is not 1..65535; " + expected);
    }
    out.port = static_cast<uint16_t>(port);
    return out;
}

// A numeric IPv4 address a host sends from or to: not 0.0.0.0, broadcast or
// multicast.  Returns it in network byte order.
uint32_t parse_unicast_ipv4(config::TableReader &reader, std::string_view key)
{
    const std::string text = reader.required_string(key);
    in_addr v4{};
    if (inet_pton(AF_INET, text.c_str(), &v4) != 1) {
        reader.fail(key, "'" + std::string(key) + "' must be a numeric IPv4 address (e.g. \"10.0.0.1\"), not '" + text +
                             "'");
    }
    const uint32_t host_order = ntohl(v4.s_addr);
    if (host_order == 0 || host_order == 0xffffffffu || (host_order >> 28) == 0xe) {
        reader.fail(key, "'" + std::string(key) + "' must be a unicast address, not '" + text +
                             "' (unspecified, broadcast or multicast)");
    }
    return v4.s_addr;
}

// "02:00:5e:10:00:01": six hex bytes separated by ':', a unicast address.
std::array<uint8_t, 6> parse_mac(config::TableReader &reader, std::string_view key)
{
    const std::string text = reader.required_string(key);
    const std::string expected = "'" + std::string(key) +
                                 "' must be a MAC address of six hex bytes separated by ':' (e.g. "
                                 "\"02:00:5e:10:00:01\"), not '" +
                                 text + "'";
    std::array<uint8_t, 6> mac{};
    if (text.size() != 17) {
        reader.fail(key, expected);
    }
    for (std::size_t i = 0; i < mac.size(); ++i) {
        const char *at = text.data() + i * 3;
        auto [ptr, ec] = std::from_chars(at, at + 2, mac[i], 16);
        if (ec != std::errc() || ptr != at + 2 || (i < 5 && at[2] != ':')) {
            reader.fail(key, expected);
        }
    }
    if ((mac[0] & 1) != 0 || mac == std::array<uint8_t, 6>{}) {
        reader.fail(key, "'" + std::string(key) + "' must be a unicast MAC address, not '" + text +
                             "' (all zero, broadcast or multicast)");
    }
    return mac;
}

// Why `state_dir` cannot hold the host's state, or "" when it may: the host
// writes its usage ledger, leases and tables' layouts there beside the
// tables, and hugetlbfs takes no write(2) (the ledger failed at its first
// row).  Judged by the nearest directory that exists, where it will be made.
std::string state_dir_problem(const fs::path &state_dir)
{
    fs::path at = state_dir;
    std::error_code ec;
    while (!fs::exists(at, ec) && at.has_relative_path()) {
        at = at.parent_path();
    }
    struct statfs info {};
    if (::statfs(at.c_str(), &info) != 0 || info.f_type != HUGETLBFS_MAGIC) {
        return {};
    }
    return "state_dir " + state_dir.string() +
           " is on hugetlbfs, which cannot hold the usage ledger, leases and layouts the host writes beside "
           "its tables; for 2 MB pages put it on a tmpfs mounted with huge=advise (e.g. "
           "`mount -o remount,huge=advise /dev/shm`: the host asks for them for its big tables) or huge=within_size";
}

// The whole of host.toml; check_dirs: also require plugin_dir and chains_dir
// to exist (not for text that comes from no file, such as the fuzzer's).
HostConfig read_host_config(std::shared_ptr<const toml::table> document, const std::string &path, bool check_dirs)
{
    const toml::table &root = *document;
    const fs::path base = fs::path(path).parent_path();
    HostConfig cfg;
    cfg.file = path;

    config::TableReader top(root, path, "host config");
    top.allow_only({"host", "eal", "mempool", "port", "parser", "gateway", "instances", "instance", "autoscale",
                    "metrics", "peer", "nf_defaults"});

    if (const toml::table *t = top.optional_table("host")) {
        config::TableReader r(*t, path, "[host]");
        r.allow_only({"id", "log_level", "log_file", "plugin_dir", "chains_dir", "state_dir", "control_socket",
                      "control_group"});
        cfg.id = r.string_or("id", cfg.id);
        // The id names the state directory and the control socket.
        if (!config::is_safe_name(cfg.id)) {
            r.fail("id", config::unsafe_name_message("host id", cfg.id));
        }
        cfg.log_level = r.string_or("log_level", cfg.log_level);
        if (!is_log_level(cfg.log_level)) {
            r.fail("log_level", "'log_level' must be " + log_levels_text());
        }
        cfg.log_file = r.string_or("log_file", "");
        cfg.plugin_dir = r.string_or("plugin_dir", cfg.plugin_dir);
        cfg.chains_dir = r.string_or("chains_dir", cfg.chains_dir);
        cfg.state_dir = r.string_or("state_dir", "");
        cfg.control_socket = r.string_or("control_socket", "");
        // An empty path would silently mean host.toml's own directory (or
        // the default): leave a key out for its default instead.
        for (const char *key : {"log_file", "plugin_dir", "chains_dir", "state_dir", "control_socket"}) {
            if (const toml::node *node = r.table().get(key);
                node != nullptr && node->value_or(std::string("x")).empty()) {
                r.fail(key, "'" + std::string(key) + "' is empty: name a path, or leave the key out for its default");
            }
        }
        cfg.control_group = r.string_or("control_group", "");
        if (!cfg.control_group.empty()) {
            cfg.control_gid = resolve_group(r, cfg.control_group);
        }
    }
    if (!cfg.log_file.empty()) {
        cfg.log_file = resolve(base, cfg.log_file);
    }
    cfg.plugin_dir = resolve(base, cfg.plugin_dir);
    cfg.chains_dir = resolve(base, cfg.chains_dir);
    if (cfg.state_dir.empty()) {
        cfg.state_dir = std::string(default_state_parent) + "/" + cfg.id;
    } else {
        cfg.state_dir = resolve(base, cfg.state_dir);
    }
    cfg.control_socket =
        cfg.control_socket.empty() ? "/run/serpens/" + cfg.id + ".sock" : resolve(base, cfg.control_socket);
    // A Unix socket's path has room for 107 bytes (sun_path): found now,
    // by --check too, rather than when the host binds it.
    if (constexpr std::size_t max_socket_path = sizeof(sockaddr_un::sun_path) - 1;
        cfg.control_socket.size() > max_socket_path) {
        const std::string message = "control_socket " + cfg.control_socket + " is " +
                                    std::to_string(cfg.control_socket.size()) + " bytes long; a Unix socket's path " +
                                    "holds at most " + std::to_string(max_socket_path);
        if (const toml::node *node = root.at_path("host.control_socket").node(); node != nullptr) {
            config::fail_at(path, node->source(), message);
        }
        throw ConfigError(path, message);
    }
    if (std::string why = check_dirs ? config::path_problem(cfg.plugin_dir, false) : ""; !why.empty()) {
        const toml::node *node = root.at_path("host.plugin_dir").node();
        std::string message = "plugin directory " + cfg.plugin_dir + " " + why + " (set [host] plugin_dir)";
        if (node != nullptr) {
            config::fail_at(path, node->source(), message);
        }
        throw ConfigError(path, message);
    }
    if (std::string why = check_dirs ? state_dir_problem(cfg.state_dir) : ""; !why.empty()) {
        if (const toml::node *node = root.at_path("host.state_dir").node(); node != nullptr) {
            config::fail_at(path, node->source(), why);
        }
        throw ConfigError(path, why);
    }
    if (std::string why = check_dirs ? config::path_problem(cfg.chains_dir, false) : ""; !why.empty()) {
        const toml::node *node = root.at_path("host.chains_dir").node();
        std::string message = "chains directory " + cfg.chains_dir + " " + why + " (set [host] chains_dir)";
        if (node != nullptr) {
            config::fail_at(path, node->source(), message);
        }
        throw ConfigError(path, message);
    }

    if (const toml::table *t = top.optional_table("eal")) {
        config::TableReader r(*t, path, "[eal]");
        r.allow_only({"args"});
        cfg.eal_args = r.string_array("args");
    }

    if (const toml::table *t = top.optional_table("mempool")) {
        config::TableReader r(*t, path, "[mempool]");
        r.allow_only({"mbufs", "cache", "data_room"});
        cfg.mbufs = static_cast<uint32_t>(r.integer_or("mbufs", cfg.mbufs, 1023, 16 * 1024 * 1024));
        cfg.mbuf_cache = static_cast<uint32_t>(r.integer_or("cache", cfg.mbuf_cache, 0, 512));
        cfg.mbuf_data_room = static_cast<uint32_t>(r.integer_or("data_room", cfg.mbuf_data_room, 256, 65535));
    }

    std::map<std::string, uint32_t> port_lines;
    std::map<std::string, uint32_t> device_lines; // by the device's name, before its first ','
    for (const toml::table *t : top.table_array("port")) {
        config::TableReader r(*t, path, "[[port]]");
        r.allow_only({"name", "device", "rx_descriptors", "tx_descriptors", "rx_queues", "promiscuous"});
        PortConfig port;
        port.name = r.required_string("name");
        port.device = r.required_string("device");
        port.rx_descriptors = static_cast<uint16_t>(r.integer_or("rx_descriptors", port.rx_descriptors, 64, 32768));
        port.tx_descriptors = static_cast<uint16_t>(r.integer_or("tx_descriptors", port.tx_descriptors, 64, 32768));
        port.rx_queues = static_cast<uint16_t>(r.integer_or("rx_queues", port.rx_queues, 0, 1024));
        port.promiscuous = r.bool_or("promiscuous", port.promiscuous);
        port.line = line_of(*t);
        if (!port_lines.emplace(port.name, port.line).second) {
            r.fail("name",
                   "port name '" + port.name + "' is already used at line " + std::to_string(port_lines[port.name]));
        }
        if (port.device.empty() || port.device.front() == ',') {
            r.fail("device", "'device' names no device: a PCI address or a vdev such as \"net_pcap0,rx_pcap=in.pcap\"");
        }
        // EAL would refuse the second probe of one device only at start, as
        // "configure failed: Device or resource busy", naming neither line.
        const std::string device = port.device.substr(0, port.device.find(','));
        if (!device_lines.emplace(device, port.line).second) {
            r.fail("device", "device '" + device + "' is already the device of the port at line " +
                                 std::to_string(device_lines[device]) + "; a device is one port");
        }
        cfg.ports.push_back(std::move(port));
    }
    if (cfg.ports.empty()) {
        top.fail_table("no [[port]]: a host needs at least one port (a PCI address or a vdev such as "
                       "\"net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap\")");
    }
    auto check_port = [&](config::TableReader &r, std::string_view key, const std::string &name) {
        if (port_lines.count(name) == 0) {
            std::string known;
            for (const auto &[n, line] : port_lines) {
                known += (known.empty() ? "" : ", ") + n;
            }
            r.fail(key, "unknown port '" + name + "' (ports: " + known + ")");
        }
    };

    if (const toml::table *t = top.optional_table("parser")) {
        config::TableReader r(*t, path, "[parser]");
        r.allow_only({"malformed"});
        cfg.parse_malformed = r.string_or("malformed", cfg.parse_malformed);
        if (cfg.parse_malformed != "drop" && cfg.parse_malformed != "pass") {
            r.fail("malformed", "'malformed' must be \"drop\" or \"pass\"");
        }
    }

    if (const toml::table *t = top.optional_table("gateway")) {
        config::TableReader r(*t, path, "[gateway]");
        r.allow_only({"default", "rule"});
        cfg.gateway_default = r.string_or("default", cfg.gateway_default);
        if (cfg.gateway_default != "drop") {
            check_port(r, "default", cfg.gateway_default);
        }
        std::map<std::string, uint32_t> rule_lines;
        for (const toml::table *rt : r.table_array("rule")) {
            config::TableReader rr(*rt, path, "[[gateway.rule]]");
            rr.allow_only({"name", "chain", "in_port", "src", "dst", "proto", "src_port", "dst_port", "vlan"});
            GatewayRuleConfig rule;
            rule.line = line_of(*rt);
            rule.chain = rr.required_string("chain");
            rule.name = rr.string_or("name", "rule" + std::to_string(cfg.rules.size() + 1));
            if (!rule_lines.emplace(rule.name, rule.line).second) {
                rr.fail("name", "rule name '" + rule.name + "' is already used at line " +
                                    std::to_string(rule_lines[rule.name]));
            }
            rule.in_port = rr.optional_string("in_port");
            if (rule.in_port) {
                check_port(rr, "in_port", *rule.in_port);
            }
            rule.src = rr.optional_string("src");
            rule.dst = rr.optional_string("dst");
            rule.proto = parse_proto(rr);
            rule.src_ports = parse_port_range(rr, "src_port");
            rule.dst_ports = parse_port_range(rr, "dst_port");
            if (auto vlan = rr.optional_integer("vlan", 0, 4095)) {
                rule.vlan = static_cast<uint16_t>(*vlan);
            }
            cfg.rules.push_back(std::move(rule));
        }
    }

    if (const toml::table *t = top.optional_table("instances")) {
        config::TableReader r(*t, path, "[instances]");
        r.allow_only({"burst", "ring_size", "wake_threshold", "wake_deadline_us", "idle_sleep_us", "init_warn_ms",
                      "pool", "keep_warm_s", "flow_capacity", "flow_idle_s", "flow_full", "bucket_hash"});
        cfg.burst = static_cast<uint32_t>(r.integer_or("burst", cfg.burst, 1, 256));
        cfg.ring_size = static_cast<uint32_t>(r.integer_or("ring_size", cfg.ring_size, 64, 1 << 20));
        if ((cfg.ring_size & (cfg.ring_size - 1)) != 0) {
            r.fail("ring_size", "'ring_size' must be a power of two");
        }
        if (cfg.ring_size < 2 * cfg.burst) {
            r.fail("ring_size", "'ring_size' (" + std::to_string(cfg.ring_size) + ") must hold at least two bursts (" +
                                    std::to_string(2 * cfg.burst) +
                                    " packets with burst = " + std::to_string(cfg.burst) + ")");
        }
        cfg.wake_threshold = static_cast<uint32_t>(r.integer_or("wake_threshold", cfg.wake_threshold, 1, 1 << 20));
        if (r.table().get("wake_threshold") == nullptr) {
            // The default, in a small ring.
            cfg.wake_threshold = std::min(cfg.wake_threshold, ring_capacity(cfg.ring_size));
        } else if (cfg.wake_threshold > ring_capacity(cfg.ring_size)) {
            r.fail("wake_threshold", "'wake_threshold' (" + std::to_string(cfg.wake_threshold) +
                                         ") would never be reached: a ring of 'ring_size' " +
                                         std::to_string(cfg.ring_size) + " holds " +
                                         std::to_string(ring_capacity(cfg.ring_size)) + " packets");
        }
        cfg.wake_deadline_us =
            static_cast<uint32_t>(r.integer_or("wake_deadline_us", cfg.wake_deadline_us, 1, 1000000));
        cfg.idle_sleep_us = static_cast<uint32_t>(r.integer_or("idle_sleep_us", cfg.idle_sleep_us, 0, 1000000));
        cfg.init_warn_ms = static_cast<uint32_t>(r.integer_or("init_warn_ms", cfg.init_warn_ms, 0, 3600000));
        cfg.pool = static_cast<uint32_t>(r.integer_or("pool", cfg.pool, 0, 16));
        cfg.keep_warm_s = r.double_or("keep_warm_s", cfg.keep_warm_s, 0, 86400);
        cfg.flow_capacity = static_cast<uint64_t>(r.integer_or("flow_capacity", static_cast<int64_t>(cfg.flow_capacity),
                                                               min_flow_capacity, max_flow_capacity));
        cfg.flow_idle_s = r.double_or("flow_idle_s", cfg.flow_idle_s, 0, max_flow_idle_s);
        cfg.flow_full = flow_full_policy(r, cfg.flow_full);
        cfg.bucket_hash = r.string_or("bucket_hash", cfg.bucket_hash);
        if (cfg.bucket_hash != "crc32c" && cfg.bucket_hash != "rss") {
            r.fail("bucket_hash", "'bucket_hash' must be \"crc32c\" (buckets even for any traffic) or \"rss\" (the "
                                  "NIC's symmetric RSS hash, so its redirection table follows the buckets)");
        }
    }

    for (const toml::table *t : top.table_array("instance")) {
        config::TableReader r(*t, path, "[[instance]]");
        r.allow_only({"chain", "count", "lcores", "flow_capacity", "flow_idle_s", "flow_full"});
        InstanceConfig inst;
        inst.line = line_of(*t);
        inst.chain = r.required_string("chain");
        inst.count = static_cast<uint32_t>(r.integer_or("count", 1, 0, 16));
        if (t->contains("flow_capacity")) {
            inst.flow_capacity =
                static_cast<uint64_t>(r.integer_or("flow_capacity", 0, min_flow_capacity, max_flow_capacity));
        }
        if (t->contains("flow_idle_s")) {
            inst.flow_idle_s = r.double_or("flow_idle_s", 0, 0, max_flow_idle_s);
        }
        if (t->contains("flow_full")) {
            inst.flow_full = flow_full_policy(r, "");
        }
        if (const toml::array *lcores = r.optional_array("lcores")) {
            for (const toml::node &n : *lcores) {
                if (!n.is_integer() || n.as_integer()->get() < 0 || n.as_integer()->get() >= 1024) {
                    r.fail(n, "'lcores' must hold lcore ids 0..1023");
                }
                inst.lcores.push_back(static_cast<uint32_t>(n.as_integer()->get()));
            }
        }
        if (!inst.lcores.empty() && inst.lcores.size() != 1 && inst.lcores.size() < inst.count) {
            r.fail("lcores", "'lcores' must name one lcore for all instances or at least one per instance (count = " +
                                 std::to_string(inst.count) + ")");
        }
        cfg.instances.push_back(std::move(inst));
    }

    if (const toml::table *t = top.optional_table("autoscale")) {
        config::TableReader r(*t, path, "[autoscale]");
        r.allow_only({"interval_ms", "scale_out_ms", "scale_in_ms", "scale_in_margin", "chain"});
        AutoscaleConfig &a = cfg.autoscale;
        a.interval_ms = static_cast<uint32_t>(r.integer_or("interval_ms", a.interval_ms, 10, 1000));
        a.scale_out_ms = static_cast<uint32_t>(r.integer_or("scale_out_ms", a.scale_out_ms, 0, 600000));
        a.scale_in_ms = static_cast<uint32_t>(r.integer_or("scale_in_ms", a.scale_in_ms, 0, 3600000));
        a.scale_in_margin = r.double_or("scale_in_margin", a.scale_in_margin, 0.1, 1.0);
        for (const toml::table *c : r.table_array("chain")) {
            config::TableReader cr(*c, path, "[[autoscale.chain]]");
            cr.allow_only({"chain", "min", "max", "target_busy"});
            AutoscaleChainConfig chain;
            chain.line = line_of(*c);
            chain.chain = cr.required_string("chain");
            chain.min = static_cast<uint32_t>(cr.integer_or("min", chain.min, 0, 16));
            chain.max = static_cast<uint32_t>(cr.integer_or("max", chain.max, 1, 16));
            chain.target_busy = cr.double_or("target_busy", chain.target_busy, 0.05, 1.0);
            if (chain.min > chain.max) {
                cr.fail("min",
                        "'min' (" + std::to_string(chain.min) + ") is above 'max' (" + std::to_string(chain.max) + ")");
            }
            for (const AutoscaleChainConfig &other : a.chains) {
                if (other.chain == chain.chain) {
                    cr.fail("chain", "chain '" + chain.chain + "' is autoscaled twice");
                }
            }
            a.chains.push_back(std::move(chain));
        }
    }

    if (const toml::table *t = top.optional_table("metrics")) {
        config::TableReader r(*t, path, "[metrics]");
        r.allow_only({"listen"});
        if (t->contains("listen")) {
            cfg.metrics.line = line_of(*t->get("listen"));
            Endpoint listen = parse_endpoint(r, "listen", true, "\"127.0.0.1:9650\", \"[::1]:9650\"");
            cfg.metrics.enabled = true;
            cfg.metrics.address = std::move(listen.address);
            cfg.metrics.port = listen.port;
        }
    }

    if (const toml::table *t = top.optional_table("peer")) {
        config::TableReader r(*t, path, "[peer]");
        r.allow_only({"listen", "certificate", "private_key", "ca", "underlay_port", "underlay_address", "underlay_mtu",
                      "vxlan_udp_port", "vni", "heartbeat_ms", "dead_after_ms", "lease_ms", "host"});
        PeerConfig &p = cfg.peer;
        p.enabled = true;
        p.line = t->contains("listen") ? line_of(*t->get("listen")) : line_of(*t);
        Endpoint listen = parse_endpoint(r, "listen", false, "\"10.0.0.1:7946\"");
        p.listen_address = std::move(listen.address);
        p.listen_port = listen.port;
        // Credentials: relative to host.toml, and there when the host starts.
        auto credential = [&](std::string_view key, std::string_view what) {
            std::string file = resolve(base, r.required_string(key));
            if (std::string why = check_dirs ? config::path_problem(file, true) : ""; !why.empty()) {
                r.fail(key, "'" + std::string(key) + "': " + std::string(what) + " " + file + " " + why);
            }
            return file;
        };
        p.certificate = credential("certificate", "this host's certificate");
        p.private_key = credential("private_key", "this host's private key");
        p.ca = credential("ca", "the peers' CA certificate");
        p.underlay_port = r.required_string("underlay_port");
        check_port(r, "underlay_port", p.underlay_port);
        p.underlay_ip = parse_unicast_ipv4(r, "underlay_address");
        p.underlay_address = r.required_string("underlay_address");
        p.underlay_mtu = static_cast<uint32_t>(
            r.integer_or("underlay_mtu", p.underlay_mtu, PeerConfig::min_underlay_mtu, PeerConfig::max_underlay_mtu));
        p.vxlan_udp_port = static_cast<uint16_t>(r.integer_or("vxlan_udp_port", p.vxlan_udp_port, 1, 65535));
        p.vni = static_cast<uint32_t>(r.integer_or("vni", p.vni, 0, PeerConfig::max_vni));
        p.heartbeat_ms = static_cast<uint32_t>(r.integer_or("heartbeat_ms", p.heartbeat_ms, 10, 60000));
        p.dead_after_ms = static_cast<uint32_t>(r.integer_or("dead_after_ms", p.dead_after_ms, 20, 600000));
        p.lease_ms = static_cast<uint32_t>(r.integer_or("lease_ms", p.lease_ms, 100, 3600000));
        // One lost heartbeat must not declare a peer dead.
        if (p.dead_after_ms < 2 * p.heartbeat_ms) {
            r.fail(t->contains("dead_after_ms") ? "dead_after_ms" : "heartbeat_ms",
                   "'dead_after_ms' (" + std::to_string(p.dead_after_ms) +
                       ") must be at least two heartbeats (2 x 'heartbeat_ms' = " + std::to_string(2 * p.heartbeat_ms) +
                       ")");
        }
        // A lease must outlast finding its holder dead, or state could be
        // granted again while its holder still counts as alive.
        if (p.lease_ms <= p.dead_after_ms) {
            r.fail(t->contains("lease_ms") ? "lease_ms" : "dead_after_ms",
                   "'lease_ms' (" + std::to_string(p.lease_ms) + ") must be longer than 'dead_after_ms' (" +
                       std::to_string(p.dead_after_ms) + ")");
        }
        for (const toml::table *ht : r.table_array("host")) {
            config::TableReader hr(*ht, path, "[[peer.host]]");
            hr.allow_only({"id", "address", "next_hop_mac"});
            PeerHostConfig host;
            host.line = line_of(*ht);
            host.id = hr.required_string("id");
            if (!config::is_safe_name(host.id)) {
                hr.fail("id", config::unsafe_name_message("peer id", host.id));
            }
            if (host.id == cfg.id) {
                hr.fail("id", "peer id '" + host.id + "' is this host's own [host] id");
            }
            Endpoint address = parse_endpoint(hr, "address", false, "\"10.0.0.2:7946\"");
            host.address = std::move(address.address);
            host.port = address.port;
            for (const PeerHostConfig &other : p.hosts) {
                if (other.id == host.id) {
                    hr.fail("id", "peer id '" + host.id + "' is already used at line " + std::to_string(other.line));
                }
                if (other.address == host.address && other.port == host.port) {
                    hr.fail("address", "peer address " + host.address + ":" + std::to_string(host.port) +
                                           " is already the address of peer '" + other.id + "' (line " +
                                           std::to_string(other.line) + ")");
                }
            }
            if (ht->contains("next_hop_mac")) {
                host.next_hop_mac = parse_mac(hr, "next_hop_mac");
            }
            p.hosts.push_back(std::move(host));
        }
        // A flow-table entry names the peer serving its flow in 7 bits.
        if (p.hosts.size() > PeerConfig::max_peer_hosts) {
            r.fail("host", "[peer] lists " + std::to_string(p.hosts.size()) + " [[peer.host]]; at most " +
                               std::to_string(PeerConfig::max_peer_hosts) + " are supported");
        }
    }

    if (const toml::table *t = top.optional_table("nf_defaults")) {
        cfg.nf_defaults.document = document;
        cfg.nf_defaults.file = path;
        cfg.nf_defaults.directory = base.string();
        for (const auto &[key, node] : *t) {
            std::string plugin(key.str());
            if (!node.is_table()) {
                config::fail_at(path, node.source(),
                                "[nf_defaults]: '" + plugin +
                                    "' must be a table of config keys for the NFs of "
                                    "plugin '" +
                                    plugin + "' ([nf_defaults." + plugin + "])");
            }
            cfg.nf_defaults.by_plugin.emplace(plugin, node.as_table());
        }
    }
    return cfg;
}

} // namespace

HostConfig load_host_config_text(std::string_view text, const std::string &path)
{
    return read_host_config(std::make_shared<const toml::table>(config::parse_text(text, path)), path, false);
}

HostConfig load_host_config(const std::string &path)
{
    std::error_code ec;
    if (fs::status(path, ec).type() == fs::file_type::not_found) {
        throw ConfigError(path, "no such file (give the host config with --config)");
    }
    if (ec) {
        throw ConfigError(path, ec.message());
    }
    return read_host_config(std::make_shared<const toml::table>(config::parse_file(path)), path, true);
}

} // namespace serpens

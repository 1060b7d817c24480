#include "metrics/render.h"

#include <charconv>
#include <initializer_list>
#include <utility>

namespace serpens::metrics {
namespace {

// Length of the valid UTF-8 sequence at s[i], 0 when there is none.
std::size_t utf8_length(std::string_view s, std::size_t i)
{
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = byte(i);
    std::size_t n = 0;
    unsigned min = 0;
    unsigned code = 0;
    if (c < 0x80) {
        return 1;
    }
    if ((c & 0xe0) == 0xc0) {
        n = 2, min = 0x80, code = c & 0x1fu;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, min = 0x800, code = c & 0x0fu;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, min = 0x10000, code = c & 0x07u;
    } else {
        return 0;
    }
    if (i + n > s.size()) {
        return 0;
    }
    for (std::size_t k = 1; k < n; ++k) {
        if ((byte(i + k) & 0xc0) != 0x80) {
            return 0;
        }
        code = (code << 6) | (byte(i + k) & 0x3fu);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if (code < min || (code >= 0xd800 && code <= 0xdfff) || code > 0x10ffff) {
        return 0;
    }
    return n;
}

// HELP text: backslash and newline escaped (the format's rule for docstrings).
std::string escape_help(std::string_view text)
{
    std::string out;
    for (char c : text) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    return out;
}

using Labels = std::initializer_list<std::pair<const char *, std::string_view>>;

class Writer {
public:
    // One HELP and one TYPE line; the samples of the family follow.
    void family(const char *name, const char *type, std::string_view help)
    {
        _out += "# HELP ";
        _out += name;
        _out += ' ';
        _out += escape_help(help);
        _out += "\n# TYPE ";
        _out += name;
        _out += ' ';
        _out += type;
        _out += '\n';
    }
    void sample(std::string_view name, Labels labels, uint64_t value)
    {
        head(name, labels);
        _out += std::to_string(value);
        _out += '\n';
    }
    void sample(std::string_view name, Labels labels, double value)
    {
        head(name, labels);
        _out += format_double(value);
        _out += '\n';
    }
    std::string take() { return std::move(_out); }

private:
    void head(std::string_view name, Labels labels)
    {
        _out += name;
        if (labels.size() != 0) {
            char sep = '{';
            for (const auto &[label, value] : labels) {
                _out += sep;
                _out += label;
                _out += '=';
                _out += escape_label_value(value);
                sep = ',';
            }
            _out += '}';
        }
        _out += ' ';
    }

    std::string _out;
};

} // namespace

std::string escape_label_value(std::string_view value)
{
    std::string out = "\"";
    for (std::size_t i = 0; i < value.size();) {
        const std::size_t n = utf8_length(value, i);
        if (n == 0) {
            out += "\xef\xbf\xbd"; // U+FFFD for the byte that starts no UTF-8 sequence
            ++i;
            continue;
        }
        const char c = value[i];
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out.append(value.substr(i, n));
        }
        i += n;
    }
    out += '"';
    return out;
}

const std::vector<uint64_t> &latency_bounds_ns()
{
    static const std::vector<uint64_t> bounds = [] {
        std::vector<uint64_t> b;
        for (unsigned k = 10; k <= 30; ++k) {
            b.push_back(uint64_t{1} << k);
        }
        return b;
    }();
    return bounds;
}

std::string format_double(double v)
{
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

std::string render(const Snapshot &s)
{
    Writer w;

    w.family("serpens_port_rx_packets_total", "counter", "Packets the host received on the port.");
    for (const PortSample &p : s.ports) {
        w.sample("serpens_port_rx_packets_total", {{"port", p.name}}, p.rx_packets);
    }
    w.family("serpens_port_tx_packets_total", "counter", "Packets the port's device sent.");
    for (const PortSample &p : s.ports) {
        w.sample("serpens_port_tx_packets_total", {{"port", p.name}}, p.tx_packets);
    }
    w.family("serpens_port_rx_bytes_total", "counter", "Bytes the port's device received.");
    for (const PortSample &p : s.ports) {
        w.sample("serpens_port_rx_bytes_total", {{"port", p.name}}, p.rx_bytes);
    }
    w.family("serpens_port_tx_bytes_total", "counter", "Bytes the port's device sent.");
    for (const PortSample &p : s.ports) {
        w.sample("serpens_port_tx_bytes_total", {{"port", p.name}}, p.tx_bytes);
    }
    w.family("serpens_port_dropped_packets_total", "counter",
             "Packets lost at the port, by reason: rx_missed (the device had no room), tx_errors (the device "
             "refused them), tx_ring_full (the port refused them from the main lcore's TX ring).");
    for (const PortSample &p : s.ports) {
        for (const auto &[reason, n] : p.dropped) {
            w.sample("serpens_port_dropped_packets_total", {{"port", p.name}, {"reason", reason}}, n);
        }
    }

    w.family("serpens_parser_packets_total", "counter", "Received packets by parse result.");
    for (const auto &[result, n] : s.parser) {
        w.sample("serpens_parser_packets_total", {{"result", result}}, n);
    }
    w.family("serpens_dispatch_dropped_packets_total", "counter",
             "Received packets dropped before reaching a chain, by reason.");
    for (const auto &[reason, n] : s.dispatch) {
        w.sample("serpens_dispatch_dropped_packets_total", {{"reason", reason}}, n);
    }
    w.family("serpens_gateway_rule_matched_packets_total", "counter", "Packets each gateway rule matched.");
    for (const RuleSample &r : s.rules) {
        w.sample("serpens_gateway_rule_matched_packets_total", {{"rule", r.name}}, r.matched);
    }
    w.family("serpens_gateway_unmatched_packets_total", "counter", "Packets no gateway rule matched.");
    w.sample("serpens_gateway_unmatched_packets_total", {}, s.unmatched);

    w.family("serpens_chain_packets_total", "counter", "Packets the chain ran on (metered; survives scale events).");
    for (const ChainSample &c : s.chains) {
        w.sample("serpens_chain_packets_total", {{"chain", c.name}}, c.packets);
    }
    w.family("serpens_chain_instances", "gauge", "The chain's instances by state.");
    for (const ChainSample &c : s.chains) {
        w.sample("serpens_chain_instances", {{"chain", c.name}, {"state", "active"}}, uint64_t{c.active});
        w.sample("serpens_chain_instances", {{"chain", c.name}, {"state", "pooled"}}, uint64_t{c.pooled});
        w.sample("serpens_chain_instances", {{"chain", c.name}, {"state", "parked"}}, uint64_t{c.parked});
    }
    w.family("serpens_chain_scale_events_total", "counter", "Scale events of the chain.");
    for (const ChainSample &c : s.chains) {
        w.sample("serpens_chain_scale_events_total", {{"chain", c.name}}, c.scale_events);
    }
    w.family("serpens_chain_wakeups_total", "counter", "Times a packet woke the chain from zero.");
    for (const ChainSample &c : s.chains) {
        w.sample("serpens_chain_wakeups_total", {{"chain", c.name}}, c.wakeups);
    }
    w.family("serpens_chain_cold_starts_total", "counter", "Instances created with NF init for a scale event.");
    for (const ChainSample &c : s.chains) {
        w.sample("serpens_chain_cold_starts_total", {{"chain", c.name}}, c.cold_starts);
    }

    w.family("serpens_instance_packets_total", "counter", "Packets the chain instance ran on.");
    for (const InstanceSample &i : s.instances) {
        w.sample("serpens_instance_packets_total", {{"chain", i.chain}, {"instance", std::to_string(i.instance)}},
                 i.packets);
    }
    w.family("serpens_instance_out_packets_total", "counter", "Packets the instance handed to TX at the egress.");
    for (const InstanceSample &i : s.instances) {
        w.sample("serpens_instance_out_packets_total", {{"chain", i.chain}, {"instance", std::to_string(i.instance)}},
                 i.out);
    }
    w.family("serpens_instance_dropped_packets_total", "counter",
             "Packets the instance dropped, by reason: nf (an NF's verdict), tx_full (its TX queue was full).");
    for (const InstanceSample &i : s.instances) {
        const std::string index = std::to_string(i.instance);
        for (const auto &[reason, n] : i.dropped) {
            w.sample("serpens_instance_dropped_packets_total",
                     {{"chain", i.chain}, {"instance", index}, {"reason", reason}}, n);
        }
    }
    w.family("serpens_instance_state", "gauge", "1 for the state the instance slot is in.");
    for (const InstanceSample &i : s.instances) {
        w.sample("serpens_instance_state",
                 {{"chain", i.chain}, {"instance", std::to_string(i.instance)}, {"state", i.state}}, uint64_t{1});
    }

    w.family("serpens_nf_packets_total", "counter", "Packets the NF of a chain instance processed.");
    for (const NfSample &n : s.nfs) {
        w.sample("serpens_nf_packets_total",
                 {{"chain", n.chain}, {"instance", std::to_string(n.instance)}, {"nf", n.nf}, {"plugin", n.plugin}},
                 n.packets);
    }
    w.family("serpens_nf_dropped_packets_total", "counter", "Packets the NF of a chain instance dropped.");
    for (const NfSample &n : s.nfs) {
        w.sample("serpens_nf_dropped_packets_total",
                 {{"chain", n.chain}, {"instance", std::to_string(n.instance)}, {"nf", n.nf}, {"plugin", n.plugin}},
                 n.dropped);
    }
    w.family("serpens_nf_events_total", "counter", "The NF's own named counters (its plugin documents them).");
    for (const NfSample &n : s.nfs) {
        const std::string index = std::to_string(n.instance);
        for (const auto &[counter, v] : n.counters) {
            w.sample(
                "serpens_nf_events_total",
                {{"chain", n.chain}, {"instance", index}, {"nf", n.nf}, {"plugin", n.plugin}, {"counter", counter}}, v);
        }
    }

    w.family("serpens_flow_table_entries", "gauge", "Flows in the chain's flow table.");
    for (const ChainSample &c : s.chains) {
        if (c.has_flows) {
            w.sample("serpens_flow_table_entries", {{"chain", c.name}}, c.flows_live);
        }
    }
    w.family("serpens_flow_table_capacity_entries", "gauge", "Slots of the chain's flow table.");
    for (const ChainSample &c : s.chains) {
        if (c.has_flows) {
            w.sample("serpens_flow_table_capacity_entries", {{"chain", c.name}}, c.flows_capacity);
        }
    }
    w.family("serpens_flow_table_refused_total", "counter", "New flows the chain's full flow table refused.");
    for (const ChainSample &c : s.chains) {
        if (c.has_flows) {
            w.sample("serpens_flow_table_refused_total", {{"chain", c.name}}, c.flows_refused_full);
        }
    }
    w.family("serpens_state_table_entries", "gauge", "Live entries of an NF's state table.");
    for (const TableSample &t : s.tables) {
        w.sample("serpens_state_table_entries", {{"chain", t.chain}, {"nf", t.nf}, {"table", t.table}}, t.live);
    }
    w.family("serpens_state_table_capacity_entries", "gauge", "Entries an NF's state table was created to hold.");
    for (const TableSample &t : s.tables) {
        w.sample("serpens_state_table_capacity_entries", {{"chain", t.chain}, {"nf", t.nf}, {"table", t.table}},
                 t.capacity);
    }

    w.family("serpens_batch_latency_seconds", "histogram",
             "From a batch's RX to the end of its chain run, per lcore (sampled batches).");
    const std::vector<uint64_t> &bounds = latency_bounds_ns();
    for (const LatencySample &l : s.latency) {
        const std::string lcore = std::to_string(l.lcore);
        uint64_t cumulative = 0;
        std::size_t b = 0;
        for (uint64_t bound : bounds) {
            for (; b < l.buckets.size() && l.buckets[b].first < bound; ++b) {
                cumulative += l.buckets[b].second;
            }
            w.sample("serpens_batch_latency_seconds_bucket",
                     {{"lcore", lcore}, {"le", format_double(static_cast<double>(bound) / 1e9)}}, cumulative);
        }
        for (; b < l.buckets.size(); ++b) {
            cumulative += l.buckets[b].second;
        }
        w.sample("serpens_batch_latency_seconds_bucket", {{"lcore", lcore}, {"le", "+Inf"}}, cumulative);
        w.sample("serpens_batch_latency_seconds_sum", {{"lcore", lcore}}, static_cast<double>(l.sum_ns) / 1e9);
        w.sample("serpens_batch_latency_seconds_count", {{"lcore", lcore}}, cumulative);
    }

    if (s.has_peers) {
        w.family("serpens_peer_up", "gauge", "1 while the peer of [peer] answers over the peer protocol.");
        for (const PeerSample &p : s.peers) {
            w.sample("serpens_peer_up", {{"peer", p.id}}, uint64_t{p.up ? 1u : 0u});
        }
        w.family("serpens_peer_sessions_total", "counter", "Connections with the peer that completed their Hello.");
        for (const PeerSample &p : s.peers) {
            w.sample("serpens_peer_sessions_total", {{"peer", p.id}}, p.sessions);
        }
        w.family("serpens_peer_sessions_refused_total", "counter",
                 "Peer connections closed for a TLS, certificate, framing, sequence or Hello failure.");
        w.sample("serpens_peer_sessions_refused_total", {}, s.peer_sessions_refused);
    }
    return w.take();
}

} // namespace serpens::metrics

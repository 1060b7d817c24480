#include "render.h"

#include "app/stats.h"
#include "support/text_table.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <vector>

namespace serpensctl {
namespace {

using serpens::support::Table;

// Any JSON leaf as a table cell: integers as they are, rates with one decimal.
std::string cell(const ordered_json &value)
{
    if (value.is_null()) {
        return "-";
    }
    if (value.is_string()) {
        return value.get<std::string>();
    }
    if (value.is_number_float()) {
        return fmt::format("{:.1f}", value.get<double>());
    }
    return value.dump();
}

const ordered_json &field(const ordered_json &object, const char *key)
{
    static const ordered_json missing;
    if (!object.is_object()) {
        return missing;
    }
    auto it = object.find(key);
    return it == object.end() ? missing : *it;
}

std::string text_of(const ordered_json &object, const char *key) { return cell(field(object, key)); }

std::string joined(const ordered_json &list, const char *separator)
{
    std::string out;
    if (list.is_array()) {
        for (const ordered_json &item : list) {
            out += (out.empty() ? "" : separator) + cell(item);
        }
    }
    return out.empty() ? "-" : out;
}

std::string nf_counters(const ordered_json &counters)
{
    std::string out;
    if (counters.is_object()) {
        for (const auto &[name, value] : counters.items()) {
            if (!(value.is_number() && value.get<double>() == 0)) {
                out += (out.empty() ? "" : " ") + name + "=" + cell(value);
            }
        }
    }
    return out;
}

// The tables stats and stats --watch share: ports, gateway rules, chains,
// then every instance's NFs.  `unit` follows each number's column title.
std::string render_counters(const ordered_json &stats, const std::string &unit)
{
    std::string out;
    Table ports({"port", "rx" + unit, "tx" + unit, "rx_missed" + unit, "tx_errors" + unit},
                {false, true, true, true, true});
    for (const ordered_json &port : field(stats, "ports")) {
        ports.add({text_of(port, "name"), text_of(port, "rx"), text_of(port, "tx"), text_of(port, "rx_missed"),
                   text_of(port, "tx_errors")});
    }
    out += ports.text() + "\n";

    Table rules({"gateway rule", "matched" + unit}, {false, true});
    for (const auto &[name, matched] : field(stats, "rules").items()) {
        rules.add({name, cell(matched)});
    }
    rules.add({"(no match)", text_of(stats, "unmatched")});
    out += rules.text() + "\n";

    Table chains({"chain", "instances", "parked", "packets" + unit, "flows"}, {false, true, true, true, true});
    for (const auto &[name, chain] : field(stats, "chains").items()) {
        const ordered_json &flows = field(chain, "flows");
        chains.add({name, text_of(chain, "instances"), text_of(chain, "parked"), text_of(chain, "metered_packets"),
                    flows.is_object() ? text_of(flows, "live") + "/" + text_of(flows, "capacity") : "-"});
    }
    out += chains.text() + "\n";

    Table nfs({"instance/nf", "plugin", "packets" + unit, "dropped" + unit, "counters"},
              {false, false, true, true, false});
    for (const ordered_json &instance : field(stats, "instances")) {
        const std::string prefix = text_of(instance, "chain") + "#" + text_of(instance, "index") + "/";
        for (const ordered_json &nf : field(instance, "nfs")) {
            nfs.add({prefix + text_of(nf, "name"), text_of(nf, "plugin"), text_of(nf, "packets"),
                     text_of(nf, "dropped"), nf_counters(field(nf, "counters"))});
        }
    }
    return out + nfs.text();
}

} // namespace

std::string human_duration(double seconds)
{
    auto s = static_cast<long long>(std::llround(std::max(0.0, seconds)));
    const long long d = s / 86400;
    const long long h = s / 3600 % 24;
    const long long m = s / 60 % 60;
    s %= 60;
    if (d > 0) {
        return fmt::format("{}d{}h{}m", d, h, m);
    }
    if (h > 0) {
        return fmt::format("{}h{}m{}s", h, m, s);
    }
    return m > 0 ? fmt::format("{}m{}s", m, s) : fmt::format("{}s", s);
}

std::string render_status(const ordered_json &st)
{
    std::string out = fmt::format("host {} (serpens-host {}), pid {}, up {} since {}\n", text_of(st, "id"),
                                  text_of(st, "version"), text_of(st, "pid"),
                                  human_duration(field(st, "uptime_s").is_number() ? st["uptime_s"].get<double>() : 0),
                                  text_of(st, "started"));
    out += fmt::format("config          {}\n", text_of(st, "config"));
    out += fmt::format("state dir       {}\n", text_of(st, "state_dir"));
    out += fmt::format("control socket  {}\n", text_of(st, "control_socket"));
    out += fmt::format("plugins         {}\n", text_of(st, "plugin_dir"));
    out += fmt::format("chains          {}\n", text_of(st, "chains_dir"));
    out += fmt::format("log level       {}\n", text_of(st, "log_level"));
    out += fmt::format("wake threshold  {} packets\n", text_of(st, "wake_threshold"));
    out += fmt::format("lcores          {}\n", joined(field(st, "lcores"), ","));
    if (!field(st, "drained_lcores").empty()) {
        out += fmt::format("drained         {}\n", joined(field(st, "drained_lcores"), ","));
    }
    out += fmt::format("ports           {}\n\n", joined(field(st, "ports"), ", "));
    Table chains({"chain", "instances", "parked", "pooled", "packets"}, {false, true, true, true, true});
    for (const auto &[name, chain] : field(st, "chains").items()) {
        chains.add({name, text_of(chain, "instances"), text_of(chain, "parked"), text_of(chain, "pooled"),
                    text_of(chain, "packets")});
    }
    return out + chains.text();
}

std::string render_chains(const ordered_json &chains)
{
    std::string out;
    for (const ordered_json &chain : chains) {
        const ordered_json &runtime = field(chain, "runtime");
        out += fmt::format("{}  ({})\n", text_of(chain, "name"), text_of(chain, "file"));
        out += fmt::format("  graph    {}\n", text_of(chain, "graph"));
        const std::string egress = text_of(chain, "egress");
        out += fmt::format("  egress   {}\n", egress.empty() || egress == "-" ? "the only port" : egress);
        if (runtime.is_object()) {
            out += fmt::format("  runs     {} instance(s), {} parked, {} pooled; {} packets\n",
                               text_of(runtime, "instances"), text_of(runtime, "parked"), text_of(runtime, "pooled"),
                               text_of(runtime, "metered_packets"));
        } else {
            out += "  runs     nowhere (no gateway rule and no [[instance]])\n";
        }
    }
    return out;
}

std::string render_plugins(const ordered_json &plugins)
{
    Table table({"plugin", "version", "abi", "used by", "file"}, {false, false, false, false, false});
    for (const ordered_json &plugin : plugins) {
        table.add({text_of(plugin, "name"), text_of(plugin, "version"), text_of(plugin, "abi"),
                   joined(field(plugin, "used_by"), ","), text_of(plugin, "file")});
    }
    return table.text();
}

std::string render_peers(const ordered_json &peers)
{
    if (!field(peers, "enabled").is_boolean() || !peers["enabled"].get<bool>()) {
        return "host '" + text_of(peers, "host_id") + "' has no [peer] section: it talks to no other host\n";
    }
    std::string out =
        fmt::format("host '{}', peer protocol on {}\n\n", text_of(peers, "host_id"), text_of(peers, "listen"));
    Table table(
        {"peer", "state", "last heard", "underlay", "mac", "sessions", "takes new flows of", "leases", "runs for it"},
        {false, false, true, false, false, true, false, true, false});
    for (const ordered_json &p : field(peers, "peers")) {
        const ordered_json &seen = field(p, "last_seen_ms");
        // "chain (buckets)" for each of this host's chains the peer takes new flows of.
        std::string takes;
        for (const auto &[chain, buckets] : field(p, "new_flows_of").items()) {
            takes += (takes.empty() ? "" : ", ") + chain + " (" + cell(buckets) + ")";
        }
        // This host's chains it runs for the peer; "draining" once scaled back in.
        std::string runs;
        for (const auto &[chain, served] : field(p, "runs_for_it").items()) {
            const bool draining = field(served, "draining").is_boolean() && served["draining"].get<bool>();
            runs += (runs.empty() ? "" : ", ") + chain + (draining ? " (draining)" : "");
        }
        table.add({text_of(p, "id"), field(p, "up").is_boolean() && p["up"].get<bool>() ? "up" : "down",
                   seen.is_number() ? human_duration(seen.get<double>() / 1000) + " ago" : "never",
                   text_of(p, "underlay"), text_of(p, "underlay_mac"), text_of(p, "sessions"),
                   takes.empty() ? "-" : takes, text_of(p, "leases_granted"), runs.empty() ? "-" : runs});
    }
    out += table.text();
    const ordered_json &c = field(peers, "counters");
    out +=
        fmt::format("\nenvelopes in {}, out {}; sessions refused {}; requests handled {} ({} from the reply cache)\n",
                    text_of(c, "envelopes_in"), text_of(c, "envelopes_out"), text_of(c, "sessions_refused"),
                    text_of(c, "handler_calls"), text_of(c, "replies_from_cache"));
    return out;
}

std::string render_instances(const ordered_json &instances)
{
    Table table({"chain", "index", "lcore", "state", "packets", "out", "dropped", "tx_dropped"},
                {false, true, true, false, true, true, true, true});
    for (const ordered_json &i : instances) {
        table.add({text_of(i, "chain"), text_of(i, "index"), text_of(i, "lcore"), text_of(i, "state"),
                   text_of(i, "packets"), text_of(i, "out"), text_of(i, "dropped"), text_of(i, "tx_dropped")});
    }
    return table.text();
}

std::string render_stats(const ordered_json &stats)
{
    std::string since = field(stats, "seconds").is_number()
                            ? " (" + human_duration(stats["seconds"].get<double>()) + ")"
                            : std::string();
    return "counters since " + text_of(stats, "since") + since + "\n\n" + render_counters(stats, "");
}

ordered_json stats_rates(const ordered_json &now, const ordered_json &before, double seconds)
{
    return serpens::subtract_counters(now, before, seconds > 0 ? seconds : 1e-9);
}

std::string render_rates(const ordered_json &rates, double seconds)
{
    return fmt::format("rates per second over the last {:.1f} s\n\n", seconds) + render_counters(rates, "/s");
}

std::string render_bill(const ordered_json &bill)
{
    std::string out = "usage from " + text_of(bill, "from") + " to " + text_of(bill, "to") + "\n\n";
    Table table({"chain / nf", "packets", "bytes", "dropped", "instance-s", "busy-s"},
                {false, true, true, true, true, true});
    for (const auto &[name, chain] : field(bill, "chains").items()) {
        table.add({name, text_of(chain, "packets"), text_of(chain, "bytes"), text_of(chain, "dropped"),
                   text_of(chain, "instance_s"), text_of(chain, "busy_s")});
        for (const auto &[nf, used] : field(chain, "nfs").items()) {
            table.add({"  " + nf, text_of(used, "packets"), text_of(used, "bytes"), text_of(used, "dropped"),
                       text_of(used, "instance_s"), text_of(used, "busy_s")});
        }
    }
    return out + table.text();
}

std::optional<int64_t> parse_since(const std::string &text, int64_t now_s)
{
    if (text.empty()) {
        return std::nullopt;
    }
    const std::size_t digits = text.find_first_not_of("0123456789");
    if (digits == std::string::npos) {
        if (text.size() > 12) {
            return std::nullopt;
        }
        return std::stoll(text);
    }
    if (digits > 0 && digits <= 9 && digits + 1 == text.size()) {
        const int64_t n = std::stoll(text.substr(0, digits));
        switch (text.back()) {
        case 's':
            return now_s - n;
        case 'm':
            return now_s - n * 60;
        case 'h':
            return now_s - n * 3600;
        case 'd':
            return now_s - n * 86400;
        default:
            return std::nullopt;
        }
    }
    for (const char *format : {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"}) {
        std::tm tm{};
        const char *end = strptime(text.c_str(), format, &tm);
        if (end != nullptr && *end == '\0') {
            return static_cast<int64_t>(timegm(&tm));
        }
    }
    return std::nullopt;
}

std::string render_scale(const ordered_json &r)
{
    std::string lcores;
    for (const ordered_json &instance : field(r, "instances")) {
        lcores += (lcores.empty() ? "" : ",") + text_of(instance, "lcore");
    }
    return fmt::format("chain {}: {} -> {} instance(s) on lcore(s) {}\n"
                       "  {} from the pool, {} started cold; {} bucket(s) moved; data path paused {} us; "
                       "done in {} us\n",
                       text_of(r, "chain"), text_of(r, "before"), text_of(r, "after"), lcores.empty() ? "-" : lcores,
                       text_of(r, "from_pool"), text_of(r, "cold"), text_of(r, "moved_buckets"), text_of(r, "pause_us"),
                       text_of(r, "launch_us"));
}

std::string render_peer_scale(const ordered_json &r)
{
    if (r.contains("tag_at_peer")) {
        return fmt::format("chain {}: +1 on peer {} (the chain's tag there: {})\n"
                           "  new flows of {} of {} bucket(s) go there; flows already here stay here; done in {} ms\n"
                           "  global/read tables copied there (they differed): {}\n",
                           text_of(r, "chain"), text_of(r, "peer"), text_of(r, "tag_at_peer"), text_of(r, "buckets"),
                           text_of(r, "of_buckets"), text_of(r, "ms"), text_of(r, "read_state_copied"));
    }
    return fmt::format("chain {}: -1 on peer {}\n"
                       "  new flows of {} bucket(s) stay here again; the flows the peer serves finish there "
                       "(peer told: {})\n",
                       text_of(r, "chain"), text_of(r, "peer"), text_of(r, "buckets"), text_of(r, "peer_told"));
}

std::string render_reload(const ordered_json &r)
{
    auto names = [&](const char *key) { return joined(field(r, key), ", "); };
    std::string out = fmt::format("reloaded in {} ms\n  swapped:   {}\n  unchanged: {}\n", text_of(r, "took_ms"),
                                  names("reloaded"), names("unchanged"));
    for (const char *key : {"updated", "added", "removed", "plugins_changed", "files_changed"}) {
        if (!field(r, key).empty()) {
            out += fmt::format("  {:<10} {}\n", std::string(key) + ":", names(key));
        }
    }
    for (const ordered_json &swap : field(r, "swaps")) {
        out += fmt::format("  chain {}: {} instance(s) replaced, {} bucket(s) moved, data path paused {} us\n",
                           text_of(swap, "chain"), text_of(swap, "instances"), text_of(swap, "moved_buckets"),
                           text_of(swap, "pause_us"));
    }
    for (const ordered_json &refusal : field(r, "plugin_refusals")) {
        out += "  plugin refused: " + cell(refusal) + "\n";
    }
    return out;
}

std::string render_drain(const ordered_json &r)
{
    std::string out;
    for (const ordered_json &m : field(r, "moves")) {
        out += fmt::format("chain {}: instance {} on lcore {} -> instance {} on lcore {}\n", text_of(m, "chain"),
                           text_of(m, "from_index"), text_of(m, "from_lcore"), text_of(m, "to_index"),
                           text_of(m, "to_lcore"));
    }
    if (!field(r, "moves").empty()) {
        out += fmt::format("{} bucket(s) moved; data path paused {} us\n", text_of(r, "moved_buckets"),
                           text_of(r, "pause_us"));
    }
    const std::string drained = joined(field(r, "drained"), ",");
    return out + "drained lcores: " + (drained == "-" ? "none" : drained) + "\n";
}

} // namespace serpensctl

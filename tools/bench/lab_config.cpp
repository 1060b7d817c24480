#include "lab_config.h"

#include "core/error.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>

namespace serpens::bench {

namespace fs = std::filesystem;

std::string write_fw_rules(const fs::path &dir, uint32_t n)
{
    const fs::path path = dir / fmt::format("fw-{}.rules", n);
    if (fs::exists(path)) {
        return path.string();
    }
    std::ofstream out(path);
    out << "# serpens-bench: " << n << " rules; the traffic (198.18/16 <-> 198.19/16) matches none but the default\n";
    out << "default allow\n";
    // Rules in 10.0.0.0/8 and 172.16.0.0/12: never the generator's addresses.
    static const int src_len[] = {24, 16, 32, 20};
    static const int dst_len[] = {32, 24, 0, 16};
    for (uint32_t i = 1; i < n; ++i) {
        const int sl = src_len[i % 4];
        const int dl = dst_len[(i / 4) % 4];
        const uint32_t a = 0x0a000000u | ((i * 2654435761u) & 0x00ffffffu);
        const uint32_t srcmask = sl == 0 ? 0 : ~0u << (32 - sl);
        const uint32_t b = 0xac100000u | ((i * 40503u) & 0x000fffffu);
        const uint32_t dstmask = dl == 0 ? 0 : ~0u << (32 - dl);
        auto ip = [](uint32_t v) {
            return fmt::format("{}.{}.{}.{}", v >> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255);
        };
        out << fmt::format("{} proto={} src={}/{}", i % 3 ? "deny " : "allow", i % 2 ? "tcp" : "udp", ip(a & srcmask),
                           sl);
        if (dl > 0) {
            out << fmt::format(" dst={}/{}", ip(b & dstmask), dl);
        }
        if (i % 5 == 0) {
            out << fmt::format(" dport={}", 1 + i % 60000);
        }
        out << '\n';
    }
    if (!out) {
        throw Error("cannot write " + path.string());
    }
    return path.string();
}

namespace {

const char *ids_rules_text =
    "alert tcp any any -> any 21 (msg:\"FTP cleartext root login\"; content:\"USER root\"; nocase; sid:1000001;)\n"
    "alert tcp any any -> any 23 (msg:\"telnet session\"; content:\"|ff fb 18|\"; sid:1000002;)\n"
    "alert tcp any any -> any any (msg:\"shell download in a URL\"; pcre:\"/GET \\/[^ ]*\\.(sh|elf)( |\\?)/i\"; "
    "sid:1000003;)\n"
    "alert tcp any any -> any any (msg:\"directory traversal\"; content:\"../../\"; sid:1000004;)\n"
    "alert udp any any -> any any (msg:\"DNS tunnel-like label\"; pcre:\"/[a-z0-9]{48,}\\./i\"; sid:1000005;)\n"
    "alert ip any any <> any any (msg:\"EICAR test string\"; "
    "content:\"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR\"; sid:1000006;)\n";

std::string nf_config(const fs::path &dir, const std::string &plugin, const NfParams &p)
{
    const uint64_t cap = std::max<uint64_t>(65536, p.flows * 2);
    if (plugin == "fw") {
        return fmt::format("rules = \"{}\"\nstateful = false\nnon_ip = \"allow\"\ncache_size = {}\nstate = \"{}\"\n",
                           write_fw_rules(dir, p.fw_rules), cap, p.fw_state);
    }
    if (plugin == "nat") {
        return fmt::format("inside = [\"198.18.0.0/16\"]\nexternal = \"{}\"\nmax_mappings = {}\n", p.nat_external, cap);
    }
    if (plugin == "mon") {
        // Its flows are in the chain's flow table, sized by the chain.
        return fmt::format("max_hosts = {}\n{}", p.mon_hosts ? p.mon_hosts : std::min<uint64_t>(1u << 22, cap),
                           p.mon_fold_ms ? fmt::format("fold_ms = {}\n", p.mon_fold_ms) : "");
    }
    if (plugin == "ids") {
        const fs::path rules = dir / "ids.rules";
        if (!fs::exists(rules)) {
            std::ofstream(rules) << ids_rules_text;
        }
        return fmt::format("rules = \"{}\"\nmax_flows = {}\n", rules.string(), std::min<uint64_t>(cap, 1u << 20));
    }
    if (plugin == "lb") {
        return fmt::format("vips = [\"198.19.0.0/16\"]\nbackends = [\"10.1.0.1\", \"10.1.0.2\", \"10.1.0.3\", "
                           "\"10.1.0.4:8080\"]\nmax_flows = {}\n",
                           cap);
    }
    if (plugin == "lookup" || plugin == "count") {
        return fmt::format("flow_state = \"{}\"\nmax_flows = {}\n", plugin, cap);
    }
    if (plugin == "vpn") {
        // Site A (the generator's clients) tunnelled to the peer; example keys.
        return "state = \"host\"\n"
               "[[nf.config.sa]]\nspi = 0x00001001\ndirection = \"out\"\n"
               "key = \"0x0123456789abcdef0123456789abcdef01020304\"\nlocal = \"192.0.2.1\"\n"
               "remote = \"198.51.100.2\"\nsrc = \"198.18.0.0/16\"\n"
               "[[nf.config.sa]]\nspi = 0x00002001\ndirection = \"in\"\n"
               "key = \"0x00112233445566778899aabbccddeeff0a0b0c0d\"\nlocal = \"192.0.2.1\"\n"
               "remote = \"198.51.100.2\"\n";
    }
    return "";
}

} // namespace

std::vector<std::string> split_chain(const std::string &name)
{
    std::vector<std::string> out;
    for (std::size_t start = 0;;) {
        const std::size_t dash = name.find('-', start);
        out.push_back(name.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
        if (dash == std::string::npos) {
            return out;
        }
        start = dash + 1;
    }
}

std::string lab_plugin(const std::string &nf) { return nf == "lookup" || nf == "count" ? "noop" : nf; }

std::string lab_chain_toml(const fs::path &dir, const std::vector<std::string> &nfs, const NfParams &params,
                           const std::string &chain_name)
{
    std::string text = fmt::format("name = \"{}\"\nchain = [", chain_name);
    for (std::size_t i = 0; i < nfs.size(); ++i) {
        text += fmt::format("{}\"{}{}\"", i ? ", " : "", nfs[i], i);
    }
    text += "]\n";
    for (std::size_t i = 0; i < nfs.size(); ++i) {
        text += fmt::format("\n[[nf]]\nname = \"{}{}\"\nplugin = \"{}\"\n", nfs[i], i, lab_plugin(nfs[i]));
        const std::string cfg = nf_config(dir, nfs[i], params);
        if (!cfg.empty()) {
            text += "[nf.config]\n" + cfg;
        }
    }
    return text;
}

} // namespace serpens::bench

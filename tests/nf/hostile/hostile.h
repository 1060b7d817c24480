#pragma once
// What the hostile-sender tests send each NF: valid frames of every kind the
// NFs handle (TCP, UDP, ICMP echo and errors with an inner datagram, ICMPv6,
// ESP for the vpn's SA, fragments, other protocols), replies and ICMP errors
// about what an NF let through, and mutations of them; and each NF's config,
// aimed at those frames' addresses and ports so they reach its deep paths.
// Shared by nf-hostile (generated frames) and fuzz-nf (the fuzzer's).
// The including file defines FW_PLUGIN ... LB_PLUGIN, the .so paths.

#include "mock_host.h"

#include <map>
#include <random>
#include <string>
#include <vector>

namespace nfhostile {

using nfmock::Bytes;
using namespace nfmock::text_frames;

inline constexpr uint64_t kSec = 1000000000ull;

// Addresses and ports the NFs' configs below care about, so that mutated
// frames reach their deep paths (a translation, a VIP, an SA, a signature).
inline const char *const kV4[] = {"10.0.0.1",   "10.0.0.2",    "192.0.2.1", "198.51.100.2",
                                  "198.19.0.1", "203.0.113.1", "10.1.0.1"};
inline const char *const kV6[] = {"2001:db8::1", "2001:db8::2", "fe80::1", "2001:db8:1::5"};
inline const uint16_t kPorts[] = {80, 53, 23, 1234, 1500, 2000, 8080, 8081, 0, 65535};
inline const char *const kPayloads[] = {"",
                                        "evil",
                                        "GET /x.sh HTTP/1.1",
                                        "xxxx123.tunnel",
                                        "secret",
                                        "a\"b;c\\d",
                                        ("\xde\xad" // split: "\xadBEEF" would be one escape
                                         "BEEF\r\n")};

template<class T, std::size_t N>
inline const T &pick(std::mt19937 &rng, const T (&a)[N])
{
    return a[rng() % N];
}

inline Bytes random_bytes(std::mt19937 &rng, std::size_t n)
{
    Bytes b(n);
    for (auto &x : b) {
        x = static_cast<uint8_t>(rng());
    }
    return b;
}

// A destination-unreachable error (ICMP 3, ICMPv6 1) about `offending`,
// quoting a little more or less of it as routers do: what nat and the
// firewall relate to the flow it quotes.
inline Bytes unreachable(std::mt19937 &rng, bool v6, const std::string &from, const std::string &to,
                         const Bytes &offending)
{
    return icmp_error(v6, from, to, v6 ? 1 : 3, offending, 8 + rng() % 16, static_cast<uint8_t>(rng() % 4));
}

// The addresses of an IPv4 or IPv6 frame as text, and whether it is IPv6;
// false when it is neither.
inline bool addresses(const Bytes &f, bool &v6, std::string &src, std::string &dst)
{
    const bool ipv4 = f.size() >= 14 + 20 && f[12] == 0x08 && f[13] == 0x00 && f[14] >> 4 == 4;
    v6 = f.size() >= 14 + 40 && f[12] == 0x86 && f[13] == 0xdd && f[14] >> 4 == 6;
    if (!ipv4 && !v6) {
        return false;
    }
    char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
    const int af = v6 ? AF_INET6 : AF_INET;
    inet_ntop(af, &f[v6 ? 22 : 26], a, sizeof a);
    inet_ntop(af, &f[v6 ? 38 : 30], b, sizeof b);
    src = a;
    dst = b;
    return true;
}

// The other direction of a frame an NF let through: addresses swapped, and
// TCP/UDP ports (a swap leaves every checksum right).  What comes back to a
// translation, a balanced flow, an SA (the vpn's own ESP, swapped, is its
// peer's).
inline Bytes reply_to(Bytes f)
{
    const bool v6 = f[12] == 0x86;
    const std::size_t ip = 14, addr = v6 ? 8 : 12, alen = v6 ? 16 : 4;
    std::swap_ranges(f.begin() + ip + addr, f.begin() + ip + addr + alen, f.begin() + ip + addr + alen);
    const uint8_t proto = f[ip + (v6 ? 6 : 9)];
    const std::size_t l4 = ip + (v6 ? 40 : (f[ip] & 0xfu) * 4u);
    if ((proto == 6 || proto == 17) && f.size() >= l4 + 4) {
        std::swap_ranges(f.begin() + l4, f.begin() + l4 + 2, f.begin() + l4 + 2);
    }
    return f;
}

// A valid frame of a random kind; some answer what the NF let through
// (`sent`): replies and ICMP errors about them.
inline Bytes valid_frame(std::mt19937 &rng, const std::vector<Bytes> &sent)
{
    bool v6 = false;
    std::string from, to;
    if (!sent.empty() && rng() % 3 == 0) {
        const Bytes &out = sent[rng() % sent.size()];
        if (addresses(out, v6, from, to)) {
            if (rng() % 4 == 0) {
                return unreachable(rng, v6, to, from, out);
            }
            return reply_to(out);
        }
    }
    Flow f;
    f.v6 = rng() % 4 == 0;
    f.src = f.v6 ? pick(rng, kV6) : pick(rng, kV4);
    f.dst = f.v6 ? pick(rng, kV6) : pick(rng, kV4);
    f.sport = pick(rng, kPorts);
    f.dport = pick(rng, kPorts);
    static const uint8_t protos[] = {6, 6, 17, 17, 1, 58, 50, 47};
    f.proto = pick(rng, protos);
    if (f.proto == 1 && f.v6) {
        f.proto = 58;
    } else if (f.proto == 58 && !f.v6) {
        f.proto = 1;
    }
    std::string payload = pick(rng, kPayloads);
    if (f.proto == 50) {
        // ESP: SPI (the vpn's inbound SA half the time), sequence, IV, junk.
        f.src = "198.51.100.2";
        f.dst = "192.0.2.1";
        f.v6 = false;
        const Bytes spi = rng() % 2 ? Bytes{0, 0, 0x50, 0x05} : random_bytes(rng, 4);
        Bytes esp = spi;
        const Bytes rest = random_bytes(rng, 8 + rng() % 80);
        esp.insert(esp.end(), rest.begin(), rest.end());
        payload.assign(esp.begin(), esp.end());
    }
    if ((f.proto == 1 || f.proto == 58) && rng() % 2) {
        // An ICMP error quoting a made-up datagram back to its sender.
        Flow inner;
        inner.v6 = f.v6;
        inner.src = f.dst;
        inner.dst = f.src;
        inner.proto = rng() % 2 ? 6 : 17;
        inner.sport = pick(rng, kPorts);
        inner.dport = pick(rng, kPorts);
        return unreachable(rng, f.v6, f.src, f.dst, frame(inner, pick(rng, kPayloads)));
    }
    Bytes out = frame(f, payload, static_cast<uint8_t>(rng()));
    if (!f.v6 && rng() % 8 == 0) {
        // A fragment: more-fragments or an offset.
        out[20] = static_cast<uint8_t>(rng() % 2 ? 0x20 : rng() & 0x1f);
        out[21] = static_cast<uint8_t>(rng());
        out[24] = out[25] = 0;
        serpens_st16(&out[24], serpens_csum(&out[14], 20));
    }
    return out;
}

// A hostile version of a valid frame: flips where the headers and length
// fields lie, a cut anywhere, junk after the end; sometimes nothing.
// pick(n) chooses in [0, n): an RNG for nf-hostile, the fuzzer's bytes for
// fuzz-nf.
template<class Pick>
Bytes mutate_with(Pick &&pick, Bytes f)
{
    const std::size_t flips = pick(5);
    for (std::size_t i = 0; i < flips && f.size() > 14; ++i) {
        // Mostly into the first 64 bytes past Ethernet: IP and L4 headers.
        const std::size_t span = std::min<std::size_t>(f.size() - 14, pick(4) ? 64 : f.size());
        f[14 + pick(span)] ^= static_cast<uint8_t>(1u << pick(8) | (pick(4) == 0 ? pick(256) : 0));
    }
    switch (pick(6)) {
    case 0:
        f.resize(pick(f.size() + 1)); // cut anywhere, down to nothing
        break;
    case 1:
        for (std::size_t n = pick(64); n > 0; --n) {
            f.push_back(static_cast<uint8_t>(pick(256)));
        }
        break;
    default:
        break;
    }
    return f;
}

inline Bytes mutate(std::mt19937 &rng, Bytes f)
{
    return mutate_with([&rng](std::size_t n) -> std::size_t { return rng() % n; }, std::move(f));
}

// One NF and what it runs with.
struct Case {
    const char *plugin;
    const char *name;
    std::string config;
    std::map<std::string, std::string> files;
    std::vector<const char *> reached; // counters a good mix makes count
};

inline const char *const kFwRules = R"(default deny
deny  proto=tcp src=10.0.0.2 dport=23
allow proto=tcp src=10.0.0.0/8
allow suspicious proto=udp dport=53
allow proto=tcp dst=2001:db8::/32 dport=80-8081
allow proto=icmp
)";

inline const char *const kIdsRules =
    R"(alert tcp any any -> any 80 (msg:"evil over http"; content:"evil"; nocase; sid:1001; rev:1;)
alert udp any any -> 192.0.2.0/24 53 (msg:"dns tunnel"; pcre:"/x{4}[0-9]+\.tunnel/i"; sid:1002;)
alert ip any any <> 2001:db8::/32 any (msg:"binary marker"; content:"|de ad|BEEF|0d 0a|"; sid:1003;)
alert tcp 10.0.0.0/8 any -> any any (msg:"inside only"; content:"secret"; sid:1004;)
alert tcp any any -> any 8080 (msg:"escapes"; pcre:"/GET \/[^ ]*\.sh( |\?)/"; sid:1005;)
)";

inline std::string vpn_sa(const char *dir, const char *extra)
{
    return std::string("[[config.sa]]\nspi = 20485\ndirection = \"") + dir +
           "\"\nkey = \"0x0123456789abcdef0123456789abcdef01020304\"\nlocal = \"192.0.2.1\"\n"
           "remote = \"198.51.100.2\"\n" +
           extra;
}

// fw, nat, mon, ids, vpn, lb.
inline std::vector<Case> cases()
{
    return {
        {FW_PLUGIN,
         "fw",
         "rules = \"fw.rules\"\nstateful = true\n",
         {{"fw.rules", kFwRules}},
         {"replies", "related", "cache_hits"}},
        {NAT_PLUGIN,
         "nat",
         "inside = [\"10.0.0.0/8\"]\nexternal = [\"203.0.113.1\"]\nports = [2000, 2015]\n",
         {},
         {"translated_out", "translated_in", "icmp_errors", "mappings_expired", "pool_exhausted"}},
        {MON_PLUGIN, "mon", "fold_ms = 0\n", {}, {"flows_new", "flows_expired", "unparsed"}},
        {IDS_PLUGIN,
         "ids",
         "rules = \"ids.rules\"\nmax_flows = 64\n",
         {{"ids.rules", kIdsRules}},
         {"alerts", "evicted"}},
        {VPN_PLUGIN,
         "vpn",
         vpn_sa("out", "src = \"10.0.0.0/8\"\n") + vpn_sa("in", ""),
         {},
         {"encrypted", "decrypted", "bad_icv", "unknown_spi"}},
        {LB_PLUGIN,
         "lb",
         "vips = [\"198.19.0.0/16\"]\nvport = 80\nbackends = [\"10.1.0.1\", \"10.1.0.2\", \"10.1.0.3:8080\"]\n",
         {},
         {"balanced", "replies"}},
    };
}

// The MockHost for a case: its files written, its config set.
inline std::unique_ptr<nfmock::MockHost> host_for(const Case &c)
{
    auto h = std::make_unique<nfmock::MockHost>(c.plugin);
    for (const auto &[name, text] : c.files) {
        h->write(name, text);
    }
    h->set_config(c.config);
    return h;
}

} // namespace nfhostile

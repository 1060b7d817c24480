// fw rules: parser and tuple-space classifier (see fw_rules.h).

#include "fw_rules.h"

#include <serpens/nf_util.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <memory>

namespace serpens_fw {

namespace {

std::string at(std::string_view file, uint32_t line, const std::string &what)
{
    return std::string(file) + ":" + std::to_string(line) + ": " + what;
}

bool parse_u32(std::string_view s, uint32_t max, uint32_t &out)
{
    if (s.empty()) {
        return false;
    }
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && out <= max;
}

bool parse_ports(std::string_view s, uint16_t &lo, uint16_t &hi)
{
    if (s == "any") {
        lo = 0;
        hi = 65535;
        return true;
    }
    uint32_t a = 0, b = 0;
    auto dash = s.find('-');
    if (dash == std::string_view::npos) {
        if (!parse_u32(s, 65535, a)) {
            return false;
        }
        b = a;
    } else if (!parse_u32(s.substr(0, dash), 65535, a) || !parse_u32(s.substr(dash + 1), 65535, b) || a > b) {
        return false;
    }
    lo = static_cast<uint16_t>(a);
    hi = static_cast<uint16_t>(b);
    return true;
}

bool parse_proto(std::string_view s, int16_t &proto)
{
    static const struct {
        const char *name;
        int16_t value;
    } names[] = {{"any", -1},    {"tcp", 6},    {"udp", 17}, {"icmp", 1},
                 {"icmpv6", 58}, {"sctp", 132}, {"esp", 50}, {"gre", 47}};
    for (const auto &n : names) {
        if (s == n.name) {
            proto = n.value;
            return true;
        }
    }
    uint32_t v = 0;
    if (parse_u32(s, 255, v)) {
        proto = static_cast<int16_t>(v);
        return true;
    }
    return false;
}

bool has_port_proto(int16_t proto) { return proto == 6 || proto == 17 || proto == 132; }

uint32_t fnv1a(std::string_view s)
{
    uint32_t h = 2166136261u;
    for (unsigned char c : s) {
        h = (h ^ c) * 16777619u;
    }
    return h;
}

} // namespace

std::string parse_rules(std::string_view text, std::string_view file, RuleSet &out)
{
    out = RuleSet{};
    out.fingerprint = fnv1a(text);
    uint32_t lineno = 0;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        std::size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
        ++lineno;
        // A token goes on as a C string: a NUL would cut it short unseen.
        if (line.find('\0') != std::string_view::npos) {
            return at(file, lineno, "a NUL byte: a rules file is text");
        }
        if (auto hash = line.find('#'); hash != std::string_view::npos) {
            line = line.substr(0, hash);
        }
        std::vector<std::string_view> tok;
        for (std::size_t i = 0; i < line.size();) {
            while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) {
                ++i;
            }
            std::size_t j = i;
            while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) {
                ++j;
            }
            if (j > i) {
                tok.push_back(line.substr(i, j - i));
            }
            i = j;
        }
        if (tok.empty()) {
            continue;
        }
        if (tok[0] == "default") {
            if (tok.size() != 2 || (tok[1] != "allow" && tok[1] != "deny")) {
                return at(file, lineno, "expected 'default allow' or 'default deny'");
            }
            if (out.default_given) {
                return at(file, lineno, "a second 'default' line (only one policy per file)");
            }
            out.default_given = true;
            out.default_action = tok[1] == "allow" ? Action::allow : Action::deny;
            continue;
        }
        Rule r;
        r.line = lineno;
        if (tok[0] == "allow") {
            r.action = Action::allow;
        } else if (tok[0] == "deny") {
            r.action = Action::deny;
        } else {
            return at(file, lineno,
                      "expected 'allow', 'deny' or 'default' at the start of a rule, got '" + std::string(tok[0]) +
                          "'");
        }
        std::size_t k = 1;
        if (k < tok.size() && tok[k] == "suspicious") {
            if (r.action != Action::allow) {
                return at(file, lineno, "'suspicious' only applies to allow rules (a denied packet goes nowhere)");
            }
            r.suspicious = true;
            ++k;
        }
        bool seen_proto = false, seen_src = false, seen_dst = false, seen_sport = false, seen_dport = false;
        uint8_t sfam = 0, dfam = 0;
        for (; k < tok.size(); ++k) {
            auto eq = tok[k].find('=');
            if (eq == std::string_view::npos) {
                return at(file, lineno,
                          "expected key=value (proto, src, dst, sport, dport), got '" + std::string(tok[k]) + "'");
            }
            std::string_view key = tok[k].substr(0, eq), val = tok[k].substr(eq + 1);
            auto dup = [&](bool &seen) {
                bool was = seen;
                seen = true;
                return was;
            };
            if (key == "proto") {
                if (dup(seen_proto)) {
                    return at(file, lineno, "duplicate key 'proto'");
                }
                if (!parse_proto(val, r.proto)) {
                    return at(file, lineno,
                              "expected proto=tcp|udp|icmp|icmpv6|sctp|esp|gre|0..255|any, got '" + std::string(val) +
                                  "'");
                }
            } else if (key == "src" || key == "dst") {
                bool src = key == "src";
                if (dup(src ? seen_src : seen_dst)) {
                    return at(file, lineno, "duplicate key '" + std::string(key) + "'");
                }
                char why[256];
                if (serpens_parse_selector(std::string(val).c_str(), src ? &sfam : &dfam, src ? r.src : r.dst,
                                           src ? &r.src_len : &r.dst_len, why, sizeof why) != SERPENS_OK) {
                    return at(file, lineno, why);
                }
            } else if (key == "sport" || key == "dport") {
                bool s = key == "sport";
                if (dup(s ? seen_sport : seen_dport)) {
                    return at(file, lineno, "duplicate key '" + std::string(key) + "'");
                }
                if (!parse_ports(val, s ? r.sport_lo : r.dport_lo, s ? r.sport_hi : r.dport_hi)) {
                    return at(file, lineno,
                              "expected " + std::string(key) + "=port or lo-hi within 0..65535 (lo <= hi), got '" +
                                  std::string(val) + "'");
                }
            } else {
                return at(file, lineno,
                          "unknown key '" + std::string(key) + "' (expected proto, src, dst, sport or dport)");
            }
        }
        if (sfam != 0 && dfam != 0 && sfam != dfam) {
            return at(file, lineno, "src and dst must be of the same family (IPv4 or IPv6)");
        }
        r.family = sfam != 0 ? sfam : dfam;
        r.needs_ports = r.sport_lo != 0 || r.sport_hi != 65535 || r.dport_lo != 0 || r.dport_hi != 65535;
        if (r.needs_ports && r.proto >= 0 && !has_port_proto(r.proto)) {
            return at(file, lineno, "sport/dport need proto=tcp, udp or sctp (or no proto)");
        }
        if ((r.proto == 1 && r.family == 6) || (r.proto == 58 && r.family == 4)) {
            return at(file, lineno, "proto does not fit the address family (icmp is IPv4, icmpv6 is IPv6)");
        }
        out.rules.push_back(r);
    }
    return "";
}

std::string load_rules(const serpens_host_api *h, const serpens_config *cfg, const char *key, const std::string &path,
                       RuleSet &out)
{
    char *data = nullptr;
    std::size_t size = 0;
    char err[512];
    if (serpens_config_file_copy(h, cfg, key, path.c_str(), SERPENS_CONFIG_FILE_MAX, &data, &size, err, sizeof err) !=
        SERPENS_OK) {
        return err;
    }
    std::unique_ptr<char, decltype(&std::free)> owned(data, &std::free);
    return parse_rules(std::string_view(data, size), path, out);
}

bool rule_matches(const Rule &r, const PacketKey &p) noexcept
{
    if (r.family != 0 && r.family != p.family) {
        return false;
    }
    if (r.proto >= 0 && r.proto != p.proto) {
        return false;
    }
    if (r.needs_ports && (!p.has_ports || p.sport < r.sport_lo || p.sport > r.sport_hi || p.dport < r.dport_lo ||
                          p.dport > r.dport_hi)) {
        return false;
    }
    return serpens_prefix_match(r.src, r.src_len, p.src) && serpens_prefix_match(r.dst, r.dst_len, p.dst);
}

int32_t classify_linear(const RuleSet &set, const PacketKey &p) noexcept
{
    for (std::size_t i = 0; i < set.rules.size(); ++i) {
        if (rule_matches(set.rules[i], p)) {
            return static_cast<int32_t>(i);
        }
    }
    return -1;
}

// ---- tuple-space search ---------------------------------------------------

std::size_t Classifier::KeyHash::operator()(const Key &k) const noexcept
{
    uint64_t h = 0x9e3779b97f4a7c15ull;
    for (uint64_t w : k.w) {
        h ^= w;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return static_cast<std::size_t>(h);
}

Classifier::Words Classifier::address_words(uint8_t family, const uint8_t *addr) noexcept
{
    Words a{};
    std::memcpy(a.w, addr, family == 4 ? 4 : 16);
    return a;
}

Classifier::Words Classifier::prefix_mask(uint8_t len) noexcept
{
    uint8_t m[16] = {};
    for (unsigned b = 0; b < 16; ++b) {
        const unsigned keep = len >= (b + 1) * 8 ? 8 : len > b * 8 ? len - b * 8 : 0;
        m[b] = static_cast<uint8_t>(0xff00u >> keep);
    }
    Words w;
    std::memcpy(w.w, m, sizeof m);
    return w;
}

Classifier::Key Classifier::make_key(const Tuple &t, const Words &src, const Words &dst, int proto) noexcept
{
    // Per tuple and packet, the classifier's inner step: four ANDs, no
    // per-byte work (the masks were made once, in build).
    return Key{{src.w[0] & t.src_mask.w[0], src.w[1] & t.src_mask.w[1], dst.w[0] & t.dst_mask.w[0],
                dst.w[1] & t.dst_mask.w[1], static_cast<uint64_t>(proto + 1)}};
}

void Classifier::build(const RuleSet &set)
{
    _set = &set;
    for (int f = 0; f < 2; ++f) {
        _tuples[f].clear();
        uint8_t family = f == 0 ? 4 : 6;
        for (uint32_t i = 0; i < set.rules.size(); ++i) {
            const Rule &r = set.rules[i];
            if (r.family != 0 && r.family != family) {
                continue;
            }
            bool has_proto = r.proto >= 0;
            auto it = std::find_if(_tuples[f].begin(), _tuples[f].end(), [&](const Tuple &t) {
                return t.src_len == r.src_len && t.dst_len == r.dst_len && t.has_proto == has_proto;
            });
            if (it == _tuples[f].end()) {
                _tuples[f].push_back(
                    Tuple{r.src_len, r.dst_len, has_proto, i, prefix_mask(r.src_len), prefix_mask(r.dst_len), {}});
                it = _tuples[f].end() - 1;
            }
            const Key key =
                make_key(*it, address_words(family, r.src), address_words(family, r.dst), has_proto ? r.proto : -1);
            it->buckets[key].push_back(i);
            it->mark(KeyHash{}(key));
        }
        std::sort(_tuples[f].begin(), _tuples[f].end(), [](const Tuple &a, const Tuple &b) { return a.best < b.best; });
    }
}

int32_t Classifier::classify(const PacketKey &p) const noexcept
{
    if (_set == nullptr || (p.family != 4 && p.family != 6)) {
        return -1;
    }
    const auto &tuples = _tuples[p.family == 4 ? 0 : 1];
    const Words src = address_words(p.family, p.src);
    const Words dst = address_words(p.family, p.dst);
    uint32_t best = UINT32_MAX;
    for (const Tuple &t : tuples) {
        if (t.best >= best) {
            break; // sorted by best: nothing later can win
        }
        const Key key = make_key(t, src, dst, t.has_proto ? p.proto : -1);
        if (!t.may_hold(KeyHash{}(key))) {
            continue;
        }
        auto it = t.buckets.find(key);
        if (it == t.buckets.end()) {
            continue;
        }
        for (uint32_t idx : it->second) {
            if (idx >= best) {
                break; // bucket lists are in rule order
            }
            const Rule &r = _set->rules[idx];
            if (!r.needs_ports || (p.has_ports && p.sport >= r.sport_lo && p.sport <= r.sport_hi &&
                                   p.dport >= r.dport_lo && p.dport <= r.dport_hi)) {
                best = idx;
                break;
            }
        }
    }
    return best == UINT32_MAX ? -1 : static_cast<int32_t>(best);
}

} // namespace serpens_fw

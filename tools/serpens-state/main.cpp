// serpens-state — inspect a host's state segments read-only.
//
//   serpens-state [--root DIR | -c host.toml | --host-id ID] list [--json]
//   serpens-state [...] dump CHAIN NF TABLE [--json] [--limit N]
//   serpens-state [...] check [CHAIN [NF [TABLE]]] [--json]
//   serpens-state [...] flows CHAIN [--json] [--limit N]
//
// For operators after a crash and for tests.  Never writes: segments are
// mapped PROT_READ, so it is safe next to a running host (results are then a
// snapshot; "write in flight" may be transient).  The state root is --root,
// else host.toml's [host] state_dir (-c, or the installed config of
// --host-id when there is one), else /dev/shm/serpens/<id>: where the host
// keeps it.  `check` exits 1 when a segment is unreadable or inconsistent.
// `flows` prints the chain's flow table (<root>/<chain>/flows.seg, laid out
// as its own header says): each live entry's canonical key, which endpoint
// sent the first packet, and each NF's area as u64 words (little endian), by
// the NF's name in the chain.

#include "config/host_config.h"
#include "config/install_dirs.h"
#include "core/error.h"
#include "core/version.h"
#include "state/executor.h"
#include "state/flow_table.h"
#include "state/table.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace serpens::state;
using nlohmann::ordered_json;

namespace {

// Documented in --help; scripts rely on them.
enum ExitCode {
    kOk = 0,
    kFound = 1, // check found a problem, or a named segment is missing or unreadable
    kUsage = 2, // bad arguments or an unreadable host.toml
};

constexpr const char *kExitCodes =
    "Exit codes: 0 done; 1 check found an unreadable or inconsistent segment (or none matched the names "
    "given), or dump/flows could not read theirs; 2 bad arguments or host.toml.";

struct Where {
    std::string root;
    std::string config;
    std::string host_id = "serpens"; // the host's own default [host] id
};

// The state root: --root, else host.toml's [host] state_dir (-c, or the
// installed config of --host-id when there is one), else the host's default
// for the id.  Throws serpens::Error for an unreadable host.toml.
fs::path root_of(const Where &where)
{
    if (!where.root.empty()) {
        return where.root;
    }
    std::string config = where.config;
    if (config.empty()) {
        const fs::path installed = fs::path(serpens::install_dirs::sysconf) / (where.host_id + ".toml");
        std::error_code ec;
        if (fs::is_regular_file(installed, ec)) {
            config = installed.string();
        }
    }
    if (!config.empty()) {
        return serpens::load_host_config(config).state_dir;
    }
    return StateStore::default_root(where.host_id);
}

void print_json(const ordered_json &value)
{
    std::printf("%s\n", value.dump(-1, ' ', false, ordered_json::error_handler_t::replace).c_str());
}

struct Seg {
    std::string chain, nf, table;
    fs::path file;
};

std::vector<Seg> scan(const fs::path &root, std::vector<fs::path> *aside)
{
    std::vector<Seg> v;
    std::error_code ec;
    for (auto &c : fs::directory_iterator(root, ec)) {
        if (!c.is_directory()) {
            continue;
        }
        for (auto &n : fs::directory_iterator(c.path(), ec)) {
            if (!n.is_directory()) {
                continue;
            }
            for (auto &f : fs::directory_iterator(n.path(), ec)) {
                std::string name = f.path().filename().string();
                if (name.size() > 4 && name.substr(name.size() - 4) == ".tbl") {
                    v.push_back(Seg{StateStore::unescape(c.path().filename().string()),
                                    StateStore::unescape(n.path().filename().string()),
                                    StateStore::unescape(name.substr(0, name.size() - 4)), f.path()});
                } else if (aside != nullptr && name.find(".bad-") != std::string::npos) {
                    aside->push_back(f.path());
                }
            }
        }
    }
    std::sort(v.begin(), v.end(), [](const Seg &a, const Seg &b) { return a.file < b.file; });
    return v;
}

std::string hex(const uint8_t *p, std::size_t n)
{
    static const char *d = "0123456789abcdef";
    std::string s;
    s.reserve(2 * n);
    for (std::size_t i = 0; i < n; ++i) {
        s += d[p[i] >> 4];
        s += d[p[i] & 15];
    }
    return s;
}

// A JSON string literal; the dump streams its entries, so only the escaping
// is the library's.  Invalid UTF-8 in a name is replaced, not thrown on.
std::string json_str(const std::string &s)
{
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int cmd_list(const fs::path &root, bool json)
{
    std::vector<fs::path> aside;
    auto segs = scan(root, &aside);
    ordered_json tables = ordered_json::array();
    if (segs.empty() && !json) {
        std::printf("no state segments under %s\n", root.c_str());
    }
    std::string last;
    for (auto &s : segs) {
        std::string ex = s.chain + " / " + s.nf;
        if (ex != last && !json) {
            std::printf("executor %s\n", ex.c_str());
        }
        last = ex;
        std::string err;
        auto t = Table::open_readonly(s.file, err);
        if (!t) {
            if (json) {
                tables.push_back({{"chain", s.chain}, {"nf", s.nf}, {"table", s.table}, {"error", err}});
            } else {
                std::printf("  %-24s UNREADABLE: %s\n", s.table.c_str(), err.c_str());
            }
            continue;
        }
        const SegmentHeader &h = t->header();
        if (json) {
            ordered_json row = {{"chain", s.chain},
                                {"nf", s.nf},
                                {"table", s.table},
                                {"kind", kind_name(t->kind())},
                                {"key_size", h.key_size},
                                {"value_size", h.value_size},
                                {"live", h.live},
                                {"capacity", h.capacity},
                                {"refused", h.refused_full},
                                {"expired", h.expired},
                                {"torn_repaired", h.torn_repaired},
                                {"torn_discarded", h.torn_discarded},
                                {"attaches", h.attaches}};
            if (is_global_write(t->kind())) {
                row["active_mask"] = h.active_mask;
            }
            tables.push_back(std::move(row));
            continue;
        }
        std::printf("  %-24s %-22s key %3u value %5u live %llu/%llu refused %llu expired %llu torn-repaired %llu "
                    "torn-discarded %llu attaches %llu",
                    s.table.c_str(), kind_name(t->kind()), h.key_size, h.value_size,
                    static_cast<unsigned long long>(h.live), static_cast<unsigned long long>(h.capacity),
                    static_cast<unsigned long long>(h.refused_full), static_cast<unsigned long long>(h.expired),
                    static_cast<unsigned long long>(h.torn_repaired), static_cast<unsigned long long>(h.torn_discarded),
                    static_cast<unsigned long long>(h.attaches));
        if (is_global_write(t->kind())) {
            std::printf(" instances %#llx", static_cast<unsigned long long>(h.active_mask));
        }
        std::printf("\n");
    }
    if (json) {
        ordered_json moved = ordered_json::array();
        for (auto &a : aside) {
            moved.push_back(a.string());
        }
        print_json({{"root", root.string()}, {"tables", std::move(tables)}, {"moved_aside", std::move(moved)}});
        return kOk;
    }
    for (auto &a : aside) {
        std::printf("moved aside: %s\n", a.c_str());
    }
    return kOk;
}

int cmd_dump(const fs::path &root, const std::string &chain, const std::string &nf, const std::string &table, bool json,
             uint64_t limit)
{
    fs::path file = root / StateStore::escape(chain) / StateStore::escape(nf) / (StateStore::escape(table) + ".tbl");
    std::string err;
    auto t = Table::open_readonly(file, err);
    if (!t) {
        std::fprintf(stderr, "serpens-state: %s\n", err.c_str());
        return kFound;
    }
    const uint32_t vs = t->value_size();
    const uint32_t cells = t->cells();
    uint64_t n = 0;
    if (json) {
        // active_mask: bit i = instance i's cell is live; the others hold
        // whatever their instance left when it stopped (already merged).
        std::printf("{\"chain\":%s,\"nf\":%s,\"table\":%s,\"kind\":%s,\"key_size\":%u,\"value_size\":%u,"
                    "\"active_mask\":%llu,\"entries\":[",
                    json_str(chain).c_str(), json_str(nf).c_str(), json_str(table).c_str(),
                    json_str(kind_name(t->kind())).c_str(), t->key_size(), vs,
                    static_cast<unsigned long long>(t->header().active_mask));
    }
    t->dump([&](const uint8_t *key, const uint8_t *vals) {
        if (limit != 0 && n >= limit) {
            return;
        }
        std::string k = hex(key, t->key_size());
        if (json) {
            std::printf("%s{\"key\":\"%s\"", n ? "," : "", k.c_str());
            if (cells == 0) {
                std::printf(",\"value\":\"%s\"}", hex(vals, vs).c_str());
            } else {
                std::printf(",\"base\":\"%s\",\"instances\":[", hex(vals, vs).c_str());
                for (uint32_t c = 1; c < cells; ++c) {
                    std::printf("%s\"%s\"", c > 1 ? "," : "", hex(vals + static_cast<std::size_t>(c) * vs, vs).c_str());
                }
                std::printf("]}");
            }
        } else if (cells == 0) {
            std::printf("%s %s\n", k.c_str(), hex(vals, vs).c_str());
        } else {
            std::printf("%s base %s\n", k.c_str(), hex(vals, vs).c_str());
            for (uint32_t c = 1; c < cells; ++c) {
                if (t->header().active_mask & (1ull << (c - 1))) {
                    std::printf("%s  instance %u %s\n", k.c_str(), c - 1,
                                hex(vals + static_cast<std::size_t>(c) * vs, vs).c_str());
                }
            }
        }
        ++n;
    });
    if (json) {
        std::printf("]}\n");
    }
    return kOk;
}

int cmd_check(const fs::path &root, const std::string &chain, const std::string &nf, const std::string &table,
              bool json)
{
    std::vector<fs::path> aside;
    auto segs = scan(root, &aside);
    int bad = 0, checked = 0;
    ordered_json results = ordered_json::array();
    for (auto &s : segs) {
        if ((!chain.empty() && s.chain != chain) || (!nf.empty() && s.nf != nf) ||
            (!table.empty() && s.table != table)) {
            continue;
        }
        ++checked;
        std::string err;
        auto t = Table::open_readonly(s.file, err);
        if (!t) {
            if (json) {
                results.push_back(
                    {{"chain", s.chain}, {"nf", s.nf}, {"table", s.table}, {"ok", false}, {"error", err}});
            } else {
                std::printf("FAIL %s: %s\n", s.file.c_str(), err.c_str());
            }
            ++bad;
            continue;
        }
        auto r = t->check();
        bad += !r.ok();
        if (json) {
            results.push_back({{"chain", s.chain},
                               {"nf", s.nf},
                               {"table", s.table},
                               {"ok", r.ok()},
                               {"live", r.live},
                               {"dead", r.dead},
                               {"empty", r.empty},
                               {"slots", r.slots},
                               {"problems", r.problems},
                               {"notes", r.warnings}});
            continue;
        }
        std::printf("%s %s/%s/%s: %llu live, %llu dead, %llu empty of %llu slots", r.ok() ? "ok  " : "FAIL",
                    s.chain.c_str(), s.nf.c_str(), s.table.c_str(), static_cast<unsigned long long>(r.live),
                    static_cast<unsigned long long>(r.dead), static_cast<unsigned long long>(r.empty),
                    static_cast<unsigned long long>(r.slots));
        std::printf("\n");
        for (auto &p : r.problems) {
            std::printf("    problem: %s\n", p.c_str());
        }
        for (auto &w : r.warnings) {
            std::printf("    note: %s\n", w.c_str());
        }
    }
    // Nothing matched names given: the caller asked about something not there.
    const int status = bad != 0 || (checked == 0 && !chain.empty()) ? kFound : kOk;
    if (json) {
        ordered_json moved = ordered_json::array();
        for (auto &a : aside) {
            moved.push_back(a.string());
        }
        print_json({{"root", root.string()},
                    {"ok", status == kOk},
                    {"segments", std::move(results)},
                    {"moved_aside", std::move(moved)}});
        return status;
    }
    for (auto &a : aside) {
        std::printf("note: moved-aside segment %s (kept for inspection)\n", a.c_str());
    }
    if (checked == 0) {
        std::printf("no matching segments under %s\n", root.c_str());
    }
    return status;
}

// An entry address (network order, IPv4 in the first 4 bytes) as text.
std::string addr_text(const uint8_t *addr, unsigned ip_version)
{
    char buf[INET6_ADDRSTRLEN] = "?";
    ::inet_ntop(ip_version == 4 ? AF_INET : AF_INET6, addr, buf, sizeof buf);
    return buf;
}

int cmd_flows(const fs::path &root, const std::string &chain, bool json, uint64_t limit)
{
    const fs::path file = root / StateStore::escape(chain) / "flows.seg";
    std::string err;
    auto t = FlowTable::open_readonly(file, err);
    if (!t) {
        std::fprintf(stderr, "serpens-state: %s\n", err.c_str());
        return kFound;
    }
    const auto &areas = t->spec().areas;
    const FlowTableTotals totals = t->totals();
    if (json) {
        std::printf("{\"chain\":%s,\"capacity\":%llu,\"live\":%llu,\"entry_size\":%u,\"areas\":[",
                    json_str(chain).c_str(), static_cast<unsigned long long>(totals.capacity),
                    static_cast<unsigned long long>(totals.live), t->entry_size());
        for (std::size_t i = 0; i < areas.size(); ++i) {
            std::printf("%s{\"nf\":%s,\"size\":%u,\"offset\":%u}", i ? "," : "", json_str(areas[i].nf).c_str(),
                        areas[i].size, areas[i].offset);
        }
        std::printf("],\"entries\":[");
    } else {
        std::printf("flow table of chain %s: %llu live of %llu, areas:", chain.c_str(),
                    static_cast<unsigned long long>(totals.live), static_cast<unsigned long long>(totals.capacity));
        for (const FlowArea &a : areas) {
            std::printf(" %s (%u B)", a.nf.c_str(), a.size);
        }
        std::printf("\n");
    }
    uint64_t n = 0;
    t->for_each_entry([&](const uint8_t *entry, uint32_t) {
        if (limit != 0 && n >= limit) {
            return;
        }
        const serpens_flow_info info = FlowTable::entry_info(entry, 0, false, 0);
        const std::string a = addr_text(info.addr_a, info.ip_version), b = addr_text(info.addr_b, info.ip_version);
        const char *initiator = info.initiator_b ? "b" : "a";
        if (json) {
            std::printf("%s{\"addr_a\":\"%s\",\"addr_b\":\"%s\",\"port_a\":%u,\"port_b\":%u,\"proto\":%u,"
                        "\"ip_version\":%u,\"initiator\":\"%s\",\"areas\":{",
                        n ? "," : "", a.c_str(), b.c_str(), info.port_a, info.port_b, info.proto, info.ip_version,
                        initiator);
        } else {
            std::printf("%s %u %s %u proto %u initiator %s", a.c_str(), info.port_a, b.c_str(), info.port_b, info.proto,
                        initiator);
        }
        for (std::size_t i = 0; i < areas.size(); ++i) {
            std::printf(json ? "%s%s:[" : " %s%s [", json && i ? "," : "",
                        json ? json_str(areas[i].nf).c_str() : areas[i].nf.c_str());
            // Areas start 8-byte aligned and are padded to whole words.
            for (uint32_t w = 0; w < (areas[i].size + 7) / 8; ++w) {
                uint64_t v;
                std::memcpy(&v, entry + areas[i].offset + 8 * w, 8);
                std::printf("%s%llu", w ? (json ? "," : " ") : "", static_cast<unsigned long long>(v));
            }
            std::printf("]");
        }
        std::printf(json ? "}}" : "\n");
        ++n;
    });
    if (json) {
        std::printf("]}\n");
    }
    return kOk;
}
} // namespace

int main(int argc, char **argv)
{
    CLI::App app{"serpens-state: inspect Serpens state segments (read-only).\n"
                 "The state root is --root, else host.toml's [host] state_dir (-c, or the installed\n"
                 "config of --host-id when there is one), else /dev/shm/serpens/<host-id>."};
    app.footer(kExitCodes);
    app.set_version_flag("--version", serpens::version_line("serpens-state"));
    Where where;
    auto *root_option = app.add_option("--root", where.root, "the state root directory itself");
    auto *config_option =
        app.add_option("-c,--config", where.config, "the host's host.toml: its [host] state_dir is used");
    app.add_option("--host-id", where.host_id,
                   std::string("the host's [host] id (default serpens): uses ") + serpens::install_dirs::sysconf +
                       "/<id>.toml when there is one, else /dev/shm/serpens/<id>")
        ->excludes(config_option);
    root_option->excludes(config_option);
    app.require_subcommand(1);

    std::string chain, nf, table;
    bool json = false;
    uint64_t limit = 0;
    auto *list = app.add_subcommand("list", "list executors and their tables");
    list->add_flag("--json", json, "JSON output");
    auto *dump = app.add_subcommand("dump", "dump a table (hex keys and values)");
    dump->add_option("chain", chain)->required();
    dump->add_option("nf", nf)->required();
    dump->add_option("table", table)->required();
    dump->add_flag("--json", json, "JSON output");
    dump->add_option("--limit", limit, "at most N entries (0 = all)");
    auto *check = app.add_subcommand("check", "check integrity; exit status 1 on problems");
    check->add_option("chain", chain);
    check->add_option("nf", nf);
    check->add_option("table", table);
    check->add_flag("--json", json, "JSON output");

    auto *flows = app.add_subcommand("flows", "dump a chain's flow table (keys and each NF's per-flow words)");
    flows->add_option("chain", chain)->required();
    flows->add_flag("--json", json, "JSON output");
    flows->add_option("--limit", limit, "at most N entries (0 = all)");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError &e) {
        const int code = app.exit(e);
        return code == 0 ? kOk : kUsage;
    }
    fs::path r;
    try {
        r = root_of(where);
    } catch (const serpens::Error &e) {
        std::fprintf(stderr, "serpens-state: %s\n", e.what());
        return kUsage;
    }
    if (*list) {
        return cmd_list(r, json);
    }
    if (*dump) {
        return cmd_dump(r, chain, nf, table, json, limit);
    }
    if (*flows) {
        return cmd_flows(r, chain, json, limit);
    }
    return cmd_check(r, chain, nf, table, json);
}

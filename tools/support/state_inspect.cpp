#include "support/state_inspect.h"

#include "config/host_config.h"
#include "config/install_dirs.h"
#include "config/toml_reader.h"
#include "state/executor.h"
#include "state/flow_table.h"
#include "state/record_layout.h"
#include "state/table.h"
#include "support/text_table.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

namespace serpens::support {

namespace fs = std::filesystem;
using nlohmann::ordered_json;
using state::StateStore;

namespace {

// --limit: far beyond any table, and below what "-1" wraps to.
constexpr uint64_t kMaxLimit = uint64_t{1} << 40;

// One JSON value on stdout, compact; invalid UTF-8 in a name is replaced,
// not thrown on.
std::string compact(const ordered_json &value)
{
    return value.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

void print_line(const ordered_json &value) { std::printf("%s\n", compact(value).c_str()); }

// A segment that cannot be read: the reason on stderr and, for scripts, as
// serpensctl reports a refusal (an error object with a stable code).
int not_found(const char *tool, bool json, const std::string &why)
{
    if (json) {
        print_line({{"error", {{"code", "not_found"}, {"message", why}}}});
    }
    std::fprintf(stderr, "%s: %s\n", tool, why.c_str());
    return state_not_found;
}

struct Segment {
    std::string chain, nf, table;
    fs::path file;
};

// The entries of `dir`, without exceptions: a state directory anyone could
// have written into may hold loops and entries that vanish meanwhile.
std::vector<fs::directory_entry> entries_of(const fs::path &dir)
{
    std::vector<fs::directory_entry> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
        out.push_back(*it);
    }
    return out;
}

bool is_directory(const fs::directory_entry &entry)
{
    std::error_code ec;
    return entry.is_directory(ec);
}

// Every <root>/<chain>/<nf>/<table>.tbl, sorted; `aside` gets the segments a
// host moved aside as invalid (kept for inspection).
std::vector<Segment> scan(const fs::path &root, std::vector<fs::path> &aside)
{
    std::vector<Segment> found;
    for (const auto &c : entries_of(root)) {
        if (!is_directory(c)) {
            continue;
        }
        for (const auto &n : entries_of(c.path())) {
            if (!is_directory(n)) {
                continue;
            }
            for (const auto &f : entries_of(n.path())) {
                const std::string name = f.path().filename().string();
                if (f.path().extension() == ".tbl") {
                    found.push_back({StateStore::unescape(c.path().filename().string()),
                                     StateStore::unescape(n.path().filename().string()),
                                     StateStore::unescape(f.path().stem().string()), f.path()});
                } else if (name.find(".bad-") != std::string::npos) {
                    aside.push_back(f.path());
                }
            }
        }
    }
    std::sort(found.begin(), found.end(), [](const Segment &a, const Segment &b) { return a.file < b.file; });
    std::sort(aside.begin(), aside.end());
    return found;
}

ordered_json paths_json(const std::vector<fs::path> &paths)
{
    ordered_json out = ordered_json::array();
    for (const fs::path &p : paths) {
        out.push_back(p.string());
    }
    return out;
}

std::string num(uint64_t v) { return std::to_string(v); }

int cmd_list(const fs::path &root, bool json)
{
    std::vector<fs::path> aside;
    const std::vector<Segment> segs = scan(root, aside);
    ordered_json tables = ordered_json::array();
    Table text({"chain", "nf", "table", "kind", "key", "value", "live", "capacity", "refused", "expired",
                "torn-repaired", "torn-discarded", "attaches", "instances", "layout"},
               {false, false, false, false, true, true, true, true, true, true, true, true, true, false, false});
    std::vector<std::string> notes;
    for (const Segment &s : segs) {
        std::string err;
        auto t = state::Table::open_readonly(s.file, err);
        if (!t) {
            tables.push_back({{"chain", s.chain}, {"nf", s.nf}, {"table", s.table}, {"error", err}});
            text.add({s.chain, s.nf, s.table, "UNREADABLE"});
            notes.push_back(s.chain + " / " + s.nf + " / " + s.table + ": " + err);
            continue;
        }
        const state::SegmentHeader &h = t->header();
        std::string layout_err;
        const bool decoded = state::read_layout(s.file, h.key_size, h.value_size, layout_err).has_value();
        ordered_json row = {{"chain", s.chain},
                            {"nf", s.nf},
                            {"table", s.table},
                            {"kind", state::kind_name(t->kind())},
                            {"key_size", h.key_size},
                            {"value_size", h.value_size},
                            {"live", h.live},
                            {"capacity", h.capacity},
                            {"refused", h.refused_full},
                            {"expired", h.expired},
                            {"torn_repaired", h.torn_repaired},
                            {"torn_discarded", h.torn_discarded},
                            {"attaches", h.attaches}};
        std::string instances = "-";
        if (state::is_global_write(t->kind())) {
            row["active_mask"] = h.active_mask;
            char mask[24];
            std::snprintf(mask, sizeof mask, "0x%llx", static_cast<unsigned long long>(h.active_mask));
            instances = mask;
        }
        row["layout"] = decoded;
        if (!layout_err.empty()) {
            row["layout_error"] = layout_err;
            notes.push_back(s.chain + " / " + s.nf + " / " + s.table + ": layout not used: " + layout_err);
        }
        tables.push_back(std::move(row));
        text.add({s.chain, s.nf, s.table, state::kind_name(t->kind()), num(h.key_size), num(h.value_size), num(h.live),
                  num(h.capacity), num(h.refused_full), num(h.expired), num(h.torn_repaired), num(h.torn_discarded),
                  num(h.attaches), instances, decoded ? "decoded" : "hex"});
    }
    if (json) {
        print_line({{"root", root.string()}, {"tables", std::move(tables)}, {"moved_aside", paths_json(aside)}});
        return state_ok;
    }
    if (segs.empty()) {
        std::printf("no state segments under %s\n", root.c_str());
    } else {
        std::fputs(text.text().c_str(), stdout);
    }
    for (const std::string &n : notes) {
        std::printf("note: %s\n", n.c_str());
    }
    for (const fs::path &a : aside) {
        std::printf("moved aside: %s\n", a.c_str());
    }
    return state_ok;
}

// A key or value as table cells: its fields, or its hex without a layout.
void add_cells(std::vector<std::string> &row, const std::vector<state::Field> *fields, const uint8_t *bytes,
               uint32_t size)
{
    if (fields == nullptr || fields->empty()) {
        row.push_back(state::hex(bytes, size));
        return;
    }
    for (const state::Field &f : *fields) {
        // A long blob (a pool's bitmap) would push every other column off
        // the screen: its head and size here, the whole of it with --json.
        constexpr uint32_t shown = 16;
        if (f.type == state::FieldType::bytes && f.size > shown) {
            row.push_back(state::hex(bytes + f.offset, shown) + "... (" + std::to_string(f.size) + " B)");
            continue;
        }
        const ordered_json v = state::field_value(f, bytes);
        row.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    }
}

// Column names and alignment of a key or value: its fields, or one hex
// column.  A value field named as a key field is "value.<name>", so that no
// two columns read alike.
void add_columns(std::vector<std::string> &names, std::vector<bool> &numeric, const std::vector<state::Field> *fields,
                 const char *hex_name)
{
    const std::size_t key_columns = names.size();
    if (fields == nullptr || fields->empty()) {
        names.emplace_back(hex_name);
        numeric.push_back(false);
        return;
    }
    for (const state::Field &f : *fields) {
        const bool taken = std::find(names.begin(), names.begin() + key_columns, f.name) != names.begin() + key_columns;
        names.push_back(taken ? std::string(hex_name) + "." + f.name : f.name);
        const bool number = f.type == state::FieldType::u8 || f.type == state::FieldType::u16 ||
                            f.type == state::FieldType::u32 || f.type == state::FieldType::u64 ||
                            f.type == state::FieldType::be16 || f.type == state::FieldType::be32 ||
                            f.type == state::FieldType::be64;
        numeric.push_back(number);
    }
}

int cmd_dump(const fs::path &root, const std::string &chain, const std::string &nf, const std::string &table, bool json,
             uint64_t limit, const char *tool)
{
    const fs::path file =
        root / StateStore::escape(chain) / StateStore::escape(nf) / (StateStore::escape(table) + ".tbl");
    std::string err;
    auto t = state::Table::open_readonly(file, err);
    if (!t) {
        return not_found(tool, json, err);
    }
    const uint32_t ks = t->key_size(), vs = t->value_size(), cells = t->cells();
    const uint64_t active = t->header().active_mask;
    const std::optional<state::RecordLayout> layout = state::read_layout(file, ks, vs, err);
    if (!err.empty()) {
        std::fprintf(stderr, "%s: note: layout not used, showing hex: %s\n", tool, err.c_str());
    }
    const std::vector<state::Field> *key_fields = layout ? &layout->key : nullptr;
    const std::vector<state::Field> *value_fields = layout ? &layout->value : nullptr;

    if (json) {
        // The head of the document; the entries stream after it.  active_mask:
        // bit i = instance i's cell is live; the others hold whatever their
        // instance left when it stopped (already merged).
        const ordered_json head = {
            {"chain", chain},        {"nf", nf},
            {"table", table},        {"kind", state::kind_name(t->kind())},
            {"key_size", ks},        {"value_size", vs},
            {"active_mask", active}, {"layout", layout ? state::layout_json(*layout) : ordered_json()}};
        std::string text = compact(head);
        text.pop_back();
        std::printf("%s,\"entries\":[", text.c_str());
    }
    std::vector<std::string> names;
    std::vector<bool> numeric;
    add_columns(names, numeric, key_fields, "key");
    if (cells != 0) {
        names.emplace_back("cell");
        numeric.push_back(false);
    }
    add_columns(names, numeric, value_fields, "value");
    Table rows(names, numeric);

    uint64_t n = 0;
    t->dump([&](const uint8_t *key, const uint8_t *vals) {
        if (limit != 0 && n >= limit) {
            return;
        }
        auto cell_bytes = [&](uint32_t c) { return vals + static_cast<std::size_t>(c) * vs; };
        if (json) {
            // Hex always (scripts that predate layouts read it); `decoded`
            // mirrors the hex members when the table has a layout.
            ordered_json e = {{"key", state::hex(key, ks)}};
            ordered_json decoded;
            if (layout) {
                decoded["key"] = state::decode_fields(layout->key, key);
            }
            if (cells == 0) {
                e["value"] = state::hex(vals, vs);
                if (layout) {
                    decoded["value"] = state::decode_fields(layout->value, vals);
                }
            } else {
                e["base"] = state::hex(vals, vs);
                e["instances"] = ordered_json::array();
                if (layout) {
                    decoded["base"] = state::decode_fields(layout->value, vals);
                    decoded["instances"] = ordered_json::array();
                }
                for (uint32_t c = 1; c < cells; ++c) {
                    e["instances"].push_back(state::hex(cell_bytes(c), vs));
                    if (layout) {
                        decoded["instances"].push_back(state::decode_fields(layout->value, cell_bytes(c)));
                    }
                }
            }
            if (layout) {
                e["decoded"] = std::move(decoded);
            }
            std::printf("%s%s", n != 0 ? "," : "", compact(e).c_str());
        } else if (cells == 0) {
            std::vector<std::string> row;
            add_cells(row, key_fields, key, ks);
            add_cells(row, value_fields, vals, vs);
            rows.add(std::move(row));
        } else {
            // The base, then the cells of the instances that are active.
            for (uint32_t c = 0; c < cells; ++c) {
                if (c != 0 && !(active & (1ull << (c - 1)))) {
                    continue;
                }
                std::vector<std::string> row;
                add_cells(row, key_fields, key, ks);
                row.push_back(c == 0 ? "base" : "instance " + std::to_string(c - 1));
                add_cells(row, value_fields, cell_bytes(c), vs);
                rows.add(std::move(row));
            }
        }
        ++n;
    });
    if (json) {
        std::printf("]}\n");
        return state_ok;
    }
    std::printf("%s / %s / %s: %s, %llu live, key %u B, value %u B, %s\n", chain.c_str(), nf.c_str(), table.c_str(),
                state::kind_name(t->kind()), static_cast<unsigned long long>(t->header().live), ks, vs,
                layout ? "decoded by the NF's layout" : "hex (the NF declares no layout)");
    if (n != 0) {
        std::fputs(rows.text().c_str(), stdout);
    }
    return state_ok;
}

int cmd_check(const fs::path &root, const std::string &chain, const std::string &nf, const std::string &table,
              bool json)
{
    std::vector<fs::path> aside;
    const std::vector<Segment> segs = scan(root, aside);
    int bad = 0, checked = 0;
    ordered_json results = ordered_json::array();
    for (const Segment &s : segs) {
        if ((!chain.empty() && s.chain != chain) || (!nf.empty() && s.nf != nf) ||
            (!table.empty() && s.table != table)) {
            continue;
        }
        ++checked;
        std::string err;
        auto t = state::Table::open_readonly(s.file, err);
        if (!t) {
            results.push_back({{"chain", s.chain}, {"nf", s.nf}, {"table", s.table}, {"ok", false}, {"error", err}});
            if (!json) {
                std::printf("FAIL %s: %s\n", s.file.c_str(), err.c_str());
            }
            ++bad;
            continue;
        }
        const state::CheckReport r = t->check();
        bad += !r.ok();
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
        if (json) {
            continue;
        }
        std::printf("%s %s/%s/%s: %llu live, %llu dead, %llu empty of %llu slots\n", r.ok() ? "ok  " : "FAIL",
                    s.chain.c_str(), s.nf.c_str(), s.table.c_str(), static_cast<unsigned long long>(r.live),
                    static_cast<unsigned long long>(r.dead), static_cast<unsigned long long>(r.empty),
                    static_cast<unsigned long long>(r.slots));
        for (const std::string &p : r.problems) {
            std::printf("    problem: %s\n", p.c_str());
        }
        for (const std::string &w : r.warnings) {
            std::printf("    note: %s\n", w.c_str());
        }
    }
    // Nothing matched names given: the caller asked about something not there.
    const int status = bad != 0 || (checked == 0 && !chain.empty()) ? state_not_found : state_ok;
    if (json) {
        print_line({{"root", root.string()},
                    {"ok", status == state_ok},
                    {"segments", std::move(results)},
                    {"moved_aside", paths_json(aside)}});
        return status;
    }
    for (const fs::path &a : aside) {
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

int cmd_flows(const fs::path &root, const std::string &chain, bool json, uint64_t limit, const char *tool)
{
    const fs::path file = root / StateStore::escape(chain) / "flows.seg";
    std::string err;
    auto t = state::FlowTable::open_readonly(file, err);
    if (!t) {
        return not_found(tool, json, err);
    }
    const std::vector<state::FlowArea> &areas = t->spec().areas; // NFs with per-flow state only
    const state::FlowTableTotals totals = t->totals();
    std::vector<std::string> names = {"addr_a", "port_a", "addr_b", "port_b", "proto", "initiator"};
    std::vector<bool> numeric = {false, true, false, true, true, false};
    if (json) {
        ordered_json head = {{"chain", chain},
                             {"capacity", totals.capacity},
                             {"live", totals.live},
                             {"entry_size", t->entry_size()},
                             {"areas", ordered_json::array()}};
        for (const state::FlowArea &a : areas) {
            head["areas"].push_back({{"nf", a.nf}, {"size", a.size}, {"offset", a.offset}});
        }
        std::string text = compact(head);
        text.pop_back();
        std::printf("%s,\"entries\":[", text.c_str());
    }
    for (const state::FlowArea &a : areas) {
        names.push_back(a.nf);
        numeric.push_back(false);
    }
    Table rows(names, numeric);
    uint64_t n = 0;
    t->for_each_entry([&](const uint8_t *entry, uint32_t) {
        if (limit != 0 && n >= limit) {
            return;
        }
        const serpens_flow_info info = state::FlowTable::entry_info(entry, 0, false, 0);
        const std::string a = addr_text(info.addr_a, info.ip_version), b = addr_text(info.addr_b, info.ip_version);
        const char *initiator = info.initiator_b ? "b" : "a";
        ordered_json words = ordered_json::object();
        std::vector<std::string> row = {a, num(info.port_a), b, num(info.port_b), num(info.proto), initiator};
        for (const state::FlowArea &area : areas) {
            // Areas start 8-byte aligned and are padded to whole words.
            ordered_json list = ordered_json::array();
            std::string cell;
            for (uint32_t w = 0; w < (area.size + 7) / 8; ++w) {
                uint64_t v;
                std::memcpy(&v, entry + area.offset + 8 * w, 8);
                list.push_back(v);
                cell += (w != 0 ? " " : "") + num(v);
            }
            words[area.nf] = std::move(list);
            row.push_back(std::move(cell));
        }
        if (json) {
            const ordered_json e = {{"addr_a", a},
                                    {"addr_b", b},
                                    {"port_a", info.port_a},
                                    {"port_b", info.port_b},
                                    {"proto", info.proto},
                                    {"ip_version", info.ip_version},
                                    {"initiator", initiator},
                                    {"areas", std::move(words)}};
            std::printf("%s%s", n != 0 ? "," : "", compact(e).c_str());
        } else {
            rows.add(std::move(row));
        }
        ++n;
    });
    if (json) {
        std::printf("]}\n");
        return state_ok;
    }
    std::printf("flow table of chain %s: %llu live of %llu; each NF's area as u64 words\n", chain.c_str(),
                static_cast<unsigned long long>(totals.live), static_cast<unsigned long long>(totals.capacity));
    if (n != 0) {
        std::fputs(rows.text().c_str(), stdout);
    }
    return state_ok;
}

} // namespace

std::string host_config_of(const std::string &config, const std::string &host_id)
{
    if (!config.empty()) {
        return config;
    }
    const fs::path installed = fs::path(install_dirs::sysconf) / (host_id + ".toml");
    std::error_code ec;
    return fs::is_regular_file(installed, ec) ? installed.string() : std::string();
}

fs::path state_root(const StateWhere &where)
{
    if (!where.root.empty()) {
        return where.root;
    }
    const std::string config = host_config_of(where.config, where.host_id);
    if (!config.empty()) {
        return load_host_config(config).state_dir;
    }
    return StateStore::default_root(where.host_id);
}

StateCommands::StateCommands(CLI::App &parent, bool *json) : _json(json != nullptr ? json : &_own_json)
{
    auto json_flag = [&](CLI::App *sub) {
        if (json == nullptr) {
            sub->add_flag("--json", _own_json, "JSON output");
        }
    };
    _list = parent.add_subcommand("list", "list executors and their tables");
    json_flag(_list);
    _dump = parent.add_subcommand("dump", "dump a table: its fields when its NF declares a layout, else hex");
    _dump->add_option("chain", _chain)->required();
    _dump->add_option("nf", _nf)->required();
    _dump->add_option("table", _table)->required();
    _dump->add_option("--limit", _limit, "at most N entries (0 = all)")->check(CLI::Range(uint64_t{0}, kMaxLimit));
    json_flag(_dump);
    _check = parent.add_subcommand("check", "check integrity; exit status 1 on problems");
    _check->add_option("chain", _chain);
    _check->add_option("nf", _nf);
    _check->add_option("table", _table);
    json_flag(_check);
    _flows = parent.add_subcommand("flows", "dump a chain's flow table (keys and each NF's per-flow words)");
    _flows->add_option("chain", _chain)->required();
    _flows->add_option("--limit", _limit, "at most N entries (0 = all)")->check(CLI::Range(uint64_t{0}, kMaxLimit));
    json_flag(_flows);
}

int StateCommands::run(const fs::path &root, const char *tool) const
{
    // A mistyped root would otherwise list as "no segments" and exit 0.
    if (const std::string why = config::path_problem(root.string(), false); !why.empty()) {
        return not_found(tool, *_json,
                         root.string() + " " + why +
                             (why == config::path_missing
                                  ? ": no host kept state there (is --root, -c or --host-id right? has the host run?)"
                                  : ""));
    }
    if (_list->parsed()) {
        return cmd_list(root, *_json);
    }
    if (_dump->parsed()) {
        return cmd_dump(root, _chain, _nf, _table, *_json, _limit, tool);
    }
    if (_flows->parsed()) {
        return cmd_flows(root, _chain, *_json, _limit, tool);
    }
    return cmd_check(root, _chain, _nf, _table, *_json);
}

} // namespace serpens::support

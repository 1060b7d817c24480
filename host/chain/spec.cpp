#include "chain/spec.h"

#include "config/toml_reader.h"
#include "core/private_dir.h"

#include <serpens/nf.h>

#include <algorithm>
#include <filesystem>
#include <map>

namespace serpens {
namespace {

SourcePos pos_of(const toml::node &node) { return {node.source().begin.line, node.source().begin.column}; }

bool is_reserved_target(const std::string &name) { return name == chain_target_out || name == chain_target_drop; }

NfSpec parse_nf(const toml::table &table, const std::string &file, std::size_t index)
{
    config::TableReader reader(table, file, "[[nf]] #" + std::to_string(index + 1));
    reader.allow_only({"name", "plugin", "config"});
    NfSpec nf;
    nf.name = reader.required_string("name");
    nf.plugin = reader.required_string("plugin");
    if (!config::is_safe_name(nf.name)) {
        reader.fail("name", config::unsafe_name_message("NF name", nf.name));
    }
    if (is_reserved_target(nf.name)) {
        reader.fail("name", "NF name '" + nf.name + "' is reserved ('out' and 'drop' are targets)");
    }
    nf.config = reader.optional_table("config");
    nf.where = pos_of(table);
    nf.plugin_where = pos_of(*table.get("plugin"));
    reader.reject_unknown_keys();
    return nf;
}

} // namespace

ChainSpec parse_chain_toml(std::shared_ptr<const toml::table> document, const std::string &file)
{
    const toml::table &root = *document;
    config::TableReader reader(root, file, "chain file");
    reader.allow_only({"name", "egress", "entry", "chain", "nf", "distribute", "aggregate"});
    ChainSpec spec;
    spec.document = document;
    spec.file = file;
    spec.directory = std::filesystem::path(file).parent_path().string();
    spec.name = reader.required_string("name");
    if (!config::is_safe_name(spec.name)) {
        reader.fail("name", config::unsafe_name_message("chain name", spec.name));
    }
    spec.egress = reader.string_or("egress", "");
    spec.entry = reader.string_or("entry", "");
    spec.where = pos_of(*root.get("name"));
    spec.egress_where = root.get("egress") != nullptr ? pos_of(*root.get("egress")) : spec.where;

    auto nf_tables = reader.table_array("nf");
    if (nf_tables.empty()) {
        reader.fail_table("missing required [[nf]] entries: a chain needs at least one NF");
    }
    // Refused before any graph is built: every later step is sized by this.
    if (nf_tables.size() > SERPENS_MAX_CHAIN_NFS) {
        reader.fail(*nf_tables[SERPENS_MAX_CHAIN_NFS],
                    "[[nf]] #" + std::to_string(SERPENS_MAX_CHAIN_NFS + 1) + ": a chain holds at most " +
                        std::to_string(SERPENS_MAX_CHAIN_NFS) + " NFs (SERPENS_MAX_CHAIN_NFS)");
    }
    for (std::size_t i = 0; i < nf_tables.size(); ++i) {
        spec.nfs.push_back(parse_nf(*nf_tables[i], file, i));
    }

    if (const toml::array *sequence = reader.optional_array("chain")) {
        std::vector<std::string> names = reader.string_array("chain");
        for (std::size_t i = 0; i + 1 < names.size(); ++i) {
            spec.edges.push_back({names[i], 0, names[i + 1], "chain", pos_of(*sequence->get(i + 1))});
        }
        if (spec.entry.empty() && !names.empty()) {
            spec.entry = names.front();
        }
        if (names.empty()) {
            reader.fail("chain", "'chain' must name at least one NF");
        }
    }

    auto distributes = reader.table_array("distribute");
    for (const toml::table *table : distributes) {
        config::TableReader d(*table, file, "[[distribute]]");
        d.allow_only({"from", "to"});
        std::string from = d.required_string("from");
        std::vector<std::string> to = d.string_array("to");
        const toml::array *to_array = d.optional_array("to");
        if (to_array == nullptr || to.empty()) {
            d.fail_table("missing required key 'to' (an array of NF names, one per output port)");
        }
        for (std::size_t port = 0; port < to.size(); ++port) {
            spec.edges.push_back(
                {from, static_cast<uint32_t>(port), to[port], "distribute", pos_of(*to_array->get(port))});
        }
        d.reject_unknown_keys();
    }

    auto aggregates = reader.table_array("aggregate");
    for (const toml::table *table : aggregates) {
        config::TableReader a(*table, file, "[[aggregate]]");
        a.allow_only({"from", "to"});
        std::vector<std::string> from = a.string_array("from");
        const toml::array *from_array = a.optional_array("from");
        if (from_array == nullptr || from.empty()) {
            a.fail_table("missing required key 'from' (an array of NF names to join)");
        }
        std::string to = a.required_string("to");
        for (std::size_t i = 0; i < from.size(); ++i) {
            spec.edges.push_back({from[i], 0, to, "aggregate", pos_of(*from_array->get(i))});
        }
        a.reject_unknown_keys();
    }
    reader.reject_unknown_keys();
    return spec;
}

ChainSpec parse_chain_file(const std::string &path)
{
    return parse_chain_toml(std::make_shared<const toml::table>(config::parse_file(path)), path);
}

ChainSpec parse_chain_text(std::string_view text, const std::string &path)
{
    return parse_chain_toml(std::make_shared<const toml::table>(config::parse_text(text, path)), path);
}

std::vector<ChainSpec> load_chain_directory(const std::string &directory)
{
    namespace fs = std::filesystem;
    // Every file of it is read: anyone who may add one could add a chain.
    if (std::string why = config_directory_problem(directory, true); !why.empty()) {
        throw Error("chains directory " + directory + ": " + why);
    }
    std::error_code ec;
    fs::directory_iterator it(directory, ec);
    if (ec) {
        throw Error("cannot read chains directory " + directory + ": " + ec.message());
    }
    std::vector<std::string> paths;
    for (const auto &entry : it) {
        if (entry.path().extension() == ".toml") {
            paths.push_back(entry.path().string());
        }
    }
    std::sort(paths.begin(), paths.end());
    std::vector<ChainSpec> chains;
    std::map<std::string, std::string> seen;
    for (const auto &path : paths) {
        ChainSpec spec = parse_chain_file(path);
        if (auto [it2, inserted] = seen.emplace(spec.name, path); !inserted) {
            throw ConfigError(path, spec.where.line, spec.where.column,
                              "duplicate chain name '" + spec.name + "' (already defined in " + it2->second + ")");
        }
        chains.push_back(std::move(spec));
    }
    return chains;
}

} // namespace serpens

#include "config/plugin_config.h"

#include <serpens/nf_util.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

namespace serpens::config {
namespace {

// The path as unread_keys spells it: "a.b[2].c", whatever spacing the NF used.
std::string canonical(const char *path) { return toml::path(path).str(); }

// The key in the NF's own config, else in its [nf_defaults.<plugin>] table.
struct Located {
    toml::node_view<const toml::node> node;
    bool from_defaults = false;
};

Located locate_with_source(const serpens_config *cfg, const char *path)
{
    if (cfg == nullptr || path == nullptr) {
        return {};
    }
    if (auto own = cfg->table->at_path(path)) {
        return {own, false};
    }
    if (cfg->defaults != nullptr) {
        if (auto fallback = cfg->defaults->at_path(path)) {
            return {fallback, true};
        }
    }
    return {};
}

toml::node_view<const toml::node> locate(const serpens_config *cfg, const char *path)
{
    return locate_with_source(cfg, path).node;
}

// A getter's lookup: also records that the NF reads this path.
toml::node_view<const toml::node> find(const serpens_config *cfg, const char *path)
{
    if (cfg != nullptr && path != nullptr) {
        std::lock_guard lock(cfg->queried_mutex);
        cfg->queried.insert(canonical(path));
    }
    return locate(cfg, path);
}

int copy_out(const std::string &value, char *buf, size_t len)
{
    if (buf == nullptr || len <= value.size()) {
        return SERPENS_ENOSPC;
    }
    std::memcpy(buf, value.c_str(), value.size() + 1);
    return SERPENS_OK;
}

int config_string(const serpens_config *cfg, const char *path, const char **out)
{
    auto node = find(cfg, path);
    if (!node) {
        return SERPENS_ENOENT;
    }
    if (!node.is_string()) {
        return SERPENS_EINVAL;
    }
    // The table outlives the NF context, so the pointer stays valid for it.
    *out = node.as_string()->get().c_str();
    return SERPENS_OK;
}

int config_int(const serpens_config *cfg, const char *path, int64_t *out)
{
    auto node = find(cfg, path);
    if (!node) {
        return SERPENS_ENOENT;
    }
    if (!node.is_integer()) {
        return SERPENS_EINVAL;
    }
    *out = node.as_integer()->get();
    return SERPENS_OK;
}

int config_double(const serpens_config *cfg, const char *path, double *out)
{
    auto node = find(cfg, path);
    if (!node) {
        return SERPENS_ENOENT;
    }
    if (node.is_floating_point()) {
        const double value = node.as_floating_point()->get();
        if (!std::isfinite(value)) {
            return SERPENS_EINVAL; // an NF's range check would let nan through
        }
        *out = value;
        return SERPENS_OK;
    }
    if (node.is_integer()) {
        *out = static_cast<double>(node.as_integer()->get());
        return SERPENS_OK;
    }
    return SERPENS_EINVAL;
}

int config_bool(const serpens_config *cfg, const char *path, int *out)
{
    auto node = find(cfg, path);
    if (!node) {
        return SERPENS_ENOENT;
    }
    if (!node.is_boolean()) {
        return SERPENS_EINVAL;
    }
    *out = node.as_boolean()->get() ? 1 : 0;
    return SERPENS_OK;
}

int config_array_size(const serpens_config *cfg, const char *path, size_t *out)
{
    auto node = find(cfg, path);
    if (!node) {
        return SERPENS_ENOENT;
    }
    if (!node.is_array()) {
        return SERPENS_EINVAL;
    }
    *out = node.as_array()->size();
    return SERPENS_OK;
}

int config_path(const serpens_config *cfg, const char *path, char *buf, size_t len)
{
    const char *value = nullptr;
    int rc = config_string(cfg, path, &value);
    if (rc != SERPENS_OK) {
        return rc;
    }
    std::filesystem::path resolved(value);
    if (resolved.is_relative()) {
        bool from_defaults = locate_with_source(cfg, path).from_defaults;
        resolved = std::filesystem::path(from_defaults ? cfg->defaults_directory : cfg->directory) / resolved;
    }
    return copy_out(resolved.lexically_normal().string(), buf, len);
}

// The bytes of a file as serpens_read_config_file reads it (its checks
// included), or nullopt with `why`.
std::optional<std::string> read_file(const std::string &path, size_t max_size, int &rc, std::string &why)
{
    char *data = nullptr;
    size_t size = 0;
    char err[512];
    rc = serpens_read_config_file(path.c_str(), max_size, &data, &size, err, sizeof err);
    if (rc != SERPENS_OK) {
        why = err;
        return std::nullopt;
    }
    std::unique_ptr<char, decltype(&std::free)> owned(data, &std::free);
    return std::string(data, size);
}

int config_file(const serpens_config *cfg, const char *path, size_t max_size, const char **data, size_t *size,
                char *err, size_t err_len)
{
    auto fail = [&](int rc, const std::string &why) {
        if (err != nullptr && err_len > 0) {
            std::snprintf(err, err_len, "%s", why.c_str());
        }
        return rc;
    };
    if (cfg == nullptr || path == nullptr || data == nullptr || size == nullptr) {
        return fail(SERPENS_EINVAL, "config_file: a null argument");
    }
    char resolved[4096];
    if (int rc = config_path(cfg, path, resolved, sizeof resolved); rc != SERPENS_OK) {
        return rc == SERPENS_ENOENT
                   ? fail(rc, std::string(path) + ": no such key")
                   : fail(SERPENS_EINVAL,
                          std::string(path) + (rc == SERPENS_EINVAL ? ": not a string" : ": the path is too long"));
    }
    std::lock_guard lock(cfg->files_mutex);
    auto known = cfg->files.find(resolved);
    if (known == cfg->files.end()) {
        int rc = SERPENS_OK;
        std::string why;
        std::optional<std::string> bytes = read_file(resolved, max_size, rc, why);
        if (!bytes) {
            return fail(rc, why); // not kept: a later instance tries again
        }
        known = cfg->files.emplace(resolved, std::move(*bytes)).first;
    } else if (known->second.size() > max_size) {
        return fail(SERPENS_EINVAL, std::string(resolved) + ": " + std::to_string(known->second.size()) +
                                        " bytes, over the limit of " + std::to_string(max_size) + " bytes");
    }
    *data = known->second.c_str(); // std::map nodes stay put, and the string is never written again
    *size = known->second.size();
    return SERPENS_OK;
}

int config_where(const serpens_config *cfg, const char *path, char *buf, size_t len)
{
    if (cfg == nullptr) {
        return SERPENS_EINVAL;
    }
    Located found = locate_with_source(cfg, path); // naming a key in a message is not reading it
    const auto &source = found.node ? found.node.node()->source() : cfg->table->source();
    std::string where = found.from_defaults ? cfg->defaults_file : cfg->file;
    if (source.begin.line != 0) {
        where += ':' + std::to_string(source.begin.line) + ':' + std::to_string(source.begin.column);
    }
    return copy_out(where, buf, len);
}

// Every prefix of every queried path: "a.b[2].c" touches a, a.b, a.b[2], a.b[2].c.
std::set<std::string> touched_paths(const std::set<std::string> &queried)
{
    std::set<std::string> touched;
    for (const std::string &text : queried) {
        std::string prefix;
        for (const toml::path_component &part : toml::path(text)) {
            if (part.type() == toml::path_component_type::array_index) {
                prefix += "[" + std::to_string(part.index()) + "]";
            } else {
                prefix += (prefix.empty() ? "" : ".") + std::string(part.key());
            }
            touched.insert(prefix);
        }
    }
    return touched;
}

struct UnreadScan {
    const serpens_config &cfg;
    const std::string &file;
    std::string subject; // "the config of NF 'n' (plugin p)"
    std::set<std::string> queried;
    std::set<std::string> touched;
    std::vector<UnreadKey> found;

    // The names read directly inside `parent` ("" for the top), for the hint.
    std::string read_below(const std::string &parent) const
    {
        std::set<std::string> names;
        for (const std::string &path : queried) {
            if (!parent.empty() && path.compare(0, parent.size() + 1, parent + ".") != 0) {
                continue;
            }
            std::string rest = parent.empty() ? path : path.substr(parent.size() + 1);
            names.insert(rest.substr(0, rest.find_first_of(".[")));
        }
        std::string out;
        for (const std::string &name : names) {
            out += (out.empty() ? "" : ", ") + name;
        }
        return out;
    }

    void report(const std::string &parent, const toml::key &key, const toml::node &node, const std::string &path)
    {
        const toml::source_region &at = key.source().begin.line != 0 ? key.source() : node.source();
        UnreadKey unread;
        unread.file = file;
        unread.line = at.begin.line;
        unread.column = at.begin.column;
        if (touched.count(path) != 0) {
            // Read, but below it: "timeouts = 5" where timeouts.udp is meant.
            unread.message = "'" + path + "' in " + subject + " is read as a table (" + path + "." + read_below(path) +
                             " ...), not a single value";
        } else {
            std::string reads = read_below(parent);
            unread.message = "unknown key '" + path + "' in " + subject +
                             (reads.empty() ? std::string("; it reads no keys here") : "; it reads: " + reads);
        }
        unread.text =
            file + ":" + std::to_string(unread.line) + ":" + std::to_string(unread.column) + ": " + unread.message;
        found.push_back(std::move(unread));
    }

    // Recursion depth is bounded by the TOML nesting toml++ accepts.
    void table(const toml::table &t, const std::string &parent)
    {
        for (const auto &[key, node] : t) {
            std::string path = (parent.empty() ? "" : parent + ".") + std::string(key.str());
            if (node.is_table()) {
                if (touched.count(path) == 0) {
                    report(parent, key, node, path);
                    continue;
                }
                table(*node.as_table(), path);
            } else if (node.is_array()) {
                if (touched.count(path) == 0) {
                    report(parent, key, node, path);
                    continue;
                }
                const toml::array &array = *node.as_array();
                for (std::size_t i = 0; i < array.size(); ++i) {
                    if (const toml::table *element = array.get(i)->as_table()) {
                        table(*element, path + "[" + std::to_string(i) + "]");
                    }
                }
            } else if (queried.count(path) == 0) {
                report(parent, key, node, path);
            }
        }
    }
};

} // namespace

std::vector<UnreadKey> unread_key_list(const serpens_config &cfg)
{
    std::string who = cfg.nf_name.empty() ? std::string("this NF") : "NF '" + cfg.nf_name + "'";
    if (!cfg.plugin.empty()) {
        who += " (plugin " + cfg.plugin + ")";
    }
    std::set<std::string> queried;
    {
        std::lock_guard lock(cfg.queried_mutex);
        queried = cfg.queried;
    }
    std::set<std::string> touched = touched_paths(queried);
    auto scan_table = [&](const toml::table &table, const std::string &file, std::string subject) {
        UnreadScan scan{cfg, file, std::move(subject), queried, touched, {}};
        scan.table(table, "");
        std::sort(scan.found.begin(), scan.found.end(), [](const UnreadKey &a, const UnreadKey &b) {
            return a.line != b.line ? a.line < b.line : a.column < b.column;
        });
        return scan.found;
    };
    std::vector<UnreadKey> found;
    if (cfg.table != nullptr) {
        found = scan_table(*cfg.table, cfg.file, "the config of " + who);
    }
    if (cfg.defaults != nullptr) {
        for (UnreadKey &unread :
             scan_table(*cfg.defaults, cfg.defaults_file, "[nf_defaults." + cfg.plugin + "], read by " + who)) {
            found.push_back(std::move(unread));
        }
    }
    return found;
}

void NfDefaults::attach(serpens_config &cfg) const
{
    auto it = by_plugin.find(cfg.plugin);
    if (it == by_plugin.end()) {
        return;
    }
    cfg.defaults_document = document;
    cfg.defaults = it->second;
    cfg.defaults_file = file;
    cfg.defaults_directory = directory;
}

std::vector<std::string> unread_keys(const serpens_config &cfg)
{
    std::vector<std::string> out;
    for (UnreadKey &unread : unread_key_list(cfg)) {
        out.push_back(std::move(unread.text));
    }
    return out;
}

std::vector<std::string> changed_files(const serpens_config &cfg)
{
    std::lock_guard lock(cfg.files_mutex);
    std::vector<std::string> changed;
    for (const auto &[path, bytes] : cfg.files) {
        int rc = SERPENS_OK;
        std::string why;
        // One byte past what was read is enough to see that it grew.
        if (read_file(path, bytes.size() + 1, rc, why) != bytes) {
            changed.push_back(path);
        }
    }
    return changed;
}

void install_config_api(serpens_host_api &api)
{
    api.config_string = config_string;
    api.config_int = config_int;
    api.config_double = config_double;
    api.config_bool = config_bool;
    api.config_array_size = config_array_size;
    api.config_path = config_path;
    api.config_where = config_where;
    api.config_file = config_file;
}

} // namespace serpens::config

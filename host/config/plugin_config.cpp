#include "config/plugin_config.h"

#include <cstring>
#include <filesystem>

namespace serpens::config {
namespace {

toml::node_view<const toml::node> find(const serpens_config *cfg, const char *path)
{
    if (cfg == nullptr || path == nullptr) {
        return {};
    }
    return cfg->table->at_path(path);
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
        *out = node.as_floating_point()->get();
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
        resolved = std::filesystem::path(cfg->directory) / resolved;
    }
    return copy_out(resolved.lexically_normal().string(), buf, len);
}

int config_where(const serpens_config *cfg, const char *path, char *buf, size_t len)
{
    if (cfg == nullptr) {
        return SERPENS_EINVAL;
    }
    auto node = find(cfg, path);
    const auto &source = node ? node.node()->source() : cfg->table->source();
    std::string where = cfg->file;
    if (source.begin.line != 0) {
        where += ':' + std::to_string(source.begin.line) + ':' + std::to_string(source.begin.column);
    }
    return copy_out(where, buf, len);
}

} // namespace

void install_config_api(serpens_host_api &api)
{
    api.config_string = config_string;
    api.config_int = config_int;
    api.config_double = config_double;
    api.config_bool = config_bool;
    api.config_array_size = config_array_size;
    api.config_path = config_path;
    api.config_where = config_where;
}

} // namespace serpens::config

#include "config/toml_reader.h"

#include <serpens/nf_util.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>

namespace serpens::config {

toml::table parse_file(const std::string &path)
{
    // The reader NFs use for their files: a FIFO or /dev/zero named as a
    // config must fail at once, not hang or fill memory.
    char *data = nullptr;
    std::size_t size = 0;
    char err[1024];
    if (serpens_read_config_file(path.c_str(), SERPENS_CONFIG_FILE_MAX, &data, &size, err, sizeof err) != SERPENS_OK) {
        std::string why = err;
        std::string prefix = path + ": ";
        throw ConfigError(path, why.compare(0, prefix.size(), prefix) == 0 ? why.substr(prefix.size()) : why);
    }
    std::unique_ptr<char, decltype(&std::free)> owned(data, &std::free);
    return parse_text(std::string_view(data, size), path);
}

toml::table parse_text(std::string_view text, const std::string &path)
{
    try {
        return toml::parse(text, path);
    } catch (const toml::parse_error &e) {
        const auto &begin = e.source().begin;
        throw ConfigError(path, begin.line, begin.column, "TOML syntax error: " + std::string(e.description()));
    }
}

void fail_at(const std::string &file, const toml::source_region &where, const std::string &message)
{
    throw ConfigError(file, where.begin.line, where.begin.column, message);
}

std::string type_name(const toml::node &node)
{
    switch (node.type()) {
    case toml::node_type::string:
        return "a string";
    case toml::node_type::integer:
        return "an integer";
    case toml::node_type::floating_point:
        return "a float";
    case toml::node_type::boolean:
        return "a boolean";
    case toml::node_type::table:
        return "a table";
    case toml::node_type::array:
        return "an array";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
        return "a date/time";
    default:
        return "nothing";
    }
}

bool is_safe_name(std::string_view name) noexcept
{
    if (name.empty() || name.size() > max_name_length || name.front() == '.') {
        return false;
    }
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                  c == '.';
        if (!ok) {
            return false;
        }
    }
    return true;
}

std::string unsafe_name_message(std::string_view what, std::string_view value)
{
    return "'" + std::string(value) + "' is not a valid " + std::string(what) + ": expected 1.." +
           std::to_string(max_name_length) + " characters of A-Z a-z 0-9 _ - . (not starting with '.')";
}

TableReader::TableReader(const toml::table &table, std::string file, std::string what)
    : _table(table), _file(std::move(file)), _what(std::move(what))
{}

const toml::node *TableReader::lookup(std::string_view key)
{
    _known.emplace(key);
    return _table.get(key);
}

void TableReader::fail(std::string_view key, const std::string &message) const
{
    if (const toml::node *node = _table.get(key)) {
        fail(*node, message);
    }
    fail_table(message);
}

void TableReader::fail(const toml::node &node, const std::string &message) const
{
    fail_at(_file, node.source(), message);
}

void TableReader::fail_table(const std::string &message) const
{
    fail_at(_file, _table.source(), _what + ": " + message);
}

std::string TableReader::required_string(std::string_view key)
{
    auto value = optional_string(key);
    if (!value) {
        fail_table("missing required key '" + std::string(key) + "' (a string)");
    }
    return *value;
}

std::optional<std::string> TableReader::optional_string(std::string_view key)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return std::nullopt;
    }
    if (!node->is_string()) {
        fail(*node, "'" + std::string(key) + "' must be a string, not " + type_name(*node));
    }
    return std::string(node->as_string()->get());
}

std::string TableReader::string_or(std::string_view key, std::string fallback)
{
    auto value = optional_string(key);
    return value ? *value : std::move(fallback);
}

std::optional<int64_t> TableReader::optional_integer(std::string_view key, int64_t min, int64_t max)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return std::nullopt;
    }
    if (!node->is_integer()) {
        fail(*node, "'" + std::string(key) + "' must be an integer, not " + type_name(*node));
    }
    int64_t value = node->as_integer()->get();
    if (value < min || value > max) {
        fail(*node, "'" + std::string(key) + "' = " + std::to_string(value) + " is out of range [" +
                        std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return value;
}

int64_t TableReader::integer_or(std::string_view key, int64_t fallback, int64_t min, int64_t max)
{
    return optional_integer(key, min, max).value_or(fallback);
}

double TableReader::double_or(std::string_view key, double fallback, double min, double max)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return fallback;
    }
    double value = 0;
    if (node->is_floating_point()) {
        value = node->as_floating_point()->get();
    } else if (node->is_integer()) {
        value = static_cast<double>(node->as_integer()->get());
    } else {
        fail(*node, "'" + std::string(key) + "' must be a number, not " + type_name(*node));
    }
    if (!(value >= min && value <= max)) { // nan too: it compares false with everything
        std::ostringstream range;
        range << "'" << key << "' = " << value << " is out of range [" << min << ", " << max << "]";
        fail(*node, range.str());
    }
    return value;
}

bool TableReader::bool_or(std::string_view key, bool fallback)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return fallback;
    }
    if (!node->is_boolean()) {
        fail(*node, "'" + std::string(key) + "' must be true or false, not " + type_name(*node));
    }
    return node->as_boolean()->get();
}

std::vector<std::string> TableReader::string_array(std::string_view key)
{
    std::vector<std::string> out;
    const toml::array *array = optional_array(key);
    if (array == nullptr) {
        return out;
    }
    for (const toml::node &element : *array) {
        if (!element.is_string()) {
            fail(element, "'" + std::string(key) + "' must hold strings, found " + type_name(element));
        }
        out.emplace_back(element.as_string()->get());
    }
    return out;
}

const toml::table *TableReader::optional_table(std::string_view key)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return nullptr;
    }
    if (!node->is_table()) {
        fail(*node, "'" + std::string(key) + "' must be a table, not " + type_name(*node));
    }
    return node->as_table();
}

const toml::array *TableReader::optional_array(std::string_view key)
{
    const toml::node *node = lookup(key);
    if (node == nullptr) {
        return nullptr;
    }
    if (!node->is_array()) {
        fail(*node, "'" + std::string(key) + "' must be an array, not " + type_name(*node));
    }
    return node->as_array();
}

std::vector<const toml::table *> TableReader::table_array(std::string_view key)
{
    std::vector<const toml::table *> out;
    const toml::array *array = optional_array(key);
    if (array == nullptr) {
        return out;
    }
    for (const toml::node &element : *array) {
        if (!element.is_table()) {
            fail(element, "'" + std::string(key) + "' must be an array of tables ([[" + std::string(key) +
                              "]]), found " + type_name(element));
        }
        out.push_back(element.as_table());
    }
    return out;
}

void TableReader::allow_only(std::initializer_list<std::string_view> keys)
{
    for (std::string_view key : keys) {
        _known.emplace(key);
    }
    reject_unknown_keys();
}

void TableReader::reject_unknown_keys() const
{
    for (const auto &[key, node] : _table) {
        if (_known.count(key.str()) == 0) {
            std::string known;
            for (const auto &name : _known) {
                known += (known.empty() ? "" : ", ") + name;
            }
            fail(node, _what + ": unknown key '" + std::string(key.str()) + "' (expected one of: " + known + ")");
        }
    }
}

std::string path_problem(const std::string &path, bool file)
{
    std::error_code ec;
    const std::filesystem::file_status st = std::filesystem::status(path, ec);
    if (st.type() == std::filesystem::file_type::not_found) {
        return std::string(path_missing);
    }
    if (ec) {
        return "cannot be opened: " + ec.message();
    }
    if (file && !std::filesystem::is_regular_file(st)) {
        return "is not a regular file";
    }
    if (!file && !std::filesystem::is_directory(st)) {
        return "is not a directory";
    }
    return {};
}

std::string seconds_problem(const std::string &text, double min, double max)
{
    char *end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(value) || value < min || value > max) {
        // A stream, not fmt: the config fuzzer builds this file without it.
        std::ostringstream expected;
        expected << "expected a number of seconds ";
        if (max < std::numeric_limits<double>::max()) {
            expected << "from " << min << " to " << max;
        } else {
            expected << "of at least " << min;
        }
        return expected.str();
    }
    return {};
}

} // namespace serpens::config

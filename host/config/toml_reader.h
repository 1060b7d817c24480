#pragma once
// Strict reading of TOML tables: typed getters that fail with "file:line:col:
// what was expected", and a final check that refuses keys nobody asked for, so
// a typo in a config never goes unnoticed.

#include "core/error.h"

#include <toml++/toml.h>

#include <cstdint>
#include <optional>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::config {

// Parses a TOML file; syntax errors become ConfigError with line and column.
toml::table parse_file(const std::string &path);
// Parses TOML text; `path` names it in messages and source positions.
toml::table parse_text(std::string_view text, const std::string &path);

[[noreturn]] void fail_at(const std::string &file, const toml::source_region &where, const std::string &message);

class TableReader {
public:
    // `what` names the table in messages, e.g. "chain" or "[[nf]] 'fw'".
    TableReader(const toml::table &table, std::string file, std::string what);

    std::string required_string(std::string_view key);
    std::optional<std::string> optional_string(std::string_view key);
    std::string string_or(std::string_view key, std::string fallback);
    int64_t integer_or(std::string_view key, int64_t fallback, int64_t min, int64_t max);
    std::optional<int64_t> optional_integer(std::string_view key, int64_t min, int64_t max);
    double double_or(std::string_view key, double fallback, double min, double max);
    bool bool_or(std::string_view key, bool fallback);
    std::vector<std::string> string_array(std::string_view key); // empty when absent
    const toml::table *optional_table(std::string_view key);
    const toml::array *optional_array(std::string_view key);
    // An array of tables ([[key]]); empty when absent.
    std::vector<const toml::table *> table_array(std::string_view key);

    // Declares the keys this table may hold and refuses any other at once, so a
    // misspelt key is named as such rather than reported as a missing one.
    void allow_only(std::initializer_list<std::string_view> keys);

    // Refuses every key that no getter asked for, naming the keys that are known.
    void reject_unknown_keys() const;

    [[noreturn]] void fail(std::string_view key, const std::string &message) const;
    [[noreturn]] void fail(const toml::node &node, const std::string &message) const;
    [[noreturn]] void fail_table(const std::string &message) const;

    const std::string &file() const noexcept { return _file; }
    const toml::table &table() const noexcept { return _table; }

private:
    const toml::node *lookup(std::string_view key);

    const toml::table &_table;
    std::string _file;
    std::string _what;
    std::set<std::string, std::less<>> _known;
};

std::string type_name(const toml::node &node);

// Names that end up in file names, shared-memory segments and log lines (host
// ids, chain and NF names): 1..64 of [A-Za-z0-9_.-], not starting with '.', so
// no name can be "..", hold a '/' or hide as a dot file.
inline constexpr std::size_t max_name_length = 64;
bool is_safe_name(std::string_view name) noexcept;
// "'<value>' is not a valid <what>: ..." naming the rule, for the messages above.
std::string unsafe_name_message(std::string_view what, std::string_view value);

// What keeps `path` from being an existing regular file (`file`) or
// directory, in words that follow the path (path_missing, "is not a
// directory", "cannot be opened: <why>"), or "" when it is one.  Without
// exceptions: a symbolic-link loop or an overlong name is an operator's
// mistake to report, not a crash.
inline constexpr std::string_view path_missing = "does not exist";
std::string path_problem(const std::string &path, bool file);

// What keeps a command-line value from being a number of seconds from `min`
// to `max` ("expected ..."), or "" when it is one.  NaN passes any range
// check made of comparisons, so it is refused here by name, as are
// infinities and trailing text.
std::string seconds_problem(const std::string &text, double min, double max);

} // namespace serpens::config

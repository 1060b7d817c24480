#pragma once
// The log levels host.toml, serpens-host --log-level, the control socket and
// serpensctl take: spdlog's names, with "warn" and "error" for its
// "warning", "err" and "critical".

#include <algorithm>
#include <cstddef>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

inline constexpr std::string_view log_levels[] = {"trace", "debug", "info", "warn", "error", "off"};

// "trace, debug, ... or off", for messages and --help.
inline std::string log_levels_text()
{
    std::string text;
    for (std::size_t i = 0; i < std::size(log_levels); ++i) {
        text += i == 0 ? "" : i + 1 == std::size(log_levels) ? " or " : ", ";
        text += log_levels[i];
    }
    return text;
}

inline bool is_log_level(std::string_view name) noexcept
{
    return std::find(std::begin(log_levels), std::end(log_levels), name) != std::end(log_levels);
}

// As a command line parser's list of choices.
inline std::vector<std::string> log_level_names() { return {std::begin(log_levels), std::end(log_levels)}; }

} // namespace serpens

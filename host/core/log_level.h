#pragma once
// The log levels host.toml, serpens-host --log-level, the control socket and
// serpensctl take: spdlog's names, with "warn" and "error" for its
// "warning", "err" and "critical".

#include <algorithm>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace serpens {

inline constexpr std::string_view log_levels[] = {"trace", "debug", "info", "warn", "error", "off"};
// For messages and --help.
inline constexpr std::string_view log_levels_text = "trace, debug, info, warn, error or off";

inline bool is_log_level(std::string_view name) noexcept
{
    return std::find(std::begin(log_levels), std::end(log_levels), name) != std::end(log_levels);
}

// As a command line parser's list of choices.
inline std::vector<std::string> log_level_names() { return {std::begin(log_levels), std::end(log_levels)}; }

} // namespace serpens

#pragma once
// The control protocol's requests: one text line each, e.g. "set
// wake_threshold 256".  Parsing is pure (no DPDK, no I/O, no allocation beyond
// the error text) so a fuzzer can drive it; the host executes the typed result.

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace serpens {

enum class ControlVerb {
    ping,               // "ping" -> "pong"
    stats,              // "stats" -> the live counters as JSON
    get_wake_threshold, // "get wake_threshold" -> the packet count
    set_wake_threshold, // "set wake_threshold N" -> "ok"
    scale,              // "scale CHAIN N|+K|-K [LCORE,LCORE...]" -> what it did, as JSON
};

inline constexpr uint32_t kMaxWakeThreshold = 1u << 20;

inline constexpr uint32_t kMaxScaleInstances = 1024;
inline constexpr unsigned kMaxLcoreId = 1023;

struct ControlRequest {
    ControlVerb verb = ControlVerb::ping;
    uint32_t value = 0; // set_wake_threshold: 1..kMaxWakeThreshold; scale: the count or step
    // scale:
    std::string chain{};
    bool relative = false;          // +K / -K
    bool negative = false;          // -K
    std::vector<unsigned> lcores{}; // where new instances may go
};

// Why a line was refused; `message` is the whole reply, starting "error: ".
struct ControlRequestError {
    std::string message;
};

using ParsedControlRequest = std::variant<ControlRequest, ControlRequestError>;

// Parses one request line (without its newline; one trailing '\r' is
// tolerated).  Words are separated by spaces or tabs; anything beyond a
// command's words is refused, as is a value out of range.  Thread-safe.
ParsedControlRequest parse_control_request(std::string_view line);

// True for requests that change the host (as opposed to reading it).
constexpr bool changes_host(const ControlRequest &request) noexcept
{
    return request.verb == ControlVerb::set_wake_threshold || request.verb == ControlVerb::scale;
}

} // namespace serpens

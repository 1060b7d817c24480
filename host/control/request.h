#pragma once
// The control protocol's requests (protocol.h has the envelope): one JSON
// object per line, e.g. {"v":1,"cmd":"wake_threshold","set":256}.  Parsing is
// pure (no DPDK, no I/O) so a fuzzer can drive it; the host executes the
// typed result.

#include "control/protocol.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace serpens {

// Each verb is the "cmd" of the same name.  Reads take no further fields
// unless noted.
enum class ControlVerb {
    ping,           // -> {"pong":true}
    version,        // -> the host's version and the protocol's
    status,         // -> who the host is, since when, from which config, and a line per chain
    stats,          // -> the live counters (since the last "clear")
    chains,         // -> every chain: its graph as text, its NFs and instances
    plugins,        // -> every loaded plugin: name, version, ABI, file
    instances,      // -> every instance slot: chain, index, lcore, state, counters
    clear,          // -> zeroes what "stats" shows; bills and metrics keep counting
    wake_threshold, // {"set":N}? -> the threshold (after setting it)
    log_level,      // {"set":"debug"}? -> the level (after setting it)
    scale,          // {"chain":"c","count":N|"N"|"+K"|"-K","lcores":[..]?,"peer":"id"?} -> what it did
    bill,           // {"since":UNIX_S?,"chain":"c"?} -> per chain what it used, from the ledger
    reload,         // {"chains":["c",..]?} -> re-reads chains and plugins, swaps what changed (and the chains named)
    drain,          // {"lcores":[..]?,"undo":true?} -> moves instances off lcores (or lets them back); the drained ones
    peers,          // -> the other hosts of [peer]: up or down, since when, what they announced
};

inline constexpr uint32_t kMaxWakeThreshold = 1u << 20;

inline constexpr uint32_t kMaxScaleInstances = 1024;
inline constexpr unsigned kMaxLcoreId = 1023;
inline constexpr std::size_t kMaxScaleLcores = 256;
inline constexpr std::size_t kMaxReloadChains = 256;

struct ControlRequest {
    ControlVerb verb = ControlVerb::ping;
    // wake_threshold: the new value (1..kMaxWakeThreshold), if setting.
    std::optional<uint32_t> set_threshold{};
    // log_level: the new level (a name spdlog knows), if setting.
    std::optional<std::string> set_level{};
    // scale:
    std::string chain{};
    uint32_t value = 0;             // the count or step
    bool relative = false;          // +K / -K
    bool negative = false;          // -K
    std::vector<unsigned> lcores{}; // scale: where new instances may go; drain: the lcores
    std::string peer{};             // scale: +1 / -1 on this peer (a [[peer.host]] id) rather than here
    bool undo = false;              // drain: let the lcores run instances again
    // bill: from when (Unix seconds; all the ledger holds when absent); scale, bill: the chain
    std::optional<int64_t> since{};
    // reload: chains to swap for a new instance even when neither their file
    // nor their plugins changed (a file their NFs read did)
    std::vector<std::string> chains{};
};

struct ControlRequestError {
    ControlErrorCode code = ControlErrorCode::bad_request;
    std::string message;
};

using ParsedControlRequest = std::variant<ControlRequest, ControlRequestError>;

// Parses one request line (without its newline; one trailing '\r' is
// tolerated).  Unknown fields are refused rather than ignored, so that a
// client never believes a host honoured an option it does not know.
// Thread-safe.
ParsedControlRequest parse_control_request(std::string_view line);

// True for requests that change the host (as opposed to reading it).
constexpr bool changes_host(const ControlRequest &request) noexcept
{
    switch (request.verb) {
    case ControlVerb::clear:
    case ControlVerb::scale:
    case ControlVerb::reload:
        return true;
    case ControlVerb::drain:
        return request.undo || !request.lcores.empty();
    case ControlVerb::wake_threshold:
        return request.set_threshold.has_value();
    case ControlVerb::log_level:
        return request.set_level.has_value();
    default:
        return false;
    }
}

} // namespace serpens

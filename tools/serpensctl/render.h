#pragma once
// serpensctl's human output: each reply of the control protocol as the text
// an operator reads (--json prints the reply's result instead).

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace serpensctl {

using nlohmann::ordered_json;

std::string render_status(const ordered_json &status);
std::string render_chains(const ordered_json &chains);
std::string render_plugins(const ordered_json &plugins);
std::string render_peers(const ordered_json &peers);
std::string render_instances(const ordered_json &instances);
std::string render_stats(const ordered_json &stats);
std::string render_scale(const ordered_json &result);
std::string render_peer_scale(const ordered_json &result); // scale ... --peer
// "reload": what was swapped, kept, added; what each swap cost.
std::string render_reload(const ordered_json &result);
// "drain": the instances moved, and which lcores are drained now.
std::string render_drain(const ordered_json &result);
std::string render_bill(const ordered_json &bill);

// --since: "30s", "10m", "2h", "7d" ago; Unix seconds; or a UTC time
// "2026-12-03T18:00:00Z" / "2026-12-03".  nullopt when it is none of these.
std::optional<int64_t> parse_since(const std::string &text, int64_t now_s);

// Per-second rates between two "stats" replies `seconds` apart: every
// counter of `now` less `before`, divided by `seconds` (what stats --watch
// shows).  Gauges and identities are kept as in `now`.
ordered_json stats_rates(const ordered_json &now, const ordered_json &before, double seconds);
std::string render_rates(const ordered_json &rates, double seconds);

// 3725.2 -> "1h2m5s"
std::string human_duration(double seconds);

} // namespace serpensctl

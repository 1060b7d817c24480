#include "control/request.h"

#include "config/toml_reader.h"

#include <array>
#include <charconv>
#include <optional>

namespace serpens {
namespace {

constexpr std::string_view kCommands =
    "commands: ping, stats, get wake_threshold, set wake_threshold N, scale CHAIN N|+K|-K [LCORE,...]";

// A refused line is echoed in the reply; keep that echo short and printable
// so a hostile line cannot make the reply huge or smuggle control bytes.
std::string quoted(std::string_view text)
{
    constexpr std::size_t kMaxEcho = 64;
    std::string out = "'";
    for (std::size_t i = 0; i < text.size() && i < kMaxEcho; ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
    }
    out += text.size() > kMaxEcho ? "...'" : "'";
    return out;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

// Splits into at most five words; one more than a command takes means "too many".
struct Words {
    std::array<std::string_view, 5> word;
    std::size_t count = 0;
};

Words split(std::string_view line)
{
    Words words;
    std::size_t i = 0;
    while (i < line.size() && words.count < words.word.size()) {
        while (i < line.size() && is_space(line[i])) {
            ++i;
        }
        std::size_t start = i;
        while (i < line.size() && !is_space(line[i])) {
            ++i;
        }
        if (i > start) {
            words.word[words.count++] = line.substr(start, i - start);
        }
    }
    return words;
}

ControlRequestError refuse(std::string message) { return ControlRequestError{"error: " + std::move(message)}; }

std::optional<uint64_t> number(std::string_view text, uint64_t max)
{
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > max) {
        return std::nullopt;
    }
    return value;
}

ParsedControlRequest parse_scale(const Words &w, std::string_view line)
{
    constexpr std::string_view usage = "'scale CHAIN N|+K|-K [LCORE,LCORE...]'";
    if (w.count < 3 || w.count > 4) {
        return refuse("scale takes a chain, a count and optionally lcores, as " + std::string(usage) + ", got " +
                      quoted(line));
    }
    ControlRequest request;
    request.verb = ControlVerb::scale;
    if (!config::is_safe_name(w.word[1])) {
        return refuse("scale: " + quoted(w.word[1]) + " cannot be a chain name");
    }
    request.chain = std::string(w.word[1]);
    std::string_view count = w.word[2];
    if (!count.empty() && (count.front() == '+' || count.front() == '-')) {
        request.relative = true;
        request.negative = count.front() == '-';
        count.remove_prefix(1);
    }
    std::optional<uint64_t> value = number(count, kMaxScaleInstances);
    if (!value) {
        return refuse("scale: the count must be N, +K or -K with numbers 0.." + std::to_string(kMaxScaleInstances) +
                      ", not " + quoted(w.word[2]));
    }
    request.value = static_cast<uint32_t>(*value);
    if (w.count == 4) {
        std::string_view list = w.word[3];
        while (true) {
            const std::size_t comma = list.find(',');
            std::optional<uint64_t> lcore = number(list.substr(0, comma), kMaxLcoreId);
            if (!lcore) {
                return refuse("scale: lcores are ids 0.." + std::to_string(kMaxLcoreId) + " separated by commas, not " +
                              quoted(w.word[3]));
            }
            request.lcores.push_back(static_cast<unsigned>(*lcore));
            if (comma == std::string_view::npos) {
                break;
            }
            list.remove_prefix(comma + 1);
        }
    }
    return request;
}

} // namespace

ParsedControlRequest parse_control_request(std::string_view line)
{
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    Words w = split(line);
    auto expect_words = [&](std::size_t n, std::string_view usage) -> std::optional<ControlRequestError> {
        if (w.count != n) {
            return refuse("'" + std::string(usage) + "' takes no further words, got " + quoted(line));
        }
        return std::nullopt;
    };
    if (w.count == 0) {
        return refuse("empty request (" + std::string(kCommands) + ")");
    }
    if (w.word[0] == "ping") {
        if (auto e = expect_words(1, "ping")) {
            return *e;
        }
        return ControlRequest{.verb = ControlVerb::ping};
    }
    if (w.word[0] == "stats") {
        if (auto e = expect_words(1, "stats")) {
            return *e;
        }
        return ControlRequest{.verb = ControlVerb::stats};
    }
    if (w.word[0] == "get" && w.count >= 2 && w.word[1] == "wake_threshold") {
        if (auto e = expect_words(2, "get wake_threshold")) {
            return *e;
        }
        return ControlRequest{.verb = ControlVerb::get_wake_threshold};
    }
    if (w.word[0] == "set" && w.count >= 2 && w.word[1] == "wake_threshold") {
        const std::string range = "wake_threshold takes a packet count 1.." + std::to_string(kMaxWakeThreshold);
        if (w.count != 3) {
            return refuse(range + ", as 'set wake_threshold N', got " + quoted(line));
        }
        std::optional<uint64_t> value = number(w.word[2], kMaxWakeThreshold);
        if (!value || *value < 1) {
            return refuse(range + ", not " + quoted(w.word[2]));
        }
        return ControlRequest{.verb = ControlVerb::set_wake_threshold, .value = static_cast<uint32_t>(*value)};
    }
    if (w.word[0] == "scale") {
        return parse_scale(w, line);
    }
    return refuse("unknown command " + quoted(line) + " (" + std::string(kCommands) + ")");
}

} // namespace serpens

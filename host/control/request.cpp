#include "control/request.h"

#include <array>
#include <charconv>
#include <optional>

namespace serpens {
namespace {

constexpr std::string_view kCommands = "commands: ping, stats, get wake_threshold, set wake_threshold N";

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

// Splits into at most four words; a fourth means "too many".
struct Words {
    std::array<std::string_view, 4> word;
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
        return ControlRequest{ControlVerb::ping, 0};
    }
    if (w.word[0] == "stats") {
        if (auto e = expect_words(1, "stats")) {
            return *e;
        }
        return ControlRequest{ControlVerb::stats, 0};
    }
    if (w.word[0] == "get" && w.count >= 2 && w.word[1] == "wake_threshold") {
        if (auto e = expect_words(2, "get wake_threshold")) {
            return *e;
        }
        return ControlRequest{ControlVerb::get_wake_threshold, 0};
    }
    if (w.word[0] == "set" && w.count >= 2 && w.word[1] == "wake_threshold") {
        const std::string range = "wake_threshold takes a packet count 1.." + std::to_string(kMaxWakeThreshold);
        if (w.count != 3) {
            return refuse(range + ", as 'set wake_threshold N', got " + quoted(line));
        }
        std::string_view text = w.word[2];
        uint64_t value = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > kMaxWakeThreshold) {
            return refuse(range + ", not " + quoted(text));
        }
        return ControlRequest{ControlVerb::set_wake_threshold, static_cast<uint32_t>(value)};
    }
    return refuse("unknown command " + quoted(line) + " (" + std::string(kCommands) + ")");
}

} // namespace serpens

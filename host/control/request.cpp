#include "control/request.h"

#include "config/toml_reader.h"
#include "core/log_level.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <initializer_list>

namespace serpens {
namespace {

using nlohmann::json;

constexpr std::string_view kCommands =
    "ping, version, status, stats, chains, plugins, instances, clear, wake_threshold, log_level, scale, bill, reload, "
    "drain, peers";

struct Command {
    std::string_view name;
    ControlVerb verb;
};
constexpr std::array kCommandTable{
    Command{"ping", ControlVerb::ping},
    Command{"version", ControlVerb::version},
    Command{"status", ControlVerb::status},
    Command{"stats", ControlVerb::stats},
    Command{"chains", ControlVerb::chains},
    Command{"plugins", ControlVerb::plugins},
    Command{"instances", ControlVerb::instances},
    Command{"clear", ControlVerb::clear},
    Command{"wake_threshold", ControlVerb::wake_threshold},
    Command{"log_level", ControlVerb::log_level},
    Command{"scale", ControlVerb::scale},
    Command{"bill", ControlVerb::bill},
    Command{"reload", ControlVerb::reload},
    Command{"drain", ControlVerb::drain},
    Command{"peers", ControlVerb::peers},
};

// Text from the request that goes back in an error: short and printable, so
// a hostile request cannot make the reply huge or smuggle control bytes.
std::string echoed(std::string_view text)
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

std::string echoed_json(const json &value)
{
    if (value.is_string()) {
        return echoed(value.get_ref<const std::string &>()); // 'abc', not '"abc"'
    }
    return echoed(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

ControlRequestError refuse(std::string message, ControlErrorCode code = ControlErrorCode::bad_request)
{
    return ControlRequestError{code, std::move(message)};
}

// The request's fields beyond "v" and "cmd" must all be among `allowed`.
std::optional<ControlRequestError> only_fields(const json &request, std::string_view cmd,
                                               std::initializer_list<std::string_view> allowed)
{
    for (const auto &[key, value] : request.items()) {
        if (key == "v" || key == "cmd" || std::find(allowed.begin(), allowed.end(), key) != allowed.end()) {
            continue;
        }
        std::string expected;
        for (std::string_view a : allowed) {
            expected += (expected.empty() ? "" : ", ") + std::string(a);
        }
        return refuse(std::string(cmd) + " takes " + (expected.empty() ? "no fields" : "only " + expected) + ", not " +
                      echoed(key));
    }
    return std::nullopt;
}

std::optional<uint64_t> whole_number(std::string_view text, uint64_t max)
{
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > max) {
        return std::nullopt;
    }
    return value;
}

std::optional<uint64_t> whole_number(const json &value, uint64_t max)
{
    if (!value.is_number_unsigned() && !(value.is_number_integer() && value.get<int64_t>() >= 0)) {
        return std::nullopt;
    }
    const uint64_t n = value.get<uint64_t>();
    return n <= max ? std::optional<uint64_t>(n) : std::nullopt;
}

// `command`'s optional "lcores": a list of lcore ids into `out`.
std::optional<ControlRequestError> read_lcores(const json &request, std::string_view command,
                                               std::vector<unsigned> &out)
{
    auto lcores = request.find("lcores");
    if (lcores == request.end()) {
        return std::nullopt;
    }
    const std::string expected = std::string(command) + "'s \"lcores\" is a list of lcore ids 0.." +
                                 std::to_string(kMaxLcoreId) + " (at most " + std::to_string(kMaxScaleLcores) + ")";
    if (!lcores->is_array() || lcores->size() > kMaxScaleLcores) {
        return refuse(expected + ", not " + echoed_json(*lcores));
    }
    for (const json &lcore : *lcores) {
        std::optional<uint64_t> id = whole_number(lcore, kMaxLcoreId);
        if (!id) {
            return refuse(expected + ", not " + echoed_json(lcore));
        }
        out.push_back(static_cast<unsigned>(*id));
    }
    return std::nullopt;
}

ParsedControlRequest parse_scale(const json &request)
{
    if (auto e = only_fields(request, "scale", {"chain", "count", "lcores", "peer"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::scale;
    auto chain = request.find("chain");
    if (chain == request.end() || !chain->is_string() || !config::is_safe_name(chain->get<std::string>())) {
        return refuse("scale needs \"chain\": a chain's name, not " +
                      (chain == request.end() ? std::string("nothing") : echoed_json(*chain)));
    }
    out.chain = chain->get<std::string>();
    const std::string range = "0.." + std::to_string(kMaxScaleInstances);
    auto count = request.find("count");
    std::optional<uint64_t> value;
    if (count != request.end() && count->is_string()) {
        std::string_view text = count->get_ref<const std::string &>();
        if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
            out.relative = true;
            out.negative = text.front() == '-';
            text.remove_prefix(1);
        }
        value = whole_number(text, kMaxScaleInstances);
    } else if (count != request.end()) {
        value = whole_number(*count, kMaxScaleInstances);
    }
    if (!value) {
        return refuse("scale needs \"count\": N, \"N\", \"+K\" or \"-K\" with numbers " + range + ", not " +
                      (count == request.end() ? std::string("nothing") : echoed_json(*count)));
    }
    out.value = static_cast<uint32_t>(*value);
    if (auto e = read_lcores(request, "scale", out.lcores)) {
        return *e;
    }
    if (auto peer = request.find("peer"); peer != request.end()) {
        if (!peer->is_string() || !config::is_safe_name(peer->get<std::string>())) {
            return refuse("scale's \"peer\" is a peer's host id, not " + echoed_json(*peer));
        }
        // One instance there, or none: the peer decides how it runs it.
        if (!out.relative || out.value != 1) {
            return refuse("scale with \"peer\" takes \"count\": \"+1\" (onto the peer) or \"-1\" (back from it), "
                          "not " +
                          echoed_json(*request.find("count")));
        }
        if (!out.lcores.empty()) {
            return refuse("scale with \"peer\" takes no \"lcores\": the peer places its instance");
        }
        out.peer = peer->get<std::string>();
    }
    return out;
}

ParsedControlRequest parse_drain(const json &request)
{
    if (auto e = only_fields(request, "drain", {"lcores", "undo"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::drain;
    if (auto e = read_lcores(request, "drain", out.lcores)) {
        return *e;
    }
    if (auto undo = request.find("undo"); undo != request.end()) {
        if (!undo->is_boolean()) {
            return refuse("drain's \"undo\" is true or false, not " + echoed_json(*undo));
        }
        out.undo = undo->get<bool>();
    }
    return out;
}

ParsedControlRequest parse_wake_threshold(const json &request)
{
    if (auto e = only_fields(request, "wake_threshold", {"set"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::wake_threshold;
    if (auto set = request.find("set"); set != request.end()) {
        std::optional<uint64_t> value = whole_number(*set, kMaxWakeThreshold);
        if (!value || *value < 1) {
            return refuse("wake_threshold's \"set\" is a packet count 1.." + std::to_string(kMaxWakeThreshold) +
                          ", not " + echoed_json(*set));
        }
        out.set_threshold = static_cast<uint32_t>(*value);
    }
    return out;
}

ParsedControlRequest parse_log_level(const json &request)
{
    if (auto e = only_fields(request, "log_level", {"set"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::log_level;
    if (auto set = request.find("set"); set != request.end()) {
        if (!set->is_string() || !is_log_level(set->get_ref<const std::string &>())) {
            return refuse("log_level's \"set\" is one of " + log_levels_text() + "; not " + echoed_json(*set));
        }
        out.set_level = set->get<std::string>();
    }
    return out;
}

ParsedControlRequest parse_bill(const json &request)
{
    if (auto e = only_fields(request, "bill", {"since", "chain"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::bill;
    if (auto since = request.find("since"); since != request.end()) {
        // Up to what the system clock holds (int64 nanoseconds, year 2262):
        // the bill turns it into a time point of that clock.
        constexpr auto kLatest =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::duration::max()).count();
        std::optional<uint64_t> value = whole_number(*since, static_cast<uint64_t>(kLatest));
        if (!value) {
            return refuse("bill's \"since\" is a time in Unix seconds, not " + echoed_json(*since));
        }
        out.since = static_cast<int64_t>(*value);
    }
    if (auto chain = request.find("chain"); chain != request.end()) {
        if (!chain->is_string() || !config::is_safe_name(chain->get<std::string>())) {
            return refuse("bill's \"chain\" is a chain's name, not " + echoed_json(*chain));
        }
        out.chain = chain->get<std::string>();
    }
    return out;
}

ParsedControlRequest parse_reload(const json &request)
{
    if (auto e = only_fields(request, "reload", {"chains"})) {
        return *e;
    }
    ControlRequest out;
    out.verb = ControlVerb::reload;
    if (auto chains = request.find("chains"); chains != request.end()) {
        const std::string expected =
            "reload's \"chains\" is a list of at most " + std::to_string(kMaxReloadChains) + " chain names, not ";
        if (!chains->is_array() || chains->size() > kMaxReloadChains) {
            return refuse(expected + echoed_json(*chains));
        }
        for (const json &chain : *chains) {
            if (!chain.is_string() || !config::is_safe_name(chain.get<std::string>())) {
                return refuse(expected + "one holding " + echoed_json(chain));
            }
            out.chains.push_back(chain.get<std::string>());
        }
    }
    return out;
}

} // namespace

ParsedControlRequest parse_control_request(std::string_view line)
{
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    // nlohmann's parser stops at a NUL: what follows one would go unread.
    if (line.find('\0') != std::string_view::npos) {
        return refuse("a request is text: this one holds a NUL byte");
    }
    // Requests are flat (fields and lists of scalars), so nesting is
    // refused early: echoing or destroying a deeply nested value recurses,
    // and 64 KiB of brackets would overflow the control thread's stack.  A
    // field given twice is refused rather than the last one winning.
    constexpr int kMaxDepth = 4;
    bool too_deep = false;
    std::string duplicate;
    std::vector<std::string> fields;
    json::parser_callback_t shape = [&](int depth, json::parse_event_t event, json &parsed) {
        if (depth > kMaxDepth) {
            too_deep = true;
            return false;
        }
        if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
            const auto &name = parsed.get_ref<const std::string &>();
            if (std::find(fields.begin(), fields.end(), name) != fields.end()) {
                duplicate = name;
            }
            fields.push_back(name);
        }
        return true;
    };
    // No exceptions: a malformed line is a "discarded" value.
    const json request = json::parse(line, shape, false);
    if (too_deep) {
        return refuse("a request nests lists and objects at most " + std::to_string(kMaxDepth) + " deep below its top");
    }
    if (!duplicate.empty()) {
        return refuse("a request gives each field once; " + echoed(duplicate) + " is given twice");
    }
    if (!request.is_object()) {
        return refuse("a request is one JSON object on one line, e.g. {\"v\":" +
                      std::to_string(kControlProtocolVersion) + ",\"cmd\":\"status\"}; got " + echoed(line));
    }
    auto version = request.find("v");
    if (version == request.end() || !version->is_number_integer() ||
        version->get<int64_t>() != kControlProtocolVersion) {
        return refuse("this host speaks control protocol version " + std::to_string(kControlProtocolVersion) +
                          "; the request's \"v\" is " +
                          (version == request.end() ? std::string("missing") : echoed_json(*version)),
                      ControlErrorCode::unsupported_version);
    }
    auto cmd = request.find("cmd");
    if (cmd == request.end() || !cmd->is_string()) {
        return refuse("a request needs \"cmd\": one of " + std::string(kCommands));
    }
    const std::string &name = cmd->get_ref<const std::string &>();
    auto command =
        std::find_if(kCommandTable.begin(), kCommandTable.end(), [&](const Command &c) { return c.name == name; });
    if (command == kCommandTable.end()) {
        return refuse("unknown command " + echoed(name) + " (commands: " + std::string(kCommands) + ")",
                      ControlErrorCode::unknown_command);
    }
    switch (command->verb) {
    case ControlVerb::scale:
        return parse_scale(request);
    case ControlVerb::wake_threshold:
        return parse_wake_threshold(request);
    case ControlVerb::log_level:
        return parse_log_level(request);
    case ControlVerb::bill:
        return parse_bill(request);
    case ControlVerb::reload:
        return parse_reload(request);
    case ControlVerb::drain:
        return parse_drain(request);
    default:
        if (auto e = only_fields(request, command->name, {})) {
            return *e;
        }
        return ControlRequest{.verb = command->verb};
    }
}

} // namespace serpens

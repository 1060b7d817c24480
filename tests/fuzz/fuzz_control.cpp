// libFuzzer target for the control protocol's request parser: whatever bytes
// a local client sends, the host gets a typed request within its documented
// bounds or a coded error whose message is short and printable, never a crash.

#include "control/request.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view line(reinterpret_cast<const char *>(data), size);
    serpens::ParsedControlRequest parsed = serpens::parse_control_request(line);
    if (const auto *error = std::get_if<serpens::ControlRequestError>(&parsed)) {
        const bool printable =
            std::all_of(error->message.begin(), error->message.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
        if (error->message.empty() || !printable || error->message.size() > 1024) {
            __builtin_trap();
        }
        // The reply must be one line of JSON whatever the message holds.
        const std::string reply = serpens::control_error_reply(error->code, error->message);
        if (reply.find('\n') != std::string::npos) {
            __builtin_trap();
        }
        return 0;
    }
    const auto &request = std::get<serpens::ControlRequest>(parsed);
    if (request.set_threshold && (*request.set_threshold < 1 || *request.set_threshold > serpens::kMaxWakeThreshold)) {
        __builtin_trap();
    }
    if (request.verb == serpens::ControlVerb::scale &&
        (request.value > serpens::kMaxScaleInstances || request.chain.empty() ||
         request.lcores.size() > serpens::kMaxScaleLcores ||
         std::any_of(request.lcores.begin(), request.lcores.end(),
                     [](unsigned l) { return l > serpens::kMaxLcoreId; }))) {
        __builtin_trap();
    }
    return 0;
}

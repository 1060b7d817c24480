// libFuzzer target for the control protocol's request parser: whatever bytes
// a local client sends, the host gets a typed request within its documented
// bounds or an "error: " reply, never a crash.

#include "control/request.h"

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    std::string_view line(reinterpret_cast<const char *>(data), size);
    serpens::ParsedControlRequest parsed = serpens::parse_control_request(line);
    if (const auto *error = std::get_if<serpens::ControlRequestError>(&parsed)) {
        if (error->message.rfind("error: ", 0) != 0) {
            __builtin_trap();
        }
        return 0;
    }
    const auto &request = std::get<serpens::ControlRequest>(parsed);
    if (request.verb == serpens::ControlVerb::set_wake_threshold &&
        (request.value < 1 || request.value > serpens::kMaxWakeThreshold)) {
        __builtin_trap();
    }
    return 0;
}

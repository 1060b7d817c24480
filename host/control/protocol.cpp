#include "control/protocol.h"

#include "control/server.h"

#include <type_traits>

namespace serpens {

using nlohmann::ordered_json;

std::string_view control_error_name(ControlErrorCode code) noexcept
{
    switch (code) {
    case ControlErrorCode::bad_request:
        return "bad_request";
    case ControlErrorCode::unknown_command:
        return "unknown_command";
    case ControlErrorCode::unsupported_version:
        return "unsupported_version";
    case ControlErrorCode::permission_denied:
        return "permission_denied";
    case ControlErrorCode::too_large:
        return "too_large";
    case ControlErrorCode::timeout:
        return "timeout";
    case ControlErrorCode::not_found:
        return "not_found";
    case ControlErrorCode::refused:
        return "refused";
    case ControlErrorCode::internal:
        return "internal";
    }
    return "internal";
}

namespace {

std::string dump(const ordered_json &reply)
{
    return reply.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

// A field of a reply the client must not trust to be well-typed.
template<class T>
T field_or(const ordered_json &object, const char *key, T fallback)
{
    if (!object.is_object()) {
        return fallback;
    }
    auto it = object.find(key);
    if (it == object.end()) {
        return fallback;
    }
    if constexpr (std::is_same_v<T, bool>) {
        return it->is_boolean() ? it->template get<bool>() : fallback;
    } else if constexpr (std::is_integral_v<T>) {
        return it->is_number_integer() ? it->template get<T>() : fallback;
    } else {
        return it->is_string() ? it->template get<T>() : fallback;
    }
}

} // namespace

std::string control_ok_reply(const ordered_json &result)
{
    return dump(ordered_json{{"v", kControlProtocolVersion}, {"ok", true}, {"result", result}});
}

std::string control_error_reply(ControlErrorCode code, std::string_view message)
{
    return dump(ordered_json{{"v", kControlProtocolVersion},
                             {"ok", false},
                             {"error", {{"code", control_error_name(code)}, {"message", message}}}});
}

ordered_json control_call(const std::string &socket_path, ordered_json request, int timeout_ms,
                          std::optional<uid_t> host_uid)
{
    request["v"] = kControlProtocolVersion;
    const std::string line = control_request(socket_path, dump(request), timeout_ms, host_uid);
    ordered_json reply = ordered_json::parse(line, nullptr, false);
    const bool shaped = reply.is_object() && reply.contains("ok") && reply["ok"].is_boolean();
    if (!shaped || field_or(reply, "v", 0) != kControlProtocolVersion) {
        throw Error("serpens-host at " + socket_path + " answered something that is not a version-" +
                    std::to_string(kControlProtocolVersion) + " reply: " + line.substr(0, 200));
    }
    if (!reply["ok"].get<bool>()) {
        const ordered_json &error = reply.contains("error") ? reply["error"] : ordered_json::object();
        throw ControlReplyError(field_or<std::string>(error, "code", "internal"),
                                field_or<std::string>(error, "message", "(no message)"));
    }
    return reply.contains("result") ? reply["result"] : ordered_json();
}

} // namespace serpens

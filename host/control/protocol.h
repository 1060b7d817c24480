#pragma once
// The control protocol, version 1: one JSON object per line each way.
//
//   request  {"v":1,"cmd":"scale","chain":"fw-nat","count":"+2","lcores":[2,3]}
//   reply    {"v":1,"ok":true,"result":{...}}
//            {"v":1,"ok":false,"error":{"code":"not_found","message":"no chain 'x' runs here"}}
//
// A client names the version it speaks; a host refuses any other with
// "unsupported_version" (and says which it speaks), so replies never change
// meaning under a client.  Within a version, fields are only ever added.
// Error codes are stable; messages are for people.

#include <nlohmann/json.hpp>

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace serpens {

inline constexpr int kControlProtocolVersion = 1;

enum class ControlErrorCode {
    bad_request,         // not a JSON object, a missing or mistyped field, a value out of range
    unknown_command,     // "cmd" names no command of this version
    unsupported_version, // "v" is not a version this host speaks
    permission_denied,   // the peer may not use this socket (SO_PEERCRED)
    too_large,           // the request line exceeds the host's limit
    timeout,             // no complete request within the host's deadline
    not_found,           // a named chain, plugin or table does not exist here
    refused,             // well-formed, but the host cannot do it now (e.g. no free lcore)
    internal,            // the host failed; its log says more
};

std::string_view control_error_name(ControlErrorCode code) noexcept;

// Reply lines (without the newline).  Names in results come from config files
// and plugins: invalid UTF-8 is replaced rather than thrown on.
std::string control_ok_reply(const nlohmann::ordered_json &result);
std::string control_error_reply(ControlErrorCode code, std::string_view message);

// An error reply, as a client sees it.
class ControlReplyError : public Error {
public:
    ControlReplyError(std::string code, const std::string &message) : Error(message), _code(std::move(code)) {}
    const std::string &code() const noexcept { return _code; }

private:
    std::string _code;
};

// Client side: sends `request` (its "v" is filled in) and returns the reply's
// result.  Throws ControlReplyError when the host answers with an error, and
// Error when it cannot be reached, does not answer in time, or answers
// something that is not a version-1 reply.
// host_uid: as control_request's.
nlohmann::ordered_json control_call(const std::string &socket_path, nlohmann::ordered_json request,
                                    int timeout_ms = 5000, std::optional<uid_t> host_uid = std::nullopt);

} // namespace serpens

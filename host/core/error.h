#pragma once
// Cold-path errors.  Hot paths never throw; configuration, loading and control
// code throw these with enough context for an operator to fix the input.

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace serpens {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// An error in an input file: formats as "file:line:col: message" like a compiler.
class ConfigError : public Error {
public:
    ConfigError(const std::string &file, uint32_t line, uint32_t column, const std::string &message);
    ConfigError(const std::string &file, const std::string &message);

    const std::string &file() const noexcept { return _file; }
    uint32_t line() const noexcept { return _line; }

private:
    std::string _file;
    uint32_t _line = 0;
};

// An accept4() failure that leaves the listening socket readable (out of
// descriptors or memory): each server pauses its accepts for accept_pause
// instead of polling straight back into it.
inline bool accept_must_pause(int err) noexcept
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}
inline constexpr std::chrono::milliseconds accept_pause{100};

} // namespace serpens

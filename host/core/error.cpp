#include "core/error.h"

namespace serpens {

static std::string located(const std::string &file, uint32_t line, uint32_t column, const std::string &message)
{
    // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false
    // positive) about ':' + std::to_string(...).
    std::string out = file;
    if (line != 0) {
        out += ':';
        out += std::to_string(line);
        if (column != 0) {
            out += ':';
            out += std::to_string(column);
        }
    }
    out += ": ";
    out += message;
    return out;
}

ConfigError::ConfigError(const std::string &file, uint32_t line, uint32_t column, const std::string &message)
    : Error(located(file, line, column, message)), _file(file), _line(line)
{}

ConfigError::ConfigError(const std::string &file, const std::string &message)
    : Error(located(file, 0, 0, message)), _file(file)
{}

} // namespace serpens

#pragma once
// A text table for people: what serpensctl and serpens-state print.

#include <fmt/format.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace serpens::support {

// A text table: a header row, then rows; columns marked numeric are right-aligned.
class Table {
public:
    Table(std::vector<std::string> header, std::vector<bool> numeric)
        : _numeric(std::move(numeric)), _rows{std::move(header)}
    {}
    void add(std::vector<std::string> row) { _rows.push_back(std::move(row)); }
    std::string text() const
    {
        std::vector<std::size_t> width(_rows.front().size(), 0);
        for (const auto &row : _rows) {
            for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
                width[c] = std::max(width[c], row[c].size());
            }
        }
        std::string out;
        for (const auto &row : _rows) {
            std::string line;
            for (std::size_t c = 0; c < row.size() && c < width.size(); ++c) {
                const bool right = c < _numeric.size() && _numeric[c];
                line += c == 0 ? "" : "  ";
                line += right ? fmt::format("{:>{}}", row[c], width[c]) : fmt::format("{:<{}}", row[c], width[c]);
            }
            line.erase(line.find_last_not_of(' ') + 1);
            out += line + "\n";
        }
        return out;
    }

private:
    std::vector<bool> _numeric;
    std::vector<std::vector<std::string>> _rows;
};

} // namespace serpens::support

#pragma once
// The bill's book: what each chain used, interval by interval, in a file of
// the state dir that outlives the host.  One JSON object a line, appended as
// the meter records it, so a host killed at any moment loses at most the
// interval it had not written yet (a torn last line is ignored at load).
// Rows older than an hour are folded into one row per chain and hour, so the
// file stays small on a host that runs for months: "since" is exact to the
// second for the last hour, to the hour before that.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace serpens::metering {

struct NfUsed {
    uint64_t packets = 0;
    uint64_t bytes = 0;
    uint64_t dropped = 0;
    double instance_s = 0; // its chain's instances that ran it, times seconds
    double busy_s = 0;     // its share of the chain's busy time, by time measured in it
};

struct Used {
    uint64_t packets = 0;
    uint64_t bytes = 0;
    uint64_t dropped = 0;
    double instance_s = 0; // instances running, times seconds
    double busy_s = 0;     // CPU time its instances spent processing
    std::map<std::string, NfUsed> nfs;

    Used &operator+=(const Used &other);
    bool empty() const noexcept;
};

// What one chain used from `from_s` to `to_s` (Unix seconds).
struct Row {
    int64_t from_s = 0;
    int64_t to_s = 0;
    std::string chain;
    Used used;
};

class Ledger {
public:
    // Opens (creating) the file at `path` and reads what it holds.  Throws
    // Error naming the file when it cannot be read or written.
    explicit Ledger(std::filesystem::path path);
    ~Ledger();
    Ledger(const Ledger &) = delete;
    Ledger &operator=(const Ledger &) = delete;

    // Appends the rows of one sample to the file and to the book, all or
    // none: a write that fails part way (a full filesystem) is cut off
    // again, so the meter can record the same interval whole on its next
    // try without billing any of it twice.  Throws Error naming the file.
    void record(const std::vector<Row> &rows);

    // Per chain, what rows ending after `since_s` add up to (all rows when
    // none); only `chain` when not empty.
    std::map<std::string, Used> bill(std::optional<int64_t> since_s, const std::string &chain = {}) const;
    // The start of the oldest row, if any.
    std::optional<int64_t> first_s() const;

    // Folds rows that ended before `now_s` - 3600 into one row per chain and
    // hour, and rewrites the file with them (atomically: a crash leaves the
    // old file or the new one).
    void compact(int64_t now_s);

    const std::filesystem::path &path() const noexcept { return _path; }
    std::size_t rows() const noexcept { return _rows.size(); }
    // Lines of the file that could not be read (a torn last line after a crash).
    std::size_t skipped() const noexcept { return _skipped; }

private:
    void open_for_append();

    std::filesystem::path _path;
    std::vector<Row> _rows;
    std::size_t _skipped = 0;
    int _fd = -1;
};

// A row as its file line (without the newline), and back; nullopt when the
// line is not a row.
std::string row_line(const Row &row);
std::optional<Row> parse_row(const std::string &line);
// One NF's usage as the ledger and the bill show it.
nlohmann::ordered_json nf_json(const NfUsed &nf);

} // namespace serpens::metering

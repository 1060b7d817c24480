#include "metering/ledger.h"

#include "core/error.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace serpens::metering {

namespace {

using nlohmann::ordered_json;

constexpr int64_t kFineSeconds = 3600; // rows younger than this keep their second resolution

std::string errno_text() { return std::strerror(errno); }

bool write_all(int fd, const std::string &text)
{
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        done += static_cast<std::size_t>(n);
    }
    return true;
}

uint64_t whole(const ordered_json &object, const char *key)
{
    auto it = object.find(key);
    return it != object.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

double real(const ordered_json &object, const char *key)
{
    auto it = object.find(key);
    return it != object.end() && it->is_number() ? it->get<double>() : 0.0;
}

} // namespace

Used &Used::operator+=(const Used &other)
{
    packets += other.packets;
    bytes += other.bytes;
    dropped += other.dropped;
    instance_s += other.instance_s;
    busy_s += other.busy_s;
    for (const auto &[name, nf] : other.nfs) {
        NfUsed &mine = nfs[name];
        mine.packets += nf.packets;
        mine.bytes += nf.bytes;
        mine.dropped += nf.dropped;
        mine.instance_s += nf.instance_s;
        mine.busy_s += nf.busy_s;
    }
    return *this;
}

bool Used::empty() const noexcept
{
    return packets == 0 && bytes == 0 && dropped == 0 && instance_s == 0 && busy_s == 0;
}

nlohmann::ordered_json nf_json(const NfUsed &nf)
{
    return {{"packets", nf.packets},
            {"bytes", nf.bytes},
            {"dropped", nf.dropped},
            {"instance_s", nf.instance_s},
            {"busy_s", nf.busy_s}};
}

std::string row_line(const Row &row)
{
    ordered_json nfs = ordered_json::object();
    for (const auto &[name, nf] : row.used.nfs) {
        nfs[name] = nf_json(nf);
    }
    const ordered_json line = {{"from", row.from_s},
                               {"to", row.to_s},
                               {"chain", row.chain},
                               {"packets", row.used.packets},
                               {"bytes", row.used.bytes},
                               {"dropped", row.used.dropped},
                               {"instance_s", row.used.instance_s},
                               {"busy_s", row.used.busy_s},
                               {"nfs", std::move(nfs)}};
    return line.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

std::optional<Row> parse_row(const std::string &line)
{
    const ordered_json j = ordered_json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("chain") || !j["chain"].is_string() || !j.contains("from") ||
        !j["from"].is_number_integer() || !j.contains("to") || !j["to"].is_number_integer()) {
        return std::nullopt;
    }
    Row row;
    row.from_s = j["from"].get<int64_t>();
    row.to_s = j["to"].get<int64_t>();
    row.chain = j["chain"].get<std::string>();
    row.used.packets = whole(j, "packets");
    row.used.bytes = whole(j, "bytes");
    row.used.dropped = whole(j, "dropped");
    row.used.instance_s = real(j, "instance_s");
    row.used.busy_s = real(j, "busy_s");
    if (auto nfs = j.find("nfs"); nfs != j.end() && nfs->is_object()) {
        for (const auto &[name, nf] : nfs->items()) {
            if (nf.is_object()) {
                row.used.nfs[name] = {whole(nf, "packets"), whole(nf, "bytes"), whole(nf, "dropped"),
                                      real(nf, "instance_s"), real(nf, "busy_s")};
            }
        }
    }
    return row;
}

Ledger::Ledger(std::filesystem::path path) : _path(std::move(path))
{
    std::error_code made;
    std::filesystem::create_directories(_path.parent_path(), made);
    if (made) {
        throw Error("cannot create the directory of the usage ledger " + _path.string() + ": " + made.message());
    }
    std::ifstream in(_path, std::ios::binary);
    std::string text;
    if (in) {
        std::ostringstream all;
        all << in.rdbuf();
        text = all.str();
    }
    // A host killed mid-write leaves a line without its newline: it is
    // dropped, and cut off so that the next row starts a line of its own.
    const std::size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    std::istringstream lines(text.substr(0, complete));
    std::string line;
    while (std::getline(lines, line)) {
        if (std::optional<Row> row = parse_row(line)) {
            _rows.push_back(std::move(*row));
        } else if (!line.empty()) {
            ++_skipped;
        }
    }
    if (complete < text.size()) {
        ++_skipped;
        std::error_code ec;
        std::filesystem::resize_file(_path, complete, ec);
        if (ec) {
            throw Error("cannot cut the torn last line of the usage ledger " + _path.string() + ": " + ec.message());
        }
    }
    open_for_append();
}

Ledger::~Ledger()
{
    if (_fd >= 0) {
        ::close(_fd);
    }
}

void Ledger::open_for_append()
{
    if (_fd >= 0) {
        ::close(_fd);
    }
    _fd = ::open(_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (_fd < 0) {
        throw Error("cannot open the usage ledger " + _path.string() + ": " + errno_text());
    }
}

void Ledger::record(const std::vector<Row> &rows)
{
    if (rows.empty()) {
        return;
    }
    std::string text;
    for (const Row &row : rows) {
        text += row_line(row) + "\n";
    }
    const off_t before = ::lseek(_fd, 0, SEEK_END);
    if (before < 0) {
        throw Error("cannot append to the usage ledger " + _path.string() + ": " + errno_text());
    }
    if (!write_all(_fd, text)) {
        const std::string why = errno_text();
        // What did get written is a row or two of this sample and perhaps a
        // torn line, which the next append would run on from.
        if (::ftruncate(_fd, before) != 0) {
            throw Error("cannot append to the usage ledger " + _path.string() + ": " + why +
                        "; nor cut off the part written: " + errno_text());
        }
        throw Error("cannot append to the usage ledger " + _path.string() + ": " + why);
    }
    _rows.insert(_rows.end(), rows.begin(), rows.end());
}

std::map<std::string, Used> Ledger::bill(std::optional<int64_t> since_s, const std::string &chain) const
{
    std::map<std::string, Used> out;
    for (const Row &row : _rows) {
        if ((since_s && row.to_s <= *since_s) || (!chain.empty() && row.chain != chain)) {
            continue;
        }
        out[row.chain] += row.used;
    }
    return out;
}

std::optional<int64_t> Ledger::first_s() const
{
    std::optional<int64_t> first;
    for (const Row &row : _rows) {
        first = first ? std::min(*first, row.from_s) : row.from_s;
    }
    return first;
}

void Ledger::compact(int64_t now_s)
{
    const int64_t fine_from = now_s - kFineSeconds;
    std::map<std::pair<int64_t, std::string>, Row> hours; // (hour, chain) -> folded row
    std::vector<Row> kept;
    // Copied, not moved: the book stays whole when the file cannot be
    // rewritten (a full filesystem), and this runs once an hour.
    for (const Row &row : _rows) {
        if (row.to_s >= fine_from) {
            kept.push_back(row);
            continue;
        }
        const int64_t hour = row.from_s - ((row.from_s % 3600) + 3600) % 3600;
        auto [it, fresh] = hours.try_emplace({hour, row.chain});
        Row &folded = it->second;
        if (fresh) {
            folded.from_s = row.from_s;
            folded.to_s = row.to_s;
            folded.chain = row.chain;
        }
        folded.from_s = std::min(folded.from_s, row.from_s);
        folded.to_s = std::max(folded.to_s, row.to_s);
        folded.used += row.used;
    }
    std::vector<Row> rows;
    for (auto &[key, row] : hours) {
        rows.push_back(std::move(row));
    }
    rows.insert(rows.end(), std::make_move_iterator(kept.begin()), std::make_move_iterator(kept.end()));

    const std::filesystem::path temp = _path.string() + ".tmp";
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        throw Error("cannot compact the usage ledger into " + temp.string() + ": " + errno_text());
    }
    std::string text;
    for (const Row &row : rows) {
        text += row_line(row) + "\n";
    }
    const bool written = write_all(fd, text) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written || ::rename(temp.c_str(), _path.c_str()) != 0) {
        const std::string why = errno_text();
        ::unlink(temp.c_str());
        throw Error("cannot compact the usage ledger " + _path.string() + ": " + why);
    }
    _rows = std::move(rows);
    open_for_append();
}

} // namespace serpens::metering

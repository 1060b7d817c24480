#pragma once
// Classic libpcap capture files (not pcapng), without libpcap.
//
// Reading accepts the four classic variants: magic a1b2c3d4 (microsecond
// timestamps) and a1b23c4d (nanosecond), in either byte order.  Writing always
// produces little-endian, microsecond, the format every tool reads.
//
// Cold path: errors throw PcapError whose message names the file (or
// "<stream>") and, for records, the record number and byte offset.
// A reader or writer is used by one thread at a time.

#include <cstdint>
#include <fstream>
#include <istream>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace serpens::net {

class PcapError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline constexpr uint32_t kLinktypeEthernet = 1;

// One record as the reader hands it out.  `data` points into the reader's
// buffer and stays valid until the next call to next().
struct PcapPacket {
    std::span<const uint8_t> data; // the captured bytes (incl_len)
    uint64_t ts_ns = 0;            // since the epoch, whatever the file's resolution
    uint32_t orig_len = 0;         // length on the wire (>= data.size() when snapped)
};

// A record with its own bytes, for read_pcap() and tests.
struct PcapRecord {
    std::vector<uint8_t> data;
    uint64_t ts_ns = 0;
    uint32_t orig_len = 0;
};

class PcapReader {
public:
    // Opens and validates the global header; throws PcapError.
    explicit PcapReader(const std::string &path);
    // Reads from a stream the caller keeps alive; `name` is used in errors.
    PcapReader(std::istream &in, std::string name = "<stream>");

    // The next record, or nullopt at a clean end of file.  Throws PcapError on
    // a truncated record or an implausible captured length.
    std::optional<PcapPacket> next();

    uint32_t linktype() const noexcept { return _linktype; }
    uint32_t snaplen() const noexcept { return _snaplen; }
    bool nanosecond() const noexcept { return _nanosecond; }
    bool byte_swapped() const noexcept { return _swapped; }
    uint16_t version_major() const noexcept { return _version_major; }
    uint16_t version_minor() const noexcept { return _version_minor; }
    uint64_t records_read() const noexcept { return _records; }
    const std::string &name() const noexcept { return _name; }

private:
    void read_header();
    uint32_t field(const uint8_t *p) const noexcept;

    std::unique_ptr<std::ifstream> _file;
    std::istream *_in = nullptr;
    std::string _name;
    std::vector<uint8_t> _buf;
    uint64_t _records = 0;
    uint64_t _offset = 0;
    uint32_t _linktype = 0;
    uint32_t _snaplen = 0;
    uint16_t _version_major = 0;
    uint16_t _version_minor = 0;
    bool _swapped = false;
    bool _nanosecond = false;
};

class PcapWriter {
public:
    // Creates (truncates) `path` and writes the global header; throws PcapError.
    explicit PcapWriter(const std::string &path, uint32_t snaplen = 65535, uint32_t linktype = kLinktypeEthernet);
    // Writes to a stream the caller keeps alive; `name` is used in errors.
    PcapWriter(std::ostream &out, std::string name = "<stream>", uint32_t snaplen = 65535,
               uint32_t linktype = kLinktypeEthernet);
    PcapWriter(const PcapWriter &) = delete;
    PcapWriter &operator=(const PcapWriter &) = delete;
    // Flushes; errors at this point are swallowed (call close() to see them).
    ~PcapWriter();

    // Appends one record.  Bytes beyond snaplen are cut (incl_len = snaplen);
    // orig_len 0 means "data.size()".  Timestamps are stored in microseconds.
    void write(std::span<const uint8_t> data, uint64_t ts_ns, uint32_t orig_len = 0);
    void flush();
    // Flushes and closes the file; throws PcapError if anything failed.
    void close();

    uint64_t records_written() const noexcept { return _records; }
    const std::string &name() const noexcept { return _name; }

private:
    void write_header(uint32_t linktype);
    void check(const char *what);

    std::unique_ptr<std::ofstream> _file;
    std::ostream *_out = nullptr;
    std::string _name;
    uint32_t _snaplen;
    uint64_t _records = 0;
};

// Reads a whole file into memory (tests, small tools).  Throws PcapError.
std::vector<PcapRecord> read_pcap(const std::string &path);

} // namespace serpens::net

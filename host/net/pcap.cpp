// Classic pcap reader/writer; see pcap.h.
#include "net/pcap.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace serpens::net {

namespace {

constexpr uint32_t kMagicMicro = 0xa1b2c3d4u;
constexpr uint32_t kMagicNano = 0xa1b23c4du;
constexpr uint32_t kMagicPcapng = 0x0a0d0d0au;
constexpr std::size_t kGlobalHeaderSize = 24;
constexpr std::size_t kRecordHeaderSize = 16;
// Captured lengths above this are corruption, whatever the header's snaplen
// says (libpcap itself caps at 256 KiB).
constexpr uint32_t kMaxRecordLen = 256 * 1024;

uint32_t bswap32(uint32_t v) noexcept { return __builtin_bswap32(v); }

uint32_t load_le32(const uint8_t *p) noexcept
{
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
           (static_cast<uint32_t>(p[3]) << 24);
}

void store_le32(uint8_t *p, uint32_t v) noexcept
{
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
    p[2] = static_cast<uint8_t>(v >> 16);
    p[3] = static_cast<uint8_t>(v >> 24);
}

void store_le16(uint8_t *p, uint16_t v) noexcept
{
    p[0] = static_cast<uint8_t>(v);
    p[1] = static_cast<uint8_t>(v >> 8);
}

std::string errno_text() { return errno != 0 ? std::string(": ") + std::strerror(errno) : std::string(); }

} // namespace

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

PcapReader::PcapReader(const std::string &path) : _name(path)
{
    errno = 0;
    _file = std::make_unique<std::ifstream>(path, std::ios::binary);
    if (!*_file) {
        throw PcapError("pcap " + path + ": cannot open for reading" + errno_text());
    }
    _in = _file.get();
    read_header();
}

PcapReader::PcapReader(std::istream &in, std::string name) : _in(&in), _name(std::move(name)) { read_header(); }

uint32_t PcapReader::field(const uint8_t *p) const noexcept
{
    const uint32_t v = load_le32(p);
    return _swapped ? bswap32(v) : v;
}

void PcapReader::read_header()
{
    uint8_t h[kGlobalHeaderSize];
    _in->read(reinterpret_cast<char *>(h), sizeof h);
    const auto got = static_cast<std::size_t>(_in->gcount());
    if (got != sizeof h) {
        throw PcapError("pcap " + _name + ": file too short for a pcap header (" + std::to_string(got) +
                        " of 24 bytes)");
    }
    const uint32_t magic = load_le32(h);
    if (magic == kMagicMicro || magic == kMagicNano) {
        _swapped = false;
    } else if (bswap32(magic) == kMagicMicro || bswap32(magic) == kMagicNano) {
        _swapped = true;
    } else if (magic == kMagicPcapng) {
        throw PcapError("pcap " + _name +
                        ": is a pcapng file; only classic pcap is read (convert with: editcap -F pcap)");
    } else {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%08x", magic);
        throw PcapError("pcap " + _name + ": bad magic 0x" + buf + " (not a pcap file)");
    }
    _nanosecond = (_swapped ? bswap32(magic) : magic) == kMagicNano;
    // The two 16-bit version fields swap individually, so read them as such.
    if (_swapped) {
        _version_major = static_cast<uint16_t>((h[4] << 8) | h[5]);
        _version_minor = static_cast<uint16_t>((h[6] << 8) | h[7]);
    } else {
        _version_major = static_cast<uint16_t>(h[4] | (h[5] << 8));
        _version_minor = static_cast<uint16_t>(h[6] | (h[7] << 8));
    }
    if (_version_major != 2) {
        throw PcapError("pcap " + _name + ": unsupported version " + std::to_string(_version_major) + "." +
                        std::to_string(_version_minor) + " (expected 2.x)");
    }
    _snaplen = field(h + 16);
    _linktype = field(h + 20) & 0x0fffffffu; // the top bits carry FCS info
    _offset = kGlobalHeaderSize;
}

std::optional<PcapPacket> PcapReader::next()
{
    uint8_t h[kRecordHeaderSize];
    _in->read(reinterpret_cast<char *>(h), sizeof h);
    const auto got = static_cast<std::size_t>(_in->gcount());
    if (got == 0) {
        return std::nullopt;
    }
    const std::string where =
        "pcap " + _name + ": record " + std::to_string(_records + 1) + " at offset " + std::to_string(_offset);
    if (got != sizeof h) {
        throw PcapError(where + ": truncated record header (" + std::to_string(got) + " of 16 bytes)");
    }
    const uint32_t sec = field(h);
    const uint32_t frac = field(h + 4);
    const uint32_t incl = field(h + 8);
    const uint32_t orig = field(h + 12);
    // Not max(snaplen, ...): a header claiming a 4 GiB snaplen had the
    // reader allocate what each record claimed before reading it.
    if (incl > kMaxRecordLen) {
        throw PcapError(where + ": captured length " + std::to_string(incl) + " exceeds " +
                        std::to_string(kMaxRecordLen) + " bytes, libpcap's largest snaplen (the header says " +
                        std::to_string(_snaplen) + "; corrupt file?)");
    }
    if (frac >= (_nanosecond ? 1000000000u : 1000000u)) {
        throw PcapError(where + ": sub-second timestamp " + std::to_string(frac) + " out of range");
    }
    _buf.resize(incl);
    _in->read(reinterpret_cast<char *>(_buf.data()), incl);
    if (static_cast<uint32_t>(_in->gcount()) != incl) {
        throw PcapError(where + ": truncated packet data (" + std::to_string(_in->gcount()) + " of " +
                        std::to_string(incl) + " bytes)");
    }
    _offset += kRecordHeaderSize + incl;
    ++_records;
    PcapPacket pkt;
    pkt.data = std::span<const uint8_t>(_buf.data(), incl);
    pkt.ts_ns = static_cast<uint64_t>(sec) * 1000000000u + (_nanosecond ? frac : static_cast<uint64_t>(frac) * 1000u);
    pkt.orig_len = orig;
    return pkt;
}

std::vector<PcapRecord> read_pcap(const std::string &path)
{
    PcapReader r(path);
    std::vector<PcapRecord> out;
    while (auto p = r.next()) {
        out.push_back(PcapRecord{std::vector<uint8_t>(p->data.begin(), p->data.end()), p->ts_ns, p->orig_len});
    }
    return out;
}

// ---------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------

PcapWriter::PcapWriter(const std::string &path, uint32_t snaplen, uint32_t linktype) : _name(path), _snaplen(snaplen)
{
    errno = 0;
    _file = std::make_unique<std::ofstream>(path, std::ios::binary | std::ios::trunc);
    if (!*_file) {
        throw PcapError("pcap " + path + ": cannot open for writing" + errno_text());
    }
    _out = _file.get();
    write_header(linktype);
}

PcapWriter::PcapWriter(std::ostream &out, std::string name, uint32_t snaplen, uint32_t linktype)
    : _out(&out), _name(std::move(name)), _snaplen(snaplen)
{
    write_header(linktype);
}

PcapWriter::~PcapWriter()
{
    if (_out != nullptr) {
        _out->flush();
    }
}

void PcapWriter::check(const char *what)
{
    if (!*_out) {
        throw PcapError("pcap " + _name + ": " + what + " failed" + errno_text());
    }
}

void PcapWriter::write_header(uint32_t linktype)
{
    if (_snaplen == 0) {
        throw PcapError("pcap " + _name + ": snaplen must be > 0");
    }
    uint8_t h[kGlobalHeaderSize] = {};
    store_le32(h, kMagicMicro);
    store_le16(h + 4, 2);
    store_le16(h + 6, 4);
    // thiszone and sigfigs stay 0, as every modern writer leaves them.
    store_le32(h + 16, _snaplen);
    store_le32(h + 20, linktype);
    errno = 0;
    _out->write(reinterpret_cast<const char *>(h), sizeof h);
    check("writing the header");
}

void PcapWriter::write(std::span<const uint8_t> data, uint64_t ts_ns, uint32_t orig_len)
{
    if (_out == nullptr) {
        throw PcapError("pcap " + _name + ": write after close");
    }
    const auto size = static_cast<uint32_t>(data.size());
    const uint32_t incl = std::min(size, _snaplen);
    uint8_t h[kRecordHeaderSize];
    store_le32(h, static_cast<uint32_t>(ts_ns / 1000000000u));
    store_le32(h + 4, static_cast<uint32_t>((ts_ns % 1000000000u) / 1000u));
    store_le32(h + 8, incl);
    store_le32(h + 12, orig_len != 0 ? orig_len : size);
    errno = 0;
    _out->write(reinterpret_cast<const char *>(h), sizeof h);
    _out->write(reinterpret_cast<const char *>(data.data()), incl);
    check("writing a record");
    ++_records;
}

void PcapWriter::flush()
{
    if (_out != nullptr) {
        errno = 0;
        _out->flush();
        check("flush");
    }
}

void PcapWriter::close()
{
    if (_out == nullptr) {
        return;
    }
    flush();
    if (_file) {
        errno = 0;
        _file->close();
        if (!*_file) {
            _out = nullptr;
            throw PcapError("pcap " + _name + ": close failed" + errno_text());
        }
    }
    _out = nullptr;
}

} // namespace serpens::net

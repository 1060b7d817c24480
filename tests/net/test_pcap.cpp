// net::PcapReader / PcapWriter.
#include "net/pcap.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <unistd.h>

using namespace serpens::net;

namespace {

std::string temp_path(const char *tag)
{
    return (std::filesystem::temp_directory_path() /
            ("serpens-net-test-" + std::to_string(::getpid()) + "-" + tag + ".pcap"))
        .string();
}

struct TempFile {
    std::string path;
    explicit TempFile(const char *tag) : path(temp_path(tag)) {}
    ~TempFile() { std::remove(path.c_str()); }
};

void push32(std::string &s, uint32_t v, bool big)
{
    for (int i = 0; i < 4; ++i) {
        const int shift = big ? 24 - 8 * i : 8 * i;
        s.push_back(static_cast<char>((v >> shift) & 0xff));
    }
}
void push16(std::string &s, uint16_t v, bool big)
{
    s.push_back(static_cast<char>(big ? v >> 8 : v & 0xff));
    s.push_back(static_cast<char>(big ? v & 0xff : v >> 8));
}

// A hand-made file in any of the four classic variants.
std::string make_file(bool big, bool nano, const std::vector<std::string> &records, uint32_t sec, uint32_t frac)
{
    std::string s;
    push32(s, nano ? 0xa1b23c4du : 0xa1b2c3d4u, big);
    push16(s, 2, big);
    push16(s, 4, big);
    push32(s, 0, big);
    push32(s, 0, big);
    push32(s, 65535, big);
    push32(s, 1, big);
    for (const auto &r : records) {
        push32(s, sec, big);
        push32(s, frac, big);
        push32(s, static_cast<uint32_t>(r.size()), big);
        push32(s, static_cast<uint32_t>(r.size()) + 10, big);
        s += r;
    }
    return s;
}

std::string error_of(const std::function<void()> &f)
{
    try {
        f();
    } catch (const PcapError &e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_SUITE_BEGIN("pcap");

TEST_CASE("write then read a file round trip")
{
    TempFile tmp("roundtrip");
    std::vector<std::vector<uint8_t>> frames;
    for (unsigned i = 0; i < 50; ++i) {
        std::vector<uint8_t> f(60 + i * 7);
        for (std::size_t j = 0; j < f.size(); ++j) {
            f[j] = static_cast<uint8_t>(i * 31 + j);
        }
        frames.push_back(f);
    }
    {
        PcapWriter w(tmp.path);
        for (unsigned i = 0; i < frames.size(); ++i) {
            w.write(frames[i], 1700000000ull * 1000000000ull + i * 1500ull + 999); // sub-µs part dropped
        }
        CHECK(w.records_written() == frames.size());
        w.close();
    }
    PcapReader r(tmp.path);
    CHECK(r.linktype() == kLinktypeEthernet);
    CHECK(r.snaplen() == 65535);
    CHECK_FALSE(r.nanosecond());
    CHECK_FALSE(r.byte_swapped());
    CHECK(r.version_major() == 2);
    for (unsigned i = 0; i < frames.size(); ++i) {
        auto p = r.next();
        REQUIRE(p.has_value());
        CHECK(std::vector<uint8_t>(p->data.begin(), p->data.end()) == frames[i]);
        CHECK(p->orig_len == frames[i].size());
        CHECK(p->ts_ns == 1700000000ull * 1000000000ull + (i * 1500ull + 999) / 1000 * 1000);
    }
    CHECK_FALSE(r.next().has_value());
    CHECK(r.records_read() == frames.size());

    const auto all = read_pcap(tmp.path);
    CHECK(all.size() == frames.size());
}

TEST_CASE("snaplen cuts records, orig_len keeps the wire length")
{
    std::stringstream ss;
    PcapWriter w(ss, "mem", 64);
    w.write(std::vector<uint8_t>(100, 7), 0);
    w.flush();
    PcapReader r(ss, "mem");
    auto p = r.next();
    REQUIRE(p);
    CHECK(p->data.size() == 64);
    CHECK(p->orig_len == 100);
}

TEST_CASE("reads all four classic variants")
{
    for (bool big : {false, true}) {
        for (bool nano : {false, true}) {
            CAPTURE(big);
            CAPTURE(nano);
            std::stringstream ss(make_file(big, nano, {"abc", std::string(70, 'x')}, 1234, 5678));
            PcapReader r(ss, "variant");
            CHECK(r.byte_swapped() == big); // this machine is little-endian
            CHECK(r.nanosecond() == nano);
            CHECK(r.snaplen() == 65535);
            CHECK(r.linktype() == 1);
            auto p = r.next();
            REQUIRE(p);
            CHECK(std::string(p->data.begin(), p->data.end()) == "abc");
            CHECK(p->orig_len == 13);
            CHECK(p->ts_ns == 1234ull * 1000000000ull + (nano ? 5678ull : 5678000ull));
            REQUIRE(r.next());
            CHECK_FALSE(r.next());
        }
    }
}

TEST_CASE("bad files give errors naming the file")
{
    CHECK(error_of([] { PcapReader r("/nonexistent/dir/x.pcap"); }).find("/nonexistent/dir/x.pcap") !=
          std::string::npos);
    CHECK(error_of([] { PcapWriter w("/nonexistent/dir/y.pcap"); }).find("cannot open for writing") !=
          std::string::npos);
    {
        std::stringstream ss("short");
        CHECK(error_of([&] { PcapReader r(ss, "tiny.pcap"); }).find("tiny.pcap: file too short") != std::string::npos);
    }
    {
        std::stringstream ss(std::string("\x0a\x0d\x0d\x0a", 4) + std::string(20, '\0'));
        CHECK(error_of([&] { PcapReader r(ss, "ng.pcap"); }).find("pcapng") != std::string::npos);
    }
    {
        std::stringstream ss(std::string(24, 'z'));
        CHECK(error_of([&] { PcapReader r(ss, "junk.pcap"); }).find("junk.pcap: bad magic 0x7a7a7a7a") !=
              std::string::npos);
    }
    {
        std::string f = make_file(false, false, {std::string(40, 'a')}, 1, 2);
        f.resize(f.size() - 5);
        std::stringstream ss(f);
        PcapReader r(ss, "cut.pcap");
        const std::string e = error_of([&] { r.next(); });
        CHECK(e.find("cut.pcap: record 1 at offset 24: truncated packet data") != std::string::npos);
    }
    {
        std::string f = make_file(false, false, {"a"}, 1, 2);
        f += "xyz"; // partial record header
        std::stringstream ss(f);
        PcapReader r(ss, "tail.pcap");
        REQUIRE(r.next());
        CHECK(error_of([&] { r.next(); }).find("record 2 at offset 41: truncated record header") != std::string::npos);
    }
    {
        std::string f = make_file(false, false, {}, 0, 0);
        push32(f, 1, false);
        push32(f, 0, false);
        push32(f, 0x7fffffff, false); // absurd captured length
        push32(f, 0x7fffffff, false);
        std::stringstream ss(f);
        PcapReader r(ss, "huge.pcap");
        CHECK(error_of([&] { r.next(); }).find("exceeds 262144 bytes") != std::string::npos);
    }
    {
        // A header that claims any length is fine: the record is still
        // refused before anything is allocated for it.
        std::string f = make_file(false, false, {}, 0, 0);
        f.replace(16, 4, std::string(4, '\xff')); // snaplen 0xffffffff
        push32(f, 1, false);
        push32(f, 0, false);
        push32(f, 0xfffffff0u, false);
        push32(f, 0xfffffff0u, false);
        std::stringstream ss(f);
        PcapReader r(ss, "snaplen.pcap");
        CHECK(r.snaplen() == 0xffffffffu);
        CHECK(error_of([&] { r.next(); }).find("captured length 4294967280 exceeds 262144 bytes") != std::string::npos);
    }
}

TEST_SUITE_END();

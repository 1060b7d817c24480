// The chain's flow table: one entry per flow for both directions, areas that
// persist, expiry that hands entries to the NFs' hook, a full table that
// refuses and counts, and no torn entry after a SIGKILL.

#include "state_test_util.h"

#include "net/parse.h"
#include "net/rss.h"
#include "state/flow_table.h"
#include "state/segment_file.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <array>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sched.h>
#include <set>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace serpens;
using namespace serpens::state;
using namespace serpens::state::test;

namespace {

constexpr uint64_t second = 1'000'000'000ull;

// An Ethernet/IPv4/UDP (or TCP) frame from src:sport to dst:dport.
struct Frame {
    std::array<uint8_t, 64> bytes{};
    serpens_pkt view{};
    net::FlowKey key; // its parse's
};

Frame udp_frame(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, uint8_t proto = 17)
{
    Frame f;
    uint8_t *b = f.bytes.data();
    b[12] = 0x08; // IPv4
    uint8_t *ip = b + 14;
    ip[0] = 0x45;
    const uint16_t total = htons(proto == 6 ? 40 : 28);
    std::memcpy(ip + 2, &total, 2);
    ip[8] = 64;
    ip[9] = proto;
    const uint32_t s = htonl(src), d = htonl(dst);
    std::memcpy(ip + 12, &s, 4);
    std::memcpy(ip + 16, &d, 4);
    uint8_t *l4 = ip + 20;
    const uint16_t sp = htons(sport), dp = htons(dport);
    std::memcpy(l4, &sp, 2);
    std::memcpy(l4 + 2, &dp, 2);
    if (proto == 6) {
        l4[12] = 0x50;
    } else {
        const uint16_t ulen = htons(8);
        std::memcpy(l4 + 4, &ulen, 2);
    }
    f.view.data = b;
    f.view.len = static_cast<uint32_t>(f.bytes.size());
    REQUIRE(net::parse_packet(f.view, f.key) == net::ParseResult::ok);
    return f;
}

struct Looked {
    void *entry = nullptr;
    uint8_t flags = 0;
};

Looked look(FlowTable &t, Frame &f, uint64_t now)
{
    Looked r;
    f.view.data = f.bytes.data(); // the frame may have moved (a vector of them grew)
    t.lookup_burst(&f.view, sizeof(serpens_pkt), 1, now, &r.entry, &r.flags);
    return r;
}

// One lookup_burst of all of `frames`, in order.
struct BurstLooked {
    std::vector<void *> entries;
    std::vector<uint8_t> flags;
    FlowBurst found;
};

BurstLooked look_burst(FlowTable &t, std::vector<Frame> &frames, uint64_t now, const net::FlowKey *keys = nullptr)
{
    std::vector<serpens_pkt> views;
    for (Frame &f : frames) {
        f.view.data = f.bytes.data();
        views.push_back(f.view);
    }
    BurstLooked r{std::vector<void *>(views.size()), std::vector<uint8_t>(views.size()), {}};
    r.found = t.lookup_burst(views.data(), sizeof(serpens_pkt), static_cast<uint32_t>(views.size()), now,
                             r.entries.data(), r.flags.data(), nullptr, keys);
    return r;
}

// Whether open() moved a table it could not use aside.
bool moved_aside(const ScratchDir &dir)
{
    for (const auto &e : std::filesystem::directory_iterator(dir.path)) {
        if (e.path().filename().string().starts_with("flows.seg.bad-")) {
            return true;
        }
    }
    return false;
}

FlowTableSpec spec_of(uint64_t capacity, uint64_t idle_ns = 300 * second)
{
    FlowTableSpec spec;
    spec.chain = "c";
    spec.capacity = capacity;
    spec.idle_timeout_ns = idle_ns;
    spec.areas = {{"fw", 8, 0}, {"mon", 24, 0}, {"none", 0, 0}, {"nat", 8, 0}};
    return spec;
}

std::unique_ptr<FlowTable> open_table(const ScratchDir &dir, FlowTableSpec spec)
{
    std::string err;
    auto t = FlowTable::open(dir.path / "flows.seg", std::move(spec), err);
    INFO(err);
    REQUIRE(t != nullptr);
    return t;
}

struct Expired {
    std::vector<uint8_t *> entries;
    static void hook(void *self, uint8_t *entry) noexcept { static_cast<Expired *>(self)->entries.push_back(entry); }
};

// A sweep call that only expires (no visitor).
std::size_t expire(FlowTable &t, const uint64_t *owned, FlowSweepCursor &cursor, uint64_t now, uint32_t max_slots,
                   Expired &expired)
{
    return t.sweep(owned, cursor, now, max_slots, FlowSweepHooks{nullptr, false, &Expired::hook, &expired});
}

constexpr uint64_t all_parts[4] = {~0ull, ~0ull, ~0ull, ~0ull};

} // namespace

TEST_CASE("areas are laid out in chain order, 8-byte aligned, NFs without state left out")
{
    FlowTableSpec spec = spec_of(1024);
    spec.areas[1].size = 20;
    const uint32_t size = spec.layout();
    REQUIRE(spec.areas.size() == 3);
    CHECK(spec.areas[0].offset == flow_entry_header);
    CHECK(spec.areas[1].offset == flow_entry_header + 8);
    CHECK(spec.areas[2].nf == "nat");
    CHECK(spec.areas[2].offset == flow_entry_header + 8 + 24);
    CHECK(size % 64 == 0);
    CHECK(size >= spec.areas[2].offset + 8);
}

TEST_CASE("both directions of a flow share one entry; the first packet creates it")
{
    ScratchDir dir("flows-dir");
    auto t = open_table(dir, spec_of(4096));
    Frame out = udp_frame(0x0a000001, 40000, 0xc0a80001, 53);
    Frame back = udp_frame(0xc0a80001, 53, 0x0a000001, 40000);
    CHECK(out.view.flow_hash == back.view.flow_hash);

    Looked first = look(*t, out, 1);
    REQUIRE(first.entry != nullptr);
    CHECK(first.flags == SERPENS_FLOW_NEW);
    Looked again = look(*t, out, 2);
    CHECK(again.entry == first.entry);
    CHECK(again.flags == 0);
    Looked reply = look(*t, back, 3);
    CHECK(reply.entry == first.entry);
    // 192.168.0.1 is the flow's endpoint b (the higher address).
    CHECK(reply.flags == (SERPENS_FLOW_REPLY | SERPENS_FLOW_FROM_B));

    // Another flow (other port, other protocol) has its own entry.
    Frame other = udp_frame(0x0a000001, 40001, 0xc0a80001, 53);
    Frame tcp = udp_frame(0x0a000001, 40000, 0xc0a80001, 53, 6);
    CHECK(look(*t, other, 4).entry != first.entry);
    CHECK(look(*t, tcp, 4).entry != first.entry);
    CHECK(t->totals().live == 3);

    // A flow opened from the "higher" side is a reply the other way round,
    // and its packets from that side come from endpoint b all the same.
    Frame high_first = udp_frame(0xc0a80009, 80, 0x0a000009, 5000);
    Frame high_reply = udp_frame(0x0a000009, 5000, 0xc0a80009, 80);
    CHECK(look(*t, high_first, 5).flags == (SERPENS_FLOW_NEW | SERPENS_FLOW_FROM_B));
    CHECK(look(*t, high_first, 5).flags == SERPENS_FLOW_FROM_B);
    CHECK(look(*t, high_reply, 5).flags == SERPENS_FLOW_REPLY);

    // Equal addresses: the lower port is endpoint a.
    Frame low_port = udp_frame(0x0a000005, 1000, 0x0a000005, 2000);
    Frame high_port = udp_frame(0x0a000005, 2000, 0x0a000005, 1000);
    CHECK(look(*t, low_port, 6).flags == SERPENS_FLOW_NEW);
    CHECK(look(*t, high_port, 6).flags == (SERPENS_FLOW_REPLY | SERPENS_FLOW_FROM_B));
}

TEST_CASE("a packet that is not IP has no entry; a burst creates each new flow once; the parser's keys find it")
{
    ScratchDir dir("flows-burst");
    auto t = open_table(dir, spec_of(4096));
    std::vector<Frame> frames;
    for (uint16_t i = 0; i < 40; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(1000 + i % 10), 0x0a000002, 80));
    }
    Frame arp;
    arp.bytes[12] = 0x08;
    arp.bytes[13] = 0x06;
    arp.view.data = arp.bytes.data();
    arp.view.len = 64;
    net::parse_packet(arp.view, arp.key);
    frames.push_back(arp);
    const BurstLooked first = look_burst(*t, frames, 1);
    const std::vector<void *> &entries = first.entries;
    const std::vector<uint8_t> &flags = first.flags;
    CHECK(entries.back() == nullptr);
    CHECK(t->totals().live == 10);
    for (std::size_t i = 0; i < 40; ++i) {
        CHECK(entries[i] == entries[i % 10]);
        CHECK(flags[i] == (i < 10 ? SERPENS_FLOW_NEW : 0));
    }

    // Given the keys the dispatcher's parse made, the same burst finds the
    // same entries (the in-place path, against the ring path above).
    std::vector<net::FlowKey> keys;
    for (const Frame &f : frames) {
        keys.push_back(f.key);
    }
    // Entries are compared by their keys: a part may grow between two
    // bursts, and its flows move with it.
    std::vector<net::FlowKey> first_keys;
    for (std::size_t i = 0; i < 40; ++i) {
        first_keys.push_back(FlowTable::entry_key(static_cast<const uint8_t *>(entries[i])));
    }
    const BurstLooked second = look_burst(*t, frames, 2, keys.data());
    const std::vector<void *> &again = second.entries;
    CHECK(again.back() == nullptr);
    for (std::size_t i = 0; i < 40; ++i) {
        REQUIRE(again[i] != nullptr);
        CHECK(again[i] == again[i % 10]);
        CHECK(FlowTable::entry_key(static_cast<const uint8_t *>(again[i])) == first_keys[i]);
    }
    CHECK(std::count(second.flags.begin(), second.flags.end(), uint8_t{0}) == static_cast<long>(second.flags.size()));
    CHECK(t->totals().live == 10);
}

TEST_CASE("areas persist across a re-open; a changed layout starts afresh")
{
    ScratchDir dir("flows-reopen");
    Frame f = udp_frame(0x0a000001, 1234, 0x0a000002, 80);
    {
        auto t = open_table(dir, spec_of(4096));
        auto *entry = static_cast<uint8_t *>(look(*t, f, 1).entry);
        REQUIRE(entry != nullptr);
        const uint64_t verdict = 0x1122334455667788ull;
        std::memcpy(entry + t->spec().areas[0].offset, &verdict, 8);
    }
    {
        auto t = open_table(dir, spec_of(4096));
        Looked again = look(*t, f, 2);
        REQUIRE(again.entry != nullptr);
        CHECK(again.flags == 0);
        uint64_t verdict = 0;
        std::memcpy(&verdict, static_cast<uint8_t *>(again.entry) + t->spec().areas[0].offset, 8);
        CHECK(verdict == 0x1122334455667788ull);
    }
    FlowTableSpec other = spec_of(4096);
    other.areas[1].size = 32; // mon keeps more now: old entries mean nothing
    auto t = open_table(dir, other);
    CHECK(t->totals().live == 0);
    CHECK(look(*t, f, 3).flags == SERPENS_FLOW_NEW);
    CHECK(moved_aside(dir));
}

TEST_CASE("a table another process holds is refused; a cut-short file is moved aside, never used")
{
    ScratchDir dir("flows-held");
    const auto file = dir.path / "flows.seg";
    std::string err;
    {
        auto held = open_table(dir, spec_of(4096));
        // flock is per open file description: a second open in this process
        // conflicts as another process's would.
        CHECK(FlowTable::open(file, spec_of(4096), err) == nullptr);
        CHECK(err.find("flow table is in use by another process") != std::string::npos);
        CHECK(!moved_aside(dir));
    }
    std::filesystem::resize_file(file, 100); // a header cut short, as a full disk could leave it
    CHECK(FlowTable::open_readonly(file, err) == nullptr);
    CHECK(err.find("smaller than its header") != std::string::npos);
    auto t = open_table(dir, spec_of(4096));
    CHECK(moved_aside(dir));
    CHECK(t->totals().live == 0);
    CHECK(std::filesystem::file_size(file) > 100);
}

TEST_CASE("with RSS buckets a flow's part is its RSS bucket; a table filled by the other hash starts afresh")
{
    ScratchDir dir("flows-bucket-hash");
    Frame f = udp_frame(0x0a000001, 1234, 0x0a000002, 80);
    {
        auto t = open_table(dir, spec_of(4096));
        REQUIRE(look(*t, f, 1).flags == SERPENS_FLOW_NEW);
    }
    const net::BucketHash saved = net::bucket_hash();
    net::set_bucket_hash(net::BucketHash::rss);
    net::FlowKey key;
    REQUIRE(net::parse_packet(f.view, key) == net::ParseResult::ok);
    f.view.flow_hash = key.hash(); // as the dispatcher hashes under this setting
    auto t = open_table(dir, spec_of(4096));
    const bool fresh = t->totals().live == 0;
    const Looked again = look(*t, f, 2);
    std::vector<uint32_t> parts;
    t->for_each_entry([&](const uint8_t *, uint32_t hash) { parts.push_back(hash % flow_parts); });
    net::set_bucket_hash(saved);
    CHECK(fresh);
    CHECK(again.flags == SERPENS_FLOW_NEW);
    REQUIRE(parts.size() == 1);
    CHECK(parts[0] == (net::rss_hash(key) & 0xffu));
    CHECK(moved_aside(dir));
}

TEST_CASE("idle flows expire in the owner's parts only, through the hook, and come back as new")
{
    ScratchDir dir("flows-expire");
    auto t = open_table(dir, spec_of(4096, 1 * second));
    std::vector<Frame> frames;
    for (uint16_t i = 0; i < 200; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(2000 + i), 0x0a000002, 80));
        REQUIRE(look(*t, frames.back(), 0).flags == SERPENS_FLOW_NEW);
    }
    // Flow 0 stays busy.
    REQUIRE(look(*t, frames[0], 2 * second).entry != nullptr);

    Expired expired;
    FlowSweepCursor cursor;
    // Owning no part: nothing goes.
    const uint64_t none[4] = {};
    CHECK(expire(*t, none, cursor, 3 * second / 2 + 2 * second, 1 << 20, expired) == 0);
    // Owning only the parts of flows 1..: the sweep is incremental (a few
    // buckets a call) and covers them all.
    uint64_t owned[4] = {};
    const uint32_t busy_part = frames[0].view.flow_hash % flow_parts;
    std::size_t expected = 0;
    for (std::size_t i = 1; i < frames.size(); ++i) {
        const uint32_t p = frames[i].view.flow_hash % flow_parts;
        if (p != busy_part) {
            owned[p / 64] |= uint64_t{1} << (p % 64);
        }
    }
    for (std::size_t i = 1; i < frames.size(); ++i) {
        const uint32_t p = frames[i].view.flow_hash % flow_parts;
        expected += (owned[p / 64] >> (p % 64)) & 1u;
    }
    std::size_t gone = 0;
    for (int call = 0; call < 100000 && gone < expected; ++call) {
        gone += expire(*t, owned, cursor, 3 * second, 4, expired);
    }
    CHECK(gone == expected);
    CHECK(expired.entries.size() == expected);
    CHECK(t->totals().expired == expected);
    CHECK(t->totals().live == frames.size() - expected);
    // The busy flow is still there; an expired one comes back as new.
    CHECK(look(*t, frames[0], 3 * second).flags == 0);
    for (std::size_t i = 1; i < frames.size(); ++i) {
        const uint32_t p = frames[i].view.flow_hash % flow_parts;
        if (p != busy_part) {
            CHECK(look(*t, frames[i], 3 * second).flags == SERPENS_FLOW_NEW);
            break;
        }
    }
}

TEST_CASE("a sweep shows visitors the entry's key and idle time; a visitor keeps an expiring flow")
{
    ScratchDir dir("flows-visit");
    auto t = open_table(dir, spec_of(4096, 3 * second)); // two whole units
    // Flow a: 10.0.0.9:4000 -> 10.0.0.2:80 (the initiator is the higher
    // endpoint, key.dst); flow b: 10.0.0.1:5000 -> 10.0.0.2:53, idle longer.
    Frame a = udp_frame(0x0a000009, 4000, 0x0a000002, 80);
    Frame b = udp_frame(0x0a000001, 5000, 0x0a000002, 53);
    REQUIRE(look(*t, b, 0).entry != nullptr);
    REQUIRE(look(*t, a, 2 * second).entry != nullptr);

    struct Seen {
        std::vector<serpens_flow_info> visits;
        bool keep = false;
        std::vector<uint8_t *> expired;
        uint8_t *entry_b = nullptr;
        static bool visit(void *self, uint8_t *entry, uint64_t idle_ns, bool expiring) noexcept
        {
            auto *s = static_cast<Seen *>(self);
            s->visits.push_back(FlowTable::entry_info(entry, idle_ns, expiring, 0));
            return s->keep && entry == s->entry_b;
        }
        static void gone(void *self, uint8_t *entry) noexcept { static_cast<Seen *>(self)->expired.push_back(entry); }
    } seen;
    seen.entry_b = static_cast<uint8_t *>(look(*t, b, 0).entry); // same unit as its creation: idle unchanged
    const uint64_t now = 4 * second;                             // b idle 3 units: expiring; a 2 units: not
    FlowSweepCursor cursor;
    auto pass = [&](bool visit_all) {
        seen.visits.clear();
        const FlowSweepHooks hooks{&Seen::visit, visit_all, &Seen::gone, &seen};
        std::size_t gone = 0;
        for (uint32_t s = 0; s < flow_parts * t->slots_per_part(); s += 2048) {
            gone += t->sweep(all_parts, cursor, now, 2048, hooks);
        }
        return gone;
    };
    // Visiting all: both entries, a not expiring; b expiring but kept.
    seen.keep = true;
    CHECK(pass(true) == 0);
    REQUIRE(seen.visits.size() == 2);
    const auto &va = seen.visits[0].port_b == 80 || seen.visits[0].port_a == 80 ? seen.visits[0] : seen.visits[1];
    const auto &vb = &va == &seen.visits[0] ? seen.visits[1] : seen.visits[0];
    CHECK(va.expiring == 0);
    CHECK(vb.expiring == 1);
    CHECK(va.idle_ns < vb.idle_ns);
    CHECK(vb.idle_ns >= 3 * second);
    // Canonical endpoints: a is the lower; the initiator is named.
    CHECK(va.ip_version == 4);
    CHECK(va.proto == 17);
    CHECK(va.port_a == 80);
    CHECK(va.port_b == 4000);
    CHECK(va.initiator_b == 1);
    CHECK(vb.port_a == 5000);
    CHECK(vb.initiator_b == 0);
    const uint8_t lower[4] = {10, 0, 0, 1};
    CHECK(std::memcmp(vb.addr_a, lower, 4) == 0);
    CHECK(t->totals().live == 2);
    // Visiting expiring entries only: b alone, let go this time.
    seen.keep = false;
    CHECK(pass(false) == 1);
    REQUIRE(seen.visits.size() == 1);
    CHECK(seen.visits[0].expiring == 1);
    CHECK(seen.expired.size() == 1);
    CHECK(t->totals().live == 1);
}

TEST_CASE("a full part refuses new flows and counts them; existing flows go on")
{
    ScratchDir dir("flows-full");
    auto t = open_table(dir, spec_of(16)); // a few slots per part
    // Every flow forced into one part: it takes its share of the capacity,
    // then refuses.
    const uint32_t slots = t->max_live_per_part();
    REQUIRE(slots >= 8);
    std::vector<Frame> frames;
    std::vector<void *> entries;
    for (uint16_t i = 0; i < slots + 5; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(3000 + i), 0x0a000002, 80));
        frames.back().view.flow_hash = 0x00000100 + (uint32_t{i} << 20); // part 0
        entries.push_back(look(*t, frames.back(), 1).entry);
    }
    for (uint32_t i = 0; i < frames.size(); ++i) {
        CHECK((entries[i] != nullptr) == (i < slots));
    }
    CHECK(t->totals().refused_full == 5);
    CHECK(t->totals().live == slots);
    for (uint32_t i = 0; i < slots; ++i) {
        CHECK(look(*t, frames[i], 2).entry == entries[i]);
    }
    // Once one goes, a new flow fits again.
    Expired expired;
    FlowSweepCursor cursor;
    t.reset();
    auto t2 = open_table(dir, spec_of(16, 1 * second)); // same layout: the timeout is the host's setting
    look(*t2, frames[1], 10 * second);
    for (int call = 0; call < 1000; ++call) {
        expire(*t2, all_parts, cursor, 10 * second, 64, expired);
    }
    CHECK(expired.entries.size() == slots - 1);
    CHECK(look(*t2, frames[slots], 10 * second).flags == SERPENS_FLOW_NEW);
    CHECK(look(*t2, frames[1], 10 * second).flags == 0);
}

TEST_CASE("flows with one home slot: a bounded probe takes what fits within reach, and no lookup goes further")
{
    ScratchDir dir("flows-probe");
    auto t = open_table(dir, spec_of(1 << 20));
    REQUIRE(t->max_live_per_part() > 2 * flow_max_probe);
    std::vector<Frame> frames;
    std::vector<void *> entries;
    for (uint16_t i = 0; i < flow_max_probe + 8; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(5000 + i), 0x0a000002, 80));
        frames.back().view.flow_hash = 0x00000700; // one part, one home slot
        entries.push_back(look(*t, frames.back(), 1).entry);
    }
    for (uint32_t i = 0; i < frames.size(); ++i) {
        CHECK((entries[i] != nullptr) == (i < flow_max_probe));
    }
    CHECK(t->totals().refused_full == 8);
    // Removing one in the middle leaves a tombstone that lookups step over,
    // and the next new flow of that home takes its place.
    Expired expired;
    FlowSweepCursor cursor;
    t.reset();
    auto t2 = open_table(dir, spec_of(1 << 20, 1 * second));
    for (uint32_t i = 0; i < flow_max_probe; ++i) {
        if (i != 10) {
            look(*t2, frames[i], 10 * second);
        }
    }
    for (int call = 0; call < 100000 && expired.entries.empty(); ++call) {
        expire(*t2, all_parts, cursor, 10 * second, 2048, expired);
    }
    REQUIRE(expired.entries.size() == 1);
    net::FlowKey gone;
    frames[10].view.data = frames[10].bytes.data(); // the vector grew since its lookup
    REQUIRE(net::flow_key_of(frames[10].view, gone));
    CHECK(FlowTable::entry_key(expired.entries.front()) == gone.canonical());
    for (uint32_t i = 0; i < flow_max_probe; ++i) {
        if (i != 10) {
            Looked again = look(*t2, frames[i], 10 * second);
            CHECK(again.entry != nullptr);
            CHECK(again.flags == 0);
        }
    }
    CHECK(look(*t2, frames[flow_max_probe], 10 * second).entry == expired.entries.front());
}

// A child process that opens the table in `file` and runs write(table)
// until it is killed (exit 3: no table; it may exit on its own with a code
// of its choice).
template<class Write>
pid_t fork_writer(const std::filesystem::path &file, const FlowTableSpec &spec, Write write)
{
    const pid_t pid = ::fork();
    if (pid == 0) {
        std::string err;
        auto t = FlowTable::open(file, spec, err);
        if (!t) {
            ::_exit(3);
        }
        write(*t);
        ::_exit(0);
    }
    return pid;
}

// SIGKILL to the writer; its wait status.
int kill_writer(pid_t pid)
{
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return status;
}

TEST_CASE("SIGKILL while creating flows and writing their areas leaves no torn entry")
{
    ScratchDir dir("flows-crash");
    const FlowTableSpec spec = spec_of(1 << 16);
    auto *progress = static_cast<std::atomic<uint64_t> *>(
        ::mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(progress != MAP_FAILED);
    for (int round = 0; round < 5; ++round) {
        progress->store(0);
        const pid_t pid = fork_writer(dir.path / "flows.seg", spec, [&](FlowTable &t) {
            for (uint64_t i = 0;; ++i) {
                const auto n = static_cast<uint32_t>(i % 60000);
                Frame f = udp_frame(0x0a000000 + (n >> 8), static_cast<uint16_t>(1024 + (n & 0xff)), 0x0a800000, 443);
                auto *entry = static_cast<uint8_t *>(look(t, f, i).entry);
                if (entry != nullptr) {
                    uint64_t count;
                    std::memcpy(&count, entry + t.spec().areas[1].offset, 8);
                    ++count;
                    std::memcpy(entry + t.spec().areas[1].offset, &count, 8);
                }
                progress->store(i + 1, std::memory_order_relaxed);
            }
        });
        REQUIRE(pid >= 0);
        while (progress->load() < static_cast<uint64_t>(20000 * (round + 1))) {
            ::usleep(100);
        }
        kill_writer(pid);

        auto t = open_table(dir, spec);
        Expired expired;
        t->recover(&Expired::hook, &expired);
        std::size_t entries = 0;
        std::size_t bad = 0;
        t->for_each_entry([&](const uint8_t *entry, uint32_t hash) {
            ++entries;
            const net::FlowKey &k = FlowTable::entry_key(entry);
            // Its key is one the child made, stored canonically, under its hash.
            bad += !(k.ip_version == 4 && k.proto == 17 && k.is_canonical() && k.hash() == hash);
        });
        CHECK(bad == 0);
        CHECK(entries == t->totals().live);
        CHECK(entries > 0);
    }
    ::munmap(progress, sizeof(std::atomic<uint64_t>));
}

TEST_CASE("a part grows as its flows come, and every flow keeps its entry and areas")
{
    ScratchDir dir("flows-grow");
    auto t = open_table(dir, spec_of(1 << 16));
    REQUIRE(t->slots_in_use(0) == flow_min_slots);
    REQUIRE(t->slots_per_part() > 4 * flow_min_slots);
    const uint32_t mon = t->spec().areas[1].offset;
    // Flows of part 0 only, with homes spread over it, each marked in its
    // mon area when it appears.
    std::vector<Frame> frames;
    const uint32_t n = t->max_live_per_part() - 8;
    for (uint32_t i = 0; i < n; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(2000 + i), 0x0a000002, 53));
    }
    for (uint32_t i = 0; i < n; ++i) {
        frames[i].view.flow_hash = (i * 2654435761u) & ~0xffu; // part 0
        Looked l = look(*t, frames[i], 1);
        REQUIRE(l.entry != nullptr);
        CHECK(l.flags == SERPENS_FLOW_NEW);
        const uint64_t mark = 1000 + i;
        std::memcpy(static_cast<uint8_t *>(l.entry) + mon, &mark, 8);
    }
    CHECK(t->slots_in_use(0) == t->slots_per_part());
    CHECK(t->slots_in_use(1) == flow_min_slots);
    CHECK(t->totals().live == n);
    CHECK(t->totals().created == n);
    CHECK(t->totals().refused_full == 0);
    // Every flow is found again, not created, with what was written in it.
    for (uint32_t i = 0; i < n; ++i) {
        Looked l = look(*t, frames[i], 2);
        REQUIRE(l.entry != nullptr);
        CHECK(l.flags == 0);
        uint64_t mark = 0;
        std::memcpy(&mark, static_cast<uint8_t *>(l.entry) + mon, 8);
        CHECK(mark == 1000 + i);
    }
    // The grown size stays across a re-open, and so do the flows.
    t.reset();
    auto t2 = open_table(dir, spec_of(1 << 16));
    CHECK(t2->slots_in_use(0) == t2->slots_per_part());
    CHECK(look(*t2, frames[n / 2], 3).flags == 0);
}

TEST_CASE("SIGKILL while parts grow loses no flow and leaves none twice")
{
    // Parts of 2320 slots, four of them filled: six doublings each from 64.
    const FlowTableSpec spec = spec_of(1 << 18);
    constexpr uint64_t flows = 5600; // 1400 a part, below its 1740
    auto *confirmed = static_cast<std::atomic<uint64_t> *>(
        ::mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    REQUIRE(confirmed != MAP_FAILED);
    auto frame_of = [](uint64_t i) {
        Frame f = udp_frame(0x0a000001, static_cast<uint16_t>(1024 + i), 0x0a800000, 443);
        f.view.flow_hash = (static_cast<uint32_t>(i) * 2654435761u & ~0xffu) | static_cast<uint32_t>(i % 4);
        return f;
    };
    // Killed near the moments parts double (at about half full), each round
    // a table of its own.
    for (uint64_t kill_at : {130u, 250u, 520u, 1010u, 1030u, 2040u, 2060u, 4090u, 4100u}) {
        ScratchDir dir("flows-grow-crash");
        confirmed->store(0);
        const pid_t pid = fork_writer(dir.path / "flows.seg", spec, [&](FlowTable &t) {
            for (uint64_t i = 0;; i = i + 1 < flows ? i + 1 : i) {
                Frame f = frame_of(i);
                if (look(t, f, 1).entry == nullptr) {
                    ::_exit(4);
                }
                confirmed->store(i + 1, std::memory_order_release);
            }
        });
        REQUIRE(pid >= 0);
        while (confirmed->load(std::memory_order_acquire) < kill_at) {
        }
        REQUIRE(WIFSIGNALED(kill_writer(pid)));
        const uint64_t done = confirmed->load(std::memory_order_acquire);

        auto t = open_table(dir, spec);
        Expired expired;
        t->recover(&Expired::hook, &expired);
        CHECK(expired.entries.empty());
        // Each flow the child confirmed is there once, and is found again.
        std::set<uint16_t> seen;
        std::size_t twice = 0;
        t->for_each_entry([&](const uint8_t *entry, uint32_t) {
            twice += !seen.insert(FlowTable::entry_key(entry).src_port).second;
        });
        INFO("killed after " << done << " flows");
        CHECK(twice == 0);
        CHECK(seen.size() >= done);
        CHECK(t->totals().live == seen.size());
        for (uint64_t i = 0; i < done; ++i) {
            Frame f = frame_of(i);
            REQUIRE(look(*t, f, 2).flags == 0);
        }
    }
    ::munmap(confirmed, sizeof(std::atomic<uint64_t>));
}

TEST_CASE("a burst of more new flows than a part's slots can take grows it within the burst, none refused")
{
    ScratchDir dir("flows-grow-burst");
    auto t = open_table(dir, spec_of(1 << 16));
    REQUIRE(t->slots_in_use(0) == flow_min_slots);
    // 60 new flows of part 0 in one burst: past the three quarters of 64
    // slots at which a part refuses, then the first of them once more.
    std::vector<Frame> frames;
    for (uint32_t i = 0; i < 60; ++i) {
        frames.push_back(udp_frame(0x0a000001, static_cast<uint16_t>(3000 + i), 0x0a000002, 53));
        frames.back().view.flow_hash = (i * 2654435761u) & ~0xffu;
    }
    frames.push_back(frames.front());
    const auto [entries, flags, found] = look_burst(*t, frames, 1);
    CHECK(found.refused == 0);
    CHECK(t->slots_in_use(0) > flow_min_slots);
    CHECK(t->totals().live == 60);
    CHECK(t->totals().created == 60);
    CHECK(t->totals().refused_full == 0);
    for (uint32_t i = 0; i < 60; ++i) {
        REQUIRE(entries[i] != nullptr);
        CHECK(flags[i] == SERPENS_FLOW_NEW);
        CHECK(FlowTable::entry_key(static_cast<const uint8_t *>(entries[i])).src_port == 3000 + i);
    }
    CHECK(entries[60] == entries[0]);
    CHECK(flags[60] == 0);
}

namespace {

// What /proc/self/smaps_rollup says this process maps of shared memory in
// 2 MB pages, in kB.
uint64_t shmem_pmd_mapped_kb()
{
    std::ifstream rollup("/proc/self/smaps_rollup");
    for (std::string line; std::getline(rollup, line);) {
        if (line.rfind("ShmemPmdMapped:", 0) == 0) {
            return std::stoull(line.substr(std::strlen("ShmemPmdMapped:")));
        }
    }
    return 0;
}

} // namespace

TEST_CASE("a big table on a tmpfs mounted huge=advise gets 2 MB pages; one without huge= is named at start")
{
    std::ifstream policy("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    std::string shmem_enabled;
    if (::geteuid() != 0 || !std::getline(policy, shmem_enabled) || shmem_enabled.find("[deny]") != std::string::npos) {
        MESSAGE("skipped: needs root (to mount a tmpfs) and a kernel with THP for tmpfs");
        return;
    }
    ScratchDir dir("flows-huge");
    // The mounts live in a mount namespace of the child's own: nothing is
    // left mounted, whatever happens.
    enum : int { ok = 0, cannot_mount = 77, small_pages = 10, noted_huge = 11, plain_not_noted = 12, no_table = 13 };
    const pid_t pid = ::fork();
    if (pid == 0) {
        if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
            ::_exit(cannot_mount);
        }
        const std::filesystem::path huge = dir.path / "huge", plain = dir.path / "plain";
        std::filesystem::create_directories(huge);
        std::filesystem::create_directories(plain);
        if (::mount("none", huge.c_str(), "tmpfs", 0, "huge=advise,size=1g,mode=0755") != 0 ||
            ::mount("none", plain.c_str(), "tmpfs", 0, "size=1m,mode=0755") != 0) {
            ::_exit(cannot_mount);
        }
        std::filesystem::create_directories(huge / "state");
        std::filesystem::create_directories(plain / "state");
        if (shmem_enabled.find("[force]") == std::string::npos && small_pages_note(plain / "state").empty()) {
            ::_exit(plain_not_noted);
        }
        if (!small_pages_note(huge / "state").empty()) {
            ::_exit(noted_huge);
        }
        std::string err;
        auto t = FlowTable::open(huge / "state" / "flows.seg", spec_of(1u << 20), err);
        if (!t) {
            ::_exit(no_table);
        }
        // Reserved in huge pages at creation, then mapped in them: here all
        // of its hundreds of MB but the file's partial tail; before, none.
        // A machine whose memory is too fragmented for some still finds 16.
        ::_exit(shmem_pmd_mapped_kb() >= 32u * 1024 ? ok : small_pages);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    if (WEXITSTATUS(status) == cannot_mount) {
        MESSAGE("skipped: cannot mount a tmpfs in a mount namespace of its own here");
        return;
    }
    CHECK_MESSAGE(WEXITSTATUS(status) != plain_not_noted, "a tmpfs without huge= was not named");
    CHECK_MESSAGE(WEXITSTATUS(status) != noted_huge, "a huge=advise tmpfs was named as one of 4 KiB pages");
    CHECK_MESSAGE(WEXITSTATUS(status) != no_table, "the table could not be created");
    CHECK_MESSAGE(WEXITSTATUS(status) == ok, "the table's pages were not 2 MB ones");
}

// fuzz-nf: every NF plugin (fw, nat, mon, ids, vpn, lb) against packets the
// fuzzer writes, on the NF unit tests' mock host, with the configs and frame
// makers of nf-hostile (tests/nf/hostile/hostile.h).  The plugins are built
// with coverage, ASan and UBSan in the fuzz build, so the fuzzer steers by
// what the NF's code did, and the mock packet's fence makes any byte an NF
// touches outside its frame a crash.
//
// An input is a program: which NF, a seed for the frame makers, then steps
// that each add one packet to the burst (raw bytes, a generated frame, a
// reply to or an ICMP error about a packet the NF let through, each with
// nf-hostile's mutations), run the burst, restart the NF on its state, or
// move the clock on and sweep flows.  A packet given a port the NF does not
// have, or left outside its buffer, aborts.

#include "hostile.h"

#include <fuzzer/FuzzedDataProvider.h>

#include <cstdio>
#include <cstdlib>

using namespace nfmock;
using namespace nfhostile;

namespace {

constexpr std::size_t max_packets = 512; // per input: keeps an input fast
constexpr std::size_t max_frame = 1600;

[[noreturn]] void fail(const Case &c, const char *what)
{
    std::fprintf(stderr, "fuzz-nf: %s: %s\n", c.name, what);
    std::abort();
}

// nf-hostile's mutations, with the fuzzer's choices.
Bytes edit(FuzzedDataProvider &in, Bytes f)
{
    return mutate_with([&in](std::size_t n) { return in.ConsumeIntegralInRange<std::size_t>(0, n - 1); }, std::move(f));
}

// One NF on its mock host.  It lives across inputs, as an NF lives across
// batches in a running host: creating a host, its state and the NF per input
// ran 9 inputs a second.  So a crash may need the inputs before it too.
struct Nf {
    const Case &c;
    const uint64_t flow_capacity;
    std::unique_ptr<MockHost> host;
    Ctx *ctx = nullptr;
    uint32_t restarts = 0;
    uint64_t now = kSec;
    std::vector<Bytes> passed; // up to 64 frames the NF let through
    std::vector<std::unique_ptr<Packet>> burst;

    Nf(const Case &nf_case, uint64_t capacity) : c(nf_case), flow_capacity(capacity) { start_host(); }

    void start_host()
    {
        ctx = nullptr;
        host = host_for(c);
        host->flow_capacity = flow_capacity;
        if (host->init(ctx) != SERPENS_OK) {
            fail(c, "init refused the hostile config");
        }
    }

    // The instance restarts on the state it left (fini, then init), as
    // after a crash or an upgrade.  The mock host keeps every context, so
    // after a while the whole host starts afresh instead.
    void restart()
    {
        flush();
        if (++restarts % 256 == 0) {
            host.reset(); // the old host's scratch directory goes first
            start_host();
            return;
        }
        host->fini(*ctx);
        if (host->init(ctx) != SERPENS_OK) {
            fail(c, "init refused to restart on its own state");
        }
    }

    void flush()
    {
        if (burst.empty()) {
            return;
        }
        std::vector<Packet *> pkts;
        for (auto &p : burst) {
            pkts.push_back(p.get());
        }
        const std::vector<uint8_t> ports = host->run(*ctx, pkts, now);
        if (ports.size() != pkts.size()) {
            fail(c, "the batch lost ports");
        }
        for (std::size_t i = 0; i < pkts.size(); ++i) {
            const Packet &p = *pkts[i];
            if (ports[i] >= ctx->desc->n_ports && ports[i] != SERPENS_PORT_DROP) {
                fail(c, "a packet was given a port the NF does not have");
            }
            if (p.view.data < p.buf || p.view.data + p.view.len > p.buf + Packet::capacity) {
                fail(c, "a packet's view left its buffer");
            }
            if (ports[i] != SERPENS_PORT_DROP) {
                Bytes out(p.view.data, p.view.data + p.view.len);
                if (passed.size() < 64) {
                    passed.push_back(std::move(out));
                } else {
                    passed[(now / 1000 + i) % passed.size()] = std::move(out);
                }
            }
        }
        burst.clear();
    }
};

const std::vector<Case> &all_cases()
{
    static const std::vector<Case> all = cases();
    return all;
}

// NF i % n of the n cases: with a flow table of 1024 flows, or of 16 for
// i >= n, which is full at once (the NFs' paths for packets with no entry).
Nf &nf_at(std::size_t i)
{
    const std::vector<Case> &all = all_cases();
    static std::vector<std::unique_ptr<Nf>> nfs(2 * all.size());
    if (nfs[i] == nullptr) {
        nfs[i] = std::make_unique<Nf>(all[i % all.size()], i < all.size() ? 1024 : 16);
    }
    return *nfs[i];
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    FuzzedDataProvider in(data, size);
    Nf &nf = nf_at(in.ConsumeIntegralInRange<std::size_t>(0, 2 * all_cases().size() - 1));
    std::mt19937 rng(in.ConsumeIntegral<uint32_t>());
    for (std::size_t packets = 0; in.remaining_bytes() > 0 && packets < max_packets;) {
        Bytes frame;
        switch (in.ConsumeIntegralInRange<int>(0, 7)) {
        case 0:
            frame = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, max_frame));
            break;
        case 1:
        case 2:
            frame = edit(in, valid_frame(rng, nf.passed));
            break;
        case 3:
        case 4:
            if (!nf.passed.empty()) {
                const Bytes &out = nf.passed[in.ConsumeIntegralInRange<std::size_t>(0, nf.passed.size() - 1)];
                bool v6 = false;
                std::string from, to;
                if (addresses(out, v6, from, to)) { // IPv4 or IPv6 and long enough for either
                    frame = edit(in, in.ConsumeBool() ? unreachable(rng, v6, to, from, out) : reply_to(out));
                }
            }
            break;
        case 5:
            nf.flush();
            continue;
        case 6:
            nf.restart();
            continue;
        default:
            // The clock moves on, by up to a minute or by hours, and the
            // host sweeps idle flows.
            nf.flush();
            nf.now += in.ConsumeBool() ? in.ConsumeIntegral<uint16_t>() * 1'000'000ull
                                       : in.ConsumeIntegralInRange<uint64_t>(1, 40'000) * kSec;
            nf.host->expire_flows(nf.now);
            continue;
        }
        if (frame.size() > max_frame) {
            frame.resize(max_frame);
        }
        nf.burst.push_back(std::make_unique<Packet>(frame));
        ++packets;
        if (nf.burst.size() == 32) {
            nf.flush();
        }
    }
    nf.flush();
    nf.now += 1'000'000; // the next input's packets come later
    return 0;
}

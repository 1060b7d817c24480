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
// byte edits), run the burst, or move the clock on and sweep flows.  A packet
// given a port the NF does not have, or left outside its buffer, aborts.

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

// The fuzzer's edits to a frame: a few bytes XORed, then maybe a cut or junk
// at the end.
Bytes edit(FuzzedDataProvider &in, Bytes f)
{
    const unsigned flips = in.ConsumeIntegralInRange<unsigned>(0, 3);
    for (unsigned i = 0; i < flips && !f.empty(); ++i) {
        const std::size_t at = in.ConsumeIntegral<uint16_t>() % f.size();
        f[at] ^= in.ConsumeIntegral<uint8_t>();
    }
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
        f.resize(in.ConsumeIntegralInRange<std::size_t>(0, f.size()));
        break;
    case 1: {
        const Bytes junk = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, 64));
        f.insert(f.end(), junk.begin(), junk.end());
        break;
    }
    default:
        break;
    }
    return f;
}

// One NF on its mock host.  It lives across inputs, as an NF lives across
// batches in a running host: creating a host, its state and the NF per input
// ran 9 inputs a second.  So a crash may need the inputs before it too.
struct Nf {
    const Case &c;
    std::unique_ptr<MockHost> host;
    Ctx *ctx = nullptr;
    uint64_t now = kSec;
    std::vector<Bytes> passed; // up to 64 frames the NF let through
    std::vector<std::unique_ptr<Packet>> burst;

    explicit Nf(const Case &nf_case) : c(nf_case), host(host_for(nf_case))
    {
        host->flow_capacity = 1024; // small, so inputs fill it
        if (host->init(ctx) != SERPENS_OK) {
            fail(c, "init refused the hostile config");
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

Nf &nf_at(std::size_t i)
{
    static const std::vector<Case> all = cases();
    static std::vector<std::unique_ptr<Nf>> nfs(all.size());
    if (nfs[i] == nullptr) {
        nfs[i] = std::make_unique<Nf>(all[i]);
    }
    return *nfs[i];
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, std::size_t size)
{
    FuzzedDataProvider in(data, size);
    Nf &nf = nf_at(in.ConsumeIntegralInRange<std::size_t>(0, cases().size() - 1));
    std::mt19937 rng(in.ConsumeIntegral<uint32_t>());
    for (std::size_t packets = 0; in.remaining_bytes() > 0 && packets < max_packets;) {
        Bytes frame;
        switch (in.ConsumeIntegralInRange<int>(0, 6)) {
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

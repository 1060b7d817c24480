// Every NF against frames an attacker can put on the wire (hostile.h):
// valid frames, replies and ICMP errors about the NF's own output, then
// mutated: bytes flipped where headers and lengths lie, cut at any length,
// padded with junk.  Each goes through the host's parser and the NF on the
// mock host, in bursts, over time, with the flow sweep between; the NF must
// give every packet a port it has (or drop it) and leave it inside its
// buffer.  The unit tests also run under ASan/UBSan, which catch any read
// or write outside a frame (the mock packet is fenced).

#include "hostile.h"

#include <doctest/doctest.h>

using namespace nfmock;
using namespace nfhostile;

namespace {

const Case &case_named(const std::string &name)
{
    static const std::vector<Case> all = cases();
    for (const Case &c : all) {
        if (name == c.name) {
            return c;
        }
    }
    throw std::runtime_error("no hostile case " + name);
}

void run_hostile(const Case &c, uint32_t seed)
{
    const std::unique_ptr<MockHost> host = host_for(c);
    MockHost &h = *host;
    Ctx *ctx = nullptr;
    REQUIRE_MESSAGE(h.init(ctx) == SERPENS_OK, h.all_logs());
    const serpens_nf_descriptor &desc = *ctx->desc;
    std::mt19937 rng(seed);
    uint64_t now = kSec;
    uint64_t sent = 0, dropped = 0;
    std::vector<Bytes> passed; // up to 256 frames the NF let through
    for (int burst = 0; burst < 1000; ++burst) {
        std::vector<std::unique_ptr<Packet>> owned;
        std::vector<Packet *> pkts;
        const unsigned n = 1 + rng() % 32;
        for (unsigned i = 0; i < n; ++i) {
            Bytes f = valid_frame(rng, passed);
            owned.push_back(std::make_unique<Packet>(rng() % 3 == 0 ? f : mutate(rng, f)));
            pkts.push_back(owned.back().get());
        }
        const std::vector<uint8_t> ports = h.run(*ctx, pkts, now);
        REQUIRE(ports.size() == n);
        for (unsigned i = 0; i < n; ++i) {
            const Packet &p = *pkts[i];
            INFO(std::string(c.name) << " burst " << burst << " packet " << i);
            CHECK((ports[i] < desc.n_ports || ports[i] == SERPENS_PORT_DROP));
            // Whatever the NF did to it, the frame stays inside its buffer.
            const bool inside = p.view.data >= p.buf && p.view.data + p.view.len <= p.buf + Packet::capacity;
            CHECK(inside);
            dropped += ports[i] == SERPENS_PORT_DROP;
            if (ports[i] != SERPENS_PORT_DROP && inside) {
                Bytes out(p.view.data, p.view.data + p.view.len);
                if (passed.size() < 256) {
                    passed.push_back(std::move(out));
                } else {
                    passed[rng() % passed.size()] = std::move(out);
                }
            }
        }
        sent += n;
        // Time goes on, some bursts a long way, and the host sweeps flows.
        now += rng() % 16 == 0 ? 700 * kSec : kSec / 1000;
        if (burst % 50 == 49) {
            h.expire_flows(now);
        }
    }
    // The mix reached the NF's deep paths, not only its first checks.
    for (const char *counter : c.reached) {
        INFO(std::string(c.name) << " counter " << std::string(counter));
        CHECK(h.counter(0, counter) > 0);
    }
    MESSAGE(std::string(c.name) << ": " << sent << " hostile frames, " << dropped << " dropped");
}

} // namespace

TEST_CASE("hostile frames: fw") { run_hostile(case_named("fw"), 1); }

TEST_CASE("hostile frames: nat") { run_hostile(case_named("nat"), 2); }

TEST_CASE("hostile frames: mon") { run_hostile(case_named("mon"), 3); }

TEST_CASE("hostile frames: ids") { run_hostile(case_named("ids"), 4); }

TEST_CASE("hostile frames: vpn") { run_hostile(case_named("vpn"), 5); }

TEST_CASE("hostile frames: lb") { run_hostile(case_named("lb"), 6); }

// nat with the host's per-flow idle expiry on: it must not take a mapping
// away from the NF, or the mapping's external port never returns to the
// pool.  Eight ports, eight flows, a host idle expiry far shorter than nat's
// UDP timeout, a quiet period longer than both: afterwards eight new flows
// must get ports again.

#include "mock_host.h"

#include "core/clock.h"
#include "state/executor.h"

#include <doctest/doctest.h>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

constexpr uint64_t kSec = 1000000000ull;

// One batch of UDP packets from 10.0.0.1:<sport> for each sport.
void send(MockHost &h, uint16_t first_sport, uint16_t n, uint64_t now)
{
    Packets p;
    for (uint16_t i = 0; i < n; ++i) {
        p.add(frame({17, ip4("10.0.0.1"), ip4("198.51.100.9"), static_cast<uint16_t>(first_sport + i), 53}));
    }
    h.process(0, p.parse(), p.ports, now);
}

} // namespace

TEST_CASE("nat: a mapping outlives the host's idle expiry, and its port returns to the pool when nat expires it")
{
    MockHost h(NF_PLUGIN);
    h.api().flow_visit_every = nullptr; // a 1.5 host: nat's own tables, the host's table expiry
    serpens::state::StoreOptions o;
    o.flow_idle_timeout_ns = 10 * kSec;
    o.expire_budget = 1u << 20; // one tick sweeps every slot
    h.set_store_options(o);
    h.set_config("inside = \"10.0.0.0/8\"\nexternal = \"203.0.113.1\"\nports = [1024, 1031]\nmax_mappings = 64\n"
                 "[config.timeouts]\nudp = 120\n");
    REQUIRE(h.init(0) == SERPENS_OK);
    const uint64_t t0 = serpens::monotonic_ns();
    send(h, 5000, 8, t0);
    CHECK(h.counter(0, "mappings_created") == 8);
    send(h, 6000, 1, t0 + 1000);
    CHECK(h.counter(0, "pool_exhausted") == 1); // the 8 ports are taken

    // A quiet minute: the host's 10 s idle expiry runs, nat sees nothing.
    h.tick(t0 + 60 * kSec);
    // The host kept the mappings: replies are still translated back.
    MockTable *in = h.table("in");
    REQUIRE(in != nullptr);
    CHECK(in->entries().size() == 8);

    // Past nat's own 120 s UDP timeout traffic resumes: the first batch's
    // sweep frees the idle mappings' ports, and new flows get them.
    send(h, 7000, 1, t0 + 200 * kSec);
    send(h, 7001, 8, t0 + 200 * kSec + 1000);
    CHECK(h.counter(0, "mappings_expired") == 8);
    CHECK(h.counter(0, "mappings_created") == 8 + 8);
    CHECK(h.counter(0, "pool_exhausted") == 1 + 1); // only the one that came before the sweep
}

TEST_CASE("state: NF_EXPIRY is a per-flow flag; other tables refuse it")
{
    serpens::state::TableSpec spec;
    spec.name = "t";
    spec.key_size = 8;
    spec.value_size = 8;
    spec.capacity = 8;
    spec.flags = SERPENS_STATE_PER_FLOW | SERPENS_STATE_WRITE | SERPENS_STATE_NF_EXPIRY;
    CHECK(serpens::state::validate_spec(spec).empty());
    spec.flags = SERPENS_STATE_GLOBAL | SERPENS_STATE_READ | SERPENS_STATE_NF_EXPIRY;
    CHECK(serpens::state::validate_spec(spec).find("NF_EXPIRY only applies to PER_FLOW") != std::string::npos);
}

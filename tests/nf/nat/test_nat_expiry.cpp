// nat on the host's real state store (not the mock): the host's own per-flow
// idle expiry must not take a mapping away from the NF, or the mapping's
// external port never returns to the pool.  Eight ports, eight flows, a
// host idle expiry far shorter than nat's UDP timeout, a quiet period longer
// than both: afterwards eight new flows must get ports again.

#include "mock_host.h" // frames, the parser and run_batch (its MockHost is not used here)

#include "core/nf_context.h"
#include "plugin/host_api.h"
#include "state/executor.h"

#include <doctest/doctest.h>

#include <unistd.h>

using namespace nfmock;
using namespace nfmock::ipv4_frames;

namespace {

constexpr uint64_t kSec = 1000000000ull;

struct RealHost {
    std::filesystem::path dir;
    std::unique_ptr<serpens::state::StateStore> store;
    serpens_host_api api{};
    serpens_config cfg;
    serpens::NfContext nc;
    const serpens_nf_descriptor *desc;
    bool initialised = false;

    RealHost(const std::string &config, uint64_t idle_ns)
        : desc(load_plugin(NF_PLUGIN))
    {
        char tmpl[] = "/tmp/serpens-natexp-XXXXXX";
        dir = mkdtemp(tmpl);
        serpens::state::StoreOptions o;
        o.root = dir / "state";
        o.flow_idle_timeout_ns = idle_ns;
        o.expire_budget = 1u << 20; // one tick sweeps every slot
        store = std::make_unique<serpens::state::StateStore>(o);
        api = serpens::make_host_api(serpens::PacketOps{});
        const std::string file = (dir / "chain.toml").string();
        std::ofstream(file) << "[config]\n" << config;
        auto doc = std::make_shared<toml::table>(toml::parse_file(file));
        cfg.document = doc;
        cfg.table = (*doc)["config"].as_table();
        cfg.file = file;
        cfg.directory = dir.string();
        nc.chain_name = "c";
        nc.nf_name = "nat";
        nc.desc = desc;
        nc.executor = &store->executor("c", "nat");
        nc.pub.struct_size = sizeof nc.pub;
        nc.pub.instance_id = 0;
        nc.pub.host = &api;
        nc.pub.chain_name = nc.chain_name.c_str();
        nc.pub.nf_name = nc.nf_name.c_str();
        nc.pub.host_private = &nc;
    }
    ~RealHost()
    {
        if (initialised && desc->fini) {
            desc->fini(&nc.pub);
        }
        store.reset();
        std::filesystem::remove_all(dir);
    }
    int init()
    {
        initialised = true;
        return desc->init(&nc.pub, &cfg);
    }
    uint64_t counter(const char *name) { return *nc.counters.get(name); }
    // One batch of UDP packets from 10.0.0.1:<sport> for each sport.
    void send(uint16_t first_sport, uint16_t n, uint64_t now)
    {
        Packets p;
        for (uint16_t i = 0; i < n; ++i) {
            p.add(frame({17, ip4("10.0.0.1"), ip4("198.51.100.9"), static_cast<uint16_t>(first_sport + i), 53}));
        }
        run_batch(desc, &nc.pub, p.parse(), p.ports, now);
    }
};

} // namespace

TEST_CASE("nat: a mapping outlives the host's idle expiry, and its port returns to the pool when nat expires it")
{
    RealHost h("inside = \"10.0.0.0/8\"\nexternal = \"203.0.113.1\"\nports = [1024, 1031]\nmax_mappings = 64\n"
               "[config.timeouts]\nudp = 120\n",
               10 * kSec);
    REQUIRE(h.init() == SERPENS_OK);
    const uint64_t t0 = serpens::monotonic_ns();
    h.store->tick(t0);
    h.send(5000, 8, t0);
    CHECK(h.counter("mappings_created") == 8);
    h.send(6000, 1, t0 + 1000);
    CHECK(h.counter("pool_exhausted") == 1); // the 8 ports are taken

    // A quiet minute: the host's 10 s idle expiry runs, nat sees nothing.
    h.store->tick(t0 + 60 * kSec);
    // The host kept the mappings: replies are still translated back.
    serpens::state::Table *in = h.nc.executor->find("in");
    REQUIRE(in != nullptr);
    CHECK(in->live() == 8);

    // Past nat's own 120 s UDP timeout traffic resumes: the first batch's
    // sweep frees the idle mappings' ports, and new flows get them.
    h.send(7000, 1, t0 + 200 * kSec);
    h.send(7001, 8, t0 + 200 * kSec + 1000);
    CHECK(h.counter("mappings_expired") == 8);
    CHECK(h.counter("mappings_created") == 8 + 8);
    CHECK(h.counter("pool_exhausted") == 1 + 1); // only the one that came before the sweep
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

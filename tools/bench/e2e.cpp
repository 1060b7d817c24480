// serpens-bench e2e — paper Figs. 16/17: each NF and the FW -> MON -> NAT
// chain on emulations of four serverless platforms, all on one core:
//   Fission   load binary per batch (dlopen, NF init, run, fini, dlclose),
//             executor-based chaining, remote state (redis)
//   OpenFaaS  load binary per batch, gateway-based chaining, remote state
//   SAND      fork per batch, direct chaining, remote state
//   Serpens   one ChainInstance by function calls, local shared-memory state
// Remote state: the RemoteClient shim (remote_state.h) — every state request of
// an NF goes to a real redis-server, pipelined per batch.  Without redis or
// hiredis the baselines print "skipped" rows and only Serpens is measured.

#include "bench.h"
#include "lab_chain.h"
#include "pipeline.h"
#include "remote_state.h"
#include "workers.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <sys/mman.h>

#include <cstring>
#include <iostream>

namespace serpens::bench {
namespace {

struct ForkArea {
    uint16_t labels[max_burst];
    uint32_t out;
};

class E2eBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--workloads", _workloads, "NFs / chains (default fw nat mon ids vpn fw-mon-nat)");
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
        app.add_option("--rules", _rules, "fw rules")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_workloads.empty()) {
            _workloads = {"fw", "nat", "mon", "ids", "vpn", "fw-mon-nat"};
        }
        const int cpu = opts.cpu >= 0 ? opts.cpu : first_worker_cpu(opts);
        if (cpu >= 0) {
            pin_self(cpu);
        }
        ScratchDir dir("e2e");
        RedisServer redis;
        if (!redis.available()) {
            std::cout << "e2e: skipped: remote-state baselines (" << redis.why() << ")\n";
        }
        Traffic traffic = make_traffic(10000, opts.quick ? 20000 : 100000, 64);
        Table t{"e2e",
                fmt::format("Figs. 16/17: NFs and the FW->MON->NAT SFC on emulated platforms, one core (CPU {}), "
                            "Mpps, batch {} (median [min..max] of {})",
                            cpu, _batch, opts.repeat),
                {"workload", "platform", "mpps", "mpps_min", "mpps_max", "serpens_x"},
                {}};
        std::string ratios;
        unsigned serial = 0;
        NfParams params;
        params.fw_rules = _rules;
        // Small enough pools/tables that a per-batch NF init (cold platforms)
        // stays in milliseconds; the same config on every platform.
        params.nat_external = "203.0.113.0/30";
        params.mon_hosts = 4096;
        params.flows = 10000;
        for (const std::string &w : _workloads) {
            std::vector<std::string> nfs = split_chain(w);
            Summary serpens;
            {
                NfChain chain(opts, dir, nfs, params, fmt::format("s{}", serial++));
                serpens = time_in_place(opts, chain, traffic, _batch);
            }
            std::vector<std::pair<std::string, Summary>> rows;
            for (const char *platform : {"Fission", "OpenFaaS", "SAND"}) {
                if (!redis.available()) {
                    t.rows.push_back({w, platform, "skipped: " + redis.why(), "-", "-", "-"});
                    continue;
                }
                rows.emplace_back(platform,
                                  run_platform(opts, platform, dir, nfs, params, redis, traffic, cpu, serial));
            }
            rows.emplace_back("Serpens", serpens);
            for (const auto &[name, s] : rows) {
                const double x = s.median / serpens.median;
                t.rows.push_back({w, name, fmt_num(_batch * 1e3 / s.median), fmt_num(_batch * 1e3 / s.max),
                                  fmt_num(_batch * 1e3 / s.min), fmt_num(x)});
                std::cout << fmt::format("  {:<11} {:<9} {:>9} Mpps  (Serpens x{})\n", w, name, t.rows.back()[2],
                                         fmt_num(x));
                if (w == "fw-mon-nat" && name == "SAND") {
                    ratios += fmt::format("SFC FW->MON->NAT: Serpens / SAND = {}x (paper: 74.2x; target >= 50x): "
                                          "{}\n",
                                          fmt_num(x), x >= 50 ? "MEETS" : "BELOW");
                }
            }
            std::cout.flush();
        }
        print_table(t);
        std::cout << ratios;
        write_csv(opts, t);
        write_notes(
            opts, t.name,
            std::string(ratios +
                        fmt::format("\nAll threads pinned to CPU {}; 10k flows of 64 B TCP/UDP; fw {} rules.  "
                                    "Fission/OpenFaaS: every NF hop of every batch dlopens the plugin, compiles the "
                                    "chain, runs NF init (fw: parses its rules; ids: compiles its Hyperscan "
                                    "database), processes, runs fini and dlcloses — a cold function per batch, "
                                    "what \"load binary per batch\" means.  Chaining through a chainer + router "
                                    "(Fission) or a re-classifying gateway (OpenFaaS) thread; SAND: one thread per "
                                    "NF with direct rings, each hop forks a child that processes the batch.  "
                                    "Remote state: every get/put/delete the NF makes is also sent to a "
                                    "redis-server on loopback, pipelined and awaited once per batch per NF (the NF "
                                    "reads values from a local mirror so it behaves exactly as with local state).  "
                                    "ids keeps its streams per instance (no host state calls), so it pays no redis "
                                    "traffic.  `serpens_x` = Serpens throughput / this platform's.\n",
                                    cpu, _rules)) +
                "\n" + reference_note(opts));
        plot_with_reference(opts, t, PlotSpec{"bar", "workload", "platform", {"mpps"}, "", "", "Mpps (log)", true});
        return 0;
    }

private:
    Summary run_platform(const Options &opts, const std::string &platform, const ScratchDir &dir,
                         const std::vector<std::string> &nfs, const NfParams &params, const RedisServer &redis,
                         const Traffic &traffic, int cpu, unsigned &serial)
    {
        const bool cold = platform != "SAND";
        const unsigned n = static_cast<unsigned>(nfs.size());
        std::vector<std::unique_ptr<NfChain>> chains;
        std::vector<std::unique_ptr<RemoteClient>> clients;
        std::vector<std::unique_ptr<ChainInstance>> insts;
        std::vector<ForkArea *> areas;
        for (unsigned i = 0; i < n; ++i) {
            chains.push_back(std::make_unique<NfChain>(opts, dir, std::vector<std::string>{nfs[i]}, params,
                                                       fmt::format("p{}", serial++), !cold));
            clients.push_back(std::make_unique<RemoteClient>(redis, chains.back()->local_api()));
            if (!cold) {
                clients.back()->bind();
                insts.push_back(chains.back()->instance(0, clients.back()->api()));
                void *mem = mmap(nullptr, sizeof(ForkArea), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
                if (mem == MAP_FAILED) {
                    throw std::runtime_error("mmap failed");
                }
                areas.push_back(static_cast<ForkArea *>(mem));
            }
        }
        struct ForkJob {
            ChainInstance *inst;
            RemoteClient *client;
            LabBatch *b;
            ForkArea *area;
        };
        Pipeline::Hop hop;
        if (cold) {
            hop = [&](unsigned stage, LabBatch &b) {
                clients[stage]->bind();
                chains[stage]->run_cold(clients[stage]->api(), b);
                clients[stage]->flush();
                b.compact();
            };
        } else {
            hop = [&](unsigned stage, LabBatch &b) {
                ForkJob fj{insts[stage].get(), clients[stage].get(), &b, areas[stage]};
                const Job job{[](void *p, unsigned) {
                                  auto *f = static_cast<ForkJob *>(p);
                                  f->area->out =
                                      f->inst->run(f->b->pkts.data(), f->b->n, f->b->labels.data(), now_ns());
                                  f->client->flush();
                                  std::memcpy(f->area->labels, f->b->labels.data(), f->b->n * sizeof(uint16_t));
                              },
                              &fj};
                run_in_child(job);
                std::memcpy(b.labels.data(), areas[stage]->labels, b.n * sizeof(uint16_t));
                b.compact();
            };
        }
        const Chaining c = platform == "Fission"    ? Chaining::executor
                           : platform == "OpenFaaS" ? Chaining::gateway
                                                    : Chaining::direct;
        Summary s;
        {
            Pipeline pipe(c, n, hop, cpu);
            std::vector<std::unique_ptr<LabBatch>> batches;
            std::size_t cursor = 0;
            const unsigned inflight = 2;
            for (unsigned i = 0; i < inflight; ++i) {
                batches.push_back(std::make_unique<LabBatch>(_batch));
                batches.back()->load(traffic, cursor, _batch);
                pipe.submit(batches.back().get());
            }
            s = summarize(measure(opts, [&](uint64_t iters) {
                for (uint64_t i = 0; i < iters; ++i) {
                    LabBatch *b = pipe.wait();
                    b->load(traffic, cursor, _batch);
                    pipe.submit(b);
                }
            }));
            for (unsigned i = 0; i < inflight; ++i) {
                pipe.wait();
            }
        }
        for (ForkArea *a : areas) {
            munmap(a, sizeof(ForkArea));
        }
        return s;
    }

    std::vector<std::string> _workloads;
    uint32_t _batch = 32;
    uint32_t _rules = 100;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(E2eBench, "e2e",
                         "paper Figs. 16/17: NFs and FW->MON->NAT on Fission/OpenFaaS/SAND emulations vs Serpens", 45);

} // namespace serpens::bench

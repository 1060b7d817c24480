// serpens-bench chaining — paper Fig. 15: throughput of chains of 1..5
// firewalls on one core under four ways of chaining NFs:
//   executor-based  every hop goes NF -> chainer thread -> router thread -> next NF
//   gateway-based   every hop returns to a gateway thread, which re-classifies
//                   the packets and sends them to the next NF
//   direct          NF-to-NF rings, one thread per NF
//   Serpens         one ChainInstance: the whole chain by function calls
// Every thread is pinned to the measuring CPU ("one core"); rings are SPSC
// with spin-then-yield, so a hand-off between threads costs a context switch
// as it does on a loaded core.  Each NF is the real fw plugin (--rules rules).

#include "bench.h"
#include "lab_chain.h"
#include "pipeline.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

namespace serpens::bench {
namespace {

class ChainingBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--max-len", _max_len, "longest chain of firewalls")->capture_default_str();
        app.add_option("--rules", _rules, "fw rules")->capture_default_str();
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
        app.add_option("--inflight", _inflight, "batches in flight (thread-based models)")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        const int cpu = opts.cpu >= 0 ? opts.cpu : first_worker_cpu(opts);
        ScratchDir dir("chaining");
        Traffic traffic = make_traffic(10000, opts.quick ? 20000 : 100000, 64);
        Table t{"chaining",
                fmt::format("Fig. 15: chains of N firewalls on one core (CPU {}), Mpps, batch {} (median [min..max] "
                            "of {})",
                            cpu, _batch, opts.repeat),
                {"model", "nfs", "mpps", "mpps_min", "mpps_max", "x_vs_direct"},
                {}};
        std::vector<uint32_t> lens;
        for (uint32_t n = 1; n <= _max_len; ++n) {
            if (!opts.quick || n == 1 || n == 3 || n == _max_len) {
                lens.push_back(n);
            }
        }
        if (cpu >= 0) {
            pin_self(cpu);
        }
        unsigned serial = 0;
        for (uint32_t n : lens) {
            NfParams params;
            params.fw_rules = _rules;
            std::vector<std::string> fws(n, "fw");
            // Serpens: one instance of the whole chain.
            Summary serpens;
            {
                NfChain chain(opts, dir, fws, params, fmt::format("c{}", serial++));
                serpens = time_in_place(opts, chain, traffic, _batch);
            }
            std::vector<std::pair<std::string, Summary>> rows;
            for (Chaining c : {Chaining::executor, Chaining::gateway, Chaining::direct}) {
                // One single-fw chain per hop, each its own executor (state).
                std::vector<std::unique_ptr<NfChain>> chains;
                std::vector<std::unique_ptr<ChainInstance>> insts;
                for (uint32_t i = 0; i < n; ++i) {
                    chains.push_back(std::make_unique<NfChain>(opts, dir, std::vector<std::string>{"fw"}, params,
                                                               fmt::format("c{}", serial++)));
                    insts.push_back(chains.back()->instance(0));
                }
                Pipeline pipe(
                    c, n,
                    [&insts](unsigned stage, LabBatch &b) {
                        insts[stage]->run(b.pkts.data(), b.n, b.labels.data(), now_ns());
                        b.compact();
                    },
                    cpu);
                rows.emplace_back(chaining_name(c), drive(opts, pipe, traffic));
            }
            rows.emplace_back("Serpens", serpens);
            const double direct = rows[2].second.median;
            for (const auto &[name, s] : rows) {
                t.rows.push_back({name, std::to_string(n), fmt_num(_batch * 1e3 / s.median),
                                  fmt_num(_batch * 1e3 / s.max), fmt_num(_batch * 1e3 / s.min),
                                  fmt_num(direct / s.median)});
                std::cout << fmt::format("  {:<15} {} fw: {:>8} Mpps\n", name, n, t.rows.back()[2]);
            }
            std::cout.flush();
        }
        print_table(t);
        write_csv(opts, t);
        write_notes(opts, t.name,
                    std::string(fmt::format(
                        "Each NF is the real fw plugin ({} rules, none matching, default allow), 10k flows "
                        "of 64 B.  Thread-based models keep {} batches in flight; every thread (NFs, "
                        "chainer, router, gateway, driver) is pinned to CPU {}.  The driver thread loads and "
                        "parses each batch in every model (Serpens included).  Paper Fig. 15: Serpens' "
                        "throughput stays flat with chain length while thread-based chaining falls with "
                        "each hop; `x_vs_direct` is the speed-up over direct chaining.\n",
                        _rules, _inflight, cpu)) +
                        "\n" + reference_note(opts));
        plot_with_reference(opts, t, PlotSpec{"line", "nfs", "model", {"mpps"}, "", "", "Mpps (log)", true});
        return 0;
    }

private:
    // ns per batch through the pipeline, `_inflight` batches circulating.
    Summary drive(const Options &opts, Pipeline &pipe, const Traffic &traffic)
    {
        std::vector<std::unique_ptr<LabBatch>> batches;
        std::size_t cursor = 0;
        for (unsigned i = 0; i < _inflight; ++i) {
            batches.push_back(std::make_unique<LabBatch>(_batch));
            batches.back()->load(traffic, cursor, _batch);
            pipe.submit(batches.back().get());
        }
        for (std::size_t i = 0; i < traffic.size(); i += _batch) { // establish every flow
            LabBatch *b = pipe.wait();
            b->load(traffic, cursor, _batch);
            pipe.submit(b);
        }
        Summary s = summarize(measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                LabBatch *b = pipe.wait();
                b->load(traffic, cursor, _batch);
                pipe.submit(b);
            }
        }));
        for (unsigned i = 0; i < _inflight; ++i) {
            pipe.wait();
        }
        return s;
    }

    uint32_t _max_len = 5;
    uint32_t _rules = 100;
    uint32_t _batch = 32;
    unsigned _inflight = 4;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ChainingBench, "chaining",
                         "paper Fig. 15: chains of 1..5 fw on one core: executor, gateway, direct, Serpens", 40);

} // namespace serpens::bench

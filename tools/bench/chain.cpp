// serpens-bench chain — what one NF hop costs in the chaining runtime,
// against handing each batch to a kernel-thread pool worker (issue
// acceptance; paper §III-B, §IV-D).
//
// Both sides run the very same chain (hops x the noop plugin, loaded from its
// .so, compiled by compile_chain, run by ChainInstance::run).  The runtime
// side calls it; the pool side hands each batch to a pool worker that calls
// it and signals completion.  The difference is the cost of the hand-off.

#include "bench.h"
#include "fixture.h"
#include "workers.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

namespace serpens::bench {
namespace {

class ChainBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--hops", _hops, "NFs in the chain (noop plugin each)")->capture_default_str();
        _batch_opt = app.add_option("--batch", _batches, "batch sizes to measure (default 8 32 128 256; --quick: 32)")
                         ->expected(1, -1);
        app.add_option("--workers", _workers, "kernel threads in the pool")->capture_default_str();
        app.add_option("--target-ns", _target_ns, "target: runtime ns per packet per hop (informational)")
            ->capture_default_str();
        app.add_option("--target-ratio", _target_ratio,
                       "target: pool hand-off / runtime cost per batch (informational)")
            ->capture_default_str();
        app.add_option("--target-batch", _target_batch, "batch size the targets are judged at")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        std::vector<uint32_t> batches = _batches;
        if (_batch_opt == nullptr || _batch_opt->count() == 0) {
            batches = opts.quick ? std::vector<uint32_t>{_target_batch} : std::vector<uint32_t>{8, 32, 128, 256};
        }
        NoopChain chain(opts.plugin_dir, _hops);
        std::cout << fmt::format("chain: {} x noop ({}), {} pool worker(s) on CPUs {}\n", _hops, chain.plugin_path(),
                                 _workers, opts.worker_cpus_text);

        Table table{"chain",
                    fmt::format("Chain runtime vs kThread-pool hand-off ({} noop hops, ns; median [min..max] of {})",
                                _hops, opts.repeat),
                    {"model", "batch", "hops", "ns_per_batch", "ns_per_batch_min", "ns_per_batch_max", "ns_per_pkt_hop",
                     "ns_per_pkt_hop_min", "ns_per_pkt_hop_max", "x_vs_call"},
                    {}};
        std::string verdicts;
        for (uint32_t n : batches) {
            if (n == 0 || n > max_burst) {
                throw std::runtime_error(fmt::format("--batch {} outside 1..{}", n, max_burst));
            }
            chain.verify(n);
            const Summary call = summarize(measure_call(opts, chain, n));
            const Summary pool = summarize(measure_pool(opts, chain, n));
            add_row(table, "function call (runtime)", n, call, call.median);
            add_row(table, "kThread pool hand-off", n, pool, call.median);
            if (n == _target_batch) {
                verdicts += verdict(n, call, pool);
            }
        }
        print_table(table);
        if (verdicts.empty()) {
            verdicts = fmt::format("(batch {} not measured: no verdict)\n", _target_batch);
        }
        std::cout << '\n' << verdicts;
        write_csv(opts, table);
        write_notes(opts, table.name,
                    "Targets (issue acceptance): <= " + fmt_num(_target_ns) + " ns per packet per hop, >= " +
                        fmt_num(_target_ratio) + "x cheaper per batch than the thread-pool hand-off.\n\n" + verdicts);
        plot(opts, table,
             PlotSpec{"line",
                      "batch",
                      "model",
                      {"ns_per_batch"},
                      "ns_per_batch_min",
                      "ns_per_batch_max",
                      "ns per batch (log)",
                      true});
        return 0;
    }

private:
    struct PoolArg {
        std::vector<std::unique_ptr<ChainInstance>> *instances;
        PacketBatch *batch;
        uint32_t out;
    };

    static void run_batch(void *p, unsigned worker)
    {
        auto *arg = static_cast<PoolArg *>(p);
        arg->out =
            (*arg->instances)[worker]->run(arg->batch->pkts.data(), arg->batch->size(), arg->batch->labels.data(), 0);
    }

    static std::vector<double> measure_call(const Options &opts, const NoopChain &chain, uint32_t n)
    {
        auto instance = chain.instance(0);
        PacketBatch batch(n);
        return measure(opts, [&](uint64_t iters) {
            uint64_t out = 0;
            for (uint64_t i = 0; i < iters; ++i) {
                out += instance->run(batch.pkts.data(), n, batch.labels.data(), i);
            }
            keep(out);
        });
    }

    std::vector<double> measure_pool(const Options &opts, const NoopChain &chain, uint32_t n) const
    {
        std::vector<std::unique_ptr<ChainInstance>> instances;
        for (unsigned w = 0; w < _workers; ++w) {
            instances.push_back(chain.instance(w));
        }
        PacketBatch batch(n);
        PoolArg arg{&instances, &batch, 0};
        const Job job{run_batch, &arg};
        KThreadPool pool(_workers, opts.worker_cpus);
        auto samples = measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                pool.run(job);
            }
        });
        if (arg.out != n) {
            throw std::runtime_error("pool worker's batch did not reach egress");
        }
        return samples;
    }

    void add_row(Table &table, const char *model, uint32_t n, const Summary &s, double call_median) const
    {
        const double per = static_cast<double>(n) * _hops;
        table.rows.push_back({model, std::to_string(n), std::to_string(_hops), fmt_num(s.median), fmt_num(s.min),
                              fmt_num(s.max), fmt_num(s.median / per), fmt_num(s.min / per), fmt_num(s.max / per),
                              fmt_num(s.median / call_median)});
    }

    std::string verdict(uint32_t n, const Summary &call, const Summary &pool) const
    {
        const double per_hop = call.median / (static_cast<double>(n) * _hops);
        const double ratio = pool.median / call.median;
        // Ratio range from the extremes of both sides, to show how noisy it was.
        return fmt::format("batch {}: runtime {} ns/packet/hop (target <= {}): {}\n"
                           "batch {}: pool hand-off {} ns/batch vs runtime {} ns/batch = {}x "
                           "(range {}x..{}x; target >= {}x): {}\n",
                           n, fmt_num(per_hop), fmt_num(_target_ns), per_hop <= _target_ns ? "PASS" : "MISS", n,
                           fmt_num(pool.median), fmt_num(call.median), fmt_num(ratio), fmt_num(pool.min / call.max),
                           fmt_num(pool.max / call.min), fmt_num(_target_ratio),
                           ratio >= _target_ratio ? "PASS" : "MISS");
    }

    uint32_t _hops = 3;
    std::vector<uint32_t> _batches;
    CLI::Option *_batch_opt = nullptr;
    unsigned _workers = 1;
    double _target_ns = 2.0;
    double _target_ratio = 50.0;
    uint32_t _target_batch = 32;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ChainBench, "chain",
                         "runtime cost per packet per NF hop vs a kernel-thread-pool hand-off per batch", 10);

} // namespace serpens::bench

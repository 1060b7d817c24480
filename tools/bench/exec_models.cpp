// serpens-bench exec-models — paper Fig. 13: throughput and latency of the
// firewall NF (plugins/fw, --rules rules generated into a scratch dir, state
// in a real StateStore) under each execution model — fork per batch, kernel
// thread per batch, kernel-thread pool, user-thread pool, function call —
// for batch sizes 1..256.
//
// Throughput: back-to-back batches (load + parse + launch + wait), Mpps =
// batch / time per batch, median [min..max] of --repeat repeats.
// Latency: at --load (default 30%) of the model's own measured maximum, a
// paced open-loop schedule (arrival i at t0 + i * interval, independent of
// completions); each batch is served when the model is free; latency =
// completion - scheduled arrival (queueing included), mean and p99.

#include "bench.h"
#include "lab_chain.h"
#include "models.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

namespace serpens::bench {
namespace {

class ExecModelsBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--rules", _rules, "fw rules")->capture_default_str();
        app.add_option("--batches", _batches, "batch sizes (default 1 2 4 ... 256; --quick: 1 32 256)");
        app.add_option("--load", _load, "offered load for latency, fraction of each model's max")
            ->capture_default_str();
        app.add_option("--flows", _flows, "flows in the traffic")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_batches.empty()) {
            _batches = opts.quick ? std::vector<uint32_t>{1, 32, 256}
                                  : std::vector<uint32_t>{1, 2, 4, 8, 16, 32, 64, 128, 256};
        }
        ScratchDir dir("exec");
        NfParams params;
        params.fw_rules = _rules;
        params.flows = _flows;
        NfChain chain(opts, dir, {"fw"}, params, "exec");
        Traffic traffic = make_traffic(_flows, opts.quick ? 20000 : 100000, 64);
        std::vector<std::unique_ptr<ChainInstance>> instances;
        for (unsigned w = 0; w < Launcher::workers(); ++w) {
            instances.push_back(chain.instance(w));
        }
        LabBatch batch;
        std::size_t cursor = 0;
        // Establish the flows once (the fork model's children cannot: their
        // state writes die with them).
        for (std::size_t i = 0; i < traffic.size(); i += 32) {
            batch.load(traffic, cursor, 32);
            instances[0]->run(batch.pkts.data(), batch.n, batch.labels.data(), now_ns());
        }
        Arg arg{&instances, &batch};
        const Job job{run_batch, &arg};

        Table tp{"exec-models",
                 fmt::format("Fig. 13 (throughput): fw ({} rules) under each execution model, Mpps vs batch size "
                             "(median [min..max] of {})",
                             _rules, opts.repeat),
                 {"model", "batch", "mpps", "mpps_min", "mpps_max", "us_per_batch"},
                 {}};
        Table lt{"exec-models-latency",
                 fmt::format("Fig. 13 (latency): fw under each model at {:.0f}% of the model's own max throughput "
                             "(us, paced open-loop)",
                             _load * 100),
                 {"model", "batch", "mean_us", "p50_us", "p99_us", "offered_mpps", "batches"},
                 {}};
        for (Model m : all_models) {
            Launcher launcher(m, opts);
            for (uint32_t b : _batches) {
                const Summary s = summarize(measure(opts, [&](uint64_t iters) {
                    for (uint64_t i = 0; i < iters; ++i) {
                        batch.load(traffic, cursor, b);
                        launcher.run(job);
                    }
                }));
                tp.rows.push_back({model_name(m), std::to_string(b), fmt_num(b * 1e3 / s.median),
                                   fmt_num(b * 1e3 / s.max), fmt_num(b * 1e3 / s.min), fmt_num(s.median / 1e3)});
                const double interval = s.median / _load;
                const double budget_ns = (opts.quick ? 0.15 : 1.0) * 1e9;
                const uint64_t n =
                    std::clamp<uint64_t>(static_cast<uint64_t>(budget_ns / interval), 30, opts.quick ? 300 : 5000);
                const Latency l = paced_latency(interval, n, [&](uint64_t) {
                    batch.load(traffic, cursor, b);
                    launcher.run(job);
                });
                lt.rows.push_back({model_name(m), std::to_string(b), fmt_num(l.mean_us), fmt_num(l.p50_us),
                                   fmt_num(l.p99_us), fmt_num(b * 1e3 / interval), std::to_string(l.batches)});
                std::cout << fmt::format("  {:<15} batch {:>3}: {:>8} Mpps, latency at {:.0f}%: mean {} us, p99 {} "
                                         "us\n",
                                         model_name(m), b, tp.rows.back()[2], _load * 100, fmt_num(l.mean_us),
                                         fmt_num(l.p99_us));
                std::cout.flush();
            }
        }
        print_table(tp);
        print_table(lt);
        write_csv(opts, tp);
        write_csv(opts, lt);
        const std::string notes = fmt::format(
            "The real fw plugin ({} generated rules, none matching, default allow; verdicts in the host's "
            "StateStore), {} flows of 64 B TCP/UDP, established before timing.  Each launch loads + parses the "
            "batch on the measuring thread, then hands it to the model and waits for completion: fork = a child "
            "per batch (copy-on-write; SAND-like), kThread create = a thread per batch, kThread pool = one "
            "parked pool worker (mutex + condvar), uThread pool = ucontext switch on the measuring thread, "
            "function call = Serpens.  Worker threads on CPUs {}.  Latency: open-loop schedule at {:.0f}% of "
            "that model's median max throughput (the schedule is the generator: arrivals never wait for "
            "completions; a late batch queues), completion - scheduled arrival.  Paper Fig. 13 shows the same "
            "ordering (fork << kThread create < kThread pool < uThread < call) on their hardware; their absolute "
            "numbers are not reproduced here.\n",
            _rules, _flows, opts.worker_cpus_text, _load * 100);
        write_notes(opts, tp.name, notes + "\n" + reference_note(opts));
        write_notes(opts, lt.name, notes);
        plot_with_reference(opts, tp, PlotSpec{"line", "batch", "model", {"mpps"}, "", "", "Mpps (log)", true});
        plot(opts, lt, PlotSpec{"line", "batch", "model", {"p99_us"}, "", "", "p99 latency, us (log)", true});
        return 0;
    }

private:
    struct Arg {
        std::vector<std::unique_ptr<ChainInstance>> *instances;
        LabBatch *batch;
    };
    static void run_batch(void *p, unsigned worker)
    {
        auto *a = static_cast<Arg *>(p);
        keep((*a->instances)[worker]->run(a->batch->pkts.data(), a->batch->n, a->batch->labels.data(), now_ns()));
    }

    uint32_t _rules = 100;
    std::vector<uint32_t> _batches;
    double _load = 0.3;
    uint32_t _flows = 10000;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(ExecModelsBench, "exec-models",
                         "paper Fig. 13: fw throughput and latency under fork/kThread/uThread/function call", 25);

} // namespace serpens::bench

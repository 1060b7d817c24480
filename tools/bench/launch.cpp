// serpens-bench launch — paper Table II: what it costs to launch an NF on a
// batch under each execution model.  Every model runs the same job (the noop
// chain on one batch) and waits for it to finish; the time per launch is the
// whole round trip, so "function call" is the job's own cost and every other
// row is that plus its launch overhead.

#include "bench.h"
#include "fixture.h"
#include "workers.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <functional>
#include <iostream>

namespace serpens::bench {
namespace {

// Paper Table II (and §II-C for fork), microseconds per launch.
struct PaperRow {
    const char *model;
    double us;
};
constexpr PaperRow paper_rows[] = {
    {"fork per batch", 249.72}, {"kThread create", 23.66}, {"kThread pool", 5.57},
    {"uThread pool", 0.46},     {"function call", 0.11},
};

class LaunchBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--hops", _hops, "NFs in the launched chain (noop plugin each)")->capture_default_str();
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
        app.add_option("--workers", _workers, "kernel threads in the kThread pool")->capture_default_str();
        app.add_option("--uthreads", _uthreads, "user-level threads in the uThread pool")->capture_default_str();
        app.add_option("--stack-kib", _stack_kib, "stack per user-level thread, KiB")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_batch == 0 || _batch > max_burst) {
            throw std::runtime_error(fmt::format("--batch {} outside 1..{}", _batch, max_burst));
        }
        NoopChain chain(opts.plugin_dir, _hops);
        chain.verify(_batch);
        std::cout << fmt::format("launch: job = {} x noop on {} packets; kThread workers on CPUs {}\n", _hops, _batch,
                                 opts.worker_cpus_text);

        // One instance per possible worker index: instances are single-threaded.
        const unsigned n_instances = std::max({1u, _workers, _uthreads});
        std::vector<std::unique_ptr<ChainInstance>> instances;
        for (unsigned w = 0; w < n_instances; ++w) {
            instances.push_back(chain.instance(w));
        }
        PacketBatch batch(_batch);
        Arg arg{&instances, &batch, 0};
        const Job job{run_batch, &arg};

        std::vector<Summary> ours;
        // Kept in paper_rows order; each model lives only while it is measured
        // (no pool thread exists while the fork model runs).
        ours.push_back(time_model(opts, [&] { run_in_child(job); }));
        ours.push_back(time_model(opts, [&] { run_in_new_thread(job, opts.worker_cpus); }));
        {
            KThreadPool pool(_workers, opts.worker_cpus);
            ours.push_back(time_model(opts, [&] { pool.run(job); }));
        }
        {
            UThreadPool pool(_uthreads, static_cast<std::size_t>(_stack_kib) * 1024);
            ours.push_back(time_model(opts, [&] { pool.run(job); }));
        }
        ours.push_back(summarize(measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                job.fn(job.arg, 0); // what the packet fetcher does in Serpens
            }
        })));
        if (arg.out != _batch) {
            throw std::runtime_error("a launched batch did not reach egress");
        }

        Table table{"launch",
                    fmt::format("NF launch models, paper Table II (us per launch; job = {} noop hop(s) on {} packets; "
                                "median [min..max] of {})",
                                _hops, _batch, opts.repeat),
                    {"model", "us_per_launch", "us_min", "us_max", "x_vs_call", "paper_us", "paper_x_vs_call"},
                    {}};
        const Summary &call = ours.back();
        const double paper_call = paper_rows[std::size(paper_rows) - 1].us;
        for (std::size_t i = 0; i < ours.size(); ++i) {
            const Summary &s = ours[i];
            table.rows.push_back({paper_rows[i].model, fmt_num(s.median / 1e3), fmt_num(s.min / 1e3),
                                  fmt_num(s.max / 1e3), fmt_num(s.median / call.median), fmt_num(paper_rows[i].us),
                                  fmt_num(paper_rows[i].us / paper_call)});
        }
        print_table(table);
        write_csv(opts, table);
        write_notes(opts, table.name,
                    fmt::format("Round trip per batch including the job itself ({} noop hop(s), {} packets); the "
                                "function-call row is the job's own cost.  fork: the child inherits the parent's "
                                "CPU; kThread models: workers on CPUs {}; uThread pool: {} ucontext threads on the "
                                "measuring thread.  Paper numbers from Table II / §II-C, their hardware.\n",
                                _hops, _batch, opts.worker_cpus_text, _uthreads));
        plot(opts, table,
             PlotSpec{
                 "bar", "model", "", {"us_per_launch", "paper_us"}, "us_min", "us_max", "us per launch (log)", true});
        return 0;
    }

private:
    struct Arg {
        std::vector<std::unique_ptr<ChainInstance>> *instances;
        PacketBatch *batch;
        uint32_t out;
    };

    static void run_batch(void *p, unsigned worker)
    {
        auto *arg = static_cast<Arg *>(p);
        arg->out =
            (*arg->instances)[worker]->run(arg->batch->pkts.data(), arg->batch->size(), arg->batch->labels.data(), 0);
    }

    // A std::function call per launch costs ~1 ns: noise next to these models.
    static Summary time_model(const Options &opts, const std::function<void()> &launch)
    {
        return summarize(measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                launch();
            }
        }));
    }

    uint32_t _hops = 1;
    uint32_t _batch = 32;
    unsigned _workers = 1;
    unsigned _uthreads = 4;
    unsigned _stack_kib = 64;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(LaunchBench, "launch",
                         "paper Table II: per-batch launch cost of fork, kThread create/pool, uThread pool, "
                         "function call",
                         20);

} // namespace serpens::bench

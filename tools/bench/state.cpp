// serpens-bench state — paper Fig. 11: each NF (fw, nat, mon, ids, vpn)
// with local shared-memory state (the host's StateStore) vs the same NF with
// its state requests sent to a real redis-server on loopback (RemoteClient:
// pipelined per batch); and Fig. 14: remote state under function call vs a
// kernel-thread pool.  The bench starts and stops its own redis-server;
// without redis-server or hiredis the remote rows say "skipped".

#include "bench.h"
#include "lab_chain.h"
#include "models.h"
#include "remote_state.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <iostream>

namespace serpens::bench {
namespace {

class StateBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--nfs", _nfs, "NFs (default fw nat mon ids vpn)");
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_nfs.empty()) {
            _nfs = {"fw", "nat", "mon", "ids", "vpn"};
        }
        ScratchDir dir("state");
        RedisServer redis;
        if (!redis.available()) {
            std::cout << "state: skipped: remote rows (" << redis.why() << ")\n";
        }
        Traffic traffic = make_traffic(10000, opts.quick ? 20000 : 100000, 64);
        Table t{"state",
                fmt::format("Figs. 11/14: NFs with local state vs state in redis (pipelined per batch), Mpps, batch "
                            "{} (median [min..max] of {})",
                            _batch, opts.repeat),
                {"nf", "state", "model", "mpps", "mpps_min", "mpps_max", "redis_req_per_batch", "local_x"},
                {}};
        unsigned serial = 0;
        for (const std::string &nf : _nfs) {
            NfParams params;
            params.nat_external = "203.0.113.0/30";
            params.mon_hosts = 4096;
            Summary local;
            {
                NfChain chain(opts, dir, {nf}, params, fmt::format("l{}", serial++));
                auto inst = chain.instance(0);
                local = time_chain(opts, *inst, nullptr, traffic, Model::function_call);
            }
            t.rows.push_back({nf, "local", "function call", fmt_num(_batch * 1e3 / local.median),
                              fmt_num(_batch * 1e3 / local.max), fmt_num(_batch * 1e3 / local.min), "0", "1"});
            for (Model m : {Model::function_call, Model::kthread_pool}) {
                if (!redis.available()) {
                    t.rows.push_back({nf, "redis", model_name(m), "skipped: " + redis.why(), "-", "-", "-", "-"});
                    continue;
                }
                NfChain chain(opts, dir, {nf}, params, fmt::format("r{}", serial++));
                RemoteClient client(redis, chain.local_api());
                client.bind();
                auto inst = chain.instance(0, client.api());
                double per_batch = 0;
                const Summary s = time_chain(opts, *inst, &client, traffic, m, &per_batch);
                t.rows.push_back({nf, "redis", model_name(m), fmt_num(_batch * 1e3 / s.median),
                                  fmt_num(_batch * 1e3 / s.max), fmt_num(_batch * 1e3 / s.min), fmt_num(per_batch),
                                  fmt_num(s.median / local.median)});
            }
            for (std::size_t i = t.rows.size() - 3; i < t.rows.size(); ++i) {
                std::cout << fmt::format("  {:<5} {:<6} {:<14} {:>9} Mpps\n", t.rows[i][0], t.rows[i][1], t.rows[i][2],
                                         t.rows[i][3]);
            }
            std::cout.flush();
        }
        print_table(t);
        write_csv(opts, t);
        write_notes(
            opts, t.name,
            std::string(
                "Local: the NF's tables in the host's StateStore (shared memory), NF run by function call.  "
                "Redis: the same NF built with the RemoteClient shim — each get/put/delete/bulk is appended to "
                "a pipeline (GET/SET/DEL on redis) that is sent and fully answered at the end of every batch "
                "(the paper aggregated requests per batch); the NF reads values from the local mirror, so its "
                "behaviour is the same.  Fig. 14's comparison is the two redis rows: function call vs "
                "handing each batch to a kernel-thread-pool worker.  `local_x` = local throughput / this row's.  "
                "The flows are established (one pass, neither timed nor counted) before timing.  "
                "`redis_req_per_batch` counts the requests of timed batches: an NF whose per-flow state is its "
                "area in the chain's flow table (fw, mon, nat outbound) reaches it without a table call, and "
                "ids keeps its Hyperscan streams per instance, so their established flows send redis nothing "
                "and their redis rows measure only the launch model; the shim does not move the chain's flow "
                "table to redis.\n") +
                "\n" + reference_note(opts));
        plot_with_reference(opts, t, PlotSpec{"bar", "nf", "model", {"mpps"}, "", "", "Mpps (log)", true});
        return 0;
    }

private:
    struct Arg {
        ChainInstance *inst;
        LabBatch *b;
        RemoteClient *client;
    };
    static void job_fn(void *p, unsigned)
    {
        auto *a = static_cast<Arg *>(p);
        keep(a->inst->run(a->b->pkts.data(), a->b->n, a->b->labels.data(), now_ns()));
        if (a->client != nullptr) {
            a->client->flush();
        }
    }

    // `requests_per_batch`: the redis requests of a timed batch, on average
    // (the pass that establishes the flows is not timed, nor counted).
    Summary time_chain(const Options &opts, ChainInstance &inst, RemoteClient *client, const Traffic &traffic, Model m,
                       double *requests_per_batch = nullptr)
    {
        LabBatch b(_batch);
        std::size_t cursor = 0;
        Arg arg{&inst, &b, client};
        const Job job{job_fn, &arg};
        Launcher launcher(m, opts);
        for (std::size_t i = 0; i < traffic.size(); i += _batch) {
            b.load(traffic, cursor, _batch);
            launcher.run(job);
        }
        uint64_t count = 0;
        const uint64_t before = client ? client->requests() : 0;
        auto s = summarize(measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                b.load(traffic, cursor, _batch);
                launcher.run(job);
            }
            count += iters;
        }));
        if (requests_per_batch != nullptr && client != nullptr && count > 0) {
            *requests_per_batch = static_cast<double>(client->requests() - before) / static_cast<double>(count);
        }
        return s;
    }

    std::vector<std::string> _nfs;
    uint32_t _batch = 32;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(StateBench, "state",
                         "paper Figs. 11/14: NFs with local state vs redis (function call and kThread pool)", 42);

} // namespace serpens::bench

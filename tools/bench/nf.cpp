// serpens-bench nf — the NF library's cost: ns per packet of each NF alone
// (fw with --fw-rules rules, nat, mon, ids, vpn, lb) and of FW -> MON -> NAT,
// on 64 B and 512 B frames over 10k and 1M flows; and the firewall's
// established-flow cost at 1, 1000 and 10000 rules (issue "The NF library":
// within 10% of each other).
//
// Everything is in memory through the lab fixture (lab_chain.h): the real
// plugins, chains compiled by the host's code, state in a real StateStore,
// traffic from tools/support/traffic.h.  Each timed batch is copied into packet
// buffers and parsed first, as the dataplane does; that load+parse cost is
// measured alone ("parse only") and subtracted, so ns_pkt is the chain's own
// cost.  Before timing, one whole pass over the traffic establishes every
// flow; the timed passes then cycle over it (established flows, a working set
// of `flows` entries).

#include "bench.h"
#include "lab_chain.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>

#include <array>
#include <iostream>
#include <memory>

namespace serpens::bench {
namespace {

class NfBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--fw-rules", _fw_rules, "rules of the fw (alone and in the chain)")->capture_default_str();
        app.add_option("--sizes", _sizes, "frame sizes, bytes (default 64 512)");
        app.add_option("--flows", _flows, "flow counts (default 10000 1000000; --quick: 10000)");
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
        app.add_option("--nfs", _nfs, "NFs to measure (default fw nat mon ids vpn lb fw-mon-nat)");
    }

    int run(const Options &opts) override
    {
        if (_sizes.empty()) {
            _sizes = {64, 512};
        }
        if (_flows.empty()) {
            _flows = opts.quick ? std::vector<uint32_t>{10000} : std::vector<uint32_t>{10000, 1000000};
        }
        if (_nfs.empty()) {
            _nfs = {"fw", "nat", "mon", "ids", "vpn", "lb", "fw-mon-nat"};
        }
        if (_batch == 0 || _batch > max_burst) {
            throw std::runtime_error(fmt::format("--batch must be 1..{}", max_burst));
        }
        pin_like(opts);
        ScratchDir dir("nf");
        Table t{"nf",
                fmt::format("NF cost in memory, ns per packet (median [min..max] of {}; load+parse subtracted), "
                            "batch {}",
                            opts.repeat, _batch),
                {"nf", "size", "flows", "ns_pkt", "ns_pkt_min", "ns_pkt_max", "ns_pkt_raw", "mpps", "egress_pct"},
                {}};
        unsigned serial = 0;
        for (uint32_t flows : _flows) {
            for (uint32_t size : _sizes) {
                const uint64_t cap_pkts = std::max<uint64_t>(flows, (256ull << 20) / size);
                const uint64_t packets = std::max<uint64_t>(flows, std::min<uint64_t>(4ull * flows, cap_pkts));
                const uint64_t t0 = now_ns();
                Traffic traffic = make_traffic(flows, opts.quick ? std::max<uint64_t>(flows, 20000) : packets, size);
                std::cout << fmt::format("nf: {} packets of {} B over {} flows generated in {:.2f} s\n", traffic.size(),
                                         size, flows, (now_ns() - t0) / 1e9);
                std::cout.flush();
                // The fixture's own cost: copy + parse.
                LabBatch b(_batch);
                std::size_t cursor = 0;
                const Summary parse = summarize(measure(opts, [&](uint64_t iters) {
                    for (uint64_t i = 0; i < iters; ++i) {
                        b.load(traffic, cursor, _batch);
                        keep(b.pkts[0].flow_hash);
                    }
                }));
                const double parse_pkt = parse.median / _batch;
                t.rows.push_back({"parse only", std::to_string(size), std::to_string(flows), fmt_num(parse_pkt),
                                  fmt_num(parse.min / _batch), fmt_num(parse.max / _batch), fmt_num(parse_pkt), "-",
                                  "-"});
                for (const std::string &name : _nfs) {
                    std::vector<std::string> nfs = split_chain(name);
                    NfParams params;
                    params.fw_rules = _fw_rules;
                    params.flows = flows;
                    NfChain chain(opts, dir, nfs, params, fmt::format("nf{}", serial++));
                    auto row = measure_chain(opts, chain, traffic, parse_pkt);
                    row.insert(row.begin(), {name == "fw" ? fmt::format("fw ({} rules)", _fw_rules) : name,
                                             std::to_string(size), std::to_string(flows)});
                    t.rows.push_back(row);
                    std::cout << fmt::format("  {:<18} {:>4} B {:>8} flows  {:>8} ns/pkt\n", t.rows.back()[0], size,
                                             flows, row[3]);
                    std::cout.flush();
                }
            }
        }
        print_table(t);
        write_csv(opts, t);
        plot(opts, t, PlotSpec{"bar", "nf", "size", {"ns_pkt"}, "", "", "ns per packet", true});

        if (std::find(_nfs.begin(), _nfs.end(), "fw") == _nfs.end()) {
            return 0; // the rule-count table is about fw alone
        }
        // The firewall's established-flow cost against the number of rules.
        Table r{"nf-fw-rules",
                "fw established-flow cost vs rules, 64 B, 10k flows (ns per packet, load+parse subtracted)",
                {"rules", "ns_pkt", "ns_pkt_min", "ns_pkt_max", "x_1rule"},
                {}};
        {
            Traffic traffic = make_traffic(10000, opts.quick ? 20000 : 200000, 64);
            LabBatch b(_batch);
            std::size_t cursor = 0;
            const double parse_pkt = summarize(measure(opts,
                                                       [&](uint64_t iters) {
                                                           for (uint64_t i = 0; i < iters; ++i) {
                                                               b.load(traffic, cursor, _batch);
                                                           }
                                                       }))
                                         .median /
                                     _batch;
            // Every firewall is built and warmed first, then all are timed in
            // interleaved rounds (each round in another order): drift in the
            // machine's load hits them alike, and the verdict uses per-round
            // ratios, not medians taken minutes apart.  Each rule count is
            // built twice, the second set in reverse order, because where a
            // chain lands in memory moved its cost by up to ~10% here (the
            // last one built was slower, whatever its rules).
            const std::array<uint32_t, 3> rule_counts = {1u, 1000u, 10000u};
            struct Case {
                std::size_t rules_index;
                std::unique_ptr<NfChain> chain;
                std::unique_ptr<ChainInstance> inst;
                std::size_t cursor = 0;
            };
            std::vector<Case> cases;
            for (std::size_t k = 0; k < 2 * rule_counts.size(); ++k) {
                const std::size_t ri = k < rule_counts.size() ? k : 2 * rule_counts.size() - 1 - k;
                NfParams params;
                params.fw_rules = rule_counts[ri];
                params.flows = 10000;
                Case c;
                c.rules_index = ri;
                c.chain = std::make_unique<NfChain>(opts, dir, std::vector<std::string>{"fw"}, params,
                                                    fmt::format("rules{}-{}", rule_counts[ri], k));
                c.inst = c.chain->instance(0);
                for (std::size_t done = 0; done < traffic.size(); done += _batch) { // establish every flow
                    b.load(traffic, c.cursor, _batch);
                    c.inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns());
                }
                cases.push_back(std::move(c));
            }
            auto run_case = [&](Case &c, uint64_t iters) {
                for (uint64_t i = 0; i < iters; ++i) {
                    b.load(traffic, c.cursor, _batch);
                    keep(c.inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns()));
                }
            };
            // One calibration (on the 1-rule case) sets the iterations of every timed run.
            Options one = opts;
            one.repeat = 1;
            uint64_t iters = 0;
            measure(one, [&](uint64_t n) {
                iters = n;
                run_case(cases[0], n);
            });
            const int rounds = std::max(2 * opts.repeat, 7);
            std::vector<std::vector<double>> ns(rule_counts.size()), ratio(rule_counts.size());
            for (int round = 0; round < rounds; ++round) {
                std::vector<double> sum(rule_counts.size(), 0.0);
                for (std::size_t k = 0; k < cases.size(); ++k) {
                    Case &c = cases[(k + static_cast<std::size_t>(round)) % cases.size()];
                    const uint64_t t0 = now_ns();
                    run_case(c, iters);
                    const double per_pkt = static_cast<double>(now_ns() - t0) / static_cast<double>(iters) / _batch;
                    sum[c.rules_index] += std::max(0.0, per_pkt - parse_pkt) / 2; // two builds each
                }
                for (std::size_t i = 0; i < rule_counts.size(); ++i) {
                    ns[i].push_back(sum[i]);
                    ratio[i].push_back(sum[0] > 0 ? sum[i] / sum[0] : 0);
                }
            }
            for (std::size_t i = 0; i < rule_counts.size(); ++i) {
                const Summary v = summarize(ns[i]);
                r.rows.push_back({std::to_string(rule_counts[i]), fmt_num(v.median), fmt_num(v.min), fmt_num(v.max),
                                  fmt_num(summarize(ratio[i]).median)});
            }
        }
        print_table(r);
        write_csv(opts, r);
        double worst = 0;
        for (const auto &row : r.rows) {
            worst = std::max(worst, std::abs(std::stod(row[4]) - 1));
        }
        const std::string verdict =
            fmt::format("fw established-flow cost: 1000 and 10000 rules vs 1 rule within {:.0f}% (median of per-round "
                        "ratios; target 10%): {}",
                        worst * 100, worst <= 0.10 ? "MEETS" : "MISSES");
        std::cout << verdict << '\n';
        plot(opts, r, PlotSpec{"bar", "rules", "", {"ns_pkt"}, "ns_pkt_min", "ns_pkt_max", "ns per packet", false});
        write_notes(opts, "nf",
                    "Real plugins through the lab fixture (tools/bench/lab_chain.h): chain compiled by the host's "
                    "code, state in a StateStore in a scratch directory, TCP/UDP IPv4 traffic from "
                    "tools/support/traffic.h (no VLAN, no malformed frames).  Every timed batch is copied into packet "
                    "buffers and parsed, as the dataplane does; that cost is the `parse only` row and is "
                    "subtracted from `ns_pkt` (`ns_pkt_raw` keeps it).  A whole pass over the traffic "
                    "establishes every flow before timing; each batch carries the real clock, as in "
                    "serpens-host, so work an NF paces by time (nat's expiry sweep) is in the figure.  "
                    "`egress_pct`: packets that left the chain (the "
                    "rest were dropped by an NF's verdict: e.g. nat drops nothing here, vpn passes replies "
                    "that match no SA).  fw rules: generated, none matches the traffic, `default allow`.\n");
        write_notes(opts, "nf-fw-rules",
                    verdict + "\n\nFirewalls with 1, 1000 and 10000 generated rules (none matching, default "
                              "allow), each built twice (the second set in reverse order, so memory placement, "
                              "which moved a chain's cost by up to ~10% on this machine, cancels out), every flow "
                              "established before timing; then rounds time each once, in rotating order, with "
                              "the same number of batches.  ns: the mean of a rule count's two builds in a "
                              "round, median/min/max over rounds.  `x_1rule`: the median over rounds of that "
                              "round's ratio to 1 rule, so load drift between rounds cancels.\n");
        return 0;
    }

private:
    // {ns_pkt, min, max, raw, mpps, egress%}
    std::vector<std::string> measure_chain(const Options &opts, NfChain &chain, const Traffic &traffic,
                                           double parse_pkt)
    {
        auto inst = chain.instance(0);
        LabBatch b(_batch);
        std::size_t cursor = 0;
        // Establish every flow.
        uint64_t in = 0, out = 0;
        for (std::size_t done = 0; done < traffic.size(); done += _batch) {
            b.load(traffic, cursor, _batch);
            out += inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns());
            in += b.n;
        }
        // Each batch gets the real clock, as in serpens-host: work an NF
        // paces by time (nat's expiry sweep) then costs what it costs there.
        const auto samples = measure(opts, [&](uint64_t iters) {
            for (uint64_t i = 0; i < iters; ++i) {
                b.load(traffic, cursor, _batch);
                keep(inst->run(b.pkts.data(), b.n, b.labels.data(), now_ns()));
            }
        });
        const Summary s = summarize(samples);
        const double per = s.median / _batch;
        const double net = std::max(0.0, per - parse_pkt);
        return {fmt_num(net),
                fmt_num(std::max(0.0, s.min / _batch - parse_pkt)),
                fmt_num(std::max(0.0, s.max / _batch - parse_pkt)),
                fmt_num(per),
                fmt_num(net > 0 ? 1e3 / net : 0),
                fmt_num(100.0 * static_cast<double>(out) / static_cast<double>(std::max<uint64_t>(1, in)))};
    }

    uint32_t _fw_rules = 1000;
    std::vector<uint32_t> _sizes;
    std::vector<uint32_t> _flows;
    std::vector<std::string> _nfs;
    uint32_t _batch = 32;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(NfBench, "nf",
                         "ns/packet of each NF (fw nat mon ids vpn lb) and FW->MON->NAT; fw cost vs rules", 15);

} // namespace serpens::bench

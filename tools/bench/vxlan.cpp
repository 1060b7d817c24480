// serpens-bench vxlan — what a packet pays to cross to another server and
// back (issue 19): the VXLAN encapsulation on the owning host plus the
// decapsulation on the peer (net/vxlan.h, the work io/vxlan_io.cpp does per
// mbuf besides moving data_off), per packet, beside the pass-through chain
// (one noop NF) on the same packets in the same run.  A packet a peer serves
// crosses twice (there and back), so it pays the pair twice.

#include "bench.h"
#include "fixture.h"

#include "net/vxlan.h"

#include <CLI/CLI.hpp>
#include <arpa/inet.h>
#include <fmt/format.h>

#include <iostream>
#include <stdexcept>

namespace serpens::bench {
namespace {

class VxlanBench : public Subcommand {
public:
    void add_options(CLI::App &app) override
    {
        app.add_option("--batch", _batch, "packets per batch")->capture_default_str();
    }

    int run(const Options &opts) override
    {
        if (_batch == 0 || _batch > max_burst) {
            throw std::runtime_error(fmt::format("--batch {} outside 1..{}", _batch, max_burst));
        }
        if (opts.cpu >= 0) {
            pin_self(opts.cpu);
        }
        NoopChain chain(opts.plugin_dir, 1);
        chain.verify(_batch);
        const Summary pass = summarize(measure_chain(opts, chain));
        const Summary vxlan = summarize(measure_vxlan(opts));
        Table table{"vxlan",
                    fmt::format("VXLAN encap + decap per packet beside the pass-through chain (1 noop), batch {}, ns "
                                "(median [min..max] of {})",
                                _batch, opts.repeat),
                    {"work", "ns_per_pkt", "ns_per_pkt_min", "ns_per_pkt_max", "x_vs_pass_through"},
                    {}};
        auto row = [&](const char *what, const Summary &s) {
            std::vector<std::string> r{what};
            for (const std::string &c : cells(s)) {
                r.push_back(c);
            }
            r.push_back(fmt_num(s.median / pass.median));
            table.rows.push_back(std::move(r));
        };
        row("pass-through chain (1 noop NF)", pass);
        row("VXLAN encap + decap", vxlan);
        print_table(table);
        const std::string verdict =
            fmt::format("A packet served by a peer goes there and back: 2 x {} ns = {} ns of VXLAN, {}x the "
                        "pass-through chain's {} ns, in the same run.\n",
                        fmt_num(vxlan.median), fmt_num(2 * vxlan.median), fmt_num(2 * vxlan.median / pass.median),
                        fmt_num(pass.median));
        std::cout << '\n' << verdict;
        write_csv(opts, table);
        write_notes(opts, table.name, verdict);
        return 0;
    }

private:
    std::vector<double> measure_chain(const Options &opts, const NoopChain &chain) const
    {
        auto instance = chain.instance(0);
        PacketBatch batch(_batch);
        auto per_batch = measure(opts, [&](uint64_t iters) {
            uint64_t out = 0;
            for (uint64_t i = 0; i < iters; ++i) {
                out += instance->run(batch.pkts.data(), _batch, batch.labels.data(), i);
            }
            keep(out);
        });
        for (double &ns : per_batch) {
            ns /= _batch;
        }
        return per_batch;
    }

    std::vector<double> measure_vxlan(const Options &opts) const
    {
        net::VxlanTunnel tunnel;
        tunnel.src_mac = {0x02, 0, 0, 0, 0, 1};
        tunnel.dst_mac = {0x02, 0, 0, 0, 0, 2};
        tunnel.src_ip = htonl(0x0a000001);
        tunnel.dst_ip = htonl(0x0a000002);
        tunnel.vni = 1;
        const net::VxlanEncap encap(tunnel);
        net::VxlanDecapConfig decap;
        decap.local_ip = tunnel.dst_ip;
        decap.vni = 1;
        PacketBatch batch(_batch);
        auto per_batch = measure(opts, [&](uint64_t iters) {
            uint64_t ok = 0;
            for (uint64_t i = 0; i < iters; ++i) {
                for (uint32_t p = 0; p < _batch; ++p) {
                    // Into the headroom in front of the frame, as rte_pktmbuf_prepend would.
                    uint8_t *outer = batch.pkts[p].data - net::kVxlanOuterLen;
                    const uint32_t inner = batch.pkts[p].len;
                    encap.encap(outer, inner, 7, 0, static_cast<uint32_t>(i * 31 + p));
                    const net::VxlanDecapped d = net::vxlan_decap(outer, inner + net::kVxlanOuterLen, decap);
                    ok += d.result == net::VxlanResult::ok ? 1 : 0;
                }
            }
            if (ok != iters * _batch) {
                throw std::runtime_error("a packet did not decapsulate: the benchmark would time a failure");
            }
            keep(ok);
        });
        for (double &ns : per_batch) {
            ns /= _batch;
        }
        return per_batch;
    }

    uint32_t _batch = 32;
};

} // namespace

SERPENS_BENCH_SUBCOMMAND(VxlanBench, "vxlan", "issue 19: VXLAN encap + decap per packet beside the pass-through chain",
                         90);

} // namespace serpens::bench

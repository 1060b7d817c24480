// serpens-bench: the reference line of every throughput figure — what
// dpdk-testpmd io forwarding does on `throughput`'s vdevs and pcap, measured
// once per process (by `throughput`'s own io rounds, or on first use).

#include "bench.h"
#include "process.h"
#include "throughput.h"

#include <fmt/format.h>

#include <iostream>
#include <optional>

namespace serpens::bench {
namespace {

// The one reference measurement of this process (see bench.h).
struct ReferenceCache {
    bool measured = false;
    std::optional<double> mpps;
};
ReferenceCache &reference_cache()
{
    static ReferenceCache cache;
    return cache;
}

// The reference line of every throughput figure: testpmd io forwarding
// on this subcommand's vdevs and pcap, one short run.  Empty when a tool
// is missing (the figures then go without it).
std::optional<double> measure_reference(const Options &opts)
{
    ThroughputRig rig;
    rig.window_s = 1.0;
    rig.warmup_s = 0.3;
    rig.pick_lcores(opts);
    if (which(rig.testpmd_exe).empty() || which(rig.pktgen_exe).empty()) {
        return std::nullopt;
    }
    std::optional<double> mpps;
    rig.in_scratch_dir([&] {
        rig.make_pcap();
        mpps = rig.run_testpmd("io").mpps;
        return 0;
    });
    return mpps;
}

} // namespace

void offer_reference_io_mpps(const Options &opts, double mpps)
{
    if (opts.reference && !reference_cache().measured) {
        reference_cache() = ReferenceCache{true, mpps};
    }
}

std::optional<double> reference_io_mpps(const Options &opts)
{
    ReferenceCache &cache = reference_cache();
    if (!opts.reference) {
        return std::nullopt;
    }
    if (!cache.measured) {
        cache.measured = true;
        std::cout << "reference: measuring dpdk-testpmd io forwarding for the figures' reference line\n";
        try {
            cache.mpps = measure_reference(opts);
        } catch (const std::exception &e) {
            std::cout << "reference: not measured: " << e.what() << '\n';
        }
        if (cache.mpps) {
            std::cout << fmt::format("reference: dpdk-testpmd io {} Mpps\n", fmt_num(*cache.mpps));
        } else {
            std::cout << "reference: none (dpdk-testpmd or serpens-pktgen missing)\n";
        }
    }
    return cache.mpps;
}

void plot_with_reference(const Options &opts, const Table &table, const PlotSpec &spec)
{
    std::optional<RefLine> line;
    if (const auto mpps = reference_io_mpps(opts)) {
        line = RefLine{*mpps, fmt::format("dpdk-testpmd io, same vdevs: {} Mpps", fmt_num(*mpps))};
    }
    plot(opts, table, spec, line);
}

std::string reference_note(const Options &opts)
{
    const auto mpps = reference_io_mpps(opts);
    if (!mpps) {
        return "No reference line: dpdk-testpmd io was not measured in this run (--no-reference, or testpmd "
               "not installed).\n";
    }
    return fmt::format("Reference line: dpdk-testpmd io forwarding, net_pcap replay -> net_null on one core, "
                       "{} Mpps, measured in this run (see `throughput`): the I/O alone, no packet access.\n",
                       fmt_num(*mpps));
}

} // namespace serpens::bench

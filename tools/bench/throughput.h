#pragma once
// serpens-bench throughput (throughput.cpp): what its files share — the
// configurations a row can measure, one run's result, and the rig every run
// is set up on (tools, traffic, lcores, a scratch directory).
//   throughput_setup.cpp    the scratch directory, the pcap and the config files
//   throughput_runners.cpp  one measured run of testpmd or serpens-host
//   throughput_report.cpp   the table, the summary lines and the notes
//   reference.cpp           the testpmd io reference line of every figure

#include "bench.h"
#include "paths.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace serpens::bench {

// One measured run of one configuration.
struct Run {
    double mpps = 0;
    double window_s = 0;
    double cpu_cores = -1; // CPU the process got over the window, in cores; -1 unknown
    uint64_t packets = 0;
    double new_flows_per_s = -1; // serpens with --new-flows: flows its chain created per second; -1 unknown
    // serpens with --new-flows, for floods the chain refuses: packets it took
    // in, flows its full table refused and packets its NFs dropped, per
    // second.  serpens: its batches' latency in the window (histogram
    // buckets' lower bounds).  -1 unknown.
    double rx_mpps = -1;
    double refused_per_s = -1;
    double nf_dropped_per_s = -1;
    double batch_us_p99 = -1;
    double batch_us_max = -1;
};

enum class Kind { testpmd_io, testpmd_macswap, testpmd_macswap_2core, serpens_1core, serpens_2core, serpens_chain };

struct Config {
    Kind kind;
    const char *name;
    const char *tool;
    const char *forward;
    int lcores; // lcores that poll
};

// What one row measures: a configuration, and for serpens_chain its chain.
struct Entry {
    const Config *config;
    std::string chain; // dash-separated plugin names; empty but for serpens_chain
    std::string name;
    std::string forward;
};

// The settings (the subcommand's options) and, once set up, the files and
// lcores every run of `throughput` uses.  One thread uses a rig.
struct ThroughputRig {
    double window_s = 3;
    double warmup_s = 1;
    uint32_t flows = 4096;
    uint32_t size = 64;
    uint32_t packets = 8192;
    std::string mix = "tcp=50,udp=50";
    double vlan_ratio = 0;
    uint32_t burst = 32;
    uint32_t mbufs = 32768;
    uint32_t memory_mb = 512;
    std::string lcores; // "MAIN,FWD" as given, or empty
    std::string testpmd_exe = "dpdk-testpmd";
    std::string host_exe = default_paths().host_exe;
    std::string pktgen_exe = default_paths().pktgen_exe;
    bool keep = false;
    uint32_t fw_rules = 1000;
    bool new_flows = false;     // serpens runs measure the capture's first pass: every packet opens a flow
    std::string state_parent;   // where the host's state goes; empty: where the host's default is (see in_scratch_dir)
    uint64_t flow_capacity = 0; // the chain's flow table; 0: bench_flow_capacity(flows)
    std::string nat_external;   // nat's pool; empty: NfParams' default
    uint32_t mon_fold_ms = 0;   // mon's fold_ms; 0: its default

    int main_lcore = 0;
    int fwd_lcore = 1;
    unsigned runs = 0;
    std::vector<std::string> eal_prefixes; // every run's --file-prefix: their runtime directories go at the end
    std::filesystem::path tmp;
    std::filesystem::path state_root; // host state: <state_parent or the host's default's>/<tmp's name>
    std::filesystem::path pcap;
    std::filesystem::path queue_pcaps[2]; // pcap's flows split in two, one capture per RX queue
    std::string pktgen_cmd;
    std::filesystem::path host_socket; // the control socket of the host last configured
    std::filesystem::path host_state;  // the state_dir of the host last configured

    // throughput_setup.cpp
    // Sets main_lcore and fwd_lcore from `lcores`, else the first two worker CPUs.
    void pick_lcores(const Options &opts);
    // Runs `body` with a fresh temporary directory (tmp); see the definition.
    int in_scratch_dir(const std::function<int()> &body);
    std::string eal_prefix(const char *what);
    // The replayed input: in.pcap on one RX queue, or its two halves on two.
    std::string pcap_vdev(unsigned queues = 1) const;
    // tmp/in.pcap from serpens-pktgen; pktgen_cmd says how.
    void make_pcap();
    // queue_pcaps: in.pcap's flows split in two by the router's buckets, as a
    // NIC whose RSS redirection table follows them would split them: each
    // half's flows belong to the instance of the lcore that receives it.
    void make_queue_pcaps();
    void make_serpens_files(const Options &opts, const std::vector<std::string> &chains);
    // Also sets host_socket, where that host listens.
    std::filesystem::path write_host_toml(bool two_cores, const std::string &chain = "passthrough");

    // throughput_runners.cpp: one measured run each; throw with the log's tail.
    std::vector<std::string> testpmd_argv(const char *mode, bool two_cores);
    Run run_testpmd(const char *mode, bool two_cores = false);
    Run run_serpens(bool two_cores, const std::string &chain = "passthrough");
};

// The index in `chosen` of the row of `kind`; -1 when none.
int find_entry(const std::vector<Entry> &chosen, Kind kind);

// Prints the table and summary of a measured run and writes its CSV, notes
// and figure.  runs[i] holds the rounds of chosen[i].
int report_throughput(const Options &opts, const ThroughputRig &rig, const std::vector<Entry> &chosen,
                      const std::vector<std::vector<Run>> &runs, double target_ratio, const std::string &skipped);

// reference.cpp: this run's io Mpps becomes the reference line, unless one
// was measured already or opts.reference is off.
void offer_reference_io_mpps(const Options &opts, double mpps);

} // namespace serpens::bench

#pragma once
// Real NF chains for the paper's NF-level figures (Figs. 5, 11, 13-17 and
// the NF library's ns/packet): plugins loaded from their .so files, chains
// parsed and compiled by the host's own code, state in a real StateStore in a
// private temporary directory, packets from the host's traffic generator
// (tools/support/traffic.h), parsed by the host's parser before every run, as the
// dataplane does.  Plus the pieces the baselines need: a remote-state shim
// over a real redis-server (hiredis, requests pipelined per batch), and a
// single-producer/single-consumer ring for the thread-based chaining models.

#include "bench.h"

#include "support/mem_packets.h"
#include "chain/runtime.h"
#include "plugin/registry.h"
#include "state/executor.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace serpens::bench {

// A private scratch directory (rules files, state segments, redis), removed
// with the object.  Under /dev/shm when it exists (state segments are files).
class ScratchDir {
public:
    explicit ScratchDir(const std::string &what);
    ~ScratchDir();
    ScratchDir(const ScratchDir &) = delete;
    ScratchDir &operator=(const ScratchDir &) = delete;
    const std::filesystem::path &path() const noexcept { return _path; }

private:
    std::filesystem::path _path;
};

struct LabBatch;

// What every NF of a lab chain is configured with.
struct NfParams {
    uint32_t fw_rules = 100;     // rules in the generated fw rules file (none match the traffic)
    uint64_t flows = 10000;      // sizes per-flow tables (x2, at least 65536)
    std::string fw_state = "auto";
    std::string nat_external = "203.0.113.0/24"; // nat's pool (init cost grows with it)
    uint64_t mon_hosts = 0;                       // 0: sized like the per-flow tables
};

// A chain of NFs (plugin names, e.g. {"fw","mon","nat"}; repeats allowed,
// named <plugin><index>) built as serpens-host builds it.
class NfChain {
public:
    // `state`: the host's state store (nullptr: NFs get no state API slots
    // beyond what `api` has).  Throws Error with what to do.
    // load = false: only the chain file and the state store (for load-per-batch models).
    NfChain(const Options &opts, const ScratchDir &dir, const std::vector<std::string> &nfs, const NfParams &params,
            const std::string &chain_name = "lab", bool load = true);
    // Removes the chain's state directory: a 1M-flow chain's tables take
    // gigabytes of /dev/shm, and a long run builds dozens of chains.
    ~NfChain();
    NfChain(const NfChain &) = delete;
    NfChain &operator=(const NfChain &) = delete;

    // A new instance; `api` replaces the default host API (local state).
    std::unique_ptr<ChainInstance> instance(uint32_t id, const serpens_host_api *api = nullptr);

    const std::vector<std::string> &nfs() const noexcept { return _nfs; }
    const std::string &name() const noexcept { return _name; }
    const serpens_host_api &local_api() const noexcept { return _api; }
    std::string describe() const;
    ExecutorResolver resolver();
    const std::string &toml_text() const noexcept { return _text; }
    const std::string &toml_file() const noexcept { return _file; }
    const std::vector<std::string> &plugin_paths() const noexcept { return _paths; }

    // Load per batch (Fission/OpenFaaS-like): dlopen the plugins, compile the
    // chain, create an instance (NF init), run the batch, destroy everything
    // (NF fini, dlclose).  Only when no loaded NfChain holds the same .so.
    uint32_t run_cold(const serpens_host_api *api, LabBatch &b);

private:
    std::string _text, _file;
    std::vector<std::string> _paths;
    std::vector<std::string> _nfs;
    std::string _name;
    PluginRegistry _registry;
    serpens_host_api _api;
    std::filesystem::path _state_root;
    std::unique_ptr<state::StateStore> _store;
    std::shared_ptr<const CompiledChain> _chain;
};

// A chain's NF names from its dash-separated form ("fw-mon-nat").
std::vector<std::string> split_chain(const std::string &name);
// The plugin an NF name of a lab chain loads: the name itself, or noop for
// the floor NFs "lookup" and "count" (noop with that flow_state: the one
// per-flow state access a stateful NF makes per packet, and nothing else).
std::string lab_plugin(const std::string &nf);
// The chain's TOML text (NF configs included) for `nfs`, files in `dir`.
std::string lab_chain_toml(const std::filesystem::path &dir, const std::vector<std::string> &nfs,
                           const NfParams &params, const std::string &chain_name);
// Writes <dir>/fw-<n>.rules: n-1 deny rules no test packet matches (mixed
// prefix lengths, so the classifier has several tuples), then default allow.
std::string write_fw_rules(const std::filesystem::path &dir, uint32_t n);

// Generated traffic, stored as raw frames (no per-packet allocation).
struct Traffic {
    std::vector<uint8_t> bytes;
    std::vector<uint64_t> offset;
    std::vector<uint32_t> length;
    uint32_t flows = 0;
    std::size_t size() const noexcept { return offset.size(); }
};
// `packets` frames of `frame_size` bytes over `flows` TCP/UDP IPv4 flows, no
// VLANs, no malformed frames (serpens-pktgen's generator).
Traffic make_traffic(uint32_t flows, uint64_t packets, uint32_t frame_size, uint64_t seed = 1);

// A batch as the dataplane hands it to an instance: frames copied into
// packet buffers and parsed (flow hash, offsets) before the chain runs.
struct LabBatch {
    explicit LabBatch(uint32_t cap = max_burst);
    std::vector<MemPacket> storage;
    std::vector<serpens_pkt> pkts;
    std::vector<uint16_t> labels;
    uint32_t n = 0;
    uint64_t t_arrival = 0; // for latency measurements
    uint32_t hop = 0;       // next stage (thread-based chaining)
    // Loads the next `count` frames of `t` from *cursor (wrapping).
    void load(const Traffic &t, std::size_t &cursor, uint32_t count) noexcept;
    // Keeps the packets that reached egress (labels OUT) in order.
    void compact() noexcept;
};
// Serpens' model: an instance of `chain` run by plain function calls on the
// measuring thread.  One pass over `traffic` establishes every flow, then
// timed batches of `batch` frames cycle over it; ns per batch.
Summary time_in_place(const Options &opts, NfChain &chain, const Traffic &traffic, uint32_t batch);

// ---- remote state --------------------------------------------------------

// A redis-server of our own on a free loopback port in a scratch directory
// (`--save '' --appendonly no`), stopped with the object.
class RedisServer {
public:
    RedisServer(); // starts it; available() false with why() when it cannot
    ~RedisServer();
    bool available() const noexcept { return _port > 0; }
    const std::string &why() const noexcept { return _why; }
    int port() const noexcept { return _port; }

private:
    std::unique_ptr<ScratchDir> _dir;
    int _pid = -1;
    int _port = 0;
    std::string _why;
};

// Whether this build has hiredis.
bool have_hiredis() noexcept;

// The remote-state shim: a serpens_host_api whose create_table, get_state,
// put_state, delete_state and get_state_bulk also go to redis.  Every call is
// appended to the client's pipeline (GET / SET / DEL on "<table>:<key>") and
// the batch is not done until flush() has sent the pipeline and read every
// reply — the paper's "requests aggregated per batch".  Values the NF reads
// come from a local mirror (the host's own tables) so the NFs behave exactly
// as with local state; redis pays every request's round trip and work.
class RemoteClient {
public:
    RemoteClient(const RedisServer &server, const serpens_host_api &local);
    ~RemoteClient();
    RemoteClient(const RemoteClient &) = delete;
    RemoteClient &operator=(const RemoteClient &) = delete;
    // The API table to build instances with; tables created through it use
    // this client (one client per thread running the instance).
    const serpens_host_api *api() const noexcept { return &_api; }
    // Sends the pipeline and waits for every reply; returns requests flushed.
    uint32_t flush();
    uint64_t requests() const noexcept { return _requests; }
    // Tables created by instances constructed next on this thread use this client.
    void bind() noexcept;

    struct Impl;

private:
    std::unique_ptr<Impl> _impl;
    serpens_host_api _api;
    uint64_t _requests = 0;
};

// ---- rings ---------------------------------------------------------------

// Single producer, single consumer; pop spins, then yields the CPU (threads
// sharing one core hand over on every empty poll).
class Ring {
public:
    explicit Ring(uint32_t cap = 256);
    bool push(LabBatch *b) noexcept;
    LabBatch *pop() noexcept;            // nullptr when empty
    LabBatch *pop_wait(const std::atomic<bool> &stop) noexcept;
    void push_wait(LabBatch *b) noexcept;

private:
    std::vector<LabBatch *> _slots;
    uint32_t _mask;
    alignas(64) std::atomic<uint32_t> _head{0};
    alignas(64) std::atomic<uint32_t> _tail{0};
};

// Pins the calling thread to opts.cpu when set (all threads of a one-core
// experiment), else leaves it.
void pin_like(const Options &opts);
int first_worker_cpu(const Options &opts);

// Median and spread of samples as table cells.
inline std::vector<std::string> cells(const Summary &s)
{
    return {fmt_num(s.median), fmt_num(s.min), fmt_num(s.max)};
}

} // namespace serpens::bench

#include "workers.h"

namespace serpens::bench {

// The five execution models of paper Table II / Fig. 13 behind one call.
enum class Model { fork_batch, kthread_create, kthread_pool, uthread_pool, function_call };
inline constexpr Model all_models[] = {Model::fork_batch, Model::kthread_create, Model::kthread_pool,
                                       Model::uthread_pool, Model::function_call};
const char *model_name(Model m) noexcept;

class Launcher {
public:
    // Worker indexes passed to jobs are < workers() (instances per index).
    Launcher(Model m, const Options &opts);
    void run(const Job &job);
    static constexpr unsigned workers() { return 1; }

private:
    Model _model;
    cpu_set_t _affinity;
    std::unique_ptr<KThreadPool> _kpool;
    std::unique_ptr<UThreadPool> _upool;
};

// Paced open-loop latency: batches arrive every interval_ns (the schedule
// does not wait for completions); each is served as soon as the server is
// free; latency = completion - scheduled arrival.  serve(i) handles batch i.
struct Latency {
    double mean_us = 0;
    double p50_us = 0;
    double p99_us = 0;
    uint64_t batches = 0;
};
template <class Serve> Latency paced_latency(double interval_ns, uint64_t batches, Serve &&serve);

} // namespace serpens::bench

#include <time.h>

template <class Serve>
serpens::bench::Latency serpens::bench::paced_latency(double interval_ns, uint64_t batches, Serve &&serve)
{
    std::vector<double> lat;
    lat.reserve(batches);
    const uint64_t t0 = now_ns() + 1000000;
    for (uint64_t i = 0; i < batches; ++i) {
        const uint64_t arrival = t0 + static_cast<uint64_t>(interval_ns * static_cast<double>(i));
        for (uint64_t now = now_ns(); now < arrival; now = now_ns()) {
            if (arrival - now > 100000) {
                timespec ts{0, static_cast<long>(arrival - now - 50000)};
                nanosleep(&ts, nullptr);
            }
        }
        serve(i);
        lat.push_back(static_cast<double>(now_ns() - arrival) / 1e3);
    }
    Latency l;
    l.batches = batches;
    double sum = 0;
    for (double v : lat) {
        sum += v;
    }
    l.mean_us = lat.empty() ? 0 : sum / static_cast<double>(lat.size());
    std::sort(lat.begin(), lat.end());
    if (!lat.empty()) {
        l.p50_us = lat[lat.size() / 2];
        l.p99_us = lat[std::min(lat.size() - 1, static_cast<std::size_t>(static_cast<double>(lat.size()) * 0.99))];
    }
    return l;
}

#include <functional>
#include <thread>

namespace serpens::bench {

// How the hops of a chain reach each other when each NF runs in its own
// thread (paper §II-C / Fig. 15), all threads pinned to one core:
//  executor: NF -> chainer thread -> router thread -> next NF (Fission-like)
//  gateway:  NF -> gateway thread (re-classifies every packet) -> next NF (OpenFaaS-like)
//  direct:   NF -> next NF, one ring each (SAND-like)
enum class Chaining { executor, gateway, direct };
const char *chaining_name(Chaining c) noexcept;

class Pipeline {
public:
    // hop(stage, batch) runs NF `stage` on the batch in that stage's thread
    // and leaves only the packets that go on (LabBatch::compact).
    using Hop = std::function<void(unsigned stage, LabBatch &b)>;
    Pipeline(Chaining c, unsigned stages, Hop hop, int cpu);
    ~Pipeline();
    void submit(LabBatch *b); // from the driver thread
    LabBatch *wait();         // a completed batch
private:
    void stage_main(unsigned i);
    void central_main(bool reclassify);
    void router_main();
    Chaining _c;
    unsigned _stages;
    Hop _hop;
    int _cpu;
    std::atomic<bool> _stop{false};
    std::vector<std::unique_ptr<Ring>> _in;  // per stage: its inbox
    std::vector<std::unique_ptr<Ring>> _out; // per stage: to the chainer (star)
    Ring _submit, _done, _to_router;
    std::vector<std::thread> _threads;
};

} // namespace serpens::bench

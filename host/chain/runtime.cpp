#include "chain/runtime.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "plugin/registry.h"
#include "state/executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

namespace serpens {
namespace {

// Names an NF whose init has not returned after `after`: a plugin that spins
// or blocks at start-up would otherwise hang the host with nothing saying
// which one.  It only warns; an init may legitimately take long (a large
// signature set to compile).
class InitWatch {
public:
    InitWatch(const std::string &where, std::chrono::milliseconds after)
    {
        if (after.count() <= 0) {
            return;
        }
        _thread = std::thread([this, where, after] {
            std::unique_lock lock(_mutex);
            auto start = std::chrono::steady_clock::now();
            auto next = after;
            while (!_done) {
                if (_cv.wait_for(lock, start + next - std::chrono::steady_clock::now(), [this] { return _done; })) {
                    break;
                }
                spdlog::warn("init() of {} has not returned after {:.1f} s", where,
                             std::chrono::duration<double>(next).count());
                next *= 2;
            }
        });
    }
    ~InitWatch()
    {
        if (_thread.joinable()) {
            {
                std::lock_guard lock(_mutex);
                _done = true;
            }
            _cv.notify_one();
            _thread.join();
        }
    }
    InitWatch(const InitWatch &) = delete;
    InitWatch &operator=(const InitWatch &) = delete;

private:
    std::mutex _mutex;
    std::condition_variable _cv;
    bool _done = false;
    std::thread _thread;
};

std::string describe_nf(const CompiledChain &chain, const CompiledNf &nf, uint32_t instance_id)
{
    std::string plugin = nf.desc->name;
    if (nf.plugin != nullptr) {
        plugin += ", " + nf.plugin->path();
    }
    return "NF '" + nf.name + "' (plugin " + plugin + ") of chain '" + chain.name + "' instance " +
           std::to_string(instance_id);
}

} // namespace

ChainInstance::ChainInstance(std::shared_ptr<const CompiledChain> chain, uint32_t instance_id,
                             const serpens_host_api *api, const ExecutorResolver &executors,
                             std::chrono::milliseconds init_warn_after, const FlowTableResolver &flows)
    : _chain(std::move(chain)), _instance_id(instance_id)
{
    const std::size_t n = _chain->nfs.size();
    _stats = std::make_unique<NfRunStats[]>(n);
    _pending.assign(n + 2, 0);
    _contexts.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        const CompiledNf &nf = _chain->nfs[i];
        auto ctx = std::make_unique<NfContext>();
        ctx->desc = nf.desc;
        ctx->chain_name = _chain->name;
        ctx->nf_name = nf.name;
        ctx->where = describe_nf(*_chain, nf, instance_id);
        ctx->process_site = "process() of " + ctx->where;
        ctx->fini_site = "fini() of " + ctx->where;
        ctx->executor = executors ? executors(_chain->name, nf.name) : nullptr;
        if (ctx->executor != nullptr) {
            ctx->executor->set_descriptor(nf.desc); // its split/merge/update hooks
        }
        ctx->fill_public(api, instance_id);
        ctx->flow_state_size = flow_state_size(*nf.desc); // init may change it (host API flow_state)
        ctx->flow_visit_ms = flow_visit_ms(*nf.desc);     // and flow_visit_every
        _contexts.push_back(std::move(ctx));

        int rc = SERPENS_OK;
        {
            const std::string site = "init() of " + _contexts.back()->where;
            fault::SiteScope in_init(site.c_str());
            InitWatch watch(_contexts.back()->where, init_warn_after);
            _contexts.back()->in_init = true;
            rc = nf.desc->init(&_contexts.back()->pub, nf.config.get());
            _contexts.back()->in_init = false;
        }
        if (rc != SERPENS_OK) {
            const std::string why = _contexts.back()->init_error.empty() ? "; it logged no error saying why"
                                                                         : ": " + _contexts.back()->init_error;
            finalize(_contexts.size());
            _contexts.clear();
            throw Error("chain '" + _chain->name + "': NF '" + nf.name + "' (plugin " + nf.desc->name +
                        ") refused to start: init returned " + std::to_string(rc) + why);
        }
        // A key the NF never asked for is a typo or a setting it does not
        // have: refuse it rather than run with the default silently.
        if (std::vector<config::UnreadKey> unread = config::unread_key_list(*nf.config); !unread.empty()) {
            finalize(_contexts.size());
            _contexts.clear();
            for (std::size_t k = 1; k < unread.size(); ++k) {
                spdlog::error("{}", unread[k].text);
            }
            throw ConfigError(unread.front().file, unread.front().line, unread.front().column, unread.front().message);
        }
        _slots.push_back(
            {nf.desc->process, &_contexts.back()->pub, nf.next.data(), _contexts.back()->process_site.c_str(), 0,
             has_descriptor_1_5(*nf.desc) ? nf.desc->flow_expired : nullptr,
             has_descriptor_1_6(*nf.desc) ? nf.desc->flow_visit : nullptr, _contexts.back()->flow_visit_ms});
    }
    try {
        open_flow_table(flows);
    } catch (...) {
        finalize(_contexts.size());
        _contexts.clear();
        throw;
    }
    // Global/read state is written in init only: from now on it is read-only.
    for (const auto &ctx : _contexts) {
        if (ctx->executor != nullptr) {
            ctx->executor->seal();
        }
    }
}

ChainInstance::~ChainInstance() { finalize(_contexts.size()); }

void ChainInstance::steer_remote(uint32_t n, uint16_t *labels, const uint8_t *returned_from, uint32_t *pending) noexcept
{
    uint32_t taken = 0;
    for (uint32_t i = 0; i < n; ++i) {
        if (returned_from != nullptr && returned_from[i] != 0) {
            labels[i] = SERPENS_LABEL_OUT; // a peer ran the chain on it
            ++pending[SERPENS_LABEL_OUT];
            ++taken;
            continue;
        }
        if ((_flow_flags[i] & state::flow_flag_remote) == 0) {
            continue;
        }
        auto *entry = static_cast<uint8_t *>(_flow_entries[i]);
        const uint8_t peer = state::FlowTable::remote_peer(entry);
        _flow_flags[i] &= static_cast<uint8_t>(~state::flow_flag_remote);
        if (_steering != nullptr && _steering->peer_up[peer].load(std::memory_order_relaxed)) {
            labels[i] = label_remote;
            _remote_peers[i] = peer;
            ++taken;
        } else {
            // Its peer is gone, and the flow's state with it: it starts over here.
            state::FlowTable::make_local(entry);
            _flow_flags[i] |= SERPENS_FLOW_NEW;
        }
    }
    pending[1] -= taken;
}

void ChainInstance::refuse_full(uint32_t n, uint16_t *labels, const uint8_t *returned_from, uint32_t *pending) noexcept
{
    const bool drop = _flows->drops_when_full();
    for (uint32_t i = 0; i < n; ++i) {
        if ((_flow_flags[i] & state::flow_flag_refused) == 0) {
            continue;
        }
        _flow_flags[i] = 0; // no NF is shown the host's flag
        // A packet a peer processed passes untouched anyway (steer_remote).
        if (drop && (returned_from == nullptr || returned_from[i] == 0)) {
            labels[i] = SERPENS_LABEL_DROP;
            --pending[1];
        }
    }
}

void ChainInstance::open_flow_table(const FlowTableResolver &flows)
{
    state::FlowTableSpec spec;
    spec.chain = _chain->name;
    for (const auto &ctx : _contexts) {
        spec.areas.push_back({ctx->nf_name, ctx->flow_state_size, 0});
    }
    if (!flows || std::all_of(spec.areas.begin(), spec.areas.end(), [](const auto &a) { return a.size == 0; })) {
        return;
    }
    bool first = false;
    _flows = flows(spec, first);
    if (_flows == nullptr) {
        return;
    }
    // Offsets from the table's own layout: a chain may name an NF twice.
    const std::vector<state::FlowArea> &areas = _flows->spec().areas;
    std::size_t next = 0;
    for (std::size_t i = 0; i < _slots.size(); ++i) {
        if (_contexts[i]->flow_state_size != 0) {
            if (next >= areas.size() || areas[next].nf != _contexts[i]->nf_name ||
                areas[next].size != _contexts[i]->flow_state_size) {
                throw Error(
                    "chain '" + _chain->name + "': NF '" + _contexts[i]->nf_name + "' of instance " +
                    std::to_string(_instance_id) + " asked for other per-flow state than the chain's first instance (" +
                    std::to_string(_contexts[i]->flow_state_size) + " bytes): every instance must ask the same");
            }
            _slots[i].flow_offset = areas[next++].offset;
        }
    }
    // A pass over the owned parts as often as expiry or the most eager
    // visitor needs.
    _sweep_pass_ns = _flows->expiry_pass_ns();
    for (const Slot &slot : _slots) {
        _visitors |= slot.flow_visit != nullptr && slot.flow_offset != 0;
        if (slot.flow_visit != nullptr && slot.flow_offset != 0 && slot.flow_visit_ms != 0) {
            _visit_all = true;
            const uint64_t every = uint64_t{slot.flow_visit_ms} * 1'000'000;
            _sweep_pass_ns = _sweep_pass_ns == 0 ? every : std::min(_sweep_pass_ns, every);
        }
    }
    if (first) {
        if (const std::size_t n = _flows->recover(&ChainInstance::on_flow_expired, this); n != 0) {
            spdlog::warn("chain '{}': finished {} flow expiries a crash interrupted", _chain->name, n);
        }
    }
}

void ChainInstance::on_flow_expired(void *self, uint8_t *entry) noexcept
{
    auto *instance = static_cast<ChainInstance *>(self);
    if (state::FlowTable::remote_peer(entry) != 0) {
        return; // no NF here holds anything for it
    }
    for (const Slot &slot : instance->_slots) {
        if (slot.flow_expired != nullptr && slot.flow_offset != 0) {
            fault::current_site = slot.site;
            slot.flow_expired(slot.ctx, entry + slot.flow_offset);
        }
    }
    fault::current_site = nullptr;
}

bool ChainInstance::on_flow_visit(void *self, uint8_t *entry, uint64_t idle_ns, bool expiring) noexcept
{
    auto *instance = static_cast<ChainInstance *>(self);
    if (state::FlowTable::remote_peer(entry) != 0) {
        return false; // served by a peer: no NF here knows it
    }
    serpens_flow_info info = state::FlowTable::entry_info(entry, idle_ns, expiring, instance->_sweep_now_ns);
    info.stopping = instance->_stopping ? 1 : 0;
    bool keep = false;
    for (const Slot &slot : instance->_slots) {
        // Every visitor sees an expiring entry, and every entry at a stop;
        // the eager ones see them all.
        if (slot.flow_visit != nullptr && slot.flow_offset != 0 &&
            (expiring || slot.flow_visit_ms != 0 || instance->_stopping)) {
            fault::current_site = slot.site;
            keep |= slot.flow_visit(slot.ctx, entry + slot.flow_offset, &info) == SERPENS_FLOW_KEEP;
        }
    }
    fault::current_site = nullptr;
    return keep;
}

std::size_t ChainInstance::expire_flows(const uint64_t *owned, uint64_t now_ns, uint64_t period_ns) noexcept
{
    if (_flows == nullptr) {
        return 0;
    }
    _sweep_now_ns = now_ns;
    const state::FlowSweepHooks hooks{_visitors ? &ChainInstance::on_flow_visit : nullptr, _visit_all,
                                      &ChainInstance::on_flow_expired, this};
    return _flows->sweep(owned, _sweep, now_ns, _flows->sweep_slots(period_ns, _sweep_pass_ns), hooks);
}

void ChainInstance::visit_flows_at_stop(const uint64_t *owned, uint64_t now_ns) noexcept
{
    if (_flows == nullptr || !_visitors) {
        return;
    }
    _sweep_now_ns = now_ns;
    _stopping = true;
    state::FlowSweepCursor whole; // from the start, over every owned part at once
    const state::FlowSweepHooks hooks{&ChainInstance::on_flow_visit, true, &ChainInstance::on_flow_expired, this};
    _flows->sweep(owned, whole, now_ns, std::numeric_limits<uint32_t>::max(), hooks);
    _stopping = false;
}

void ChainInstance::join_state()
{
    for (const auto &ctx : _contexts) {
        if (ctx->executor != nullptr) {
            ctx->executor->add_instance(_instance_id, &ctx->pub);
        }
    }
}

void ChainInstance::adopt_state_hooks()
{
    for (std::size_t i = 0; i < _contexts.size(); ++i) {
        if (_contexts[i]->executor != nullptr) {
            _contexts[i]->executor->replace_descriptor(_chain->nfs[i].desc);
        }
    }
}

void ChainInstance::leave_state()
{
    for (const auto &ctx : _contexts) {
        if (ctx->executor != nullptr) {
            ctx->executor->remove_instance(_instance_id);
        }
    }
}

void ChainInstance::finalize(std::size_t count) noexcept
{
    for (std::size_t i = count; i-- > 0;) {
        // The leaving instance's share of global/write state goes to the
        // survivors (or stays in the segment when it was the last one).
        if (state::Executor *executor = _contexts[i]->executor) {
            executor->remove_instance(_instance_id);
        }
        const serpens_nf_descriptor *desc = _contexts[i]->desc;
        if (desc->fini != nullptr) {
            fault::SiteScope in_fini(_contexts[i]->fini_site.c_str());
            desc->fini(&_contexts[i]->pub);
        }
    }
}

bool ChainInstance::all_default_ports(uint32_t n) const noexcept
{
    static_assert(SERPENS_PORT_DEFAULT == 0, "the scan ORs ports together");
    uint8_t any = 0;
    for (uint32_t i = 0; i < n; ++i) {
        any |= _ports[i];
    }
    return any == 0;
}

uint32_t ChainInstance::run(serpens_pkt *pkts, uint32_t n, uint16_t *labels, uint64_t now_ns,
                            const uint8_t *returned_from, const net::FlowKey *keys) noexcept
{
    const auto n_nfs = static_cast<uint16_t>(_slots.size());
    if (n == 0 || n_nfs == 0) {
        return n;
    }
    uint32_t *pending = _pending.data();
    std::fill(pending, pending + n_nfs + 2, 0u);
    std::fill(labels, labels + n, uint16_t{1}); // the entry NF is always label 1
    pending[1] = n;

    // nf.h's rule: views at the 1.0 size for chains with a plugin older than
    // 1.4 (it indexes pkts[i]), else at sizeof(serpens_pkt).  The two agree
    // while serpens_pkt has not grown; when it does, this assert stops the
    // build until run() takes the chain's stride.
    static_assert(sizeof(serpens_pkt) == SERPENS_PKT_V1_0_SIZE, "serpens_pkt grew: lay views out per nf.h's rule");
    serpens_batch batch{};
    batch.struct_size = sizeof(serpens_batch);
    batch.pkt_stride = sizeof(serpens_pkt);
    batch.count = n;
    batch.pkts = pkts;
    batch.labels = labels;
    batch.ports = _ports;
    batch.now_ns = now_ns;
    if (_flows != nullptr) {
        // Which peer a flow created now goes to: the one that sent it back
        // processed, else its bucket's.
        const uint8_t *new_flow_peers = nullptr;
        const bool steers = _steering != nullptr && _steering->steers.load(std::memory_order_relaxed);
        if (steers || returned_from != nullptr) {
            for (uint32_t i = 0; i < n; ++i) {
                const uint8_t from = returned_from != nullptr ? returned_from[i] : 0;
                _new_flow_peers[i] =
                    from != 0 || !steers
                        ? from
                        : _steering->new_flows[pkts[i].flow_hash % state::flow_parts].load(std::memory_order_relaxed);
            }
            new_flow_peers = _new_flow_peers;
        }
        const state::FlowBurst found = _flows->lookup_burst(pkts, sizeof(serpens_pkt), n, now_ns, _flow_entries,
                                                            _flow_flags, new_flow_peers, keys);
        batch.flows = _flow_entries;
        batch.flow_flags = _flow_flags;
        if (found.refused != 0) {
            refuse_full(n, labels, returned_from, pending);
        }
        if (found.remote != 0 || returned_from != nullptr) {
            steer_remote(n, labels, returned_from, pending);
        }
    } else if (returned_from != nullptr) {
        steer_remote(n, labels, returned_from, pending);
    }

    const uint16_t drop_bucket = n_nfs + 1;
    const bool timed = (_batch_seq++ & (kTimedBatchEvery - 1)) == 0;
    for (uint16_t label = 1; label <= n_nfs; ++label) {
        const uint32_t visiting = pending[label];
        if (visiting == 0) {
            continue;
        }
        const Slot &slot = _slots[label - 1];
        batch.self = label;
        batch.flow_offset = slot.flow_offset;
        fault::current_site = slot.site; // one store: a crash in process() names this NF
        const uint64_t started = timed ? monotonic_ns() : 0;
        slot.process(slot.ctx, &batch);
        const uint64_t took = timed ? monotonic_ns() - started : 0;

        const uint16_t *next = slot.next;
        const uint32_t dropped_before = pending[drop_bucket];
        uint64_t bytes = 0;
        const uint16_t usual = next[SERPENS_PORT_DEFAULT];
        uint32_t to_usual = 0;
        if (visiting == n && all_default_ports(n)) {
            // A linear chain's usual batch: every packet visited and goes on
            // by the default port.  Two short loops the compiler vectorizes,
            // where the general one below cost ~18 instructions per packet
            // per NF.
            for (uint32_t i = 0; i < n; ++i) {
                bytes += pkts[i].len;
            }
            std::fill(labels, labels + n, usual);
            to_usual = n;
        } else {
            // Map each visitor's output port to its next label; reset the
            // port so the next NF starts from "default" without a separate
            // clearing pass.  Packets that take the default port are counted
            // in a register: an increment of pending[] per packet chained
            // each through memory.
            for (uint32_t i = 0; i < n; ++i) {
                if (labels[i] == label) {
                    bytes += pkts[i].len;
                    const uint16_t to = next[_ports[i]];
                    _ports[i] = SERPENS_PORT_DEFAULT;
                    labels[i] = to;
                    if (to == usual) {
                        ++to_usual;
                    } else {
                        ++pending[to > n_nfs ? drop_bucket : to];
                    }
                }
            }
        }
        pending[usual > n_nfs ? drop_bucket : usual] += to_usual;
        NfRunStats &stats = _stats[label - 1];
        stats.packets.store(stats.packets.load(std::memory_order_relaxed) + visiting, std::memory_order_relaxed);
        stats.dropped.store(stats.dropped.load(std::memory_order_relaxed) + pending[drop_bucket] - dropped_before,
                            std::memory_order_relaxed);
        stats.batches.store(stats.batches.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        stats.bytes.store(stats.bytes.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
        if (timed) {
            stats.sampled_ns.store(stats.sampled_ns.load(std::memory_order_relaxed) + took, std::memory_order_relaxed);
        }
    }
    fault::current_site = nullptr;
    return pending[0];
}

} // namespace serpens

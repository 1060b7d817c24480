#include "metering/meter.h"

#include "core/error.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <thread>

namespace serpens::metering {

namespace {

int64_t unix_now()
{
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A counter's growth; a counter that went back (cannot happen within one
// run) counts from zero rather than wrap.
uint64_t grown(uint64_t now, uint64_t before) { return now >= before ? now - before : now; }

} // namespace

Meter::Meter(const InstanceManager &manager, std::filesystem::path ledger_file, Clock now)
    : _manager(manager), _now(now ? std::move(now) : Clock(unix_now)), _ledger(std::move(ledger_file)),
      _last_at(std::chrono::steady_clock::now()), _last_s(_now()), _compacted_s(_last_s)
{
    if (_ledger.skipped() != 0) {
        spdlog::warn("usage ledger {}: {} unreadable line(s) skipped (a torn last line after a crash is expected)",
                     _ledger.path().string(), _ledger.skipped());
    }
    // Counters start at zero with the host: the first sample holds all it did.
    _ledger.compact(_last_s);
}

Meter::~Meter()
{
    if (_thread_started) {
        _running.store(false);
        pthread_join(_thread, nullptr);
    }
}

void Meter::start_thread(const ThreadStarter &start)
{
    _running.store(true);
    if (int rc = start(&_thread, &Meter::thread_main, this); rc != 0) {
        _running.store(false);
        throw Error(std::string("cannot start the meter thread: ") + std::strerror(rc < 0 ? -rc : rc));
    }
    _thread_started = true;
}

void *Meter::thread_main(void *self_ptr)
{
    auto *self = static_cast<Meter *>(self_ptr);
    auto next = std::chrono::steady_clock::now();
    // A failure that lasts (a full filesystem) is logged when it starts,
    // changes or has gone on for another minute, and its end too.
    std::string failing;
    auto logged = next;
    while (self->_running.load()) {
        next += std::chrono::seconds(1);
        // Short sleeps, so that stop() never waits a whole second.
        while (self->_running.load() && std::chrono::steady_clock::now() < next) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        try {
            self->sample();
            if (!failing.empty()) {
                spdlog::info("meter: usage is recorded again (the interval it could not write is in the next row)");
                failing.clear();
            }
        } catch (const std::exception &e) {
            if (e.what() != failing || next - logged >= std::chrono::minutes(1)) {
                spdlog::error("meter: {} (retried every second: the next row written covers the gap)", e.what());
                failing = e.what();
                logged = next;
            }
        }
    }
    return nullptr;
}

void Meter::stop()
{
    if (_thread_started) {
        _running.store(false);
        pthread_join(_thread, nullptr);
        _thread_started = false;
    }
    sample();
}

void Meter::sample()
{
    std::lock_guard lock(_mutex);
    sample_locked();
}

void Meter::sample_locked()
{
    const HostUsage now = _manager.usage();
    const auto now_at = std::chrono::steady_clock::now();
    const double seconds = std::chrono::duration<double>(now_at - _last_at).count();
    const int64_t now_s = std::max(_now(), _last_s);

    // Each lcore's busy time since the last sample, and its packets, shared
    // among the chains it ran by their packets.
    std::map<uint32_t, uint64_t> slot_before;
    for (const SlotUsage &s : _last.slots) {
        slot_before[s.number] = s.packets;
    }
    std::map<unsigned, uint64_t> lcore_packets;
    std::map<std::pair<std::size_t, unsigned>, uint64_t> chain_lcore_packets;
    for (const SlotUsage &s : now.slots) {
        auto before = slot_before.find(s.number);
        const uint64_t d = grown(s.packets, before == slot_before.end() ? 0 : before->second);
        lcore_packets[s.lcore] += d;
        chain_lcore_packets[{s.chain, s.lcore}] += d;
    }
    std::map<std::size_t, double> busy_s;
    for (const auto &[key, packets] : chain_lcore_packets) {
        const unsigned lcore = key.second;
        auto busy_now = now.lcore_busy_ns.find(lcore);
        if (busy_now == now.lcore_busy_ns.end() || lcore_packets[lcore] == 0) {
            continue;
        }
        auto busy_before = _last.lcore_busy_ns.find(lcore);
        const uint64_t busy_ns =
            grown(busy_now->second, busy_before == _last.lcore_busy_ns.end() ? 0 : busy_before->second);
        busy_s[key.first] += static_cast<double>(busy_ns) * static_cast<double>(packets) /
                             static_cast<double>(lcore_packets[lcore]) / 1e9;
    }

    std::vector<Row> rows;
    for (std::size_t c = 0; c < now.chains.size(); ++c) {
        const ChainUsage &u = now.chains[c];
        const ChainUsage *before = c < _last.chains.size() ? &_last.chains[c] : nullptr;
        Row row;
        row.from_s = _last_s;
        row.to_s = now_s;
        row.chain = u.name;
        row.used.packets = grown(u.packets, before ? before->packets : 0);
        row.used.bytes = grown(u.bytes, before ? before->bytes : 0);
        row.used.dropped = grown(u.dropped, before ? before->dropped : 0);
        // Instances that ran through the interval: the mean of its two ends
        // (the first interval starts with the instances the host started).
        row.used.instance_s = (u.active + (before ? before->active : u.active)) / 2.0 * seconds;
        row.used.busy_s = busy_s[c];
        // Per NF, matched by name (a reload may add or reorder NFs): the
        // chain's busy time shared by the time measured in each NF, and its
        // instance-seconds for each NF its running instances have.
        auto before_of = [&](const std::string &name) -> const NfUsage * {
            if (before == nullptr) {
                return nullptr;
            }
            auto it =
                std::find_if(before->nfs.begin(), before->nfs.end(), [&](const NfUsage &n) { return n.name == name; });
            return it == before->nfs.end() ? nullptr : &*it;
        };
        uint64_t sampled_total = 0;
        for (const NfUsage &nf : u.nfs) {
            const NfUsage *b = before_of(nf.name);
            sampled_total += grown(nf.sampled_ns, b ? b->sampled_ns : 0);
        }
        for (const NfUsage &nf : u.nfs) {
            const NfUsage *b = before_of(nf.name);
            const uint64_t sampled = grown(nf.sampled_ns, b ? b->sampled_ns : 0);
            NfUsed used{grown(nf.packets, b ? b->packets : 0), grown(nf.bytes, b ? b->bytes : 0),
                        grown(nf.dropped, b ? b->dropped : 0), nf.running ? row.used.instance_s : 0.0,
                        sampled_total == 0
                            ? 0.0
                            : row.used.busy_s * static_cast<double>(sampled) / static_cast<double>(sampled_total)};
            if (used.packets != 0 || used.bytes != 0 || used.dropped != 0 || used.instance_s != 0 || used.busy_s != 0) {
                row.used.nfs[nf.name] = used;
            }
        }
        if (!row.used.empty()) {
            rows.push_back(std::move(row));
        }
    }
    // All chains' rows or none, and the interval moves on only once they are
    // written: a failed write (a full state filesystem) is retried whole at
    // the next sample, so nothing is lost or billed twice.
    _ledger.record(rows);
    _last = now;
    _last_at = now_at;
    _last_s = now_s;
    if (now_s - _compacted_s >= 3600) {
        _ledger.compact(now_s);
        _compacted_s = now_s;
    }
}

Bill Meter::bill(std::optional<int64_t> since_s, const std::string &chain)
{
    std::lock_guard lock(_mutex);
    sample_locked();
    Bill bill;
    bill.from_s = since_s.value_or(_ledger.first_s().value_or(_last_s));
    bill.to_s = _last_s;
    bill.chains = _ledger.bill(since_s, chain);
    return bill;
}

} // namespace serpens::metering

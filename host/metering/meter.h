#pragma once
// The meter: once a second it samples what each chain used (packets, bytes,
// drops, instance-seconds, busy CPU-seconds; per NF packets, bytes, drops)
// and writes the difference to the ledger, so bills survive restarts and a
// crash loses at most the last second.  Busy time is the lcores' busy time,
// shared among the chains an lcore ran in proportion to their packets.

#include "instance/manager.h"
#include "metering/ledger.h"

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace serpens::metering {

// What bill() answers: per chain, what it used over [from_s, to_s].
struct Bill {
    int64_t from_s = 0;
    int64_t to_s = 0;
    std::map<std::string, Used> chains;
};

class Meter {
public:
    using Clock = std::function<int64_t()>; // Unix seconds
    // `ledger_file`: usage.jsonl in the state dir.  Throws Error when it
    // cannot be opened.
    Meter(const InstanceManager &manager, std::filesystem::path ledger_file, Clock now = {});
    ~Meter(); // stops the thread (without a last sample: stop() takes it)
    Meter(const Meter &) = delete;
    Meter &operator=(const Meter &) = delete;

    using ThreadStarter = std::function<int(pthread_t *thread, void *(*body)(void *), void *arg)>;
    void start_thread(const ThreadStarter &start);
    // Stops the thread and records what was used since the last sample: call
    // it once the lcores stopped and before the instances are finalized, and
    // the ledger holds every packet.
    void stop();

    // Records what was used since the last sample.
    void sample();
    // Samples, then sums the ledger from `since_s` (everything when none).
    Bill bill(std::optional<int64_t> since_s, const std::string &chain);

private:
    static void *thread_main(void *self);
    void sample_locked();

    const InstanceManager &_manager;
    Clock _now;
    std::mutex _mutex; // the sampler thread and control requests
    Ledger _ledger;
    HostUsage _last; // the previous sample
    std::chrono::steady_clock::time_point _last_at;
    int64_t _last_s = 0;
    int64_t _compacted_s = 0;
    std::atomic<bool> _running{false};
    bool _thread_started = false;
    pthread_t _thread{};
};

} // namespace serpens::metering

#pragma once
// Thread-based chaining for the baselines (paper §II-C / Fig. 15): one thread
// per NF, batches handed between them through single-producer/single-consumer
// rings, with or without a central chainer.

#include "lab_traffic.h"

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace serpens::bench {

// Single producer, single consumer; pop spins, then yields the CPU (threads
// sharing one core hand over on every empty poll).
class Ring {
public:
    explicit Ring(uint32_t cap = 256);
    bool push(LabBatch *b) noexcept;
    LabBatch *pop() noexcept; // nullptr when empty
    LabBatch *pop_wait(const std::atomic<bool> &stop) noexcept;
    void push_wait(LabBatch *b) noexcept;

private:
    std::vector<LabBatch *> _slots;
    uint32_t _mask;
    alignas(64) std::atomic<uint32_t> _head{0};
    alignas(64) std::atomic<uint32_t> _tail{0};
};

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

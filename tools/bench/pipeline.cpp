#include "pipeline.h"

#include "bench.h"

#include "net/parse.h"

#include <sched.h>

namespace serpens::bench {

Ring::Ring(uint32_t cap)
{
    uint32_t c = 1;
    while (c < cap) {
        c <<= 1;
    }
    _slots.resize(c);
    _mask = c - 1;
}

bool Ring::push(LabBatch *b) noexcept
{
    const uint32_t t = _tail.load(std::memory_order_relaxed);
    if (t - _head.load(std::memory_order_acquire) > _mask) {
        return false;
    }
    _slots[t & _mask] = b;
    _tail.store(t + 1, std::memory_order_release);
    return true;
}

LabBatch *Ring::pop() noexcept
{
    const uint32_t h = _head.load(std::memory_order_relaxed);
    if (h == _tail.load(std::memory_order_acquire)) {
        return nullptr;
    }
    LabBatch *b = _slots[h & _mask];
    _head.store(h + 1, std::memory_order_release);
    return b;
}

LabBatch *Ring::pop_wait(const std::atomic<bool> &stop) noexcept
{
    for (unsigned spin = 0;; ++spin) {
        if (LabBatch *b = pop()) {
            return b;
        }
        if (stop.load(std::memory_order_relaxed)) {
            return nullptr;
        }
        if (spin > 64) {
            sched_yield();
        }
    }
}

void Ring::push_wait(LabBatch *b) noexcept
{
    while (!push(b)) {
        sched_yield();
    }
}

const char *chaining_name(Chaining c) noexcept
{
    switch (c) {
    case Chaining::executor:
        return "executor-based";
    case Chaining::gateway:
        return "gateway-based";
    case Chaining::direct:
        return "direct";
    }
    return "?";
}

Pipeline::Pipeline(Chaining c, unsigned stages, Hop hop, int cpu)
    : _c(c), _stages(stages), _hop(std::move(hop)), _cpu(cpu)
{
    for (unsigned i = 0; i < stages; ++i) {
        _in.push_back(std::make_unique<Ring>());
        _out.push_back(std::make_unique<Ring>());
    }
    for (unsigned i = 0; i < stages; ++i) {
        _threads.emplace_back([this, i] { stage_main(i); });
    }
    if (c != Chaining::direct) {
        _threads.emplace_back([this, c] { central_main(c == Chaining::gateway); });
    }
    if (c == Chaining::executor) {
        _threads.emplace_back([this] { router_main(); });
    }
}

Pipeline::~Pipeline()
{
    _stop.store(true);
    for (auto &t : _threads) {
        t.join();
    }
}

void Pipeline::submit(LabBatch *b)
{
    b->hop = 0;
    if (_c == Chaining::direct) {
        _in[0]->push_wait(b);
    } else {
        _submit.push_wait(b);
    }
}

LabBatch *Pipeline::wait()
{
    std::atomic<bool> never{false};
    return _done.pop_wait(never);
}

void Pipeline::stage_main(unsigned i)
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    while (LabBatch *b = _in[i]->pop_wait(_stop)) {
        if (b->n > 0) {
            _hop(i, *b);
        }
        b->hop = i + 1;
        if (_c == Chaining::direct) {
            if (i + 1 == _stages) {
                _done.push_wait(b);
            } else {
                _in[i + 1]->push_wait(b);
            }
        } else {
            _out[i]->push_wait(b);
        }
    }
}

void Pipeline::central_main(bool reclassify)
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    auto dispatch = [&](LabBatch *b) {
        if (b->hop >= _stages) {
            _done.push_wait(b);
            return;
        }
        if (reclassify) {
            // The gateway matches every request again.
            net::FlowKey key;
            for (uint32_t k = 0; k < b->n; ++k) {
                net::parse_packet(b->pkts[k], key);
            }
        }
        if (_c == Chaining::executor) {
            _to_router.push_wait(b);
        } else {
            _in[b->hop]->push_wait(b);
        }
    };
    for (unsigned spin = 0; !_stop.load(std::memory_order_relaxed); ++spin) {
        bool any = false;
        if (LabBatch *b = _submit.pop()) {
            dispatch(b);
            any = true;
        }
        for (unsigned i = 0; i < _stages; ++i) {
            if (LabBatch *b = _out[i]->pop()) {
                dispatch(b);
                any = true;
            }
        }
        if (any) {
            spin = 0;
        } else if (spin > 64) {
            sched_yield();
        }
    }
}

void Pipeline::router_main()
{
    if (_cpu >= 0) {
        pin_self(_cpu);
    }
    while (LabBatch *b = _to_router.pop_wait(_stop)) {
        _in[b->hop]->push_wait(b);
    }
}

} // namespace serpens::bench

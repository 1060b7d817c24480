#include "io/router.h"

#include <thread>

namespace serpens::io {

Router::~Router()
{
    delete _table.load(std::memory_order_acquire);
}

void Router::publish(std::unique_ptr<RouteTable> table)
{
    const RouteTable *old = _table.exchange(table.release(), std::memory_order_acq_rel);
    if (old == nullptr) {
        return;
    }
    // Grace period: two epoch steps guarantee the dispatcher finished the loop
    // iteration that may have loaded `old`.
    uint64_t start = _epoch.load(std::memory_order_acquire);
    while (_running.load(std::memory_order_acquire) && _epoch.load(std::memory_order_acquire) < start + 2) {
        std::this_thread::yield();
    }
    delete old;
}

} // namespace serpens::io

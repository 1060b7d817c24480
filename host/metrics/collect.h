#pragma once
// Reads the host's counters into a Snapshot: the sources the stats JSON
// reads (host/app), never its text.  Cold path, any non-worker thread.

#include "metrics/snapshot.h"

namespace serpens {
class Dataplane;
class InstanceManager;
namespace state {
class StateStore;
}
namespace peer {
class PeerService;
}
} // namespace serpens

namespace serpens::metrics {

// Takes the instance manager's lock as the stats do: once inside
// chain_summaries(), then around the read of the slots' chain instances.
// Device counters (bytes, TX, drops) are read from the ports, which must be
// open; state tables through the store's and executors' own locks.  `peers`
// is nullptr when the host has no [peer].
Snapshot collect(const Dataplane &dp, const InstanceManager &manager, state::StateStore &store,
                 const peer::PeerService *peers);

} // namespace serpens::metrics

#pragma once
// The host's counters, as the table serpens-host prints when it stops and as
// the JSON that serpensctl stats and --stats-json read.

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>
#include <vector>

namespace serpens {

class Dataplane;
struct InstanceSlot;
struct ChainSummary;

void print_stats(const Dataplane &dp, std::FILE *out);

// The counters as JSON.  `live`: the lcores still run, so device counters are
// read now (the final ones are kept by the dataplane after it stops).
// `chains`: InstanceManager::chain_summaries().  ordered_json keeps the keys
// in the order a reader expects them.
nlohmann::ordered_json stats_json(const Dataplane &dp, const std::vector<ChainSummary> &chains, bool live);

// Per chain, keyed by name: instances by state, events, pauses, wake-ups and
// its flow table, as "stats" and "chains" show them.
nlohmann::ordered_json chains_json(const std::vector<ChainSummary> &chains);

// One instance slot: its chain, index, lcore, state and packet counters.
nlohmann::ordered_json instance_json(const InstanceSlot &slot);

// `now` less `base`, counter by counter: what "clear" makes stats show.
// Counters are the unsigned integers; identities and gauges (names, ids,
// indexes, lcores, thresholds, instance counts, table fill) are kept as they
// are, and so is a counter that went backwards (its source restarted).
// Objects match by key; arrays of objects match by their identity ("name",
// "id", or "chain" with "index"), other arrays by their first element.
// `per_seconds` > 0 divides each difference by it: rates (serpensctl stats --watch).
nlohmann::ordered_json subtract_counters(nlohmann::ordered_json now, const nlohmann::ordered_json &base,
                                         double per_seconds = 0);

} // namespace serpens

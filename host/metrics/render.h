#pragma once
// The Prometheus text exposition format (version 0.0.4) of a Snapshot.
// Pure functions of their arguments: no DPDK, no I/O, any thread.

#include "metrics/snapshot.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace serpens::metrics {

// The Content-Type the text is served with.
inline constexpr const char *content_type = "text/plain; version=0.0.4; charset=utf-8";

// Every family of the snapshot, each with one HELP and one TYPE line before
// its samples, in a fixed order.
std::string render(const Snapshot &snapshot);

// A label value between double quotes: backslash, double quote and newline
// escaped; bytes that are not UTF-8 (names come from config files and
// plugins) replaced by U+FFFD so a scrape never fails on them.
std::string escape_label_value(std::string_view value);

// The `le` bounds of the batch-latency histogram, in ns: powers of two from
// 1.024 us to 1.07 s.  Each is an edge of core/latency.h's buckets, so the
// cumulative counts are exact, with one exception: a latency of exactly a
// bound counts in the next one.
const std::vector<uint64_t> &latency_bounds_ns();

// `v` in the shortest form that reads back as the same double ("1.024e-06").
std::string format_double(double v);

} // namespace serpens::metrics

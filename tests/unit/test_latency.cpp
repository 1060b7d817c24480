// The latency histogram's buckets: every value lands in the bucket whose
// range holds it, and a bucket is at most 12.5% wide, so a percentile read
// from it is that close to the true one.

#include "core/latency.h"

#include <doctest/doctest.h>

using serpens::LatencyHistogram;

TEST_CASE("every latency falls in the bucket whose range holds it, within 12.5%")
{
    for (uint64_t ns :
         {0ull, 1ull, 7ull, 8ull, 9ull, 15ull, 16ull, 1000ull, 1023ull, 1024ull, 123456789ull, (1ull << 40) + 12345}) {
        CAPTURE(ns);
        const std::size_t b = LatencyHistogram::bucket_of(ns);
        REQUIRE(b + 1 < LatencyHistogram::buckets);
        CHECK(LatencyHistogram::bucket_low(b) <= ns);
        CHECK(LatencyHistogram::bucket_low(b + 1) > ns);
        CHECK(static_cast<double>(LatencyHistogram::bucket_low(b + 1) - LatencyHistogram::bucket_low(b)) <=
              0.125 * static_cast<double>(LatencyHistogram::bucket_low(b)) + 1);
    }
    for (std::size_t b = 1; b < LatencyHistogram::buckets; ++b) {
        CHECK(LatencyHistogram::bucket_low(b) > LatencyHistogram::bucket_low(b - 1));
        CHECK(LatencyHistogram::bucket_of(LatencyHistogram::bucket_low(b)) == b);
    }
    CHECK(LatencyHistogram::bucket_of(~0ull) == LatencyHistogram::buckets - 1); // clamped, not past the end
}

TEST_CASE("recording counts in the value's bucket")
{
    LatencyHistogram h;
    h.record(5000);
    h.record(5001);
    h.record(90);
    CHECK(h.count(LatencyHistogram::bucket_of(5000)) == 2);
    CHECK(h.count(LatencyHistogram::bucket_of(90)) == 1);
}

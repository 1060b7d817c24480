// "clear" and stats --watch: counters since a snapshot, matched by identity,
// with gauges and identities left alone.

#include "app/stats.h"

#include <doctest/doctest.h>

using namespace serpens;
using nlohmann::ordered_json;

TEST_CASE("subtract_counters: counters shrink by the snapshot, identities and gauges stay")
{
    const ordered_json base = R"({
        "ports": [{"name": "in", "rx": 100, "tx": 90}, {"name": "out", "rx": 5, "tx": 80}],
        "rules": {"clients": 70},
        "unmatched": 3,
        "lcores": [{"id": 1, "rx": 100, "rx_queues": [{"port": "in", "queue": 0}],
                    "batch_latency_ns": [[512, 10], [1024, 4]]}],
        "instances": [{"chain": "c", "index": 0, "lcore": 1, "state": "active", "packets": 60,
                       "nfs": [{"name": "fw", "packets": 60, "counters": {"id": 4, "allowed": 50}}]}],
        "chains": {"c": {"instances": 1, "metered_packets": 60,
                         "flows": {"live": 10, "capacity": 1024, "created": 12}}},
        "wake_threshold": 128
    })"_json;
    ordered_json now = base;
    now["ports"][0]["rx"] = 150;
    now["ports"][1]["tx"] = 95;
    now["rules"]["clients"] = 100;
    now["lcores"][0]["batch_latency_ns"] = R"([[256, 1], [512, 15], [1024, 4]])"_json;
    now["instances"][0]["packets"] = 75;
    now["instances"][0]["nfs"][0]["counters"] = R"({"id": 9, "allowed": 65, "new": 2})"_json;
    now["chains"]["c"]["flows"]["live"] = 14;
    now["chains"]["c"]["flows"]["created"] = 16;
    now["chains"]["c"]["metered_packets"] = 75;

    const ordered_json d = subtract_counters(now, base);
    CHECK(d["ports"][0] == R"({"name": "in", "rx": 50, "tx": 0})"_json);
    CHECK(d["ports"][1]["tx"] == 15);
    CHECK(d["rules"]["clients"] == 30);
    CHECK(d["unmatched"] == 0);
    CHECK(d["lcores"][0]["id"] == 1);
    CHECK(d["lcores"][0]["rx_queues"] == base["lcores"][0]["rx_queues"]);
    CHECK(d["lcores"][0]["batch_latency_ns"] == R"([[256, 1], [512, 5], [1024, 0]])"_json);
    CHECK(d["instances"][0]["index"] == 0);
    CHECK(d["instances"][0]["lcore"] == 1);
    CHECK(d["instances"][0]["packets"] == 15);
    // An NF's counters are all counters, whatever the NF named them.
    CHECK(d["instances"][0]["nfs"][0]["counters"] == R"({"id": 5, "allowed": 15, "new": 2})"_json);
    CHECK(d["chains"]["c"]["instances"] == 1);
    CHECK(d["chains"]["c"]["metered_packets"] == 15);
    CHECK(d["chains"]["c"]["flows"]["live"] == 14);
    CHECK(d["chains"]["c"]["flows"]["capacity"] == 1024);
    CHECK(d["chains"]["c"]["flows"]["created"] == 4);
    CHECK(d["wake_threshold"] == 128);
}

TEST_CASE("subtract_counters: elements match by identity, not position; restarts are not negative")
{
    const ordered_json base = R"({"instances": [{"chain": "c", "index": 0, "packets": 10},
                                                {"chain": "c", "index": 1, "packets": 20}]})"_json;
    // Scaled in and out meanwhile: index 1 comes first, index 2 is new, and
    // index 0 restarted from zero.
    const ordered_json now = R"({"instances": [{"chain": "c", "index": 1, "packets": 25},
                                               {"chain": "c", "index": 2, "packets": 7},
                                               {"chain": "c", "index": 0, "packets": 3}]})"_json;
    const ordered_json d = subtract_counters(now, base);
    CHECK(d["instances"][0]["packets"] == 5);
    CHECK(d["instances"][1]["packets"] == 7);
    CHECK(d["instances"][2]["packets"] == 3);
}

TEST_CASE("subtract_counters with per_seconds: rates")
{
    const ordered_json base = R"({"ports": [{"name": "in", "rx": 100}], "wake_threshold": 64})"_json;
    const ordered_json now = R"({"ports": [{"name": "in", "rx": 400}], "wake_threshold": 64})"_json;
    const ordered_json r = subtract_counters(now, base, 2.0);
    CHECK(r["ports"][0]["rx"].get<double>() == doctest::Approx(150.0));
    CHECK(r["wake_threshold"] == 64);
}

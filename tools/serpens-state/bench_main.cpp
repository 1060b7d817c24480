// serpens-state-bench — local state access vs. Redis on loopback, one run.

#include "state_bench.h"

#include <CLI/CLI.hpp>

#include <cstdio>

int main(int argc, char **argv)
{
    serpens::state::BenchOptions o;
    bool no_redis = false;
    CLI::App app{"serpens-state-bench: get_state/put_state vs. redis-server (hiredis)"};
    app.add_option("--entries", o.entries, "entries in the table and in Redis");
    app.add_option("--key-size", o.key_size, "key bytes (1..64)");
    app.add_option("--value-size", o.value_size, "value bytes");
    app.add_option("--samples", o.samples, "timed samples per measurement");
    app.add_option("--redis-server", o.redis_server, "redis-server binary");
    app.add_flag("--no-redis", no_redis, "skip the Redis baseline");
    app.add_option("--dir", o.dir,
                   "directory for the table's segment (default: a scratch directory under /dev/shm); a tmpfs "
                   "mounted with huge=always or huge=within_size backs it with 2 MiB pages");
    CLI11_PARSE(app, argc, argv);
    o.redis = !no_redis;
    auto r = serpens::state::bench_run(o);
    std::fputs(serpens::state::bench_format(r).c_str(), r.error.empty() ? stdout : stderr);
    return r.error.empty() && r.get_hit_ns > 0 ? 0 : 1;
}

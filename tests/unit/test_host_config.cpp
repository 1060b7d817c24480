// host.toml: the host id names files (state dir, control socket), so only a
// safe set of characters passes; the text entry point (the fuzzer's) reads
// the same as the file one.

#include "support.h"

#include "config/host_config.h"
#include "core/error.h"

#include <doctest/doctest.h>

#include <sys/stat.h>

using namespace serpens;
using serpens::test::ScratchDir;

namespace {

const char *ports = "[[port]]\nname = \"p0\"\ndevice = \"net_null0\"\n";

std::string with_id(const std::string &id)
{
    return "[host]\nid = \"" + id + "\"\nplugin_dir = \".\"\nchains_dir = \".\"\n" + ports;
}

} // namespace

TEST_CASE("host ids are limited to a safe character set, with file:line:col")
{
    for (const char *bad : {"..", ".", ".hidden", "a/b", "../../etc", "with space", "", "tab\\there"}) {
        CAPTURE(bad);
        CHECK_THROWS_WITH_AS(load_host_config_text(with_id(bad), "h.toml"), doctest::Contains("h.toml:2:6: '"),
                             ConfigError);
        CHECK_THROWS_WITH_AS(load_host_config_text(with_id(bad), "h.toml"), doctest::Contains("is not a valid host id"),
                             ConfigError);
    }
    CHECK_THROWS_WITH_AS(load_host_config_text(with_id(std::string(65, 'h')), "h.toml"),
                         doctest::Contains("expected 1..64 characters"), ConfigError);
    HostConfig cfg = load_host_config_text(with_id("Edge-01.rack_7"), "/etc/serpens/h.toml");
    CHECK(cfg.id == "Edge-01.rack_7");
    CHECK(cfg.state_dir == "/dev/shm/serpens/Edge-01.rack_7");
    CHECK(cfg.plugin_dir == "/etc/serpens/");
}

TEST_CASE("the file entry point reads what the text one does, and checks the directories")
{
    ScratchDir dir;
    std::string file = dir.write("h.toml", with_id("x"));
    CHECK(load_host_config(file).id == "x");
    std::string missing = dir.write("m.toml", "[host]\nchains_dir = \"nowhere\"\nplugin_dir = \".\"\n");
    CHECK_THROWS_WITH_AS(load_host_config(missing), doctest::Contains("m.toml:2:14: chains directory"), ConfigError);
    // The text entry point does not look at the disk.
    CHECK(load_host_config_text("[host]\nchains_dir = \"nowhere\"\n" + std::string(ports), file).chains_dir ==
          (dir.path() / "nowhere").string());
}

TEST_CASE("without plugin_dir the host looks where meson install put the plugins; chains_dir is relative")
{
    HostConfig cfg = load_host_config_text(ports, "/etc/serpens/h.toml");
    CHECK(cfg.plugin_dir == install_dirs::plugins);
    CHECK(std::string_view(install_dirs::plugins).starts_with("/"));
    CHECK(cfg.chains_dir == "/etc/serpens/chains");
}

TEST_CASE("a host.toml that is not a regular file is refused at once")
{
    ScratchDir dir;
    CHECK_THROWS_WITH_AS(load_host_config("/dev/zero"),
                         doctest::Contains("/dev/zero: is a character device, expected a regular file"), ConfigError);
    std::string fifo = dir / "fifo.toml";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_WITH_AS(load_host_config(fifo), doctest::Contains("is a FIFO"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config(dir.path().string()), doctest::Contains("is a directory"), ConfigError);
}

TEST_CASE("a port's rx_queues: 0 (one per receiving lcore) unless given, refused past 1024 at file:line:col")
{
    const std::string base = "[host]\nid = \"h\"\nplugin_dir = \".\"\nchains_dir = \".\"\n";
    CHECK(load_host_config_text(base + ports, "h.toml").ports.at(0).rx_queues == 0);
    CHECK(load_host_config_text(base + ports + "rx_queues = 4\n", "h.toml").ports.at(0).rx_queues == 4);
    CHECK_THROWS_WITH_AS(load_host_config_text(base + ports + "rx_queues = 1025\n", "h.toml"),
                         doctest::Contains("h.toml:8:13:"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(base + ports + "rx_queues = \"all\"\n", "h.toml"),
                         doctest::Contains("h.toml:8:"), ConfigError);
}

TEST_CASE("the instance manager's keys: pool, keep-warm, count 0, and the autoscaler off unless chains are named")
{
    const std::string base = with_id("h");
    HostConfig cfg = load_host_config_text(base, "h.toml");
    CHECK(cfg.pool == 1);
    CHECK(cfg.keep_warm_s == 0);
    CHECK(cfg.autoscale.chains.empty());

    cfg = load_host_config_text(base + "[instances]\npool = 3\nkeep_warm_s = 30\n"
                                       "[[instance]]\nchain = \"c\"\ncount = 0\nlcores = [1, 2, 3]\n"
                                       "[autoscale]\nscale_out_ms = 200\n"
                                       "[[autoscale.chain]]\nchain = \"c\"\nmin = 0\nmax = 3\ntarget_busy = 0.5\n",
                                "h.toml");
    CHECK(cfg.pool == 3);
    CHECK(cfg.keep_warm_s == 30);
    REQUIRE(cfg.instances.size() == 1);
    CHECK(cfg.instances[0].count == 0);
    CHECK(cfg.instances[0].lcores == std::vector<uint32_t>{1, 2, 3}); // more lcores than count: where it scales
    CHECK(cfg.autoscale.scale_out_ms == 200);
    REQUIRE(cfg.autoscale.chains.size() == 1);
    CHECK(cfg.autoscale.chains[0].max == 3);
    CHECK(cfg.autoscale.chains[0].target_busy == doctest::Approx(0.5));

    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[instances]\npool = 17\n", "h.toml"),
                         doctest::Contains("h.toml:9:8: 'pool' = 17 is out of range"), ConfigError);
    CHECK_THROWS_WITH_AS(
        load_host_config_text(base + "[[autoscale.chain]]\nchain = \"c\"\nmin = 3\nmax = 2\n", "h.toml"),
        doctest::Contains("'min' (3) is above 'max' (2)"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[[autoscale.chain]]\nchain = \"c\"\n"
                                                      "[[autoscale.chain]]\nchain = \"c\"\n",
                                               "h.toml"),
                         doctest::Contains("autoscaled twice"), ConfigError);
    CHECK_THROWS_AS(load_host_config_text(base + "[autoscale]\ntarget = 1\n", "h.toml"), ConfigError);
    CHECK_THROWS_WITH_AS(
        load_host_config_text(base + "[[instance]]\nchain = \"c\"\ncount = 3\nlcores = [1, 2]\n", "h.toml"),
        doctest::Contains("at least one per instance"), ConfigError);
}

TEST_CASE("[metrics] listen: off when absent, IPv4 or bracketed IPv6 with a port, refused at file:line:col")
{
    const std::string base = "[host]\nplugin_dir = \".\"\nchains_dir = \".\"\n" + std::string(ports);
    CHECK_FALSE(load_host_config_text(base, "h.toml").metrics.enabled);
    CHECK_FALSE(load_host_config_text(base + "[metrics]\n", "h.toml").metrics.enabled);

    HostConfig cfg = load_host_config_text(base + "[metrics]\nlisten = \"127.0.0.1:9650\"\n", "h.toml");
    CHECK(cfg.metrics.enabled);
    CHECK(cfg.metrics.address == "127.0.0.1");
    CHECK(cfg.metrics.port == 9650);
    CHECK(cfg.metrics.line == 8);
    cfg = load_host_config_text(base + "[metrics]\nlisten = \"[::1]:65535\"\n", "h.toml");
    CHECK(cfg.metrics.address == "::1");
    CHECK(cfg.metrics.port == 65535);
    cfg = load_host_config_text(base + "[metrics]\nlisten = \"[fe80::1:2]:1\"\n", "h.toml");
    CHECK(cfg.metrics.address == "fe80::1:2");
    CHECK(cfg.metrics.port == 1);
    CHECK(load_host_config_text(base + "[metrics]\nlisten = \"0.0.0.0:80\"\n", "h.toml").metrics.address == "0.0.0.0");

    // Each refused with the line and column of the value and what was expected.
    const std::pair<const char *, const char *> bad[] = {
        {"127.0.0.1", "has no port"},
        {"127.0.0.1:", "port '' is not 1..65535"},
        {"127.0.0.1:0", "port '0' is not 1..65535"},
        {"127.0.0.1:65536", "port '65536' is not 1..65535"},
        {"127.0.0.1:96x", "port '96x' is not 1..65535"},
        {"127.0.0.1:-1", "port '-1' is not 1..65535"},
        {"localhost:9650", "'localhost' is not an IPv4 address"},
        {"256.0.0.1:9650", "'256.0.0.1' is not an IPv4 address"},
        {":9650", "'' is not an IPv4 address"},
        {"::1:9650", "an IPv6 address goes in brackets"},
        {"[::1]", "must be"},
        {"[::1]9650", "must be"},
        {"[::1:9650", "must be"},
        {"[127.0.0.1]:9650", "'127.0.0.1' is not an IPv6 address"},
        {"[::g]:9650", "'::g' is not an IPv6 address"},
        {"", "has no port"},
    };
    for (const auto &entry : bad) {
        const char *value = entry.first;
        const char *why = entry.second;
        CAPTURE(value);
        const std::string text = base + "[metrics]\nlisten = \"" + value + "\"\n";
        CHECK_THROWS_WITH_AS(load_host_config_text(text, "h.toml"), doctest::Contains("h.toml:8:10: 'listen'"),
                             ConfigError);
        CHECK_THROWS_WITH_AS(load_host_config_text(text, "h.toml"), doctest::Contains(why), ConfigError);
        CHECK_THROWS_WITH_AS(load_host_config_text(text, "h.toml"), doctest::Contains("\"[<IPv6>]:<port>\""),
                             ConfigError);
    }
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[metrics]\nlisten = 9650\n", "h.toml"),
                         doctest::Contains("h.toml:8:10:"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[metrics]\nlisen = \"127.0.0.1:9650\"\n", "h.toml"),
                         doctest::Contains("h.toml:8:9: [metrics]: unknown key 'lisen' (expected one of: listen)"),
                         ConfigError);
}

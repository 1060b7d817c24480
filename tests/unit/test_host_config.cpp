// host.toml: the host id names files (state dir, control socket), so only a
// safe set of characters passes; the text entry point (the fuzzer's) reads
// the same as the file one.

#include "support.h"

#include "config/host_config.h"
#include "config/toml_reader.h"
#include "core/error.h"

#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include <array>
#include <filesystem>
#include <limits>

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

TEST_CASE("a command line's seconds: a finite number in range, nothing after it")
{
    CHECK(config::seconds_problem("2.5", 0.1, 3600) == "");
    CHECK(config::seconds_problem("0.1", 0.1, 3600) == "");
    CHECK(config::seconds_problem("3600", 0.1, 3600) == "");
    CHECK(config::seconds_problem("1e9", 0.001, std::numeric_limits<double>::max()) == "");
    for (const char *bad : {"", "nan", "NaN", "inf", "-inf", "0.05", "3601", "5s", "five", "1e999"}) {
        CAPTURE(bad);
        CHECK(config::seconds_problem(bad, 0.1, 3600) == "expected a number of seconds from 0.1 to 3600");
    }
    CHECK(config::seconds_problem("0", 0.001, std::numeric_limits<double>::max()) ==
          "expected a number of seconds of at least 0.001");
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
    // nan compares false with any bound: it once passed, and the autoscaler aimed at it.
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[instances]\nkeep_warm_s = nan\n", "h.toml"),
                         doctest::Contains("h.toml:9:15: 'keep_warm_s' = nan is out of range"), ConfigError);
    CHECK_THROWS_WITH_AS(
        load_host_config_text(base + "[[autoscale.chain]]\nchain = \"c\"\ntarget_busy = nan\n", "h.toml"),
        doctest::Contains("'target_busy' = nan is out of range"), ConfigError);
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

TEST_CASE("flow_full: drop unless a chain says pass, per host or per chain, anything else refused at file:line:col")
{
    const std::string base = with_id("h");
    HostConfig cfg = load_host_config_text(base, "h.toml");
    CHECK(cfg.flow_full == "drop");
    cfg = load_host_config_text(base + "[instances]\nflow_full = \"pass\"\n"
                                       "[[instance]]\nchain = \"a\"\nflow_full = \"drop\"\n"
                                       "[[instance]]\nchain = \"b\"\n",
                                "h.toml");
    CHECK(cfg.flow_full == "pass");
    REQUIRE(cfg.instances.size() == 2);
    CHECK(cfg.instances[0].flow_full == "drop");
    CHECK_FALSE(cfg.instances[1].flow_full.has_value());
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[instances]\nflow_full = \"queue\"\n", "h.toml"),
                         doctest::Contains("h.toml:9:13: 'flow_full' must be \"drop\""), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[[instance]]\nchain = \"c\"\nflow_full = true\n", "h.toml"),
                         doctest::Contains("h.toml:10:"), ConfigError);
}

TEST_CASE("bucket_hash: crc32c unless [instances] says rss, anything else refused at file:line:col")
{
    const std::string base = with_id("h");
    CHECK(load_host_config_text(base, "h.toml").bucket_hash == "crc32c");
    CHECK(load_host_config_text(base + "[instances]\nbucket_hash = \"rss\"\n", "h.toml").bucket_hash == "rss");
    CHECK_THROWS_WITH_AS(load_host_config_text(base + "[instances]\nbucket_hash = \"toeplitz\"\n", "h.toml"),
                         doctest::Contains("h.toml:9:15: 'bucket_hash' must be \"crc32c\""), ConfigError);
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

namespace {

// A host "a" with ports "lan" and "underlay" and a [peer] section whose
// `listen` is on line 12; `extra` goes after it, in [peer] or later tables.
std::string with_peer(const std::string &extra)
{
    return "[host]\nid = \"a\"\nplugin_dir = \".\"\nchains_dir = \".\"\n"
           "[[port]]\nname = \"lan\"\ndevice = \"net_null0\"\n"
           "[[port]]\nname = \"underlay\"\ndevice = \"net_null1\"\n"
           "[peer]\nlisten = \"10.0.0.1:7946\"\n"
           "certificate = \"peer/a.crt\"\nprivate_key = \"peer/a.key\"\nca = \"peer/ca.crt\"\n"
           "underlay_port = \"underlay\"\nunderlay_address = \"10.0.0.1\"\n" +
           extra;
}

} // namespace

TEST_CASE("[peer]: off when absent; keys, defaults, paths relative to host.toml, [[peer.host]]")
{
    CHECK_FALSE(load_host_config_text(with_id("a"), "h.toml").peer.enabled);

    HostConfig cfg = load_host_config_text(with_peer("[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:7946\"\n"
                                                     "[[peer.host]]\nid = \"c\"\naddress = \"10.0.0.3:7000\"\n"
                                                     "next_hop_mac = \"02:00:5E:10:00:01\"\n"),
                                           "/etc/serpens/h.toml");
    const PeerConfig &p = cfg.peer;
    CHECK(p.enabled);
    CHECK(p.listen_address == "10.0.0.1");
    CHECK(p.listen_port == 7946);
    CHECK(p.line == 12);
    CHECK(p.certificate == "/etc/serpens/peer/a.crt");
    CHECK(p.private_key == "/etc/serpens/peer/a.key");
    CHECK(p.ca == "/etc/serpens/peer/ca.crt");
    CHECK(p.underlay_port == "underlay");
    CHECK(p.underlay_address == "10.0.0.1");
    CHECK(p.underlay_ip == htonl(0x0a000001));
    CHECK(p.underlay_mtu == 1500);
    CHECK(p.vxlan_udp_port == 4789);
    CHECK(p.vni == 1);
    CHECK(p.heartbeat_ms == 500);
    CHECK(p.dead_after_ms == 2000);
    CHECK(p.lease_ms == 10000);
    REQUIRE(p.hosts.size() == 2);
    CHECK(p.hosts[0].id == "b");
    CHECK(p.hosts[0].address == "10.0.0.2");
    CHECK(p.hosts[0].port == 7946);
    CHECK_FALSE(p.hosts[0].next_hop_mac.has_value());
    CHECK(p.hosts[0].line == 18);
    CHECK(p.hosts[1].next_hop_mac == std::array<uint8_t, 6>{0x02, 0x00, 0x5e, 0x10, 0x00, 0x01});

    cfg = load_host_config_text(with_peer("underlay_mtu = 9000\nvxlan_udp_port = 8472\nvni = 16777215\n"
                                          "heartbeat_ms = 100\ndead_after_ms = 200\nlease_ms = 201\n"),
                                "h.toml");
    CHECK(cfg.peer.underlay_mtu == 9000);
    CHECK(cfg.peer.vxlan_udp_port == 8472);
    CHECK(cfg.peer.vni == 16777215);
    CHECK(cfg.peer.lease_ms == 201);
    CHECK(cfg.peer.hosts.empty()); // a host may only listen
    CHECK(load_host_config_text(with_peer("underlay_mtu = 118\nvni = 0\n"), "h.toml").peer.underlay_mtu == 118);
}

TEST_CASE("[peer]: each refusal names its line and column")
{
    const std::pair<std::string, const char *> bad[] = {
        // [peer] keys (line 18 is the first after the required ones)
        {"underlay_mtu = 117\n", "h.toml:18:16: 'underlay_mtu' = 117 is out of range [118, 65535]"},
        {"underlay_mtu = 65536\n", "h.toml:18:16: 'underlay_mtu' = 65536 is out of range"},
        {"vni = 16777216\n", "h.toml:18:7: 'vni' = 16777216 is out of range [0, 16777215]"},
        {"vni = -1\n", "h.toml:18:7: 'vni' = -1 is out of range"},
        {"vxlan_udp_port = 0\n", "h.toml:18:18: 'vxlan_udp_port' = 0 is out of range"},
        {"heartbeat_ms = 500\ndead_after_ms = 999\n",
         "h.toml:19:17: 'dead_after_ms' (999) must be at least two heartbeats (2 x 'heartbeat_ms' = 1000)"},
        {"lease_ms = 2000\n", "h.toml:18:12: 'lease_ms' (2000) must be longer than 'dead_after_ms' (2000)"},
        {"listn = 1\n", "h.toml:18:9: [peer]: unknown key 'listn'"},
        // [[peer.host]] (its first key is on line 19)
        {"[[peer.host]]\nid = \"a\"\naddress = \"10.0.0.2:7946\"\n",
         "h.toml:19:6: peer id 'a' is this host's own [host] id"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:7946\"\n[[peer.host]]\nid = \"b\"\naddress = "
         "\"10.0.0.3:7946\"\n",
         "h.toml:22:6: peer id 'b' is already used at line 18"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:7946\"\n[[peer.host]]\nid = \"c\"\naddress = "
         "\"10.0.0.2:7946\"\n",
         "h.toml:23:11: peer address 10.0.0.2:7946 is already the address of peer 'b' (line 18)"},
        {"[[peer.host]]\nid = \"../b\"\naddress = \"10.0.0.2:7946\"\n", "h.toml:19:6: '../b' is not a valid peer id"},
        {"[[peer.host]]\nid = \"b\"\n", "h.toml:18:1: [[peer.host]]: missing required key 'address'"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2\"\n", "h.toml:20:11: 'address' has no port"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"[::1]:7946\"\n", "h.toml:20:11: 'address': '[::1]' is not an IPv4"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"peer-b:7946\"\n", "'peer-b' is not an IPv4 address"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:0\"\n", "h.toml:20:11: 'address': port '0' is not 1..65535"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nnext_hop_mac = \"02:00:5e:10:00\"\n",
         "h.toml:21:16: 'next_hop_mac' must be a MAC address of six hex bytes"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nnext_hop_mac = \"02-00-5e-10-00-01\"\n",
         "h.toml:21:16: 'next_hop_mac' must be a MAC address"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nnext_hop_mac = \"02:00:5e:10:00:0g\"\n",
         "h.toml:21:16: 'next_hop_mac' must be a MAC address"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nnext_hop_mac = \"ff:ff:ff:ff:ff:ff\"\n",
         "h.toml:21:16: 'next_hop_mac' must be a unicast MAC address"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nnext_hop_mac = \"00:00:00:00:00:00\"\n",
         "h.toml:21:16: 'next_hop_mac' must be a unicast MAC address"},
        {"[[peer.host]]\nid = \"b\"\naddress = \"10.0.0.2:1\"\nmac = \"02:00:5e:10:00:01\"\n",
         "h.toml:21:7: [[peer.host]]: unknown key 'mac'"},
    };
    for (const auto &[extra, why] : bad) {
        CAPTURE(extra);
        CHECK_THROWS_WITH_AS(load_host_config_text(with_peer(extra), "h.toml"), doctest::Contains(why), ConfigError);
    }
}

TEST_CASE("[peer]: the required keys, the listener, the underlay port and address")
{
    const std::string ports2 = "[host]\nid = \"a\"\nplugin_dir = \".\"\nchains_dir = \".\"\n"
                               "[[port]]\nname = \"lan\"\ndevice = \"net_null0\"\n";
    const std::string creds = "certificate = \"a.crt\"\nprivate_key = \"a.key\"\nca = \"ca.crt\"\n";
    CHECK_THROWS_WITH_AS(load_host_config_text(ports2 + "[peer]\n", "h.toml"),
                         doctest::Contains("missing required key 'listen'"), ConfigError);
    const std::string listen = "[peer]\nlisten = \"10.0.0.1:7946\"\n";
    CHECK_THROWS_WITH_AS(load_host_config_text(ports2 + listen + "certificate = \"a.crt\"\n", "h.toml"),
                         doctest::Contains("missing required key 'private_key'"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(ports2 + "[peer]\nlisten = \"[::1]:7946\"\n" + creds, "h.toml"),
                         doctest::Contains("h.toml:9:10: 'listen': '[::1]' is not an IPv4 address; 'listen' must be "
                                           "\"<IPv4>:<port>\" with a numeric address"),
                         ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(ports2 + listen + creds + "underlay_port = \"underlay\"\n", "h.toml"),
                         doctest::Contains("h.toml:13:17: unknown port 'underlay' (ports: lan)"), ConfigError);
    const std::string port = "underlay_port = \"lan\"\n";
    CHECK_THROWS_WITH_AS(load_host_config_text(ports2 + listen + creds + port, "h.toml"),
                         doctest::Contains("missing required key 'underlay_address'"), ConfigError);
    for (const char *address : {"10.0.0", "10.0.0.1:4789", "fe80::1", ""}) {
        CAPTURE(address);
        CHECK_THROWS_WITH_AS(load_host_config_text(
                                 ports2 + listen + creds + port + "underlay_address = \"" + address + "\"\n", "h.toml"),
                             doctest::Contains("h.toml:14:20: 'underlay_address' must be a numeric IPv4 address"),
                             ConfigError);
    }
    for (const char *address : {"0.0.0.0", "255.255.255.255", "239.1.2.3"}) {
        CAPTURE(address);
        CHECK_THROWS_WITH_AS(load_host_config_text(
                                 ports2 + listen + creds + port + "underlay_address = \"" + address + "\"\n", "h.toml"),
                             doctest::Contains("h.toml:14:20: 'underlay_address' must be a unicast address"),
                             ConfigError);
    }
    CHECK(load_host_config_text(ports2 + listen + creds + port + "underlay_address = \"192.0.2.7\"\n", "h.toml")
              .peer.underlay_port == "lan");
}

TEST_CASE("[peer]: a host started from a file needs its credentials to be there")
{
    ScratchDir dir;
    const std::string text = with_peer("");
    const std::string file = dir.write("h.toml", text);
    const std::string missing = "h.toml:13:15: 'certificate': this host's certificate " +
                                (dir.path() / "peer/a.crt").string() + " does not exist";
    CHECK_THROWS_WITH_AS(load_host_config(file), doctest::Contains(missing.c_str()), ConfigError);
    std::filesystem::create_directory(dir.path() / "peer");
    dir.write("peer/a.crt", "x");
    dir.write("peer/a.key", "x");
    CHECK_THROWS_WITH_AS(load_host_config(file), doctest::Contains("h.toml:15:6: 'ca': the peers' CA certificate"),
                         ConfigError);
    dir.write("peer/ca.crt", "x");
    CHECK(load_host_config(file).peer.ca == (dir.path() / "peer/ca.crt").string());
}

TEST_CASE("one device is one port: a second port of the same device, or an empty device, is refused at its line")
{
    const std::string head = "[host]\nplugin_dir = \".\"\nchains_dir = \".\"\n";
    CHECK_THROWS_WITH_AS(
        load_host_config_text(head + "[[port]]\nname = \"a\"\ndevice = \"net_pcap0,rx_pcap=a.pcap\"\n"
                                     "[[port]]\nname = \"b\"\ndevice = \"net_pcap0,rx_pcap=b.pcap\"\n",
                              "h.toml"),
        doctest::Contains("h.toml:9:10: device 'net_pcap0' is already the device of the port at line 4"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config_text(head + "[[port]]\nname = \"a\"\ndevice = \"\"\n", "h.toml"),
                         doctest::Contains("h.toml:6:10: 'device' names no device"), ConfigError);
    CHECK(load_host_config_text(head + "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\n"
                                       "[[port]]\nname = \"b\"\ndevice = \"net_null1\"\n",
                                "h.toml")
              .ports.size() == 2);
}

TEST_CASE("a wake threshold must fit in a ring; the default shrinks to a small ring")
{
    const std::string base = with_id("h");
    CHECK_THROWS_WITH_AS(
        load_host_config_text(base + "[instances]\nring_size = 64\nwake_threshold = 64\n", "h.toml"),
        doctest::Contains("h.toml:10:18: 'wake_threshold' (64) would never be reached: a ring of 'ring_size' 64 holds "
                          "63 packets"),
        ConfigError);
    CHECK(load_host_config_text(base + "[instances]\nring_size = 64\nwake_threshold = 63\n", "h.toml").wake_threshold ==
          63);
    CHECK(load_host_config_text(base + "[instances]\nring_size = 64\n", "h.toml").wake_threshold == 63);
    CHECK(load_host_config_text(base, "h.toml").wake_threshold == 128);
}

TEST_CASE("an empty path is refused rather than taken as host.toml's directory; a socket path must fit sun_path")
{
    for (const char *key : {"plugin_dir", "chains_dir", "state_dir", "control_socket", "log_file"}) {
        CAPTURE(key);
        const std::string text = "[host]\n" + std::string(key) + " = \"\"\n" + std::string(ports);
        CHECK_THROWS_WITH_AS(load_host_config_text(text, "h.toml"),
                             doctest::Contains(("'" + std::string(key) + "' is empty: name a path").c_str()),
                             ConfigError);
    }
    const std::string socket = "/tmp/" + std::string(103, 's'); // 108 bytes
    CHECK_THROWS_WITH_AS(
        load_host_config_text("[host]\ncontrol_socket = \"" + socket + "\"\n" + std::string(ports), "h.toml"),
        doctest::Contains(("h.toml:2:18: control_socket " + socket + " is 108 bytes long").c_str()), ConfigError);
    CHECK(load_host_config_text("[host]\ncontrol_socket = \"" + socket.substr(0, 107) + "\"\n" + std::string(ports),
                                "h.toml")
              .control_socket.size() == 107);
}

TEST_CASE("a symbolic-link loop or an overlong name where host.toml names a path is an error, not a crash")
{
    ScratchDir dir;
    std::filesystem::create_symlink("loop", dir.path() / "loop");
    const std::string loop =
        dir.write("l.toml", "[host]\nplugin_dir = \"loop\"\nchains_dir = \".\"\n" + std::string(ports));
    CHECK_THROWS_WITH_AS(load_host_config(loop), doctest::Contains("l.toml:2:14: plugin directory"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config(loop), doctest::Contains("symbolic links"), ConfigError);
    const std::string long_name = dir.write("n.toml", "[host]\nplugin_dir = \".\"\nchains_dir = \"" +
                                                          std::string(300, 'x') + "\"\n" + std::string(ports));
    CHECK_THROWS_WITH_AS(load_host_config(long_name), doctest::Contains("n.toml:3:14: chains directory"), ConfigError);
    const std::string file =
        dir.write("f.toml", "[host]\nplugin_dir = \"l.toml\"\nchains_dir = \".\"\n" + std::string(ports));
    CHECK_THROWS_WITH_AS(load_host_config(file), doctest::Contains("l.toml is not a directory"), ConfigError);
    std::filesystem::create_symlink("cred", dir.path() / "cred");
    std::string peer = with_peer("");
    peer.replace(peer.find("peer/a.crt"), 10, "cred");
    CHECK_THROWS_WITH_AS(load_host_config(dir.write("p.toml", peer)), doctest::Contains("symbolic links"), ConfigError);
    CHECK_THROWS_WITH_AS(load_host_config((dir.path() / "loop").string()), doctest::Contains("symbolic links"),
                         ConfigError);
}

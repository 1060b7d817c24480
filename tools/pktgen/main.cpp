// serpens-pktgen: writes a reproducible synthetic pcap (see tools/support/traffic.h
// for the traffic model and the list of corruptions).
//
//   serpens-pktgen -o in.pcap                      10000 packets, 256 flows, mixed, 1% malformed
//   serpens-pktgen -o in.pcap --seed 7 --packets 1e6 --mix tcp=70,udp=30 --size 64 --summary
#include "core/version.h"
#include "support/traffic.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

namespace net = serpens::net;

int main(int argc, char **argv)
{
    net::TrafficConfig cfg;
    CLI::App app{"serpens-pktgen: write a reproducible synthetic pcap (Ethernet, VLAN/QinQ, IPv4/IPv6, "
                 "TCP/UDP/ICMP/ICMPv6, correct checksums, an optional share of malformed packets).\n"
                 "The same options and --seed give the same bytes on every machine."};
    app.get_formatter()->column_width(30);
    app.set_version_flag("--version", serpens::version_line("serpens-pktgen"));

    std::string output;
    std::string mix = net::format_traffic_mix(cfg.mix);
    std::string src_net = "198.18.0.0/16";
    std::string dst_net = "198.19.0.0/16";
    std::string src_net6 = "2001:db8:a::/48";
    std::string dst_net6 = "2001:db8:b::/48";
    uint32_t size = 0;
    bool summary = false;
    std::string summary_file;

    app.add_option("-o,--output", output, "pcap file to write (classic pcap, microseconds, Ethernet)")->required();
    app.add_option("--seed", cfg.seed, "PRNG seed; same seed and options -> identical file")->capture_default_str();
    app.add_option("-n,--packets", cfg.packets, "number of packets to write")->capture_default_str();
    app.add_option("-f,--flows", cfg.flows, "number of flows; packets are split evenly between them and interleaved")
        ->capture_default_str();
    app.add_option("--mix", mix,
                   "protocol mix as class=weight,... over flows; classes tcp, udp, icmp (IPv4), tcp6, udp6, "
                   "icmp6 (IPv6); 'ipv6=W' spreads W over tcp6:udp6:icmp6 as 6:3:1; unnamed classes get 0")
        ->capture_default_str();
    app.add_option("--vlan-ratio", cfg.vlan_ratio,
                   "share of flows carrying 802.1Q tags, a quarter of them QinQ (0x88a8 + 0x8100)")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    auto *size_opt = app.add_option("-s,--size", size,
                                    "fixed frame size in bytes as stored (no FCS) for data packets; "
                                    "SYN/ACK/FIN carry no payload (padded to 60)");
    auto *min_opt = app.add_option("--size-min", cfg.size_min, "smallest data frame (uniform in [min, max])")
                        ->capture_default_str();
    auto *max_opt = app.add_option("--size-max", cfg.size_max, "largest data frame")->capture_default_str();
    size_opt->excludes(min_opt)->excludes(max_opt);
    app.add_option("--malformed-ratio", cfg.malformed_ratio,
                   "share of packets deliberately broken: truncated Ethernet/VLAN/IP/L4 headers, IPv4 IHL < 5 "
                   "or IPv6 version != 6, IP lengths beyond the frame, TCP data offset < 5, bad UDP length")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--src-net", src_net, "IPv4 prefix for client addresses")->capture_default_str();
    app.add_option("--dst-net", dst_net, "IPv4 prefix for server addresses")->capture_default_str();
    app.add_option("--src-net6", src_net6, "IPv6 prefix for client addresses")->capture_default_str();
    app.add_option("--dst-net6", dst_net6, "IPv6 prefix for server addresses")->capture_default_str();
    app.add_option("--start-ns", cfg.start_ns, "timestamp of the first packet, ns since the epoch")
        ->capture_default_str();
    app.add_option("--gap-ns", cfg.gap_ns, "time between consecutive packets, ns")->capture_default_str();
    app.add_flag("--summary", summary,
                 "print a JSON summary on stdout: counts per class, VLAN, TCP SYN/FIN, corruptions, the parse "
                 "result expected for each reason, and the frame numbers of malformed packets");
    app.add_option("--summary-file", summary_file, "write the same JSON summary to this file");

    CLI11_PARSE(app, argc, argv);

    try {
        if (size != 0) {
            cfg.size_min = cfg.size_max = size;
        }
        cfg.mix = net::parse_traffic_mix(mix);
        cfg.src_net = net::parse_ipv4_prefix(src_net);
        cfg.dst_net = net::parse_ipv4_prefix(dst_net);
        cfg.src_net6 = net::parse_ipv6_prefix(src_net6);
        cfg.dst_net6 = net::parse_ipv6_prefix(dst_net6);
        const net::TrafficSummary s = net::write_traffic_pcap(cfg, output);
        const std::string json = s.to_json();
        if (summary) {
            std::cout << json;
        }
        if (!summary_file.empty()) {
            std::FILE *f = std::fopen(summary_file.c_str(), "w");
            if (f == nullptr || std::fputs(json.c_str(), f) < 0 || std::fclose(f) != 0) {
                std::cerr << "serpens-pktgen: cannot write summary file " << summary_file << "\n";
                return 1;
            }
        }
        if (!summary) {
            std::cerr << "serpens-pktgen: wrote " << s.packets << " packets (" << s.flows << " flows, " << s.malformed()
                      << " malformed) to " << output << "\n";
        }
    } catch (const std::invalid_argument &e) {
        std::cerr << "serpens-pktgen: " << e.what() << "\n";
        return 2;
    } catch (const std::exception &e) {
        std::cerr << "serpens-pktgen: " << e.what() << "\n";
        return 1;
    }
    return 0;
}

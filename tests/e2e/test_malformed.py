"""Malformed packets are counted per reason and never crash the host, whether
they are dropped or passed on."""
from harness import Host, check, total_drops

for policy in ("drop", "pass"):
    host = Host()
    summary = host.pktgen("--packets", "8000", "--flows", "200", "--malformed-ratio", "0.3", "--seed", "3")
    host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
    # With "pass", malformed packets reach only rules that test nothing but
    # the port; this one matches everything.
    host.config(host.pcap_port() + f'\n[parser]\nmalformed = "{policy}"\n'
                '\n[[gateway.rule]]\nname = "all"\nchain = "c"\nin_port = "pcap0"\n')
    host.run("--idle-exit", "1")
    stats = host.stats()
    parser = stats["parser"]
    for reason, count in summary["expected_parse"].items():
        check(parser[reason] == count, f"[{policy}] parser counted {parser[reason]} {reason}, generated {count}")
    rx, tx = stats["ports"][0]["rx"], stats["ports"][0]["tx"]
    check(rx == summary["packets"], f"[{policy}] received {rx}")
    check(rx == tx + total_drops(stats), f"[{policy}] rx {rx} != tx {tx} + drops {total_drops(stats)}")
    if policy == "drop":
        check(stats["dispatch"]["malformed_dropped"] == summary["malformed"], "malformed drops")
    else:
        check(stats["dispatch"]["malformed_dropped"] == 0 and tx == rx, "pass: everything forwarded")
    print(f"ok [{policy}]: {summary['malformed']} malformed of {rx}")
    host.cleanup()

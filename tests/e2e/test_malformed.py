"""Malformed packets are counted per reason and never crash the host, whether
they are dropped or passed on, to a tracing NF or through the real fw-mon-nat."""
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

# The same traffic through the real SFC (fw -> mon -> nat, with per-flow
# state): with "pass", every malformed frame reaches the NFs.  Nothing
# crashes and every packet is accounted for.
host = Host()
summary = host.pktgen("--packets", "8000", "--flows", "200", "--malformed-ratio", "0.3", "--seed", "5")
host.fw_mon_nat(egress="pcap0")
host.config(host.pcap_port() + '\n[parser]\nmalformed = "pass"\n'
            '\n[[gateway.rule]]\nname = "all"\nchain = "sfc"\nin_port = "pcap0"\n')
host.run("--idle-exit", "1")
stats = host.stats()
rx, tx = stats["ports"][0]["rx"], stats["ports"][0]["tx"]
check(rx == summary["packets"], f"[sfc] received {rx}")
check(rx == tx + total_drops(stats), f"[sfc] rx {rx} != tx {tx} + drops {total_drops(stats)}")
first = stats["instances"][0]["nfs"][0]
check(first["packets"] == rx, f"[sfc] fw saw {first['packets']} of {rx}")
print(f"ok [sfc]: {summary['malformed']} malformed of {rx} through fw-mon-nat, {tx} out")
host.cleanup()

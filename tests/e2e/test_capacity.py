"""The default state sizes hold a server's flows: 100k new flows through
FW -> MON -> NAT with no size key in the chain fill no table (nothing counted
as full, nothing dropped for want of room)."""

from harness import Host, check

FLOWS = 100_000

host = Host(plugins=())
host.fw_mon_nat(egress="pcap0")
# Two packets per flow, every flow new: the worst case for table sizes.
host.pktgen("--packets", str(2 * FLOWS), "--flows", str(FLOWS), "--mix", "tcp=60,udp=40",
            "--malformed-ratio", "0", "--vlan-ratio", "0", "--size", "64", "--seed", "7")
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "sfc"\n')
host.run("--idle-exit", "2", timeout=240)

counters = {}
for inst in host.stats()["instances"]:
    for nf in inst["nfs"]:
        for k, v in nf["counters"].items():
            counters[nf["name"] + "." + k] = counters.get(nf["name"] + "." + k, 0) + v
full = {k: v for k, v in counters.items() if v and ("full" in k or "overflow" in k)}
check(not full, f"tables filled at {FLOWS} flows: {full}")
out = len(host.output())
check(out == 2 * FLOWS, f"{out} of {2 * FLOWS} packets left the chain; stats: {host.stats()['dispatch']} "
                        f"{[(i['packets'], i['dropped'], i['tx_dropped']) for i in host.stats()['instances']]} {counters}")
print(f"ok: {FLOWS} flows, {out} packets, no table full "
      f"(mon flows {counters.get('mon.flows_created', '?')}, nat mappings {counters.get('nat.mappings_created', '?')})")
host.cleanup()

"""SIGKILL while FW -> MON -> NAT forwards established flows, then restart:
every flow keeps its NAT mapping and its fw verdicts (the restarted host
makes no new mapping and classifies no flow again), and no mon count is
lower than before the kill.  Read from the chain's flow table
(`serpens-state flows`) and the NFs' counters."""
import json
import signal
import subprocess
import sys
import time

from harness import Host, STATE_TOOL, check

FLOWS = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
# Starting on a million flows' state takes minutes where zeroing memory is
# slow (a VM: mon's 3.4 GB hosts table alone took 32 s to reserve).
SLOW_S = FLOWS // 4000

host = Host(plugins=())
host.fw_mon_nat(egress="out")
host.pktgen("--packets", str(FLOWS), "--flows", str(FLOWS), "--mix", "tcp=60,udp=40", "--malformed-ratio", "0",
            "--vlan-ratio", "0", "--size", "64", "--seed", "11")
# The capture replays until the kill; what leaves is dropped.
host.config(f'[[port]]\nname = "in"\ndevice = "net_pcap0,rx_pcap={host.path("in.pcap")},infinite_rx=1"\n'
            '[[port]]\nname = "out"\ndevice = "net_null0,no-rx=1"\n'
            '\n[[gateway.rule]]\nchain = "sfc"\n'
            f'\n[instances]\nring_size = 16384\nflow_capacity = {max(65536, 2 * FLOWS)}\n'
            # net_pcap holds the whole capture in mbufs to replay it.
            f'\n[mempool]\nmbufs = {FLOWS + 32767}\n',
            eal=host.eal().replace('"-m", "256"', f'"-m", "{1024 + FLOWS * 7 // 1000}"'))


def flows():
    """The chain's flow table: {flow key: {nf: [u64 words]}}."""
    out = subprocess.run([STATE_TOOL, "--root", host.state, "flows", "sfc", "--json"], capture_output=True, text=True,
                         check=True).stdout
    return {(e["addr_a"], e["port_a"], e["addr_b"], e["port_b"], e["proto"]): e["areas"]
            for e in json.loads(out)["entries"]}


def counters(stats, nf):
    total = {}
    for inst in stats["instances"]:
        for n in inst["nfs"]:
            if n["name"] == nf:
                for k, v in n["counters"].items():
                    total[k] = total.get(k, 0) + v
    return total


proc = host.start(start_timeout=100 + SLOW_S)
deadline = time.monotonic() + 120 + SLOW_S
while host.chain_stats("sfc")["flows"]["live"] < FLOWS and time.monotonic() < deadline:
    time.sleep(0.1)
check(host.chain_stats("sfc")["flows"]["live"] == FLOWS, f"every flow established: {host.chain_stats('sfc')}")
time.sleep(0.5)
before = flows()  # read next to the running host: a snapshot, counts only grow
proc.send_signal(signal.SIGKILL)
proc.wait(timeout=30)
check(len(before) == FLOWS, f"{len(before)} entries of {FLOWS} flows")
mapped = [a["nat"][0] for a in before.values() if a["nat"][0] != 0]
check(len(mapped) == FLOWS, f"every flow has a NAT mapping: {len(mapped)} of {FLOWS}")
check(len(set(w & 0xffffffffffffff for w in mapped)) == FLOWS, "no two flows share an external item")

# Restart on the same state, with the same traffic, for a while.
host.run("--duration", "2", timeout=120 + SLOW_S)
after = flows()
stats = host.stats()
nat, fw = counters(stats, "nat"), counters(stats, "fw")
check(nat.get("mappings_created", 0) == 0, f"the restarted host made no mapping: {nat}")
check(nat.get("translated_out", 0) > 0, f"and translated the flows: {nat}")
check(fw.get("cache_misses", 0) == 0, f"the restarted host classified no flow again: {fw}")
changed_nat = [k for k in before if after.get(k, {}).get("nat") != before[k]["nat"]]
changed_fw = [k for k in before if after.get(k, {}).get("fw") != before[k]["fw"]]
lower_mon = [k for k in before if k in after and any(a < b for a, b in zip(after[k]["mon"][:2], before[k]["mon"][:2]))]
check(not changed_nat, f"{len(changed_nat)} flows changed their NAT mapping, e.g. {changed_nat[:3]}")
check(not changed_fw, f"{len(changed_fw)} flows changed their fw verdicts, e.g. {changed_fw[:3]}")
check(not lower_mon and set(before) <= set(after), f"{len(lower_mon)} flows' mon counts went down or vanished")
print(f"ok: {FLOWS} flows survived SIGKILL: mappings and verdicts unchanged, mon counts "
      f"{sum(a['mon'][0] for a in before.values())} -> {sum(a['mon'][0] for a in after.values())} packets")
host.cleanup()

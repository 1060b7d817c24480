#!/usr/bin/env python3
"""What scaling a chain onto another server costs (issue 19's benchmarks).

Two serpens-hosts, a and b, run in two network namespaces over a veth pair
(their VXLAN underlay), as the multi-host tests run them; both run
FW -> MON -> NAT.  A paced sender feeds a a stream of UDP packets, each of a
flow not seen for longer than the flows' idle timeout, so new flows arrive
all the time.  Then, --events times: a steady window, `serpensctl scale sfc
+1 --peer b`, an event window, `scale sfc -1 --peer b`, and a wait until b
has given every lease of nat's pool back.  Measured in the same run:

 - reply: how long a took to answer the scale command (the peer's accept,
   the copies of global/read state, the leases of nat's pool);
 - first packet on b: from a receiving the command to the first packet b
   processed for a (both hosts' CLOCK_MONOTONIC, one machine), at the
   offered rate of new flows: its inter-arrival time is the resolution;
 - the owner's data-path pause: how long an iteration of a's lcore that did
   work lasted (meanwhile it polls nothing, so a packet waits at most that),
   from a's per-lcore histogram, the longest and the 99.9th percentile in
   the event windows (from just before each command to --window s after its
   reply) against the steady windows of the same length just before.
   Target: < 1 ms.

Speed is reported, never asserted.  Needs root (namespaces), the build's
serpens-host, serpensctl and plugins, and `openssl`.

    sudo python3 tools/bench/peer_scale.py --build build --events 10
"""
import argparse
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
E2E = os.path.join(HERE, "..", "..", "tests", "e2e")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--build", default="build", help="the meson build directory (default: build)")
    p.add_argument("--events", type=int, default=10, help="scale-outs (each followed by its scale-in)")
    p.add_argument("--rate", type=int, default=20000, help="new flows (packets) per second offered to a")
    p.add_argument("--window", type=float, default=0.5, help="seconds of each steady and event window")
    p.add_argument("--json", metavar="FILE", help="also write the results there")
    p.add_argument("--realtime", action="store_true",
                   help="run a's lcore at SCHED_FIFO priority 10, so the scheduler does not preempt it")
    p.add_argument("--log-level", default="warn", help="the hosts' log level; their logs are printed at the end "
                                                      "unless it is warn")
    p.add_argument("--send", nargs=2, metavar=("IFACE", "RATE"), help=argparse.SUPPRESS)  # the sender's own mode
    return p.parse_args()


def frames(count):
    """`count` UDP packets from 198.18.0.0/16, each its own flow."""
    from harness import eth_ipv4
    out = []
    for i in range(count):
        src = bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF])
        udp = struct.pack("!HHHH", 1024 + (i >> 16), 53, 8 + 18, 0) + bytes(18)
        out.append(eth_ipv4(src, bytes([203, 0, 113, 9]), 17, udp))
    return out


def send_forever(iface, rate):
    """The sender, run inside a's namespace: `rate` packets a second in
    bursts of one millisecond's worth, each a flow not seen for a while."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    # 2^18 flows: at 20k/s a flow comes again after 13 s, past its idle timeout.
    trace = frames(1 << 18)
    per_ms = max(1, rate // 1000)
    i = 0
    next_ms = time.monotonic()
    while True:
        for _ in range(per_ms):
            s.send(trace[i % len(trace)])
            i += 1
        next_ms += 0.001
        delay = next_ms - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def run_queue_wait_ns(pid):
    """How long the thread `pid` (a's main lcore) has waited for a CPU while
    runnable (/proc schedstat): a long iteration that coincides with it was
    the scheduler, not the host."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1])


def histogram_of(stats):
    """a's busy-iteration histogram, {bucket's lowest ns: iterations}, over its lcores."""
    h = {}
    for lcore in stats["lcores"]:
        for low, n in lcore["busy_iteration_ns"]:
            h[low] = h.get(low, 0) + n
    return h


def difference(later, earlier):
    return {low: n - earlier.get(low, 0) for low, n in later.items() if n - earlier.get(low, 0) > 0}


def add(total, h):
    for low, n in h.items():
        total[low] = total.get(low, 0) + n


def upper_us(low):
    """A bucket's upper bound in µs: buckets are 1/8 of a power of two wide."""
    return (low + max(1, low // 8)) / 1000


def percentile_us(h, p):
    total = sum(h.values())
    seen = 0
    for low in sorted(h):
        seen += h[low]
        if seen >= total * p:
            return upper_us(low)
    return 0.0


def main():
    args = parse_args()
    if args.send:
        sys.path.insert(0, E2E)
        send_forever(args.send[0], int(args.send[1]))
        return
    build = os.path.abspath(args.build)
    os.environ.setdefault("SERPENS_HOST", os.path.join(build, "host", "serpens-host"))
    os.environ.setdefault("SERPENSCTL", os.path.join(build, "tools", "serpensctl", "serpensctl"))
    os.environ.setdefault("SERPENS_PKTGEN", os.path.join(build, "tools", "pktgen", "serpens-pktgen"))
    os.environ.setdefault("SERPENS_TEST_PLUGINS", os.path.join(build, "tests", "plugins"))
    sys.path.insert(0, E2E)
    from harness import Host, Netns, make_pki, peer_section, wait_until

    ns_a, ns_b = Netns("bench-a"), Netns("bench-b")
    ns_a.link(ns_b, "sa", "sb", "10.93.0.1/24", "10.93.0.2/24")
    ns_a.veth("ia", "ib")
    a, b = Host(plugins=()), Host(plugins=())
    pki = make_pki(a.path("pki"), [a.prefix, b.prefix])
    # Flows end 2 s after their last packet on both hosts, NAT mappings
    # included: a scale-in drains in seconds, and the pool never runs dry.
    for host, egress in ((a, "out"), (b, "underlay")):
        host.fw_mon_nat(egress)
        with open(host.path("chains/sfc.toml"), "a") as f:
            f.write("[nf.config.timeouts]\nudp = 2\n")
    instance = '\n[[instance]]\nchain = "sfc"\ncount = 1\nflow_idle_s = 2\n'
    a.config('[[port]]\nname = "in"\ndevice = "net_af_packet0,iface=ia,framecnt=4096"\n'
             '[[port]]\nname = "out"\ndevice = "net_null0,no-rx=1"\n'
             '[[port]]\nname = "underlay"\ndevice = "net_af_packet1,iface=sa"\n'
             '\n[[gateway.rule]]\nin_port = "in"\nchain = "sfc"\n' + instance +
             peer_section(a, pki, "10.93.0.1", b, "10.93.0.2", underlay="10.92.0.1", lease_ms=3000),
             eal=a.eal("0"))
    b.config('[[port]]\nname = "underlay"\ndevice = "net_af_packet0,iface=sb"\n' + instance +
             peer_section(b, pki, "10.93.0.2", a, "10.93.0.1", underlay="10.92.0.2", lease_ms=3000),
             eal=b.eal("1"))  # each polling lcore on its own CPU
    proc_a = a.start(ns=ns_a, log_level=args.log_level)
    proc_b = b.start(ns=ns_b, log_level=args.log_level)
    if args.realtime:
        # a's lcore (its main thread) preempts everything else on its CPU, so
        # its iterations measure the host and not this machine's other
        # busy threads; the kernel's RT throttling keeps 5% for the others.
        subprocess.run(["chrt", "-f", "-p", "10", str(proc_a.pid)], check=True)
    sender = ns_a.popen("python3", os.path.abspath(__file__), "--send", "ib", str(args.rate))
    alive = (proc_a, proc_b, sender)

    def peer_entry(host, peer_id):
        return next(p for p in host.ctl_json("peers")["peers"] if p["id"] == peer_id)

    replies, first_remote, first_at_b, steady_wait, event_wait = [], [], [], [], []
    steady, event = {}, {}
    try:
        wait_until("a and b see each other up",
                   lambda: peer_entry(a, b.prefix)["up"] and peer_entry(b, a.prefix)["up"], alive)
        wait_until("a forwards the new flows", lambda: a.ctl_json("stats")["instances"][0]["out"] > args.rate, alive)
        for n in range(args.events):
            waited = [run_queue_wait_ns(proc_a.pid)]
            before = histogram_of(a.ctl_json("stats"))
            time.sleep(args.window)
            start = histogram_of(a.ctl_json("stats"))
            waited.append(run_queue_wait_ns(proc_a.pid))
            scaled = a.ctl_json("scale", "sfc", "+1", "--peer", b.prefix)
            time.sleep(args.window)
            end = histogram_of(a.ctl_json("stats"))
            waited.append(run_queue_wait_ns(proc_a.pid))
            add(steady, difference(start, before))
            add(event, difference(end, start))
            steady_wait.append((waited[1] - waited[0]) / 1e6)
            event_wait.append((waited[2] - waited[1]) / 1e6)
            ran = wait_until("b runs a packet for a", lambda: (peer_entry(b, a.prefix)["runs_for_it"].get("sfc") or
                                                              {}).get("first_packet_ns"), alive)
            served = peer_entry(b, a.prefix)["runs_for_it"]["sfc"]
            replies.append(scaled["ms"])
            first_remote.append((ran - scaled["started_ns"]) / 1e6)
            first_at_b.append(served["first_packet_after_ms"])
            a.ctl_json("scale", "sfc", "-1", "--peer", b.prefix)
            wait_until("b gives its leases back", lambda: peer_entry(a, b.prefix)["leases_granted"] == 0, alive, 60,
                       lambda: f"; b: {b.ctl_json('chains')}; a sends to b: "
                               f"{[i['to_peers'] for i in a.ctl_json('stats')['instances']]}")
            print(f"event {n + 1}/{args.events}: reply {replies[-1]:.2f} ms, first packet on b after "
                  f"{first_remote[-1]:.2f} ms; a's longest busy iteration {percentile_us(difference(end, start), 1):.1f} µs, "
                  f"its lcore waited {event_wait[-1]:.1f} ms for a CPU (steady window: "
                  f"{percentile_us(difference(start, before), 1):.1f} µs, {steady_wait[-1]:.1f} ms)", flush=True)
    finally:
        sender.send_signal(signal.SIGTERM)
        sender.wait(timeout=10)
        for proc in (proc_a, proc_b):
            if proc.poll() is None:
                proc.terminate()
            log = proc.communicate(timeout=60)[0]
            if args.log_level != "warn":
                print(log)
        a.cleanup()
        b.cleanup()

    def spread(values):
        values = sorted(values)
        return {"p50": statistics.median(values), "max": values[-1], "min": values[0]}

    results = {
        "events": args.events,
        "rate_per_s": args.rate,
        "resolution_ms": 1000 / args.rate,
        "scale_out_reply_ms": spread(replies),
        "command_to_first_remote_packet_ms": spread(first_remote),
        "request_to_first_packet_at_peer_ms": spread(first_at_b),
        "owner_busy_iteration_us": {
            "event": {"p99": percentile_us(event, 0.99), "p99.9": percentile_us(event, 0.999),
                      "max": percentile_us(event, 1.0)},
            "steady": {"p99": percentile_us(steady, 0.99), "p99.9": percentile_us(steady, 0.999),
                       "max": percentile_us(steady, 1.0)},
            "target_max": 1000,
        },
        "owner_lcore_run_queue_wait_ms_per_window": {"event": spread(event_wait), "steady": spread(steady_wait)},
    }
    r = results
    print(f"\n{args.events} cross-server scale-outs of FW -> MON -> NAT under {args.rate} new flows/s "
          f"(first-packet resolution {r['resolution_ms']:.3f} ms):")
    for name, key in (("scale-out reply (ms)", "scale_out_reply_ms"),
                      ("command -> first packet on the peer (ms)", "command_to_first_remote_packet_ms"),
                      ("  of which: request at the peer -> first packet there", "request_to_first_packet_at_peer_ms")):
        v = r[key]
        print(f"  {name}: p50 {v['p50']:.2f}, min {v['min']:.2f}, max {v['max']:.2f}")
    o = r["owner_busy_iteration_us"]
    print("  owner's data-path pause (its busy lcore iterations, µs; target < 1000):")
    for window in ("event", "steady"):
        w = o[window]
        q = r["owner_lcore_run_queue_wait_ms_per_window"][window]
        print(f"    {window} windows: p99 {w['p99']:.1f}, p99.9 {w['p99.9']:.1f}, max {w['max']:.1f}; "
              f"the lcore waited for a CPU {q['p50']:.1f} ms per window (p50; max {q['max']:.1f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

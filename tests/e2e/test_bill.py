"""Bills survive restarts: `serpensctl bill` counts every packet and byte a
chain ran on, from the usage ledger in the state dir, across a clean restart
and, after a SIGKILL, everything older than the stated one-second window."""
import json
import os
import signal
import time

from harness import Host, check, read_pcap, write_pcap

host = Host()
host.chain("c", 'name = "c"\negress = "pcap0"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.pktgen("--packets", "3000", "--flows", "50", "--malformed-ratio", "0", "--seed", "11")
frames = host.input()
first, second = frames[:1800], frames[1800:]
write_pcap(host.path("first.pcap"), first)
write_pcap(host.path("second.pcap"), second)
write_pcap(host.path("empty.pcap"), [])


def configure(pcap):
    host.config(f'[[port]]\nname = "pcap0"\ndevice = "net_pcap0,rx_pcap={host.path(pcap)},'
                f'tx_pcap={host.path("out.pcap")}"\n\n[[gateway.rule]]\nchain = "c"\n')


def bill(*args):
    out = host.ctl("bill", "--json", *args)
    check(out.returncode == 0, f"serpensctl bill {' '.join(args)}: {out.stdout}{out.stderr}")
    return json.loads(out.stdout)


def expect(reply, sent, when):
    chain = reply["chains"].get("c", {})
    got = (chain.get("packets"), chain.get("bytes"), chain.get("nfs", {}).get("t", {}).get("packets"))
    want = (len(sent), sum(len(f) for f in sent), len(sent))
    check(got == want, f"{when}: bill (packets, bytes, nf packets) {got}, sent {want}: {reply}")


try:
    # 1. A run that stops cleanly after its capture.
    configure("first.pcap")
    host.run("--idle-exit", "1")
    check(len(read_pcap(host.path("out.pcap"))) == len(first), "the first run did not forward everything")

    # 2. Restarted without traffic: the bill still holds the first run.
    configure("empty.pcap")
    proc = host.start()
    reply = bill()
    expect(reply, first, "after a clean restart")
    check(reply["chains"]["c"]["instance_s"] > 0, f"no instance-seconds billed: {reply}")
    # One NF, always running: its instance-seconds and busy time are the chain's.
    nf_bill, chain_bill = reply["chains"]["c"]["nfs"]["t"], reply["chains"]["c"]
    check(abs(nf_bill["instance_s"] - chain_bill["instance_s"]) < 1e-6 and nf_bill["busy_s"] > 0 and
          abs(nf_bill["busy_s"] - chain_bill["busy_s"]) < 1e-6, f"the NF's instance-s and busy-s: {reply}")
    # An empty table would read as "used nothing": a bill from the future and
    # one of a chain neither configured nor in the ledger are refused.
    future = host.ctl("bill", "--since", str(int(time.time()) + 3600))
    check(future.returncode == 1 and "is after now" in future.stderr, f"a bill from the future: {future.stderr}")
    unknown = host.ctl("bill", "--chain", "nope", "--json")
    check(unknown.returncode == 1 and json.loads(unknown.stdout)["error"]["code"] == "not_found",
          f"a bill of an unknown chain: {unknown.stdout}{unknown.stderr}")
    check(bill("--chain", "c")["chains"].keys() == {"c"}, "a bill of one chain")
    human = host.ctl("bill")
    check(human.returncode == 0 and "c" in human.stdout and str(len(first)) in human.stdout,
          f"serpensctl bill (human): {human.stdout}{human.stderr}")
    bad = host.ctl("bill", "--since", "yesterday-ish")
    check(bad.returncode == 2 and "--since" in bad.stderr, f"a bad --since is a usage error: {bad.stderr}")
    proc.terminate()
    check(proc.wait(timeout=30) == 0, "the host did not stop cleanly")

    # 3. Killed: what it metered more than a second before is billed.
    configure("second.pcap")
    proc = host.start()
    deadline = time.monotonic() + 30
    while host.chain_stats("c")["metered_packets"] < len(second) and time.monotonic() < deadline:
        time.sleep(0.1)
    check(host.chain_stats("c")["metered_packets"] == len(second), "the second capture was not processed")
    time.sleep(1.5)  # the stated loss window is 1 s
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # The dead host's socket stays behind; the next host replaces it, but
    # Host.start() must not take it for the new one's.
    os.remove(host.path("ctl.sock"))

    configure("empty.pcap")
    proc = host.start()
    expect(bill(), frames, "after a SIGKILL and a restart")
    proc.terminate()
    check(proc.wait(timeout=30) == 0, "the host did not stop cleanly")
    ledger = os.path.join(host.state, "usage.jsonl")
    check(os.path.isfile(ledger), f"no usage ledger at {ledger}")
finally:
    host.cleanup()
print(f"ok: bill = {len(frames)} packets sent over a clean restart and a SIGKILL")

"""The Prometheus endpoint of a running serpens-host ([metrics] listen).

FW -> MON -> NAT runs a generated capture; then, on 127.0.0.1 only:
 - GET /metrics is the text format 0.0.4 that `promtool check metrics`
   accepts, and its counters are the ones `serpensctl stats` reports (ports,
   rule, chain, NF counters, instances; a batch-latency histogram and state
   table sizes are there);
 - other paths are 404, an oversized request is refused, and a client that
   sends half a request and waits does not hold up the next scrape;
 - a real Prometheus server scraping the endpoint every second stores the
   same values: queried through its HTTP API, they equal the host's.
Exits 77 (skipped) when Prometheus (promtool, prometheus) is not installed.
Everything is bounded in time and cleaned up, even on failure.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from harness import Host, check, fail

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
if PROMETHEUS is None or PROMTOOL is None:
    print("prometheus/promtool not installed (Debian package prometheus): skipping")
    sys.exit(77)

PACKETS = 3000


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    """(status, headers, body text) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def samples(text):
    """{'name{labels}': value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, value = line.rsplit(" ", 1)
            out[head] = float(value)
    return out


processes = []
scratch = tempfile.mkdtemp(prefix="serpens-e2e-prom-")


def stop_all():
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
    shutil.rmtree(scratch, ignore_errors=True)


atexit.register(stop_all)

host = Host(plugins=())
host.fw_mon_nat(egress="pcap0")
host.pktgen("--packets", str(PACKETS), "--flows", "200", "--mix", "tcp=60,udp=40", "--malformed-ratio", "0",
            "--vlan-ratio", "0", "--seed", "5")
metrics_port = free_port()
host.config(host.pcap_port() + '\n[[gateway.rule]]\nname = "all"\nchain = "sfc"\n'
            '\n[instances]\nring_size = 16384\nflow_capacity = 4096\n'
            '\n[nf_defaults.fw]\ncache_size = 4096\n[nf_defaults.nat]\nmax_mappings = 4096\n'
            '[nf_defaults.mon]\nmax_hosts = 1024\n'
            f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
proc = host.start(log_level="warn")
processes.append(proc)
url = f"http://127.0.0.1:{metrics_port}/metrics"

try:
    # The capture replays once: wait until the chain ran on all of it.
    deadline = time.monotonic() + 60
    stats = None
    while time.monotonic() < deadline:
        out = host.ctl("stats", "--json")
        check(out.returncode == 0, f"serpensctl stats: {out.stdout}{out.stderr}")
        stats = json.loads(out.stdout)
        if stats["chains"]["sfc"]["metered_packets"] == PACKETS:
            break
        time.sleep(0.2)
    check(stats["chains"]["sfc"]["metered_packets"] == PACKETS, f"the chain never ran on every packet: {stats}")
    time.sleep(0.3)  # TX counters settle
    out = host.ctl("stats", "--json")
    stats = json.loads(out.stdout)

    # --- the text, as the host serves it ---------------------------------
    status, headers, text = http_get(url)
    check(status == 200, f"GET /metrics: {status} {text[:200]}")
    check(headers["Content-Type"].startswith("text/plain; version=0.0.4"),
          f"Content-Type: {headers['Content-Type']}")
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    check(lint.returncode == 0, f"promtool check metrics:\n{lint.stdout}{lint.stderr}\n--- text ---\n{text}")
    m = samples(text)

    def expect(head, value):
        check(head in m, f"no sample {head} in:\n{text}")
        check(m[head] == value, f"{head} = {m[head]}, serpensctl stats says {value}")

    port = stats["ports"][0]
    expect('serpens_port_rx_packets_total{port="pcap0"}', port["rx"])
    expect('serpens_port_tx_packets_total{port="pcap0"}', port["tx"])
    expect('serpens_port_dropped_packets_total{port="pcap0",reason="rx_missed"}', port["rx_missed"])
    check(m['serpens_port_rx_bytes_total{port="pcap0"}'] >= 60 * PACKETS, "RX bytes counted")
    expect('serpens_gateway_rule_matched_packets_total{rule="all"}', stats["rules"]["all"])
    expect("serpens_gateway_unmatched_packets_total", stats["unmatched"])
    expect('serpens_chain_packets_total{chain="sfc"}', PACKETS)
    expect('serpens_chain_instances{chain="sfc",state="active"}', stats["chains"]["sfc"]["instances"])
    expect('serpens_flow_table_entries{chain="sfc"}', stats["chains"]["sfc"]["flows"]["live"])
    expect('serpens_flow_table_capacity_entries{chain="sfc"}', stats["chains"]["sfc"]["flows"]["capacity"])
    nf_seen = 0
    for inst in stats["instances"]:
        labels = f'chain="{inst["chain"]}",instance="{inst["index"]}"'
        expect(f"serpens_instance_packets_total{{{labels}}}", inst["packets"])
        expect(f'serpens_instance_dropped_packets_total{{{labels},reason="nf"}}', inst["dropped"])
        expect(f'serpens_instance_state{{{labels},state="{inst["state"]}"}}', 1)
        for nf in inst["nfs"]:
            nf_labels = f'{labels},nf="{nf["name"]}",plugin="{nf["plugin"]}"'
            expect(f"serpens_nf_packets_total{{{nf_labels}}}", nf["packets"])
            for counter, value in nf["counters"].items():
                expect(f'serpens_nf_events_total{{{nf_labels},counter="{counter}"}}', value)
                nf_seen += 1
    check(nf_seen > 0, "NF counters exposed")
    check(m.get('serpens_nf_events_total{chain="sfc",instance="0",nf="nat",plugin="nat",counter="translated_out"}',
                0) > 0, "nat translated packets")
    counts = {k: v for k, v in m.items() if k.startswith("serpens_batch_latency_seconds_count")}
    check(sum(counts.values()) > 0, f"batches timed: {counts}")
    for head, count in counts.items():
        lcore = re.search(r'lcore="(\d+)"', head).group(1)
        expect(f'serpens_batch_latency_seconds_bucket{{lcore="{lcore}",le="+Inf"}}', count)
    tables = {k: v for k, v in m.items() if k.startswith("serpens_state_table_capacity_entries")}
    check(any('nf="nat"' in k and v > 0 for k, v in tables.items()), f"nat's state tables: {tables}")

    # --- what no client may do ---------------------------------------------
    status, _, _ = http_get(f"http://127.0.0.1:{metrics_port}/other")
    check(status == 404, f"GET /other: {status}")
    with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        reply = big.recv(200)
        check(reply.startswith(b"HTTP/1.1 431") or reply == b"", f"an oversized request: {reply!r}")
    # Half a request, then silence: the next scrape is served at once all the same.
    slow = [socket.create_connection(("127.0.0.1", metrics_port), timeout=5) for _ in range(8)]
    for s in slow:
        s.sendall(b"GET /metr")
    began = time.monotonic()
    status, _, _ = http_get(url, timeout=5)
    took = time.monotonic() - began
    check(status == 200 and took < 1.0, f"a scrape behind 8 silent clients: {status} in {took:.2f} s")
    for s in slow:
        s.close()

    # --- a real Prometheus server scraping it -------------------------------
    prom_port = free_port()
    with open(os.path.join(scratch, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: serpens\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{metrics_port}']\n")
    prom_log = open(os.path.join(scratch, "prometheus.log"), "w")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={scratch}/prometheus.yml",
                             f"--storage.tsdb.path={scratch}/data", f"--web.listen-address=127.0.0.1:{prom_port}",
                             "--log.level=warn"], stdout=prom_log, stderr=subprocess.STDOUT)
    processes.insert(0, prom)

    def query(expr):
        q = urllib.parse.urlencode({"query": expr})
        try:
            status, _, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/query?{q}", timeout=5)
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return None  # not up yet
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    expr = 'serpens_chain_packets_total{chain="sfc",job="serpens"}'
    deadline = time.monotonic() + 60
    value = None
    while time.monotonic() < deadline and prom.poll() is None:
        value = query(expr)
        if value is not None:
            break
        time.sleep(0.5)
    if value is None:
        prom_log.flush()
        with open(os.path.join(scratch, "prometheus.log")) as f:
            fail(f"Prometheus never stored {expr} (exit {prom.poll()}):\n{f.read()[-3000:]}")
    check(value == PACKETS, f"Prometheus has {expr} = {value}, the host reports {PACKETS}")
    check(query('up{job="serpens"}') == 1, "Prometheus sees the target up")
    rx = query('serpens_port_rx_packets_total{port="pcap0"}')
    check(rx == port["rx"], f"Prometheus has port rx {rx}, the host reports {port['rx']}")
    nat = query('sum(serpens_nf_events_total{nf="nat",counter="translated_out"})')
    check(nat == m['serpens_nf_events_total{chain="sfc",instance="0",nf="nat",plugin="nat",counter="translated_out"}'],
          f"Prometheus has nat translated_out {nat}")
    check(query('histogram_quantile(0.99, sum by (le) (serpens_batch_latency_seconds_bucket))') is not None,
          "a p99 of batch latency from the histogram")
finally:
    stop_all()
rc = proc.wait(timeout=30)
check(rc == 0, f"host exited {rc}")
print(f"ok: promtool accepts the text; {PACKETS} packets, the host's counters equal in the text and in Prometheus")
host.cleanup()

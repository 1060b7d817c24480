"""An operator's session with serpensctl against a host forwarding traffic.

Every command runs with --json and its reply is parsed and checked against
what the host is doing (counters grow, clear restarts them, scale changes the
instance count, settings read back what was set); every command runs once
more without --json and must print something and exit 0.  Then the exit
codes scripts rely on: 1 with an error object for a chain that does not
exist, 3 for a host that has stopped; and -c host.toml finding the socket.
"""
import json
import os
import re
import socket
import subprocess
import time

from harness import CTL, HOST, Host, check, fail, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
CHAIN = "session"

host = Host()
host.pktgen("--packets", "500", "--flows", "50", "--seed", "3", "--malformed-ratio", "0")
host.chain(CHAIN, f'name = "{CHAIN}"\negress = "sink"\nchain = ["t", "n"]\n'
                  '[[nf]]\nname = "t"\nplugin = "trace"\n[[nf]]\nname = "n"\nplugin = "noop"\n')
# infinite_rx replays the 500-packet capture for as long as the host runs;
# what leaves is dropped by net_null.
host.config(f'[[port]]\nname = "src"\ndevice = "net_pcap0,rx_pcap={host.path("in.pcap")},infinite_rx=1"\n'
            '[[port]]\nname = "sink"\ndevice = "net_null0,no-rx=1"\n'
            f'\n[[gateway.rule]]\nname = "all"\nchain = "{CHAIN}"\n'
            f'\n[[instance]]\nchain = "{CHAIN}"\ncount = 1\n'
            '\n[instances]\nring_size = 16384\npool = 1\nwake_threshold = 64\n')
socket_path = host.path("ctl.sock")
# The host's log goes to a file, not a pipe nobody reads while it runs.
log = open(host.path("host.log"), "w")
proc = subprocess.Popen([HOST, "-c", host.path("host.toml"), "--log-level", "info"], stdout=log,
                        stderr=subprocess.STDOUT, text=True)


def ctl(*args, config=False):
    """serpensctl with -s (or -c host.toml when config): the CompletedProcess."""
    where = ["-c", host.path("host.toml")] if config else ["-s", socket_path]
    return subprocess.run([CTL] + where + list(args), capture_output=True, text=True, timeout=30)


def ctl_json(*args):
    """serpensctl ... --json: exit 0 and the reply parsed."""
    out = ctl(*args, "--json")
    check(out.returncode == 0, f"serpensctl {' '.join(args)} --json exited {out.returncode}: {out.stdout}{out.stderr}")
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError as e:
        fail(f"serpensctl {' '.join(args)} --json printed no JSON ({e}): {out.stdout!r}")


def human(*args):
    """serpensctl without --json: exit 0 and some text."""
    out = ctl(*args)
    check(out.returncode == 0 and out.stdout.strip(),
          f"serpensctl {' '.join(args)} exited {out.returncode} or printed nothing: {out.stdout!r} {out.stderr!r}")
    return out.stdout


def log_text():
    if not log.closed:
        log.flush()
    with open(host.path("host.log")) as f:
        return f.read()


def metered(stats):
    return stats["chains"][CHAIN]["metered_packets"]


def src_rx(stats):
    return next(p for p in stats["ports"] if p["name"] == "src")["rx"]


def project_version():
    with open(os.path.join(HERE, "..", "..", "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


DEADLINE_LINE = re.compile(r"\[debug\] control socket .* closing a connection from pid \d+ at its deadline")


def silent_client():
    """Connects and says nothing until the host cuts it off at its 2 s
    deadline; returns whether the host logged that (at debug level) within
    a second after."""
    before = len(DEADLINE_LINE.findall(log_text()))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(socket_path)
    s.settimeout(5)
    try:
        s.recv(1)  # the host's "timeout" error, then end of file
    except socket.timeout:
        fail("the host did not cut off a silent client within 5 s")
    s.close()
    end = time.monotonic() + 1
    while time.monotonic() < end:
        if len(DEADLINE_LINE.findall(log_text())) > before:
            return True
        time.sleep(0.05)
    return False


def log_level_checks():
    """log-level: read, set to debug, read back; a debug line appears in the
    log (the host names a client it cut off at its deadline at debug level)."""
    level = ctl_json("log-level")
    # A list of character codes here is the host serializing spdlog's
    # string_view as a JSON array instead of a string.
    check(level == {"log_level": "info"}, f"log level from the command line, as a string: {level}")
    check(not silent_client(), "no debug line at info level")
    check(ctl_json("log-level", "debug") == {"log_level": "debug"}, "log level set to debug")
    check(ctl_json("log-level") == {"log_level": "debug"}, "log level reads back debug")
    check(ctl_json("status")["log_level"] == "debug", "status shows the new log level")
    check(silent_client(), f"a debug line after setting debug:\n{log_text()}")
    check("log level set to debug by the control socket" in log_text(), f"the change is logged:\n{log_text()}")
    check(ctl_json("log-level", "info") == {"log_level": "info"}, "log level back to info")
    check(human("log-level", "warn").strip() == "log level: warn", "log-level for people")
    check(human("log-level").strip() == "log level: warn", "log-level for people, read back")
    check(re.search(r"^log level +warn$", human("status"), re.M), f"status for people:\n{human('status')}")


log_level_failed = False
try:
    deadline = time.monotonic() + 30
    while ctl("ping").returncode != 0:
        check(proc.poll() is None, f"host exited during start-up ({proc.returncode}):\n{log_text()}")
        check(time.monotonic() < deadline, "host never answered ping")
        time.sleep(0.1)

    check(ctl_json("ping") == {"pong": True}, "ping --json")

    status = ctl_json("status")
    check(status["id"] == host.prefix, f"status names the host id: {status}")
    check(os.path.samefile(status["config"], host.path("host.toml")), f"status names the config: {status}")
    check(os.path.samefile(status["control_socket"], socket_path), f"status names the socket: {status}")
    check(status["state_dir"] == host.state, f"status names the state dir: {status}")
    check(status["pid"] == proc.pid, f"status names the host's pid: {status}")
    check(status["ports"] == ["src", "sink"] and CHAIN in status["chains"], f"status: ports and chains: {status}")

    chains = ctl_json("chains")
    check([c["name"] for c in chains] == [CHAIN], f"chains lists the one chain: {chains}")
    chain = chains[0]
    check([(nf["name"], nf["plugin"]) for nf in chain["nfs"]] == [("t", "trace"), ("n", "noop")],
          f"chains lists the NFs in order: {chain}")
    check(chain["egress"] == "sink" and chain["runs"] and "t" in chain["graph"] and "n" in chain["graph"],
          f"chains shows egress and graph: {chain}")

    plugins = {p["name"]: p for p in ctl_json("plugins")}
    check(set(plugins) == {"steer", "trace", "noop"}, f"plugins lists the loaded plugins: {sorted(plugins)}")
    check(plugins["trace"]["used_by"] == [f"{CHAIN}/t"] and plugins["noop"]["used_by"] == [f"{CHAIN}/n"],
          f"plugins names the chain using each: {plugins}")
    check(plugins["steer"]["used_by"] == [], f"steer is loaded but unused: {plugins['steer']}")

    peers = ctl_json("peers")
    check(peers["enabled"] is False and peers["peers"] == [], f"no [peer]: peers says so and lists none: {peers}")

    instances = ctl_json("instances")
    active = [i for i in instances if i["chain"] == CHAIN and i["state"] == "active"]
    check(len(active) == 1 and active[0]["lcore"] is not None, f"instances shows the one instance: {instances}")
    # The manager fills the warm pool on its tick, after start-up.
    wait_until("instances shows the warm pool's instance",
               lambda: any(i["chain"] == CHAIN and i["state"] == "pooled" for i in ctl_json("instances")),
               alive=[proc], timeout=10, explain=lambda: f"{ctl_json('instances')}")
    check(active[0]["packets"] > 0, f"the instance has seen packets: {active[0]}")

    # Traffic flows: counters grow between two reads.
    first = ctl_json("stats")
    time.sleep(0.5)
    second = ctl_json("stats")
    check(metered(second) > metered(first) > 0, f"metered packets grow: {metered(first)} -> {metered(second)}")
    check(src_rx(second) > src_rx(first), f"port rx grows: {src_rx(first)} -> {src_rx(second)}")

    # clear: counters start again from zero, below what they were.
    time.sleep(0.5)
    before = ctl_json("stats")
    cleared = ctl_json("clear")
    check(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cleared["cleared"]), f"clear answers when: {cleared}")
    after = ctl_json("stats")
    check(metered(after) < metered(before), f"metered after clear {metered(after)} < before {metered(before)}")
    check(src_rx(after) < src_rx(before), f"port rx after clear {src_rx(after)} < before {src_rx(before)}")
    check(after["since"] == cleared["cleared"], f"stats counts since the clear: {after['since']} {cleared}")

    # stats --watch: one JSON line per update, each with rates per second.
    watch = ctl("stats", "--watch", "0.5", "--count", "2", "--json")
    check(watch.returncode == 0, f"stats --watch exited {watch.returncode}: {watch.stderr}")
    lines = watch.stdout.splitlines()
    check(len(lines) == 2, f"stats --watch --count 2 prints 2 lines: {lines}")
    for line in lines:
        update = json.loads(line)
        check(0.4 < update["seconds"] < 5, f"an update covers about 0.5 s: {update['seconds']}")
        rate = update["rates"]["chains"][CHAIN]["metered_packets"]
        check(isinstance(rate, float) and rate > 0, f"a rate of metered packets per second: {rate}")
        check(metered(update["counters"]) > 0, "each update carries the counters too")

    # scale out by one, then back.
    scaled = ctl_json("scale", CHAIN, "+1")
    check(scaled["chain"] == CHAIN and (scaled["before"], scaled["after"]) == (1, 2), f"scale +1: {scaled}")
    check(len(scaled["instances"]) == 2 and scaled["moved_buckets"] > 0, f"scale +1: {scaled}")
    active = [i for i in ctl_json("instances") if i["chain"] == CHAIN and i["state"] == "active"]
    check(len(active) == 2, f"two instances run after +1: {active}")
    check(ctl_json("status")["chains"][CHAIN]["instances"] == 2, "status counts two instances")
    back = ctl_json("scale", CHAIN, "1")
    check((back["before"], back["after"]) == (2, 1), f"scale back to 1: {back}")
    active = [i for i in ctl_json("instances") if i["chain"] == CHAIN and i["state"] == "active"]
    check(len(active) == 1, f"one instance runs again: {active}")
    moving = ctl_json("stats")
    time.sleep(0.3)
    check(metered(ctl_json("stats")) > metered(moving), "traffic flows on after scaling")

    # A chain that does not exist: refused (1), an error object on stdout.
    missing = ctl("scale", "no-such-chain", "+1", "--json")
    check(missing.returncode == 1, f"scale of an unknown chain exits 1: {missing.returncode} {missing.stderr}")
    error = json.loads(missing.stdout)["error"]
    check(error["code"] == "not_found" and "no-such-chain" in error["message"], f"not_found error: {error}")
    # A count that is no count: bad arguments (2), judged by the host's own
    # rules before the host is asked, whether or not one runs.
    for bad in (ctl("scale", CHAIN, "abc", "--json"),
                subprocess.run([CTL, "-s", "/nonexistent.sock", "scale", CHAIN, "1.5"], capture_output=True, text=True,
                               timeout=30)):
        args = bad.args
        check(bad.returncode == 2 and "scale needs \"count\"" in bad.stderr, f"{args}: {bad.returncode} {bad.stderr}")
    check(json.loads(ctl("scale", CHAIN, "abc", "--json").stdout)["error"]["code"] == "bad_arguments",
          "bad arguments with --json: an error object")
    for args in (["--host-id", "../../etc/passwd", "ping"], ["stats", "--watch", "nan"]):
        bad = subprocess.run([CTL] + args, capture_output=True, text=True, timeout=30)
        check(bad.returncode == 2, f"serpensctl {args}: {bad.returncode} {bad.stderr}")

    # wake-threshold: read, set, read back.
    check(ctl_json("wake-threshold") == {"wake_threshold": 64}, "wake threshold from host.toml")
    check(ctl_json("wake-threshold", "256") == {"wake_threshold": 256}, "wake threshold set")
    check(ctl_json("wake-threshold") == {"wake_threshold": 256}, "wake threshold changed at runtime")
    check(ctl_json("stats")["wake_threshold"] == 256, "stats shows the new wake threshold")
    never = ctl("wake-threshold", "1048576")
    check(never.returncode == 1 and "would never be reached" in never.stderr, f"a threshold past the ring: {never}")
    check(ctl_json("wake-threshold") == {"wake_threshold": 256}, "a refused threshold changes nothing")

    version = ctl_json("version")
    check(version["host"] == project_version() and version["serpensctl"] == project_version(),
          f"version is the project's {project_version()}: {version}")
    check(version["protocol"] == 1 and re.fullmatch(r"\d+\.\d+", version["plugin_abi"]), f"version: {version}")

    # reload with nothing edited: every chain kept, nothing swapped.
    reloaded = ctl_json("reload")
    check(CHAIN in reloaded["unchanged"] and reloaded["reloaded"] == [] and reloaded["swaps"] == [],
          f"reload with nothing changed: {reloaded}")
    forced = ctl_json("reload", "--chain", CHAIN)
    check(forced["reloaded"] == [CHAIN] and forced["swaps"][0]["chain"] == CHAIN, f"reload --chain: {forced}")
    runtime = next(c["runtime"] for c in ctl_json("chains") if c["name"] == CHAIN)
    check(runtime["reloads"] == 1, f"chains counts the forced reload: {runtime}")

    # -c host.toml finds the socket through the config (no -s).
    by_config = ctl("status", "--json", config=True)
    check(by_config.returncode == 0 and json.loads(by_config.stdout)["id"] == host.prefix,
          f"-c host.toml reaches the host: {by_config.returncode} {by_config.stderr}")

    # Every command once for people: exit 0 and some text.
    for args in (["ping"], ["status"], ["chains"], ["plugins"], ["instances"], ["stats"],
                 ["stats", "--watch", "0.2", "--count", "1"], ["clear"], ["scale", CHAIN, "+1"],
                 ["scale", CHAIN, "-1"], ["wake-threshold"], ["wake-threshold", "128"], ["version"], ["reload"], ["peers"]):
        human(*args)
    check(CHAIN in human("chains") and "trace" in human("plugins"), "the tables name the chain and plugins")

    # log-level last, and its failure reported at the end: the checks
    # after it (a stopped host) still run.
    try:
        log_level_checks()
    except SystemExit:
        log_level_failed = True
    check(proc.poll() is None, f"host still runs after the session ({proc.returncode})")
finally:
    if proc.poll() is None:
        proc.terminate()
    rc = proc.wait(timeout=30)
    log.close()

check(rc == 0, f"host exited {rc}:\n{log_text()}")
# A stopped host: unreachable, exit 3, by -s and by -c.
for config in (False, True):
    gone = ctl("status", "--json", config=config)
    check(gone.returncode == 3 and gone.stderr, f"a stopped host gives exit 3: {gone.returncode} {gone.stderr!r}")
    check(json.loads(gone.stdout)["error"]["code"] == "unreachable", f"--json names why: {gone.stdout!r}")
check(not log_level_failed, "log-level failed (above)")
print(f"ok: a serpensctl session against a forwarding host, every command in JSON and for people "
      f"(scale {scaled['before']} -> {scaled['after']} -> {back['after']}, version {version['host']})")
host.cleanup()

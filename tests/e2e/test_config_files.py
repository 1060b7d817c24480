"""Every instance of a chain runs on the same rules file, and a reload sees an edit.

fw reads its rules when an instance starts.  Before host ABI 1.9 a file edited
under a running host (without a reload) was read again by the next instance a
scale-out started, so one chain ran two rule sets, one per instance.  Now the
host keeps the bytes the chain's first instance read:

 1. the chain starts with the file holding one rule;
 2. the file gets three rules, and `scale c +1` starts an instance: one rule;
 3. `serpensctl reload`, with no --chain, sees the edit, names the file and
    swaps the chain: both new instances have three rules;
 4. a second reload finds nothing changed;
 5. twenty reloads of a 4 MiB rules file leave no copy of it behind.
"""
import re
import signal

from harness import Host, check

host = Host(plugins=())
host.add_built_plugins("fw")
host.pktgen("--packets", "10")
rules = host.path("fw.rules")
with open(rules, "w") as f:
    f.write("default allow\ndeny src=10.0.0.0/8\n")
host.chain("c", 'name = "c"\n[[nf]]\nname = "fw"\nplugin = "fw"\n[nf.config]\nrules = "../fw.rules"\n')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "c"\n'
            '\n[[instance]]\nchain = "c"\ncount = 1\nlcores = [1]\n'
            # No pool: its refills would start instances of their own.
            '\n[instances]\nring_size = 16384\npool = 0\n')
proc = host.start()

with open(rules, "w") as f:
    f.write("default allow\ndeny src=10.0.0.0/8\ndeny src=172.16.0.0/12\ndeny src=192.168.0.0/16\n")
out = host.ctl("scale", "c", "+1")
check(out.returncode == 0, f"scale +1: {out.stdout}{out.stderr}")

report = host.ctl_json("reload")
check(report["reloaded"] == ["c"], f"the edited rules did not swap the chain: {report}")
check(report["files_changed"] == [rules], f"the reload does not name the file: {report}")
human = host.ctl("reload")
check(human.returncode == 0 and "unchanged: c" in human.stdout and "files_changed" not in human.stdout,
      f"a second reload swapped again: {human.stdout}{human.stderr}")


def rss_mib():
    with open(f"/proc/{proc.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


# A version swapped out goes with its last instance, and the file bytes it
# kept with it: twenty reloads of a 4 MiB rules file leave no 80 MiB behind.
padding = "#" + "x" * 1023 + "\n"
before = rss_mib()
for i in range(20):
    with open(rules, "w") as f:
        f.write(f"# edit {i}\n" + padding * 4096 + "default allow\n")
    check(host.ctl_json("reload")["reloaded"] == ["c"], f"reload {i} did not swap the chain")
grown = rss_mib() - before
check(grown < 40, f"twenty reloads of a 4 MiB rules file grew the host by {grown:.0f} MiB")

proc.send_signal(signal.SIGINT)
log = proc.communicate(timeout=60)[0]
check(proc.returncode == 0, f"host exit {proc.returncode}:\n{log}")
counts = [int(n) for n in re.findall(r"(\d+) rules from " + re.escape(rules), log)]
check(counts[:4] == [1, 1, 3, 3], f"rules per instance start, in order: {counts[:4]} (want [1, 1, 3, 3]):\n{log}")
check("files changed " + rules in log, f"the host's log does not say which file changed:\n{log}")
print(f"ok: instances started with {counts[:4]} rules; the reload named {rules}; "
      f"twenty 4 MiB reloads grew the host by {grown:.1f} MiB")
host.cleanup()

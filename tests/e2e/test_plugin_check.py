"""serpens-host --check refuses a plugin without the entry symbol without
running its ELF constructors, and names a world-writable plugin directory."""
import os
import shutil

from harness import TEST_PLUGINS, Host, check

host = Host(plugins=("trace",))
host.chain("c", 'name = "c"\n[[nf]]\nname = "t"\nplugin = "trace"\n')
host.config(host.pcap_port() + '\n[[gateway.rule]]\nchain = "c"\n')
ctor = host.path("plugins/serpens_nf_ctor.so")
shutil.copy(os.path.join(TEST_PLUGINS, "serpens_nf_ctor.so"), ctor)
os.chmod(ctor, 0o755)
marker = host.path("constructor-ran")
os.environ["SERPENS_TEST_CTOR_MARKER"] = marker  # the constructor creates it if it ever runs

proc = host.run("--check", expect_rc=1)
log = proc.stdout + proc.stderr
check(f"plugin {ctor} refused: no exported symbol 'serpens_nf_entry'" in log,
      f"no refusal for the constructor-only plugin: {log!r}")
check(not os.path.exists(marker), "--check ran the refused plugin's constructor")
print("ok [constructor-only plugin]: refused, constructor never ran")

os.remove(ctor)
os.chmod(host.path("plugins"), 0o777)
proc = host.run("--check", expect_rc=2)  # trace refused, so chain c has no plugin
log = proc.stdout + proc.stderr
check(f"chmod go-w {host.path('plugins')}" in log, f"world-writable dir not named: {log!r}")
print("ok [world-writable plugin dir]: named with chmod go-w")
host.cleanup()

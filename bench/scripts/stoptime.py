# Median time of `daemonize -p F --stop` for a cooperative daemon (issue 3).
# Run after `cargo build --release`: python3 bench/scripts/stoptime.py
import os, subprocess, time, statistics
import os as _os
D=_os.environ.get("DAEMONIZE", _os.path.join(_os.path.dirname(__file__), "../../target/x86_64-unknown-linux-gnu/release/daemonize"))
pf="/tmp/stoptime.pid"; ts=[]
for i in range(30):
    subprocess.run([D,"-p",pf,"--","sleep","1000"],check=True)
    t=time.monotonic(); r=subprocess.run([D,"-p",pf,"--stop"]); ts.append(time.monotonic()-t)
    assert r.returncode==0 and not os.path.exists(pf)
print("--stop of a cooperative daemon (sleep, SIGTERM): median %.2f ms, min %.2f, max %.2f over %d runs"%(statistics.median(ts)*1e3,min(ts)*1e3,max(ts)*1e3,len(ts)))

"""A whole site on one machine, run by test_deployment.py as one guarded child inside an empty
network namespace: the coordinator's SuperLink (TLS, node authentication) and two SuperNodes
as separate Flower processes, a `flwr run` with SecAgg+, node 2 killed mid-run and restarted.

Usage: python site_driver.py ROOT (ROOT holds the stores coord/, n1/, n2/ and site/).
Prints one JSON line: what happened. The namespace has no interface but loopback, which this
script brings up; the site's processes talk over it, so they run without the suite's Python
socket guard (it refuses loopback too): the namespace is their guard."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

ROOT = Path(sys.argv[1])
PORT = 9093
SUPERLINK = f"127.0.0.1:{PORT}"


def loopback_up() -> None:
    """`ip link set lo up`, by ioctl: a fresh network namespace starts with loopback down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def unguard_children() -> None:
    """The Flower processes start without the suite's socket guard (see the module doc)."""
    os.environ.pop("EDGE_TL_TEST_NETLOG", None)
    parts = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in parts if not p.endswith("netguard"))


def stop_all() -> None:
    """Stop every process this driver started and theirs (Flower starts its app processes in
    sessions of their own; they would outlive the SuperLink)."""
    import psutil

    family = psutil.Process().children(recursive=True)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _gone, alive = psutil.wait_procs(family, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def main() -> None:
    # SIGTERM (the test's timeout) runs the `finally` below too, so nothing is left behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    loopback_up()
    unguard_children()
    from edge_tl.fed.settings import FedSettings
    from edge_tl.fed.site import (
        enroll_when_up,
        start_superlink,
        start_supernode,
        submit_run,
    )
    from edge_tl.store.home import set_home

    site, coord = ROOT / "site", ROOT / "coord"
    ca = site / "ca.pem"
    logs = {n: open(ROOT / f"{n}.log", "ab") for n in ("superlink", "n1", "n2")}  # noqa: SIM115
    procs: dict[str, object] = {}
    out: dict[str, object] = {"events": []}

    def node(name: str, port: int) -> object:
        set_home(ROOT / name)
        try:
            return start_supernode(
                SUPERLINK,
                data="kw",
                ca_cert=ca,
                key=site / "nodes" / f"{name}.key",
                port=port,
                popen={"stdout": logs[name], "stderr": logs[name]},
            )
        finally:
            set_home(coord)

    t0 = time.monotonic()
    set_home(coord)
    procs["superlink"] = start_superlink(site, stdout=logs["superlink"], stderr=logs["superlink"])
    try:
        for name in ("n1", "n2"):
            enroll_when_up(procs["superlink"], site / "nodes" / f"{name}.pub", SUPERLINK, ca)
        procs["n1"], procs["n2"] = node("n1", 9094), node("n2", 9095)
        s = FedSettings(
            out="fedsite",
            data="kw",
            labels="neg,pos",
            base="tiny",
            lm_rounds=1,  # round 1 fine-tunes the LM (n2 is killed in it), round 2 the classifier
            rounds=1,
            local_epochs=8,
            seed=2,
            lr=2e-2,
            bs=8,
            bptt=8,
            max_len=32,
            lin_ftrs=8,
            valid_pct=0.0,
            secagg_timeout=150.0,
        )
        result: dict[str, object] = {}

        def submit() -> None:
            try:
                result["log"] = submit_run(s, SUPERLINK, ca, timeout=400)
            except Exception as e:  # reported in the JSON line
                result["error"] = str(e)

        runner = threading.Thread(target=submit, daemon=True)
        runner.start()
        n2_log = ROOT / "n2.log"
        while runner.is_alive() and b"Receiving: train message" not in n2_log.read_bytes():
            time.sleep(0.2)  # round 1 has reached n2: kill it mid-round
        out["events"].append(f"round 1 reached n2 after {time.monotonic() - t0:.0f} s")
        procs["n2"].kill()
        procs["n2"].wait()
        out["events"].append(f"killed n2 at {time.monotonic() - t0:.0f} s")
        procs["n2"] = node("n2", 9095)
        out["events"].append(f"restarted n2 at {time.monotonic() - t0:.0f} s")
        # The SuperLink counts n2 online until two heartbeats are missed (up to a minute) and
        # refuses a second activation meanwhile (it exits): start it again until it joins.
        while runner.is_alive():
            if procs["n2"].poll() is not None:
                time.sleep(5)
                procs["n2"] = node("n2", 9095)
                out["events"].append(f"restarted n2 again at {time.monotonic() - t0:.0f} s")
            runner.join(timeout=1)
        runner.join(timeout=420)
        out.update(result)
        out["seconds"] = time.monotonic() - t0
    finally:
        stop_all()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

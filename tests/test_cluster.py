"""A real two-node Ray cluster on this machine: a head and a second node started with `ray start`, and a
sweep run by `windtunnel sweep` from a folder that is not the repository, with RAY_ADDRESS at the head.
Its runs land on both nodes, and the nodes (started without windtunnel on their PYTHONPATH) get
windtunnel's code from the runtime_env.

Ray 2.60 turns token authentication on by default: the test makes one token and gives it to every process
(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN), so ~/.ray/auth_token is neither read nor written. Each node has its
own short temp folder (RAY_TMPDIR: Ray's socket paths have a length limit), so no node records itself in
/tmp/ray/ray_current_cluster, where an embedded Ray elsewhere on this machine would find it. `ray stop`
would stop every Ray of this user on the machine: the nodes are ended by their own sessions' process ids.
Ray names a node by the machine's network address even when asked for 127.0.0.1 (docs/method.md §8); every
process stays on this machine, and the results folder is the "shared storage" (the same disk here).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
SWEEP = """
name: cluster
base: {batch_tokens: 2048, seq_len: 64, eval_every: 4, checkpoint_every: 4, data: {eval_tokens: 2048},
       schedule: {kind: constant, warmup_tokens: 2048}}
scales:
  micro:
    models: [micro-24k]
    tokens: 8192
    grid: {lr: [0.005, 0.01, 0.02, 0.04]}
    resources: {cpus: 1}     # one run per node at a time: 1 CPU each
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start ... --block` in its own process group; returns once the node is up."""
    proc = subprocess.Popen([RAY, "start", *args, "--num-cpus=1", "--disable-usage-stats", "--block"], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 90
    while "Ray runtime started" not in log.read_text():
        if proc.poll() is not None or time.time() > deadline:
            stop_node(proc)
            raise RuntimeError(f"ray start {args[0]} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc


def session_pids(sid: int) -> list[int]:
    """Every process of a session: a node's GCS, raylet and agents, and its workers (process groups of their own)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.getsid(int(entry)) == sid:
                pids.append(int(entry))
        except OSError:  # gone meanwhile
            pass
    return pids


def stop_node(proc: subprocess.Popen) -> None:
    """End every process of the node's session (started by `start_node` with its own): TERM, a moment, KILL.
    `ray start --block` and the GCS take their time over TERM, and a test cluster holds nothing to save."""
    for sig, grace in ((signal.SIGTERM, 3), (signal.SIGKILL, 5)):
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
    proc.wait(timeout=5)


STARTED = [0.0]


@pytest.fixture()
def cluster():
    """A head and a second node, 1 CPU each, with a fresh auth token; yields (address, env for clients)."""
    STARTED[0] = time.time()
    temp = Path(tempfile.mkdtemp(prefix="windtunnel-ray-", dir="/tmp"))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "WINDTUNNEL_RESULTS")}
    port, nodes = free_port(), []
    try:
        nodes.append(start_node(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false"],
                                {**base, **auth, "RAY_TMPDIR": str(temp / "h")}, temp / "head.log"))
        nodes.append(start_node([f"--address=127.0.0.1:{port}"], {**base, **auth, "RAY_TMPDIR": str(temp / "n")},
                                temp / "node.log"))
        yield f"127.0.0.1:{port}", {**auth, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


def shipped_code(env: dict, nodes: list[str], cwd: Path) -> list[str]:
    """Where windtunnel is imported from by a task pinned to each node, under windtunnel's own runtime_env, from a
    driver in `cwd` (Ray puts the driver's working directory on the workers' sys.path, ahead of the runtime_env)."""
    code = ("import sys, ray, windtunnel.orchestrate as o\n"
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On\n"
            "o.init_ray(None)\n"
            "where = ray.remote(lambda: __import__('windtunnel').__file__)\n"
            "print(' '.join(ray.get([where.options(scheduling_strategy=On(n, soft=False)).remote() "
            "for n in sys.argv[1:]])))")
    out = subprocess.run([sys.executable, "-c", code, *nodes], env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.mark.slow
def test_a_sweep_on_a_two_node_cluster_runs_on_both_nodes(tmp_path, cluster, session_results):
    from windtunnel.data import prepare
    from windtunnel.graph import expand, load_sweep

    address, env = cluster
    print(f"cluster up in {time.time() - STARTED[0]:.1f} s")
    (tmp_path / "cluster.yaml").write_text(SWEEP)
    spec = expand(*load_sweep(tmp_path / "cluster.yaml", scale="micro"), file="cluster.yaml")[0].spec
    prepare(spec.data, vocab_size=spec.model.vocab_size, progress=False)  # tokenized once per test session
    results = tmp_path / "results"
    results.mkdir()
    (results / "cache").symlink_to(session_results / "cache")  # the shared data cache
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "sweep", "cluster.yaml", "--no-mup-check"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "WINDTUNNEL_RESULTS": str(results), **env})
    took = time.time() - start
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    attempts = {}
    for folder in sorted((results / "runs").iterdir()):
        lines = [json.loads(line) for line in (folder / "attempts.jsonl").read_text().splitlines()]
        status = json.loads((folder / "status.json").read_text())
        assert status["status"] == "finished" and len(lines) == 1
        attempts[folder.name] = lines[0]
        print(f"run {folder.name} on node {lines[0]['ray.node'][:12]} host {lines[0]['host']} "
              f"started +{lines[0]['started'] - start:.1f} s")
    print(f"sweep of {len(attempts)} runs on {address}: {took:.1f} s")
    assert len(attempts) == 4
    nodes = sorted({a["ray.node"] for a in attempts.values()})
    assert len(nodes) == 2  # both nodes of the cluster trained runs
    start = time.time()
    shipped = shipped_code(env, nodes, tmp_path)
    print(f"code check on both nodes: {time.time() - start:.1f} s")
    assert all("runtime_resources" in path and "py_modules" in path for path in shipped), shipped

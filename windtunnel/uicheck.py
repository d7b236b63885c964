"""Check a sweep end to end through the MLflow UI: start the UI on a free loopback port, read the sweep back through
the UI's own REST API, check every child run's train/loss history, and screenshot the UI with headless Chromium.

    python -m windtunnel.uicheck [--experiment NAME] [--port P]      # or: make ui-check

Default experiment: the newest one holding a run tagged kind=sweep. Prints one line per child run (name, status tag,
train/loss points, last value); exits 1 with one line on stderr if there is no sweep or a check fails. Screenshots go
to results/ui/: runs.png (the sweep's runs table), compare.png (the compare-runs page) and loss.png (train/loss
curves); they are skipped, exit 0, where Chromium is missing. The UI's routes (hash router, lists as compact JSON):

    #/compare-runs?runs=["RUN_ID",...]&experiments=["EXPERIMENT_ID"]
    #/metric/?runs=[...]&experiments=[...]&metric="train/loss"&plot_metric_keys=["train/loss"]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir
from windtunnel.tracking import PARENT_TAG, start_ui_server, stop_ui_server, tracking_uri

__all__ = ["main"]

START_SECONDS = 60  # longest wait for `mlflow server` to answer /health; it takes ~5 s
RENDER_MS = 15000  # Chromium's virtual-time budget: the UI is a JS app that loads runs and charts after the page


@contextlib.contextmanager
def _ui(port: int | None):
    """Serve tracking_uri() like tracking.serve_ui, on `port` or a free one; yield its base URL; stop its group."""
    port = port or _free_port()
    (results_dir() / "ui").mkdir(parents=True, exist_ok=True)
    log = results_dir() / "ui" / "server.log"
    with log.open("w") as out:
        server = start_ui_server(port=port, stdout=out)
    try:
        _wait_healthy(server, f"http://127.0.0.1:{port}", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_ui_server(server)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, base: str, log) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise WindtunnelError(f"mlflow server exited with code {server.returncode}; see {log}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return
        time.sleep(0.5)
    raise WindtunnelError(f"mlflow server did not answer {base}/health in {START_SECONDS} s; see {log}")


def _api(base: str, path: str, *, query: dict | None = None, body: dict | None = None) -> dict:
    """One call of the REST API: GET with `query`, or POST of JSON `body`."""
    url = f"{base}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def _pages(base: str, path: str, key: str, **call) -> list[dict]:
    """Items `key` of every page of a paged call (`query=` for GET, `body=` for POST), following next_page_token."""
    items, token = [], None
    while True:
        where = "body" if "body" in call else "query"
        page = _api(base, path, **{where: call[where] | ({"page_token": token} if token else {})})
        items += page.get(key, [])
        if not (token := page.get("next_page_token")):
            return items


def _search_runs(base: str, experiment_id: str, where: str) -> list[dict]:
    """Every run of the experiment matching filter `where`, oldest first."""
    body = {"experiment_ids": [experiment_id], "filter": where, "max_results": 1000,
            "order_by": ["attributes.start_time ASC"]}
    return _pages(base, "runs/search", "runs", body=body)


def _sweep_parents(base: str, name: str | None) -> tuple[dict, list[dict]]:
    """The experiment (`name`, else the newest holding a sweep) and its runs tagged kind=sweep."""
    if name is not None:
        query = {"experiment_name": name}
        with contextlib.suppress(urllib.error.HTTPError):  # 404: no experiment of that name
            experiment = _api(base, "experiments/get-by-name", query=query)["experiment"]
            return experiment, _search_runs(base, experiment["experiment_id"], "tags.kind = 'sweep'")
        raise WindtunnelError(f"no MLflow experiment {name!r} in {tracking_uri()}; leave out --experiment")
    body = {"max_results": 1000, "order_by": ["creation_time DESC"]}
    for experiment in _api(base, "experiments/search", body=body).get("experiments", []):
        if parents := _search_runs(base, experiment["experiment_id"], "tags.kind = 'sweep'"):
            return experiment, parents
    raise WindtunnelError(f"no sweep (a run tagged kind=sweep) in {tracking_uri()}; run `windtunnel sweep SPEC.yaml`")


def _loss_steps(base: str, run_id: str) -> list[tuple[int, float]]:
    """(step, value) of every train/loss point of the run, sorted by step."""
    query = {"run_id": run_id, "metric_key": "train/loss", "max_results": 25000}
    points = _pages(base, "metrics/get-history", "metrics", query=query)
    return sorted((int(m["step"]), m["value"]) for m in points)


def _check_child(base: str, run: dict) -> str | None:
    """Print the run's summary line; return what is wrong with its train/loss history, if anything."""
    name, tags = run["info"]["run_name"], {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    points = _loss_steps(base, run["info"]["run_id"])
    last = f"{points[-1][1]:.4f}" if points else "-"
    print(f"  {name:<40} {tags.get('status', '?'):<10} train/loss points {len(points):>5}  last {last}")
    steps = [step for step, _ in points]
    if not steps:
        return f"run {name!r} has no train/loss points"
    if len(set(steps)) < len(steps):
        return f"run {name!r} has duplicated train/loss steps"
    return None


def _check_sweep(base: str, parent: dict) -> list[dict]:
    """Check every child of the sweep run `parent`; return the children."""
    parent_id = parent["info"]["run_id"]
    children = _search_runs(base, parent["info"]["experiment_id"], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    print(f"sweep run {parent['info']['run_name']!r} ({parent_id}): {len(children)} child runs")
    problems = [problem for run in children if (problem := _check_child(base, run))]
    if not children:
        problems.append(f"sweep run {parent_id} has no child runs")
    if problems:
        raise WindtunnelError(f"{len(problems)} check(s) failed; first: {problems[0]}")
    return children


def _screenshot(url: str, name: str) -> None:
    """Save the page at `url` as results/ui/NAME with headless Chromium, after RENDER_MS of virtual time."""
    path = results_dir() / "ui" / name
    path.unlink(missing_ok=True)  # a screenshot left by an earlier check must not pass for this one
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1600,1000", f"--virtual-time-budget={RENDER_MS}",
                 "--run-all-compositor-stages-before-draw", f"--screenshot={path}"]
        subprocess.run(["chromium", *flags, url], capture_output=True, timeout=180, check=False)
    if not path.exists():
        raise WindtunnelError(f"chromium saved no screenshot of {url}; try it by hand: chromium --headless ...")
    print(f"screenshot {path}")


def _js(values) -> str:
    """A value as the UI's URLs spell it: JSON.stringify's compact form."""
    return json.dumps(values, separators=(",", ":"))


def _screenshots(base: str, experiment_id: str, ids: list[str]) -> None:
    """runs.png: the runs table, children only and flat (the UI nests children under their parent unless a filter is
    set and the sort is not by date); compare.png: the compare-runs page; loss.png: train/loss curves of every run."""
    quote, experiments = urllib.parse.quote, _js([experiment_id])
    table = urllib.parse.urlencode({"workflowType": "machine_learning", "orderByKey": "metrics.`train/loss`",
                                    "orderByAsc": "true", "searchFilter": f"attributes.run_id IN ({str(ids)[1:-1]})"})
    _screenshot(f"{base}/#/experiments/{experiment_id}/runs?{table}", "runs.png")
    _screenshot(f"{base}/#/compare-runs?runs={_js(ids)}&experiments={experiments}", "compare.png")
    metric = f"metric={quote(_js('train/loss'))}&plot_metric_keys={quote(_js(['train/loss']))}&x_axis=step"
    _screenshot(f"{base}/#/metric/?runs={_js(ids)}&experiments={experiments}&{metric}", "loss.png")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m windtunnel.uicheck", description=__doc__.splitlines()[0])
    p.add_argument("--experiment", help="experiment name (default: the newest holding a sweep run)")
    p.add_argument("--port", type=int, help="port of the UI (default: a free one)")
    args = p.parse_args(argv)
    try:
        with _ui(args.port) as base:
            experiment, parents = _sweep_parents(base, args.experiment)
            children = [run for parent in parents for run in _check_sweep(base, parent)]
            if not shutil.which("chromium"):
                print("screenshots skipped: no chromium on PATH (install it: apt-get install chromium)")
                return 0
            _screenshots(base, experiment["experiment_id"], [run["info"]["run_id"] for run in children])
    except (WindtunnelError, OSError, subprocess.TimeoutExpired) as err:  # OSError: the REST API failed (URLError)
        print(f"uicheck: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

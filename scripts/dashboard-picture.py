#!/usr/bin/env python3
"""A picture of the Grafana dashboard from a real run, for the documentation site (docs/dashboard.png).

Grafana itself cannot be installed here, so this draws the dashboard's own queries
(charts/iothub-dynreg/files/dashboard.json) the way its panels would: a real Prometheus
(Debian's `prometheus`) scrapes every second the controllers of a scale benchmark run
(`cargo bench --bench scale -- --api real N`: the real API server, the emulator, N resources
converging, a steady resync, a restart), then each panel's query is evaluated over the run with
Prometheus's query_range and plotted with matplotlib (in target/picture-venv).

    scripts/dashboard-picture.py [N]      (default N = 2000; about four minutes)
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
VENV = ROOT / "target/picture-venv"
MATPLOTLIB = "matplotlib==3.9.2"


def ensure_matplotlib():
    python = VENV / "bin/python"
    probe = subprocess.run([python, "-c", "import matplotlib"], capture_output=True)
    if not python.exists() or probe.returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        pip = [VENV / "bin/pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + [MATPLOTLIB], check=True)
    # The venv's python is a link to the system's: tell them apart by their prefix.
    if pathlib.Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(python, [python, *sys.argv])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.status, answer.read().decode()


def controller_metrics_ports():
    """Ports on 127.0.0.1 where an iothub-dynreg process serves /metrics."""
    listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    ports = {}
    for line in listing.splitlines():
        if '"iothub-dynreg"' not in line:
            continue
        address = re.search(r"127\.0\.0\.1:(\d+)", line)
        pid = re.search(r"pid=(\d+)", line)
        if not (address and pid):
            continue
        port = int(address.group(1))
        try:
            status, _ = get(f"http://127.0.0.1:{port}/metrics", timeout=1)
        except OSError:
            continue
        if status == 200:
            ports[port] = pid.group(1)
    return ports


def start_prometheus(work):
    targets = work / "targets.json"
    targets.write_text("[]")
    config = work / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: iothub-dynreg-metrics\n"
        f"    file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(work / "prometheus.log", "w"),
    )
    for _ in range(100):
        try:
            if get(f"http://127.0.0.1:{port}/-/ready")[0] == 200:
                return process, port, targets
        except OSError:
            time.sleep(0.1)
    process.kill()
    sys.exit("prometheus did not start; see " + str(work / "prometheus.log"))


def run_benchmark(n, targets, work):
    """Runs the benchmark, pointing Prometheus at each controller it starts."""
    environment = dict(os.environ, BENCH_SKIP_NAIVE="1")
    log = open(work / "bench.log", "w")
    bench = subprocess.Popen(
        ["cargo", "bench", "--locked", "--bench", "scale", "--", "--api", "real", str(n)],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    known = {}
    while bench.poll() is None:
        ports = controller_metrics_ports()
        if ports and ports != known:
            known = ports
            groups = [{"targets": [f"127.0.0.1:{port}"], "labels": {"pod": f"controller-{pid}"}}
                      for port, pid in ports.items()]
            targets.write_text(json.dumps(groups))
        time.sleep(0.5)
    if bench.returncode != 0:
        sys.exit(f"the benchmark failed; see {work / 'bench.log'}")


def query_range(port, expr, start, end):
    parameters = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": "2s"})
    _, body = get(f"http://127.0.0.1:{port}/api/v1/query_range?{parameters}", timeout=30)
    return json.loads(body)["data"]["result"]


def legend(template, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def plot(port, start, end, n, output):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads((ROOT / "charts/iothub-dynreg/files/dashboard.json").read_text())
    panels = dashboard["panels"]
    rows = (len(panels) + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(16, 3.1 * rows), squeeze=False)
    for axis, panel in zip(axes.flat, panels):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "15s").replace("$job", ".*")
            for series in query_range(port, expr, start, end):
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                axis.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.2,
                          label=legend(target["legendFormat"], series["metric"]) or "value")
        unit = panel["fieldConfig"]["defaults"]["unit"]
        axis.set_title(f"{panel['title']} ({unit})", fontsize=10, loc="left")
        axis.grid(alpha=0.3)
        axis.tick_params(labelsize=8)
        handles, labels = axis.get_legend_handles_labels()
        if labels:
            axis.legend(fontsize=7, loc="upper right", ncol=2 if len(labels) > 4 else 1)
    for axis in axes.flat[len(panels):]:
        axis.axis("off")
    for axis in axes[-1]:
        axis.set_xlabel("seconds since the first scrape", fontsize=8)
    figure.suptitle(
        f"iothub-dynreg dashboard queries over a benchmark run: N = {n} resources converging at "
        "100 calls/s, a steady resync, a restart (real kube-apiserver, emulator; Prometheus "
        "scraping every second)", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=80)
    print(f"wrote {output}")


def main():
    ensure_matplotlib()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    # Built first, so that the picture's clock starts with the run, not the build.
    build = ["cargo", "bench", "--locked", "--bench", "scale", "--no-run"]
    subprocess.run(build, cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as directory:
        work = pathlib.Path(directory)
        prometheus, port, targets = start_prometheus(work)
        try:
            start = time.time()
            run_benchmark(n, targets, work)
            time.sleep(3)
            end = time.time()
            plot(port, start, end, n, ROOT / "docs/dashboard.png")
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)


if __name__ == "__main__":
    main()

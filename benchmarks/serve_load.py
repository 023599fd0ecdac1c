"""Load test of ``onnx2snn serve`` on loopback: concurrent tritonclient callers against the bundled mnist_vgg.

Converts models/mnist_vgg.onnx at T = 8 with the project's converter (into a temporary folder), starts
``onnx2snn serve`` on it as a subprocess on a free loopback port, and runs ``--clients`` threads, each with its
own ``tritonclient.http`` client sending ``--images-per-request`` held-out MNIST images per request (binary
tensors) for ``--seconds``. Every response is compared bit for bit with a direct ``InferenceSession.run`` of the
same request alone (computed beforehand in this process). The baseline is a direct session in this process on
batches of 256, timed before and after the load (the ratio uses their mean, as the machine may be shared).
Prints throughput, the ratio to the baseline, p50/p99 latency, failures, mismatches and the server's mean batch
size (from its /metrics). ``--servers N`` starts N servers (each with ``--server-threads``, default 1) and sends
client k to server k mod N: N replicas behind a round-robin balancer, one interpreter each; the baseline keeps
``--threads``. Usage:

    python benchmarks/serve_load.py [--clients 16] [--seconds 60] [--images-per-request 1]
                                    [--max-batch 64] [--max-delay-ms 5] [--threads N] [--snn FILE] [--json OUT.json]
                                    [--servers N [--server-threads M]]

Needs onnx2snn[serve] and tritonclient[http]. Traffic goes to 127.0.0.1 only; the run is bounded by --seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import converter  # noqa: E402
import runtime  # noqa: E402

TIMESTEPS = 8
BASELINE_BATCH = 256


def convert(folder: Path) -> Path:
    calib = np.load(ROOT / "models" / "mnist_calib.npz")["image"]
    path = folder / "mnist_vgg.snn.onnx"
    converter.convert(str(ROOT / "models" / "mnist_vgg.onnx"), calib, timesteps=TIMESTEPS, progress=False).save(path)
    return path


def baseline(session, x: np.ndarray, seconds: float) -> tuple[float, float]:
    """Images per second of a direct session on batches of 256 (whole batches, at least 4 of them), and per
    CPU-second this process used meanwhile."""
    batches = [x[i:i + BASELINE_BATCH] for i in range(0, len(x) - BASELINE_BATCH + 1, BASELINE_BATCH)]
    done, start, cpu = 0, time.perf_counter(), cpu_seconds(os.getpid())
    while done < 4 * BASELINE_BATCH or time.perf_counter() - start < seconds:
        session.run(None, {"image": batches[(done // BASELINE_BATCH) % len(batches)]}, timesteps=TIMESTEPS)
        done += BASELINE_BATCH
    return done / (time.perf_counter() - start), done / (cpu_seconds(os.getpid()) - cpu)


def start_server(path: Path, args, threads: int | None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "converter", "serve", str(path), "--name", "mnist_vgg", "--port", "0", "--max-batch", str(args.max_batch),
               "--max-delay-ms", str(args.max_delay_ms)] + (["--threads", str(threads)] if threads else [])
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" at ", 1)[1].split()[0]


def client_loop(url: str, k: int, requests: list[np.ndarray], expected: list[np.ndarray], stop_at: float, record: list) -> None:
    import tritonclient.http as th
    client = th.InferenceServerClient(url.removeprefix("http://"), network_timeout=120)
    n = k * 7919
    while time.perf_counter() < stop_at:
        j = n % len(requests)
        n += 1
        tensor = th.InferInput("image", list(requests[j].shape), "FP32")
        tensor.set_data_from_numpy(requests[j])
        start = time.perf_counter()
        try:
            out = client.infer("mnist_vgg", [tensor]).as_numpy("logits")
            outcome = "ok" if np.array_equal(out, expected[j]) else "mismatch"
        except Exception as exc:  # noqa: BLE001 - every failure is counted and its first kind kept
            outcome = f"failed: {type(exc).__name__}: {exc}"
        record.append((time.perf_counter() - start, outcome, len(requests[j])))
    client.close()


def raw_body(images: np.ndarray) -> tuple[bytes, str]:
    """A v2 request with a binary input and a binary output, encoded once: the body and its JSON header's length."""
    blob = np.ascontiguousarray(images, dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": list(images.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return header + blob, str(len(header))


def raw_client_loop(url: str, k: int, requests: list[np.ndarray], expected: list[np.ndarray], stop_at: float, record: list) -> None:
    """The same requests as ``client_loop`` over one kept-alive ``http.client`` connection with pre-encoded bodies:
    what a load generator such as Triton's perf_analyzer costs the machine, not what a Python client library does."""
    import http.client
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    bodies = [raw_body(r) for r in requests]
    wanted = [e.astype("<f4").tobytes() for e in expected]
    n = k * 7919
    while time.perf_counter() < stop_at:
        j = n % len(requests)
        n += 1
        body, header_length = bodies[j]
        start = time.perf_counter()
        try:
            connection.request("POST", "/v2/models/mnist_vgg/infer", body,
                               {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": header_length})
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            outcome = "ok" if data[int(response.getheader("Inference-Header-Content-Length")):] == wanted[j] else "mismatch"
        except Exception as exc:  # noqa: BLE001 - every failure is counted and its first kind kept
            outcome = f"failed: {type(exc).__name__}: {exc}"
            connection.close()
        record.append((time.perf_counter() - start, outcome, len(requests[j])))
    connection.close()


def server_figures(url: str) -> tuple[float, float]:
    """The server's mean batch size and the seconds its session spent running, from its /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}
    label = '{model="mnist_vgg"}'
    return (values[f"onnx2snn_batch_size_sum{label}"] / max(1.0, values[f"onnx2snn_batch_size_count{label}"]),
            values[f"onnx2snn_run_seconds_sum{label}"])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--images-per-request", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=None, help="threads per run, of the server and of the baseline (default: all cores)")
    ap.add_argument("--baseline-seconds", type=float, default=10.0)
    ap.add_argument("--snn", help="serve this mnist_vgg SNN file instead of converting one (T = 8) for the run")
    ap.add_argument("--servers", type=int, default=1, help="servers started, clients spread over them round-robin (default 1)")
    ap.add_argument("--server-threads", type=int, default=None,
                    help="threads per run of each server (default: --threads with one server, 1 with several)")
    ap.add_argument("--client", choices=("tritonclient", "raw"), default="tritonclient",
                    help="tritonclient.http (default), or raw: pre-encoded bodies over http.client (a lean load generator)")
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.servers < 1:
        ap.error("--servers must be at least 1")
    server_threads = args.server_threads or (args.threads if args.servers == 1 else 1)
    x = np.load(ROOT / "models" / "mnist_eval.npz")["image"]
    k = args.images_per_request
    requests = [x[i:i + k] for i in range(0, len(x) - k + 1, k)]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        path = Path(args.snn) if args.snn else convert(Path(folder))
        session = runtime.InferenceSession(str(path), threads=args.threads)
        expected = [session.run(None, {"image": r}, timesteps=TIMESTEPS)[0] for r in requests]   # each request alone
        before = baseline(session, x, args.baseline_seconds)
        servers = []
        try:
            for _ in range(args.servers):
                servers.append(start_server(path, args, server_threads))
            urls = [url for _, url in servers]
            record: list = []
            server_cpu, client_cpu = sum(cpu_seconds(p.pid) for p, _ in servers), cpu_seconds(os.getpid())
            stop_at = time.perf_counter() + args.seconds
            start = time.perf_counter()
            loop = raw_client_loop if args.client == "raw" else client_loop
            threads = [threading.Thread(target=loop, args=(urls[c % len(urls)], c, requests, expected, stop_at, record))
                       for c in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            server_cpu, client_cpu = sum(cpu_seconds(p.pid) for p, _ in servers) - server_cpu, cpu_seconds(os.getpid()) - client_cpu
            figures = [server_figures(url) for url in urls]
            batch, engine_s = float(np.mean([f[0] for f in figures])), sum(f[1] for f in figures) / len(figures)
        finally:
            for proc, _ in servers:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
        after = baseline(session, x, args.baseline_seconds)
    latencies = np.array([r[0] for r in record])
    served = sum(r[2] for r in record if r[1] == "ok") / elapsed
    failures = [r[1] for r in record if r[1].startswith("failed")]
    mismatches = sum(r[1] == "mismatch" for r in record)
    (before, before_cpu), (after, after_cpu) = before, after
    direct, direct_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
    served_cpu = sum(r[2] for r in record if r[1] == "ok") / server_cpu
    result = {"clients": args.clients, "client": args.client, "servers": args.servers, "server_threads": server_threads,
              "seconds": round(elapsed, 1), "images_per_request": k, "max_batch": args.max_batch,
              "max_delay_ms": args.max_delay_ms, "requests": len(record), "failures": len(failures), "mismatches": mismatches,
              "first_failure": failures[0] if failures else None, "served_images_per_s": served,
              "direct_batch256_images_per_s": [before, after], "ratio": served / direct,
              "served_images_per_server_cpu_s": served_cpu, "direct_images_per_cpu_s": [before_cpu, after_cpu],
              "ratio_per_cpu_s": served_cpu / direct_cpu,
              "latency_ms": {"p50": float(np.percentile(latencies, 50) * 1e3), "p99": float(np.percentile(latencies, 99) * 1e3)},
              "server_mean_batch": batch, "engine_busy": engine_s / elapsed, "server_cpu_s": server_cpu,
              "client_cpu_s": client_cpu, "cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"{args.clients} {args.client} clients x {elapsed:.0f} s, {k} image(s) per request, mnist_vgg T={TIMESTEPS}, "
          f"--max-batch {args.max_batch} --max-delay-ms {args.max_delay_ms:g}, {args.servers} server(s) with --threads "
          f"{server_threads or 'all'}, baseline --threads {args.threads or 'all'}, {os.cpu_count()} CPUs")
    print("| requests | failed | mismatched | served img/s | direct batch-256 img/s (before / after) | ratio | p50 ms | p99 ms | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {len(record)} | {len(failures)} | {mismatches} | {served:.0f} | {before:.0f} / {after:.0f} | {served / direct:.2f}x | "
          f"{result['latency_ms']['p50']:.1f} | {result['latency_ms']['p99']:.1f} | {batch:.1f} |")
    print(f"server: session running {engine_s / elapsed:.0%} of the time (mean over servers); CPU seconds per second: "
          f"server{'s' if args.servers > 1 else ''} {server_cpu / elapsed:.2f}, "
          f"clients {client_cpu / elapsed:.2f} (of {os.cpu_count()} CPUs)")
    print(f"per CPU-second: served {served_cpu:.0f} img (server process), direct {before_cpu:.0f} / {after_cpu:.0f} img; "
          f"ratio {served_cpu / direct_cpu:.2f}x")
    if failures:
        print(f"first failure: {failures[0]}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not failures and not mismatches else 1


if __name__ == "__main__":
    sys.exit(main())

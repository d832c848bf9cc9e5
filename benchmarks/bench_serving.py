"""Throughput of the sensitivity-report service at 8 concurrent clients.

Trains a small CNN for one epoch on 1000 Fashion-MNIST images (offline), exports it,
starts the service with uvicorn in a separate process on a free loopback port, and
runs 8 client threads, each with its own keep-alive HTTP connection, for a fixed
number of requests. Prints requests/s, images/s and the p50/p99 latency for ``:predict``
(at two batch sizes) and ``/sensitivity``.

The service runs reports in their own lane (``--report-workers`` threads, default 1);
its report queue is sized to the clients here so that the benchmark measures
throughput, not 503s.

Usage:
    .venv/bin/python benchmarks/bench_serving.py [--requests 50] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(base: Path, x, y) -> None:
    import keras

    from keras_sns import export, models

    keras.utils.set_random_seed(0)
    model = models.build("small_cnn")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    export.export(model, base, "fmnist", eps=0.1, steps=10)


def _run_clients(url: str, body: bytes, clients: int, requests: int) -> tuple[float, int, list]:
    import httpx

    headers = {"content-type": "application/json"}
    failures, latencies = [], []

    def client():
        with httpx.Client(timeout=120) as c:
            for _ in range(requests):
                start = time.perf_counter()
                r = c.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    failures.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, len(failures), latencies


def _percentiles(values: list, qs) -> list:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in qs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--workers", type=int, default=2, help="service prediction threads")
    parser.add_argument("--report-workers", type=int, default=1, help="service report threads")
    args = parser.parse_args()

    import httpx

    from keras_sns.data import load_arrays

    x, y, _ = load_arrays("fashion_mnist", "train", limit=1000)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "exports"
        _export(base, x, y)
        port = _free_port()
        code = (
            "from serving import ServiceSettings, run; "
            f"run({str(base)!r}, port={port}, log_level='warning', "
            f"settings=ServiceSettings(workers={args.workers}, report_workers={args.report_workers}, "
            f"max_report_queue={args.clients}))"
        )
        server = subprocess.Popen([sys.executable, "-c", code])
        try:
            root = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{root}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the service did not start")
                time.sleep(0.2)
            cases = [
                ("predict", f"{root}/v1/models/fmnist:predict", 1, args.requests),
                ("predict", f"{root}/v1/models/fmnist:predict", 32, args.requests),
                ("sensitivity", f"{root}/v1/models/fmnist/sensitivity", 8, max(1, args.requests // 5)),
            ]
            print(f"{args.clients} clients, service workers={args.workers}, "
                  f"report_workers={args.report_workers}, cpus={os.cpu_count()}")
            header = ("route", "batch", "requests", "seconds", "req/s", "images/s", "p50 ms", "p99 ms")
            print(f"{header[0]:<12} " + " ".join(f"{h:>8}" for h in header[1:]) + " failures")
            for route, url, batch, n in cases:
                images = x[:batch].tolist()
                payload = {"instances": images} if route == "predict" else {"images": images}
                # Encoded once: the clients share this process (and its GIL) and should
                # measure the service, not json.dumps.
                body = json.dumps(payload).encode()
                _run_clients(url, body, args.clients, 2)  # warm-up (tracing, connections)
                seconds, failures, latencies = _run_clients(url, body, args.clients, n)
                total = args.clients * n
                p50, p99 = (1000 * q for q in _percentiles(latencies, (0.50, 0.99)))
                print(f"{route:<12} {batch:>8} {total:>8} {seconds:>8.2f} {total / seconds:>8.1f} "
                      f"{total * batch / seconds:>8.1f} {p50:>8.1f} {p99:>8.1f} {failures}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

"""What the HTTP API adds to one generation: ``POST /sdapi/v1/txt2img`` (request validation, the job queue,
PNG + base64 encoding, JSON, HTTP on loopback) against ``Pipeline.txt2img`` on the same loaded pipeline, for one
32x32 image of the built-in model.

    python benchmarks/server_overhead.py               # 20 alternated pairs
    python benchmarks/server_overhead.py --quick       # 5 pairs

The server runs in this process (uvicorn in a thread) on a free loopback port; the two calls alternate (and
alternate who goes first) and the table quotes medians, the added milliseconds and their share of the direct
call. A second figure subtracts, call by call, the time the server spent in the job itself (the pipeline), which
leaves the API's own cost free of the generation's run-to-run noise. Target: under 5% of the generation time or
20 ms, whichever is larger.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import threading
import time

import requests
import uvicorn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from benchmarks.bench_networks import machine, row, time_pair  # noqa: E402
from nanoldm.server.app import create_app  # noqa: E402
from nanoldm.server.service import Service  # noqa: E402
from nanoldm.server.settings import ServerSettings  # noqa: E402

SETTINGS = dict(prompt="a large red circle at the top left", negative_prompt="", sampler="Euler a", steps=20,
                cfg_scale=7.0, seed=1, width=32, height=32)


def serve(service: Service) -> tuple[uvicorn.Server, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}/sdapi/v1/txt2img"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--steps", type=int, default=SETTINGS["steps"])
    args = p.parse_args()
    repeats = args.repeats or (5 if args.quick else 20)
    settings = {**SETTINGS, "steps": args.steps}

    service = Service(ServerSettings(device="cpu"))
    inside: list[float] = []  # seconds each API call spent in the job itself (the pipeline)
    execute = service.execute

    def timed_execute(job):
        start = time.perf_counter()
        try:
            return execute(job)
        finally:
            inside.append(time.perf_counter() - start)

    service.execute = timed_execute
    server, url = serve(service)
    body = {**settings, "sampler_name": settings.pop("sampler")}
    session = requests.Session()

    def direct():
        service.pipe.txt2img(sampler=body["sampler_name"], progress=False, **settings)

    def api():
        response = session.post(url, json=body, timeout=600)
        assert response.status_code == 200, response.text

    api_s, direct_s = time_pair(api, direct, repeats)
    server.should_exit = True
    around = [total - job for total, job in zip(api_s, inside[-len(api_s):])]  # the API's own share of each call
    added = statistics.median(api_s) - statistics.median(direct_s)
    share = added / statistics.median(direct_s)
    print(machine())
    print(f"one {settings['width']}x{settings['height']} image, {settings['steps']} steps, {repeats} alternated pairs\n")
    print("| call | API | Pipeline.txt2img | ratio | spread |\n|---|---|---|---|---|")
    print(row("txt2img", api_s, direct_s, "s"))
    print(row("the job inside the API call", inside[-len(api_s):], direct_s, "s"))
    target = max(0.05 * statistics.median(direct_s), 0.020)
    own = statistics.median(around)
    print(f"\nAPI call minus direct call (medians): {added * 1e3:.1f} ms ({share:.1%} of the generation)")
    print(f"API call minus its own job, per call (median of {len(around)}; insensitive to the generation's noise): "
          f"{own * 1e3:.1f} ms, spread {min(around) * 1e3:.1f}-{max(around) * 1e3:.1f} ms; "
          f"target < {target * 1e3:.1f} ms: {'met' if own < target else 'NOT met'}")


if __name__ == "__main__":
    main()

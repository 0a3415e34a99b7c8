"""``nanoldm serve``: the A1111-compatible HTTP API (and the web page) on FastAPI + uvicorn.

The command only turns flags into :class:`~nanoldm.server.settings.ServerSettings`; the server itself is
``nanoldm.server`` (usable from Python: ``create_app(Service(ServerSettings(...)))``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn

from nanoldm.cli.generate import add_dtype_argument
from nanoldm.server.app import create_app
from nanoldm.server.service import Service
from nanoldm.server.settings import ServerSettings, parse_api_auth

DEFAULTS = ServerSettings()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve A1111's HTTP API (/sdapi/v1) and the web page")
    p.add_argument("--model", default=None, help="the checkpoint served first (default: the built-in shapes model)")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help="more checkpoints, offered by /sdapi/v1/sd-models and chosen by title")
    p.add_argument("--embeddings-dir", default=None, metavar="DIR", help="textual-inversion embeddings to load")
    p.add_argument("--hypernetwork-dir", default=None, metavar="DIR",
                   help="where <hypernet:name:strength> prompt tags find their files")
    p.add_argument("--lora-dir", default=None, metavar="DIR",
                   help="where <lora:name:weight> prompt tags find their files (listed by /sdapi/v1/loras)")
    p.add_argument("--host", default=DEFAULTS.host,
                   help="address to listen on (default: %(default)s, this machine only); another address needs "
                        "--api-auth or --insecure")
    p.add_argument("--port", type=int, default=DEFAULTS.port, help="default: %(default)s")
    p.add_argument("--api-auth", default=None, metavar="USER:PASS[,USER:PASS]",
                   help="HTTP basic auth on every route")
    p.add_argument("--queue-size", type=int, default=DEFAULTS.queue_size,
                   help="jobs that may wait behind the running one; more are answered 503 (default: %(default)s)")
    add_dtype_argument(p)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--max-size", type=int, default=DEFAULTS.max_size,
                   help="largest width or height in pixels a request may ask for (default: %(default)s)")
    p.add_argument("--save-dir", default=None, metavar="DIR",
                   help="also save every output here (default: outputs are only returned)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without --api-auth")
    p.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> ServerSettings:
    def path(value: str | None) -> Path | None:
        return Path(value).expanduser() if value else None

    return ServerSettings(model=path(args.model), models_dir=path(args.models_dir),
                          embeddings_dir=path(args.embeddings_dir), hypernetwork_dir=path(args.hypernetwork_dir),
                          lora_dir=path(args.lora_dir),
                          host=args.host, port=args.port, api_auth=parse_api_auth(args.api_auth),
                          queue_size=args.queue_size, dtype=args.dtype, device=args.device,
                          max_size=args.max_size, save_dir=path(args.save_dir), insecure=args.insecure)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    settings.check()  # refuse before loading anything
    app = create_app(Service(settings))
    print(f"nanoldm serve: http://{settings.host}:{settings.port} (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0

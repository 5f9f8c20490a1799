"""``conveyor -A pkg.module:app web``: serve the HTTP API.

Imported by ``conveyor.cli`` at start-up to register the command, so it imports nothing of
the ``web`` extra until the command runs.
"""

from __future__ import annotations

import argparse

from ..app import Conveyor
from ..cli import command, env_default


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


def _web_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=env_default("host", "127.0.0.1"),
                        help="address to listen on (default 127.0.0.1; anything else needs "
                             "a token or --insecure)")
    parser.add_argument("--port", type=int, default=int(env_default("port", 8000)))
    parser.add_argument("--token", action="append", metavar="TOKEN",
                        help="a full-access bearer token (repeatable; prefer the "
                             "CONVEYOR_API_TOKENS environment variable, which `ps` cannot see)")
    parser.add_argument("--read-token", action="append", metavar="TOKEN",
                        help="a read-only bearer token (repeatable; or CONVEYOR_API_READ_TOKENS)")
    parser.add_argument("--insecure", action="store_true",
                        default=bool(env_default("insecure", "")),
                        help="allow a non-loopback --host without any token")
    parser.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                        help="a browser origin allowed to call the API (repeatable; "
                             "default: none)")
    parser.add_argument("--root-path", default=env_default("root_path", ""),
                        help="the path prefix a reverse proxy serves the API under")
    parser.add_argument("--max-body", type=int, default=int(env_default("max_body", 1 << 20)),
                        help="largest request body in bytes (default 1 MiB)")


@command("web", "serve the HTTP API (submit, follow, cancel jobs; /docs)", _web_args)
def web_command(app: Conveyor, args: argparse.Namespace) -> int:
    from . import serve

    serve(app, host=args.host, port=args.port, insecure=args.insecure,
          tokens=_split(args.token), read_only_tokens=_split(args.read_token),
          cors_origins=_split(args.cors_origin), root_path=args.root_path,
          max_body=args.max_body, log_level=args.log_level.lower())
    return 0

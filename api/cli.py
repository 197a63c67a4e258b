"""The ``tradestream`` command: ``serve`` runs the server, ``export-schema`` writes the SDL."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradestream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server (settings from the environment)")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")

    export = commands.add_parser("export-schema", help="write the GraphQL schema as SDL")
    export.add_argument(
        "--output", "-o", default="schema.graphql", help="file to write, '-' for stdout"
    )

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port)
    return _export_schema(args.output)


def _serve(host: str | None, port: int | None) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(
        f"tradestream on http://{settings.host}:{settings.port}/graphql "
        f"(GraphiQL in a browser; WebSocket graphql-transport-ws on the same path)",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        ws_per_message_deflate=False,
    )
    return 0


def _export_schema(output: str) -> int:
    from api.schema import schema

    sdl = schema.as_str() + "\n"
    if output == "-":
        sys.stdout.write(sdl)
    else:
        Path(output).write_text(sdl, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

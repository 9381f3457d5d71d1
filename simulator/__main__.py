"""`python -m simulator --port 8000`: run the simulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from simulator.server import SimulatorConfig, run_simulator

log = logging.getLogger("simulator")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="Local Azure OpenAI chat-completions simulator."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: loopback only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--ttft-ms", type=float, default=0, help="delay before the first content token"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=0,
        help="pace content chunks; 0 = as fast as possible",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help="require this api-key (bearer tokens are accepted if non-empty)",
    )
    parser.add_argument(
        "--tpm", type=int, default=0, help="tokens-per-minute budget; 0 = unlimited"
    )
    parser.add_argument(
        "--triggers", type=Path, default=None, help="content-filter trigger table (YAML)"
    )
    parser.add_argument(
        "--model", default="gpt-4o", help="model family reported and used for the tokenizer"
    )
    parser.add_argument(
        "--deployments",
        default=None,
        help="comma-separated deployment names served (others: 404); default: any name",
    )
    return parser.parse_args(argv)


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    runner, _url = await run_simulator(config, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        time_to_first_token_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        api_key=args.api_key,
        triggers_file=args.triggers,
        tokens_per_minute=args.tpm,
        model=args.model,
        deployments=(
            frozenset(name.strip() for name in args.deployments.split(",") if name.strip())
            if args.deployments
            else None
        ),
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = config_from_args(args)
    try:
        asyncio.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:
        log.info("simulator stopped")


if __name__ == "__main__":
    main()

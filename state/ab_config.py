"""The A/B arms document, read from the file `FEEDFLOW_AB_CONFIG` names (:mod:`operators.ab`)."""

from __future__ import annotations

from pathlib import Path

from kernel.errors import ConfigError
from operators.ab import DEFAULT_CONFIG, AbConfig, parse_config


def load_config(path: str) -> AbConfig:
    """The config at `path`, or :data:`DEFAULT_CONFIG` when `path` is empty.

    Raises:
        ConfigError: the file is unreadable or invalid (the message names it).
    """
    if not path:
        return DEFAULT_CONFIG
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"A/B config {path}: {exc.strerror or exc}") from exc
    try:
        return parse_config(raw, toml=path.endswith(".toml"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc

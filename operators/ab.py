"""A/B arms: a small config document and the deterministic assignment of users to arms.

Assignment is a pure function of the user id and a salt (a keyed BLAKE2b hash mapped to
[0, 1)), so it is the same on every request, every replica and after every restart. Two
independent hashes decide it:

1. the **permanent holdback**: :data:`HOLDBACK_SHARE` of all users, chosen with a salt of its
   own (:data:`HOLDBACK_SALT`) that no experiment config can change, get the non-personalised
   experience for good — the long-run baseline every launched change is measured against;
2. everyone else is split among the config's arms by their shares, with the experiment's
   salt: a new experiment (a new salt) reshuffles the arms and never the holdback.

Config document (JSON, or TOML when the file ends in `.toml`)::

    {"salt": "ranker-2024-w40", "control": "control",
     "arms": [{"name": "control", "share": 0.5, "personalised": false},
              {"name": "treatment", "share": 0.5}]}

`personalised: false` means trending + rules (no personal signals, no personal ranker);
`control` names the arm the others are compared with (the holdback when left out).

Example:
    >>> a = Assigner(parse_config(b'{"salt": "s1", "arms": [{"name": "a", "share": 0.5},'
    ...                           b' {"name": "b", "share": 0.5, "personalised": false}]}'))
    >>> a.assign("user-1") == Assigner(a.config).assign("user-1")
    True
    >>> sorted(a.expected_shares().items())
    [('a', 0.49), ('b', 0.49), ('holdback', 0.02)]
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from typing import Annotated, Final, NamedTuple

import msgspec

from kernel.errors import ConfigError

HOLDBACK_ARM: Final = "holdback"
HOLDBACK_SHARE: Final = 0.02
# Never change: it would move users in and out of the permanent holdback.
HOLDBACK_SALT: Final = "feedflow-permanent-holdback-v1"
MAX_ARMS: Final = 8  # arm names are metric label values: keep them few
_ARM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SCALE: Final = 2**64

Share = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]


class ArmSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One arm of the experiment."""

    name: str
    share: Share
    personalised: bool = True


class AbConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The experiment: a salt, the arms with their shares (summing to 1), the control."""

    salt: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    arms: list[ArmSpec]
    control: str | None = None


# No experiment: everyone outside the holdback gets the full ranker.
DEFAULT_CONFIG: Final = AbConfig(salt="default", arms=[ArmSpec(name="default", share=1.0)])


class Arm(NamedTuple):
    """What a request is served with: the arm's name and whether it is personalised."""

    name: str
    personalised: bool


HOLDBACK: Final = Arm(HOLDBACK_ARM, False)


def check_config(config: AbConfig) -> AbConfig:
    """The config itself, once it is known to be usable.

    Raises:
        ConfigError: naming what is wrong.
    """
    names = [a.name for a in config.arms]
    problems = [
        (not names, "at least one arm is needed"),
        (len(names) > MAX_ARMS, f"at most {MAX_ARMS} arms (they are metric labels)"),
        (len(set(names)) != len(names), f"arm names must be unique: {names}"),
        (HOLDBACK_ARM in names, f"{HOLDBACK_ARM!r} is the permanent holdback, not an arm"),
        (not math.isclose(sum(a.share for a in config.arms), 1.0, abs_tol=1e-6),
         f"arm shares must sum to 1, not {sum(a.share for a in config.arms):g}"),
        (config.control is not None and config.control not in names,
         f"control {config.control!r} is not an arm"),
    ]  # fmt: skip
    bad = [n for n in names if not _ARM_NAME.match(n)]
    if bad:
        problems.append((True, f"arm names must match {_ARM_NAME.pattern}: {bad}"))
    for failed, message in problems:
        if failed:
            raise ConfigError(f"A/B config: {message}")
    return config


def parse_config(raw: bytes, toml: bool = False) -> AbConfig:
    """A checked config from JSON (or TOML) bytes.

    Raises:
        ConfigError: on malformed documents, unknown fields or impossible splits.
    """
    try:
        if toml:
            return check_config(msgspec.convert(tomllib.loads(raw.decode()), AbConfig))
        return check_config(msgspec.json.decode(raw, type=AbConfig))
    except (msgspec.DecodeError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"A/B config: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"A/B config: not UTF-8 ({exc})") from exc


def bucket(user_id: str, key: bytes) -> int:
    """The user's position in [0, 2**64) under a hash key (see :func:`hash_key`).

    Example:
        >>> bucket("u1", hash_key("s")) == bucket("u1", hash_key("s")) != bucket("u1", b"")
        True
    """
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "big")


def hash_key(salt: str) -> bytes:
    """A BLAKE2b key (at most 64 bytes) for a salt of any length."""
    return hashlib.blake2b(salt.encode(), digest_size=32).digest()


class Assigner:
    """Users to arms for one config: the holdback first, then the config's split."""

    __slots__ = ("_arms", "_bounds", "_holdback_key", "_holdback_max", "_key", "config")

    def __init__(self, config: AbConfig = DEFAULT_CONFIG) -> None:
        self.config = check_config(config)
        self._holdback_key = hash_key(HOLDBACK_SALT)
        self._holdback_max = int(HOLDBACK_SHARE * _SCALE)
        self._key = hash_key(config.salt)
        self._arms = [Arm(a.name, a.personalised) for a in config.arms]
        total, bounds = 0.0, []
        for spec in config.arms:
            total += spec.share
            bounds.append(min(int(total * _SCALE), _SCALE))
        bounds[-1] = _SCALE  # shares sum to 1 only within rounding
        self._bounds = bounds

    def assign(self, user_id: str) -> Arm:
        """The user's arm: stable for the life of the config (and the holdback forever)."""
        if bucket(user_id, self._holdback_key) < self._holdback_max:
            return HOLDBACK
        at = bucket(user_id, self._key)
        for arm, bound in zip(self._arms, self._bounds, strict=True):
            if at < bound:
                return arm
        return self._arms[-1]

    def expected_shares(self) -> dict[str, float]:
        """Each arm's expected share of all users, the holdback included."""
        rest = 1.0 - HOLDBACK_SHARE
        shares = {a.name: round(a.share * rest, 12) for a in self.config.arms}
        return {**shares, HOLDBACK_ARM: HOLDBACK_SHARE}

    def control(self) -> str:
        """The arm the others are compared with."""
        return self.config.control or HOLDBACK_ARM

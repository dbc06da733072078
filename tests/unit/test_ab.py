"""A/B arms: config validation, and an assignment that is stable, balanced and keeps the
permanent holdback whatever the experiment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import ConfigError
from kernel.settings import Settings
from operators.ab import (
    DEFAULT_CONFIG,
    HOLDBACK_ARM,
    HOLDBACK_SHARE,
    AbConfig,
    ArmSpec,
    Assigner,
    parse_config,
)
from operators.ab_report import srm_check
from serving.runtime import build_runtime
from state.ab_config import load_config

ROOT = Path(__file__).resolve().parents[2]
SPLIT = b"""{"salt": "exp-1", "control": "control", "arms": [
    {"name": "control", "share": 0.5, "personalised": false},
    {"name": "treatment", "share": 0.5}]}"""
user_ids = st.text(min_size=1, max_size=128).filter(lambda s: "\x00" not in s)


def test_the_same_user_gets_the_same_arm_on_every_request_and_every_instance() -> None:
    config = parse_config(SPLIT)
    first, second = Assigner(config), Assigner(parse_config(SPLIT))
    for n in range(2000):
        user = f"user-{n}"
        assert first.assign(user) == first.assign(user) == second.assign(user)


ONE, TWO = Assigner(parse_config(SPLIT)), Assigner(parse_config(SPLIT))


@settings(max_examples=100, deadline=None)
@given(user=user_ids)
def test_assignment_is_a_pure_function_of_user_and_salt(user: str) -> None:
    assert ONE.assign(user) == TWO.assign(user) == ONE.assign(user)


def test_assignment_survives_a_restart_with_another_hash_seed() -> None:
    """Another interpreter (another PYTHONHASHSEED) assigns exactly as this one does."""
    users = [f"restart-{n}" for n in range(300)]
    code = (
        "import sys; from operators.ab import Assigner, parse_config; "
        f"a = Assigner(parse_config({SPLIT!r})); "
        "print(' '.join(a.assign(u).name for u in sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, *users], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    here = Assigner(parse_config(SPLIT))
    assert out.stdout.split() == [here.assign(u).name for u in users]


def test_known_users_keep_their_arms_across_versions() -> None:
    """Pinned: a change to the hash would silently move users between arms."""
    assigner = Assigner(parse_config(SPLIT))
    got = [assigner.assign(f"user-{n}").name for n in range(8)]
    assert got == PINNED
    holdback = [n for n in range(400) if Assigner().assign(f"user-{n}").name == HOLDBACK_ARM]
    assert holdback == PINNED_HOLDBACK


PINNED = ["treatment", "control", "treatment", "treatment", "control", "control", "treatment",
          "control"]  # fmt: skip
PINNED_HOLDBACK = [34, 155, 208, 228, 230, 317, 338, 344]


def test_arms_are_balanced_within_the_srm_tolerance() -> None:
    assigner = Assigner(parse_config(SPLIT))
    counts = Counter(assigner.assign(f"synthetic-{n}").name for n in range(100_000))
    srm = srm_check(counts, assigner.expected_shares())
    assert not srm.mismatch, (counts, srm)
    assert abs(counts[HOLDBACK_ARM] / 100_000 - HOLDBACK_SHARE) < 0.002


@settings(max_examples=25, deadline=None)
@given(
    salt=st.text(min_size=1, max_size=40),
    shares=st.lists(st.integers(1, 9), min_size=1, max_size=4),
)
def test_the_holdback_does_not_move_when_the_experiment_changes(
    salt: str, shares: list[int]
) -> None:
    arms = [ArmSpec(name=f"arm{n}", share=s / sum(shares)) for n, s in enumerate(shares)]
    arms[-1] = ArmSpec(name=arms[-1].name, share=1.0 - sum(a.share for a in arms[:-1]))
    other = Assigner(AbConfig(salt=salt, arms=arms))
    assert {u for u in HOLDBACK_PROBES if other.assign(u).name == HOLDBACK_ARM} == HELD
    assert all(not other.assign(u).personalised for u in HELD)


HOLDBACK_PROBES = [f"h-{n}" for n in range(2000)]
HELD = {u for u in HOLDBACK_PROBES if Assigner().assign(u).name == HOLDBACK_ARM}


def test_a_new_salt_reshuffles_the_arms_independently() -> None:
    one = Assigner(parse_config(SPLIT))
    two = Assigner(parse_config(SPLIT.replace(b"exp-1", b"exp-2")))
    users = [f"r-{n}" for n in range(20_000)]
    pairs = [(one.assign(u).name, two.assign(u).name) for u in users]
    moved = [p for p in pairs if HOLDBACK_ARM not in p]
    same = sum(a == b for a, b in moved) / len(moved)
    assert 0.48 < same < 0.52  # independent 50/50 splits agree half the time


def test_the_default_config_is_one_personalised_arm_plus_the_holdback() -> None:
    assigner = Assigner()
    assert assigner.config == DEFAULT_CONFIG
    assert assigner.expected_shares() == {"default": 0.98, HOLDBACK_ARM: 0.02}
    assert assigner.control() == HOLDBACK_ARM
    assert {assigner.assign(f"d-{n}") for n in range(500)} == {
        ("default", True),
        (HOLDBACK_ARM, False),
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b'{"salt": "s", "arms": [{"name": "a", "share": 0.6}]}', "sum to 1"),
        (b'{"salt": "s", "arms": []}', "at least one arm"),
        (b'{"salt": "s", "arms": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}',
         "unique"),
        (b'{"salt": "s", "arms": [{"name": "holdback", "share": 1}]}', "permanent holdback"),
        (b'{"salt": "s", "arms": [{"name": "Big Arm", "share": 1}]}', "must match"),
        (b'{"salt": "s", "control": "b", "arms": [{"name": "a", "share": 1}]}', "not an arm"),
        (b'{"salt": "s", "arms": [{"name": "a", "share": 1, "colour": 3}]}', "colour"),
        (b'{"arms": [{"name": "a", "share": 1}]}', "salt"),
        (b'{"salt": "s", "arms": [{"name": "a", "share": -1}]}', "share"),
        (b"{not json", "A/B config"),
    ],
)  # fmt: skip
def test_invalid_configs_are_refused_with_a_clear_error(doc: bytes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_too_many_arms_are_refused() -> None:
    arms = [{"name": f"a{n}", "share": 0.1} for n in range(10)]
    with pytest.raises(ConfigError, match="at most 8 arms"):
        parse_config(msgspec.json.encode({"salt": "s", "arms": arms}))


def test_config_files_in_json_or_toml(tmp_path: Path) -> None:
    toml = tmp_path / "ab.toml"
    toml.write_text(
        'salt = "exp-1"\ncontrol = "control"\n'
        '[[arms]]\nname = "control"\nshare = 0.5\npersonalised = false\n'
        '[[arms]]\nname = "treatment"\nshare = 0.5\n'
    )
    as_json = tmp_path / "ab.json"
    as_json.write_bytes(SPLIT)
    assert load_config(str(toml)) == load_config(str(as_json)) == parse_config(SPLIT)
    assert load_config("") == DEFAULT_CONFIG
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.toml").write_text("salt = ")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(str(tmp_path / "bad.toml"))


def test_serving_refuses_to_start_with_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "ab.json"
    bad.write_text('{"salt": "s", "arms": [{"name": "a", "share": 0.3}]}')
    settings = Settings(redis_url="redis://127.0.0.1:1/0", ab_config=str(bad),
                        index_dir=str(tmp_path / "index"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"ab\.json: A/B config: arm shares must sum to 1"):
        build_runtime(settings)

"""The learning flow's label counter: outcomes per A/B arm (CTR and completion per arm), with
arm names from the broker kept to a bounded set of series."""

from __future__ import annotations

import uuid

from prometheus_client import REGISTRY

from flows.learning import labelled
from operators.labels import Example, LabelledImpression


def closed(arm: str, outcomes: list[tuple[bool, str]]) -> LabelledImpression:
    examples = tuple(
        Example(media_id=f"m{n}", position=n, features=(), label=label, reason=reason)
        for n, (label, reason) in enumerate(outcomes)
    )
    return LabelledImpression(request_id=uuid.uuid4().hex, user_id="u1", ts=1, arm=arm,
                              model_version="v", examples=examples)  # fmt: skip


def count(arm: str, label: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "feedflow_labels_total", {"arm": arm, "label": label, "reason": reason}
    )
    return value or 0.0


def test_outcomes_are_counted_per_arm() -> None:
    before = count("treatment", "positive", "completed"), count("treatment", "negative", "skipped")
    labelled(("u1", closed("treatment", [(True, "completed"), (True, "completed"),
                                         (False, "skipped")])))  # fmt: skip
    after = count("treatment", "positive", "completed"), count("treatment", "negative", "skipped")
    assert (after[0] - before[0], after[1] - before[1]) == (2.0, 1.0)


def test_made_up_arm_names_end_as_one_series() -> None:
    names = [f"flood-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    before = count("other", "positive", "liked")
    for name in names:
        labelled(("u1", closed(name, [(True, "liked")])))
    kept = [n for n in names if count(n, "positive", "liked") > 0]
    assert len(kept) <= 16  # at most two experiments' arms ever become series
    assert count("other", "positive", "liked") - before == len(names) - len(kept)

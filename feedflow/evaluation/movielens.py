"""MovieLens as Feedflow traffic: movies become catalogue events, ratings playback sessions.

MovieLens (Harper & Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 5(4),
2015; GroupLens, research use) is read in place from its directory (`ratings.csv`,
`movies.csv`, optional `tags.csv`), never copied.

**Movies → `media.published`** (key `m<movieId>`): content type `VIDEO`; the title as given
(year included, so films of one year share a word); category the movie's rarest genre in the
catalogue (its most specific one: `Film-Noir` rather than `Crime`), `unknown` for
"(no genres listed)"; tags its genres plus up to :data:`MAX_USER_TAGS` user tags, most
frequent first (tags users applied to their own held-out film are left out: they would leak
the held-out interaction into the item's vector); one synthetic creator, `movielens`, for
every film (MovieLens has none, so creator features carry no information); no language
(MovieLens has none); a duration of :data:`DURATION_S` seconds for every film, a stand-in
that keeps sessions to seconds; `published_at` the earliest training rating, so every film
is in the catalogue before the first event and none counts as new.

**Ratings → `user.engagement.events`** (key `u<userId>`): one playback session per rating,
starting at the rating's timestamp, the client playing at 2× speed with a heartbeat every
10 s (20 s of the film), so a whole film takes 30 s of event time:

- rating ≥ 4: `media_started`, heartbeats to the end, `media_completed` (a completed play),
  then `media_liked`;
- 3 or 3.5: `media_started`, heartbeats, `media_stopped` at 50 % (3) or 70 % (3.5) of the
  film (a partial watch);
- rating ≤ 2.5: `media_started`, `media_stopped` at 20 % (an early abandon, derived by the
  flow), then `media_disliked`.

A user's sessions never overlap: a session starts at its rating's time or one second after
the user's previous session ended, whichever is later (MovieLens users often rate many films
in the same second). Sessions follow the user's ratings in time order, ties in file order.

Example:
    >>> s = session(Rating("u1", "m1", 4.5, 100, 0), start_ms=100_000)
    >>> for e in s:
    ...     print(e.event_type, (e.ts - 100_000) // 1000, e.position_s)
    media_started 0 0.0
    media_progress 10 20.0
    media_progress 20 40.0
    media_completed 30 60.0
    media_liked 31 60.0
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kernel.errors import FeedflowError
from operators.contracts import EngagementEvent, MediaPublished

DURATION_S: Final = 60.0
HEARTBEAT_S: Final = 10
SPEED: Final = 2
FEEDBACK_DELAY_S: Final = 1
SESSION_GAP_S: Final = 1
MAX_USER_TAGS: Final = 20
CREATOR: Final = "movielens"
NO_GENRES: Final = "(no genres listed)"
HIGH: Final = 4.0
LOW: Final = 2.5


class DataSetError(FeedflowError):
    """The data set directory is missing a file or holds a malformed row."""


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating: `ts` in epoch seconds, `row` its 0-based data row in ratings.csv."""

    user: str
    item: str
    rating: float
    ts: int
    row: int


@dataclass(frozen=True, slots=True)
class Movie:
    """One film of movies.csv."""

    item: str
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Tag:
    """One user tag of tags.csv."""

    user: str
    item: str
    tag: str


@dataclass(frozen=True)
class MovieLens:
    """A MovieLens directory in memory; movies in file order."""

    ratings: list[Rating]
    movies: dict[str, Movie]
    tags: list[Tag]

    def genres(self) -> dict[str, frozenset[str]]:
        """Each film's genres (none for "(no genres listed)")."""
        return {m.item: frozenset(m.genres) for m in self.movies.values()}


def user_id(raw: str) -> str:
    """Feedflow's id of a MovieLens user."""
    return f"u{raw}"


def media_id(raw: str) -> str:
    """Feedflow's id of a MovieLens film."""
    return f"m{raw}"


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DataSetError(f"{path.name} not found in {path.parent}") from None
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise DataSetError(f"{path.name}: missing columns {missing}")
        yield from enumerate(reader)


def load(directory: Path) -> MovieLens:
    """Read ratings.csv, movies.csv and (when present) tags.csv of a MovieLens directory.

    Raises:
        DataSetError: naming the file and row of the first value that does not parse.
    """
    ratings: list[Rating] = []
    path = directory / "ratings.csv"
    for n, r in _rows(path, ("userId", "movieId", "rating", "timestamp")):
        try:
            value, ts = float(r["rating"]), int(r["timestamp"])
        except ValueError:
            raise DataSetError(f"{path.name} row {n + 2}: bad rating or timestamp {r}") from None
        ratings.append(Rating(user_id(r["userId"]), media_id(r["movieId"]), value, ts, n))
    movies: dict[str, Movie] = {}
    for _, r in _rows(directory / "movies.csv", ("movieId", "title", "genres")):
        genres = tuple(g for g in r["genres"].split("|") if g and g != NO_GENRES)
        movies[media_id(r["movieId"])] = Movie(media_id(r["movieId"]), r["title"], genres)
    tags: list[Tag] = []
    if (directory / "tags.csv").exists():
        for _, r in _rows(directory / "tags.csv", ("userId", "movieId", "tag")):
            tags.append(Tag(user_id(r["userId"]), media_id(r["movieId"]), r["tag"].strip()))
    return MovieLens(ratings, movies, tags)


def catalogue(
    data: MovieLens, published_at_ms: int, hidden: Iterable[tuple[str, str]] = ()
) -> list[MediaPublished]:
    """One `media.published` event per film (see the module doc for the mapping).

    Args:
        data: the data set.
        published_at_ms: publication time of every film.
        hidden: (user, item) pairs whose tags must not be used (the held-out interactions).
    """
    genre_count = Counter(g for m in data.movies.values() for g in m.genres)
    leave_out = set(hidden)
    user_tags: dict[str, Counter[str]] = {}
    for t in data.tags:
        if t.tag and (t.user, t.item) not in leave_out:
            user_tags.setdefault(t.item, Counter())[t.tag] += 1
    out = []
    for movie in data.movies.values():
        counted = user_tags.get(movie.item, Counter())
        ranked = sorted(counted, key=lambda tag: (-counted[tag], tag))[:MAX_USER_TAGS]
        rarest = min(movie.genres, key=lambda g: (genre_count[g], g)) if movie.genres else None
        out.append(
            MediaPublished(
                media_id=movie.item,
                creator_id=CREATOR,
                content_type="VIDEO",
                title=movie.title,
                category=rarest or "unknown",
                tags=[*movie.genres, *(t[:128] for t in ranked)],
                duration_s=DURATION_S,
                published_at=published_at_ms,
            )
        )
    return out


def _stops(rating: float) -> tuple[float, str, str | None]:
    """(share of the film played, terminal event, feedback event) for a rating."""
    if rating >= HIGH:
        return 1.0, "media_completed", "media_liked"
    if rating > LOW:
        return (0.7 if rating >= 3.5 else 0.5), "media_stopped", None
    return 0.2, "media_stopped", "media_disliked"


def session(r: Rating, start_ms: int) -> list[EngagementEvent]:
    """The events of one rating's playback session, starting at `start_ms`."""
    share, terminal, feedback = _stops(r.rating)
    end_pos = DURATION_S * share
    events = []
    step = 0

    def add(kind: str, at_s: float, position: float) -> None:
        nonlocal step
        events.append(
            EngagementEvent(
                event_id=f"ml-{r.row}-{step}",
                event_type=kind,
                ts=start_ms + round(at_s * 1000),
                position_s=position,
                user_id=r.user,
                media_id=r.item,
                session_id=f"ml-{r.row}",
                content_type="VIDEO",
            )
        )
        step += 1

    add("media_started", 0, 0.0)
    position = float(HEARTBEAT_S * SPEED)
    while position < end_pos:
        add("media_progress", position / SPEED, position)
        position += HEARTBEAT_S * SPEED
    add(terminal, end_pos / SPEED, end_pos)
    if feedback is not None:
        add(feedback, end_pos / SPEED + FEEDBACK_DELAY_S, end_pos)
    return events


def sessions(ratings: Iterable[Rating]) -> list[EngagementEvent]:
    """Every rating's session, users' sessions laid end to end, all in event-time order.

    Ratings of one user are taken by (timestamp, file row); the result is ordered by event
    time, ties by the rating's file row and then by position within its session, so the
    replay is a deterministic function of the input.
    """
    keyed: list[tuple[int, int, int, EngagementEvent]] = []
    for user_ratings in _by_user(ratings).values():
        for r, events in _laid_out(user_ratings):
            keyed.extend((e.ts, r.row, n, e) for n, e in enumerate(events))
    keyed.sort(key=lambda k: k[:3])
    return [e for *_, e in keyed]


def session_starts(ratings: Iterable[Rating]) -> dict[int, int]:
    """Epoch ms at which each rating's session starts (by file row), laid out as `sessions`.

    A user's sessions depend only on that user's earlier ratings, so a held-out last rating
    laid out with the training ones starts where its session would have followed them, and
    the training sessions start where :func:`sessions` of the training ratings puts them.

    Example:
        >>> session_starts([Rating("u1", "m1", 5.0, 100, 0), Rating("u1", "m2", 3.0, 100, 1)])
        {0: 100000, 1: 132000}
    """
    return {
        r.row: events[0].ts
        for user_ratings in _by_user(ratings).values()
        for r, events in _laid_out(user_ratings)
    }


def _by_user(ratings: Iterable[Rating]) -> dict[str, list[Rating]]:
    out: dict[str, list[Rating]] = {}
    for r in ratings:
        out.setdefault(r.user, []).append(r)
    return out


def _laid_out(user_ratings: Iterable[Rating]) -> Iterator[tuple[Rating, list[EngagementEvent]]]:
    """One user's ratings by (timestamp, row), each with its session's events; a session
    starts at its rating's time or SESSION_GAP_S after the previous session's last event."""
    free_ms = -1
    for r in sorted(user_ratings, key=lambda x: (x.ts, x.row)):
        events = session(r, max(r.ts * 1000, free_ms))
        free_ms = events[-1].ts + SESSION_GAP_S * 1000
        yield r, events


def earliest_ms(ratings: Iterable[Rating]) -> int:
    """Epoch ms of the earliest rating (0 when there is none)."""
    return min((r.ts for r in ratings), default=0) * 1000

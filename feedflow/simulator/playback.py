"""One user's playback, event by event, at second resolution.

A :class:`Viewer` always holds its *pending* event (time, type, position); :meth:`Viewer.step`
hands it out and works out the next one. A user has one active view at a time, so their events
are in nondecreasing time order. Sessions start by thinning a Poisson process shaped by the
user's hourly activity profile; within a session views follow each other until the session's
playback budget is spent.

A view: `media_started` at 0, `media_progress` every 10 s of playback, now and then a
`media_paused` (playback resumes after a while, shown by the next heartbeat) or a
`media_seeked` (back to rewatch, more often when the user likes it; forward to skip, more often
when not), then one terminal event: `media_completed`, or `media_stopped`/`media_paused`
part-way, or `media_paused_early`/`media_stopped` before 30 %. A completed view may be replayed.
Feedback (`media_liked`, `media_disliked`, `media_shared`, `media_added_to_playlist`,
`subscription_to_creator`) follows the terminal event. Auto-played items the user does not
like are often skipped (`media_skipped`) before playing.
"""

from __future__ import annotations

import random
from typing import Final

from feedflow.simulator.catalogue import AUDIO, CONTENT_TYPES, Creator, Item, Pools
from feedflow.simulator.choice import affinity, choose_item
from feedflow.simulator.errors import SimulatorError
from feedflow.simulator.tastes import Taste

HEARTBEAT_S: Final = 10
INCIDENT_MEAN_S: Final = 360.0  # mean playback between two pauses or seeks
MIN_SESSION_GAP_S: Final = 600
NO_POSITION: Final = -1

# Phases: what the pending event is (_OPEN: a view starts then, its item not yet chosen).
_PLAY, _TERMINAL, _TAIL, _SKIP, _OPEN = 0, 1, 2, 3, 4
# Outcomes of a view.
_COMPLETE, _EARLY, _MIDDLE = 0, 1, 2

# (ts ms, event_type, position_s, from_position_s, head, tail); positions are -1 when absent.
Event = tuple[int, str, int, int, str, str]


class Viewer:
    """A user's live state: session, current view and the pending event.

    Attributes:
        ts: event time (ms) of the pending event; the engine's heap key.
        head: the JSON members naming user, item and creator of the current view.
        tail: the JSON members of session context, closing the object.
    """

    __slots__ = (
        "a",
        "autoplay",
        "dur",
        "etype",
        "frm",
        "head",
        "item",
        "next_hb",
        "next_inc",
        "outcome",
        "pause_ms",
        "phase",
        "play",
        "pools",
        "pos",
        "pos_out",
        "queue",
        "replays",
        "rng",
        "session_left",
        "session_no",
        "subscribed",
        "tag",
        "tail",
        "tails",
        "target",
        "taste",
        "ts",
    )

    def __init__(self, taste: Taste, rng: random.Random, pools: Pools, tag: str) -> None:
        self.taste, self.rng, self.pools, self.tag = taste, rng, pools, tag
        self.subscribed: set[int] = set()
        self.queue: list[tuple[str, int]] = []
        self.tails = ("", "")
        self.head = self.tail = self.etype = ""
        self.item: Item | None = None
        self.ts = self.pos_out = self.frm = self.pause_ms = 0
        self.dur = self.pos = self.play = self.target = self.next_hb = self.next_inc = 0
        self.a, self.outcome, self.replays, self.phase = 0.5, _COMPLETE, 0, _PLAY
        self.session_left, self.session_no = 0.0, 0
        self.autoplay = False

    def start(self, start_ms: int, in_session: bool) -> None:
        """Schedule the first event: soon if the user is mid-session at `start_ms`."""
        if in_session:
            self._begin_session(start_ms + int(self.rng.random() * 60_000))
            self.session_left *= self.rng.random()
        else:
            self._begin_session(self._next_session_ms(start_ms, 0))

    def step(self) -> Event:
        """Return the pending event and move on to the next one (updating `ts`)."""
        if self.phase == _OPEN:  # the item is chosen when the view starts, from live pools
            self._open_view()
        event = (self.ts, self.etype, self.pos_out, self.frm, self.head, self.tail)
        phase = self.phase
        if phase == _PLAY:
            self._advance_play()
        elif phase == _TERMINAL:
            self._after_terminal()
        elif phase == _TAIL:
            self._next_feedback()
        else:
            self._next_view(autoplay=True)
        return event

    # -- sessions and views -------------------------------------------------------------------

    def _next_session_ms(self, after_ms: int, min_gap_s: int) -> int:
        """Thinning: candidate starts at the user's peak rate, accepted by hourly activity."""
        t = self.taste
        profile, peak = t.profile, max(t.profile)
        rate = t.sessions_per_day / 86_400 * peak
        rng = self.rng
        now = after_ms / 1000 + min_gap_s
        while True:
            now += rng.expovariate(rate)
            if rng.random() * peak < profile[int(now // 3600) % 24]:
                return int(now * 1000)

    def _begin_session(self, ts: int) -> None:
        t, self.session_no = self.taste, self.session_no + 1
        self.session_left = t.session_s * self.rng.gammavariate(2.0, 0.5)
        sid = f"{self.tag}-{t.idx}-{self.session_no}"
        self.tails = tuple(  # type: ignore[assignment]
            f',"session_id":"{sid}","content_type":"{CONTENT_TYPES[c]}","device":"{t.devices[c]}",'
            f'"country":"{t.country}","language":"{t.language}"}}'
            for c in (0, 1)
        )
        self._begin_view(ts, autoplay=False)

    def _next_view(self, autoplay: bool) -> None:
        rng = self.rng
        self.session_left -= self.play + 5
        if self.session_left > 0:
            gap = 2 + int(rng.random() * 5) if autoplay else 3 + int(rng.expovariate(1 / 20))
            self._begin_view(self.ts + gap * 1000 + int(rng.random() * 1000), autoplay)
        else:
            self._begin_session(self._next_session_ms(self.ts, MIN_SESSION_GAP_S))

    def _begin_view(self, ts: int, autoplay: bool) -> None:
        self.ts, self.autoplay, self.phase = ts, autoplay, _OPEN

    def _open_view(self) -> None:
        rng, t, ts = self.rng, self.taste, self.ts
        item = choose_item(rng, t, self.pools)
        self.play, self.pos, self.frm = 0, 0, NO_POSITION
        if item is None:
            raise SimulatorError(f"user {t.user_id} found no published item at {ts} ms")
        self.item, self.dur, self.a = item, item.duration_s, affinity(rng, t, item)
        creator: Creator = item.creator
        self.head = (
            f'"user_id":"{t.user_id}","media_id":"{item.media_id}",'
            f'"creator_id":"{creator.creator_id}"'
        )
        self.tail = self.tails[item.ctype]
        if self.autoplay and self.a < 0.35 and rng.random() < 0.7:
            self.etype, self.pos_out, self.phase = "media_skipped", NO_POSITION, _SKIP
            return
        self.replays = 1 if rng.random() < 0.25 * self.a * self.a else 0
        self.next_hb, self.next_inc = HEARTBEAT_S, self._incident_gap()
        self._plan_outcome()
        self.etype, self.pos_out, self.phase = "media_started", 0, _PLAY

    def _plan_outcome(self) -> None:
        """Decide how far this playthrough goes, from affinity and length."""
        rng, a, dur = self.rng, self.a, self.dur
        length = 1.0 if dur <= 600 else 0.8 if dur <= 1800 else 0.6
        p_complete = (0.02 + 0.78 * a) * length
        p_early = 0.08 + 0.8 * (1.0 - a) ** 2
        u = rng.random()
        if u < p_complete:
            self.outcome, self.target = _COMPLETE, dur
        elif u < p_complete + p_early:
            self.outcome, self.target = _EARLY, max(1, int(dur * rng.uniform(0.01, 0.28)))
        else:
            self.outcome, self.target = _MIDDLE, int(dur * rng.uniform(0.3, 0.9))

    def _incident_gap(self) -> int:
        return self.play + 1 + int(self.rng.expovariate(1 / INCIDENT_MEAN_S))

    # -- within a view ------------------------------------------------------------------------

    def _advance_play(self) -> None:
        """After an in-play event: the next heartbeat, incident or the end, whichever is first."""
        self.frm = NO_POSITION
        if self.pause_ms:
            self.ts += self.pause_ms
            self.pause_ms = 0
        play, pos = self.play, self.pos
        d_hb, d_inc, d_end = self.next_hb - play, self.next_inc - play, self.target - pos
        d_end = max(d_end, 0)
        if d_hb <= d_end and d_hb <= d_inc:
            self.play, self.pos, self.ts = play + d_hb, pos + d_hb, self.ts + d_hb * 1000
            self.next_hb += HEARTBEAT_S
            self.etype, self.pos_out = "media_progress", pos + d_hb
        elif d_inc < d_end:
            self.play, self.pos, self.ts = play + d_inc, pos + d_inc, self.ts + d_inc * 1000
            self._incident()
        else:
            self.play, self.pos, self.ts = play + d_end, pos + d_end, self.ts + d_end * 1000
            self._terminal()

    def _incident(self) -> None:
        rng, pos = self.rng, self.pos
        self.next_inc = self._incident_gap()
        if rng.random() < 0.4 or pos >= self.dur - 2:
            self.pause_ms = (2 + int(min(rng.expovariate(1 / 40), 900))) * 1000
            self.etype, self.pos_out = "media_paused", pos
            return
        if rng.random() < 0.35 + 0.5 * (1.0 - self.a):
            to = min(pos + 10 + int(rng.random() * 80), self.dur - 1)
        else:
            to = max(pos - 5 - int(rng.random() * 25), 0)
        self.etype, self.pos_out, self.frm, self.pos = "media_seeked", to, pos, to

    def _terminal(self) -> None:
        self.phase, outcome = _TERMINAL, self.outcome
        if outcome == _COMPLETE:
            self.pos = self.dur
            self.etype = "media_completed"
        elif outcome == _EARLY:
            self.etype = "media_paused_early" if self.rng.random() < 0.5 else "media_stopped"
        else:
            self.etype = "media_stopped" if self.rng.random() < 0.8 else "media_paused"
        self.pos_out = self.pos

    def _after_terminal(self) -> None:
        if self.outcome == _COMPLETE and self.replays:
            self.replays -= 1
            self.ts += (1 + int(self.rng.random() * 4)) * 1000
            self.pos, self.next_inc = 0, self._incident_gap()
            self._plan_outcome()
            self.etype, self.pos_out, self.phase = "media_replay", 0, _PLAY
            return
        self._plan_feedback()
        self._next_feedback()

    def _plan_feedback(self) -> None:
        """Explicit feedback after a view, consistent with how much the user liked it."""
        rng, a, queue = self.rng, self.a, self.queue
        completed = self.outcome == _COMPLETE
        item = self.item
        assert item is not None
        if a > 0.55 and rng.random() < (0.45 if completed else 0.12) * a:
            queue.append(("media_liked", 1))
        elif a < 0.35 and rng.random() < (0.4 if self.outcome == _EARLY else 0.15) * (1.0 - a):
            queue.append(("media_disliked", 1))
        if completed and a > 0.6 and rng.random() < 0.06 * a:
            queue.append(("media_shared", 3))
        if completed and rng.random() < (0.15 if item.ctype == AUDIO else 0.05) * a:
            queue.append(("media_added_to_playlist", 2))
        creator = item.creator
        if a > 0.6 and creator.idx not in self.subscribed:
            favourite = creator in self.taste.favourites
            if rng.random() < (0.2 if favourite else 0.02):
                self.subscribed.add(creator.idx)
                queue.append(("subscription_to_creator", 2))
        queue.reverse()  # popped from the end

    def _next_feedback(self) -> None:
        if not self.queue:
            self._next_view(autoplay=self.rng.random() < 0.5)
            return
        etype, delay = self.queue.pop()
        self.ts += delay * 1000
        self.etype, self.pos_out, self.frm, self.phase = etype, self.pos, NO_POSITION, _TAIL

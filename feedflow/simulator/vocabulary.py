"""The simulated world's fixed vocabulary: categories and their words, formats, places, devices.

Everything here is data. Words are chosen so that a text encoder can tell the category from a
title and description, which is what the content flow's embeddings rely on.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Category(NamedTuple):
    """A taxonomy root with the words its titles, descriptions and tags are made of."""

    name: str
    audio_share: float  # share of its creators who publish AUDIO rather than VIDEO
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    tags: tuple[str, ...]


class Format(NamedTuple):
    """A kind of item with a log-uniform duration range in seconds."""

    name: str
    min_s: int
    max_s: int


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


CATEGORIES: Final = (
    Category(
        "news",
        0.45,
        _words(
            "election parliament economy inflation summit minister protest budget"
            " headline policy vote court reform crisis diplomacy report"
        ),
        _words("breaking daily global political local urgent weekly"),
        _words("news politics world briefing analysis headlines"),
    ),
    Category(
        "sports",
        0.25,
        _words(
            "football match goal league striker coach transfer tennis marathon"
            " playoff season stadium derby champion penalty highlights"
        ),
        _words("dramatic late stunning historic tactical unbeaten"),
        _words("sports football tennis highlights league matchday"),
    ),
    Category(
        "music",
        0.8,
        _words(
            "album guitar chorus melody drummer remix vinyl concert ballad"
            " synth bassline orchestra playlist lyrics tour single"
        ),
        _words("acoustic live mellow upbeat classic ambient"),
        _words("music live acoustic remix indie pop jazz"),
    ),
    Category(
        "comedy",
        0.3,
        _words(
            "standup sketch joke prank parody roast improv punchline sitcom"
            " comedian audience blooper satire gag"
        ),
        _words("hilarious awkward absurd silly deadpan"),
        _words("comedy standup sketch funny parody"),
    ),
    Category(
        "education",
        0.35,
        _words(
            "lesson grammar algebra history lecture exam vocabulary tutorial"
            " calculus essay geography literature course student"
        ),
        _words("beginner advanced complete practical step-by-step"),
        _words("education learning tutorial lecture howto"),
    ),
    Category(
        "gaming",
        0.05,
        _words(
            "speedrun boss quest controller console multiplayer loot patch"
            " esports tournament walkthrough level raid streamer"
        ),
        _words("ranked epic hardcore retro competitive"),
        _words("gaming esports speedrun walkthrough letsplay"),
    ),
    Category(
        "technology",
        0.3,
        _words(
            "smartphone laptop chip software startup robot battery gadget"
            " programming cloud algorithm browser review keyboard"
        ),
        _words("new open-source wireless budget flagship"),
        _words("tech review gadgets programming ai"),
    ),
    Category(
        "cooking",
        0.05,
        _words(
            "recipe sourdough pasta curry dumplings oven chef kitchen spice"
            " dessert breakfast barbecue noodles salad"
        ),
        _words("easy crispy homemade spicy vegan quick"),
        _words("cooking recipe food baking kitchen"),
    ),
    Category(
        "travel",
        0.1,
        _words(
            "island hostel backpacking itinerary passport mountain beach"
            " railway desert museum road-trip village harbour"
        ),
        _words("hidden budget scenic remote cheap"),
        _words("travel vlog adventure backpacking guide"),
    ),
    Category(
        "science",
        0.3,
        _words(
            "galaxy telescope molecule evolution climate quantum fossil"
            " experiment neuron volcano physics genome"
        ),
        _words("curious surprising cosmic microscopic ancient"),
        _words("science space physics biology nature"),
    ),
    Category(
        "true_crime",
        0.65,
        _words(
            "detective murder heist trial suspect evidence investigation"
            " verdict witness alibi disappearance cold-case"
        ),
        _words("unsolved chilling notorious mysterious infamous"),
        _words("truecrime mystery investigation podcast crime"),
    ),
    Category(
        "business",
        0.5,
        _words(
            "startup founder market investor revenue strategy stock merger"
            " leadership negotiation career interview valuation"
        ),
        _words("bootstrapped profitable global lean ambitious"),
        _words("business money investing entrepreneurship careers"),
    ),
)
CATEGORY_NAMES: Final = tuple(c.name for c in CATEGORIES)

VIDEO_FORMATS: Final = (
    (Format("short", 15, 60), 0.35),
    (Format("clip", 60, 300), 0.35),
    (Format("video", 300, 1500), 0.22),
    (Format("episode", 1500, 4200), 0.08),
)
AUDIO_FORMATS: Final = (
    (Format("track", 120, 360), 0.45),
    (Format("briefing", 180, 900), 0.2),
    (Format("podcast", 1200, 6000), 0.35),
)

TITLE_TEMPLATES: Final = (
    "The {adj} {noun} explained",
    "Why {noun} matters",
    "{Adj} {noun} and {noun2}",
    "Top 10 {adj} {noun} moments",
    "Inside the {noun}: a {adj} look",
    "{Noun} for everyone",
    "What nobody tells you about {noun}",
)
SERIES_TEMPLATES: Final = ("Episode {n}: {noun} and {noun2}", "#{n} {Noun}, {noun2} and {noun3}")
SERIES_FORMATS: Final = frozenset({"episode", "podcast"})
DESCRIPTION_TEMPLATES: Final = (
    "A {adj} look at {noun}, {noun2} and {noun3}.",
    "This time: {noun} meets {noun2}, with a {adj} twist.",
    "Everything about {noun} and {noun2}, from {noun3} to {noun4}.",
    "We talk {noun} with {adj} guests and take your questions on {noun2}.",
)

# country: (weight, UTC offset in whole hours, languages spoken by its users)
COUNTRIES: Final = {
    "US": (0.28, -5, ("en", "en", "en", "en", "es")),
    "GB": (0.09, 0, ("en",)),
    "DE": (0.09, 1, ("de", "de", "de", "en")),
    "FR": (0.08, 1, ("fr",)),
    "ES": (0.07, 1, ("es",)),
    "MX": (0.07, -6, ("es",)),
    "BR": (0.1, -3, ("pt",)),
    "IN": (0.12, 5, ("hi", "en", "en")),
    "JP": (0.1, 9, ("ja",)),
}
# Language shares of the catalogue: English dominates, every user language has some content.
CONTENT_LANGUAGES: Final = (
    ("en", 0.52),
    ("es", 0.12),
    ("pt", 0.08),
    ("de", 0.07),
    ("fr", 0.07),
    ("hi", 0.07),
    ("ja", 0.07),
)
VIDEO_DEVICES: Final = ("ios", "android", "web", "smart_tv")
AUDIO_DEVICES: Final = ("ios", "android", "web", "car", "smart_speaker")

# Audience activity by local hour, a typical streaming curve (evening peak, night trough).
DIURNAL: Final = (
    0.45, 0.3, 0.2, 0.15, 0.12, 0.15, 0.3, 0.6, 0.8, 0.75, 0.7, 0.75,
    0.9, 0.9, 0.8, 0.8, 0.9, 1.1, 1.4, 1.7, 1.9, 1.9, 1.5, 0.9,
)  # fmt: skip

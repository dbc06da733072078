"""The one exception root of Feedflow; each package narrows it."""


class FeedflowError(Exception):
    """Root of every error Feedflow raises on purpose."""


class ConfigError(FeedflowError):
    """A setting is missing, unknown or out of range."""

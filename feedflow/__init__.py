"""Command line and local stack. Imports the other packages; they never import it."""

__version__ = "0.1.0"

"""Errors meant for people: the CLI prints their message as one line and exits 2."""


class ForelenError(Exception):
    """A user-facing error (bad input, missing asset, unknown name)."""

    exit_code = 2

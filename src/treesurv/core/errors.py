"""The exceptions a user can act on, under one base class.

Code raises a subclass of `TreesurvError` when the input, the model bundle or the
state of the registry is at fault; the message says what is wrong and what was
expected. The CLI prints such a message and exits with `exit_code`; the service
turns bad input into a 4xx. Anything else is a bug and stays a traceback.
"""

from __future__ import annotations


class TreesurvError(Exception):
    """An expected failure, explained by its message."""

    exit_code = 1


class InputError(TreesurvError):
    """Bad input: a data file, a parameter, a request or a command-line value."""


class ModelError(TreesurvError):
    """A model bundle or a compiled model that is missing, tampered with or unusable."""


class LifecycleError(TreesurvError):
    """The registry, the data versions or a git/DVC command refused an operation."""

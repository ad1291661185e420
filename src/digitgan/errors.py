"""The error types that digitgan raises for a user's mistakes and bad files.

Every error a user can cause (a bad option, a missing or corrupt file, an
unreachable download) is a :class:`DigitganError`; the command line prints its
message on one line and exits non-zero. Anything else is a bug.
"""


class DigitganError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(DigitganError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(DigitganError, ValueError):
    """A dataset is unknown, missing, truncated, corrupt or cannot be fetched."""


class CheckpointError(DigitganError, ValueError):
    """A checkpoint or run directory is missing, incomplete or does not match."""


class ImageError(DigitganError, ValueError):
    """An input image cannot be used: not an image, too large or too small, or blank."""


class ImageTooLargeError(ImageError):
    """An input image has more bytes or pixels than allowed."""


class RunDirError(DigitganError):
    """A run directory cannot be used (exists already, locked, not a run)."""


class MissingExtraError(DigitganError, ImportError):
    """A command needs an optional part of digitgan that is not installed."""


def missing_extra(extra: str, packages: str, what: str) -> MissingExtraError:
    """The error for ``what`` needing ``packages`` of the extra ``digitgan[extra]``."""
    return MissingExtraError(
        f"{what} needs {packages}, which is not installed: pip install 'digitgan[{extra}]'"
    )


class DivergenceError(DigitganError):
    """Training produced NaN or infinite losses or weights; the message says how to go on."""

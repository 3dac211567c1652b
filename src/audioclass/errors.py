"""The project's own exceptions.

Every problem a user can fix (a bad file, a wrong layout, a bad parameter) is
raised as an :class:`AudioclassError` whose message is one line naming the file
or key and what was expected. Stage entry points print that line and exit 1.
"""


class AudioclassError(Exception):
    """A problem in the user's data or parameters, reported as one line."""


class ConfigError(AudioclassError):
    """A missing, unknown or nonsensical parameter."""


class DataError(AudioclassError):
    """An unreadable file, a wrong layout or inconsistent metadata."""


class TrackingError(AudioclassError):
    """An MLflow tracking server that does not answer or lets this user in, or a registered model it cannot give."""


def first_line(err: BaseException) -> str:
    """An exception's first line of text, or its type's name when it has none: what a one-line error quotes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__

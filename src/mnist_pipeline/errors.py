"""Failures a user can act on: stages print their message alone, without a traceback."""

import re

# scheme://user:PASSWORD@host in any text: a database or server URL, whole or cut, parsable or not.
_PASSWORD_IN_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^\s/]*@")


def redacted(text: str) -> str:
    """`text` with the password of every URL in it masked: no error line carries one."""
    return _PASSWORD_IN_URL.sub(r"\1***@", text)


def brief(exc: BaseException | str, limit: int = 300) -> str:
    """An exception's (or a server's) text on one line, cut to `limit` characters, for inclusion in our messages."""
    text = redacted(" ".join(str(exc).split())) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PipelineError(Exception):
    """Base of the errors below; each message names the file, key or URI at fault."""

    exit_code = 1  # of a stage that stops on it


class ParamsError(PipelineError, ValueError):
    """A parameters file that cannot describe a run."""


class FetchError(PipelineError):
    """No source gave a raw data file with the right checksum."""


class DataError(PipelineError, ValueError):
    """A raw data file that is missing or not what it claims to be."""


class CheckpointError(PipelineError, ValueError):
    """A model or training-state file that cannot be loaded as this project's."""


class DivergenceError(PipelineError, ArithmeticError):
    """The training loss stopped being a finite number."""


class TrackingError(PipelineError):
    """The MLflow tracking store cannot be used."""


class ImageError(PipelineError, ValueError):
    """An image file that cannot be read as a digit: missing, not an image, or blank."""


class PeerFailure(PipelineError):
    """Another process of a distributed run failed, and this one stops because of it."""

    exit_code = 3  # tells the launcher that the cause lies with another rank

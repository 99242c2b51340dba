"""Errors a caller can act on. The API maps each kind onto one gRPC status code."""

from __future__ import annotations


class CinetronError(Exception):
    """Base class: the message says what was wrong, what was expected and what to do."""


class InvalidArgument(CinetronError, ValueError):
    """A request field is out of range or malformed. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Unavailable(CinetronError):
    """The inference server cannot be reached or a model is not ready; retrying may work."""


class ModelError(CinetronError):
    """The inference server answered with an error for a request it accepted."""


class Cancelled(CinetronError):
    """The caller cancelled the generation or its deadline passed; work stopped between steps."""


def missing_encoder(field: str, where: str) -> InvalidArgument:
    """An image or video was sent where no VAE encoder runs."""
    return InvalidArgument(
        field,
        "image- and video-conditioned generation needs the 'vae_encoder' model, and "
        f"{where} has none; re-export the repository with `cinetron export` (it writes "
        "vae_encoder) and restart the server",
    )

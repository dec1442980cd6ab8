"""Every way of sending is a :class:`Scheme`; importing this package registers the built-in ones."""

from genscom.schemes import adapted, agent, analog, classic, digital, memory, regen  # noqa: F401  (registration)
from genscom.schemes.base import (
    Delivered,
    DigitalPayload,
    Payload,
    Scheme,
    SourceBatch,
    create_scheme,
    list_schemes,
    register_scheme,
)

__all__ = ["Delivered", "DigitalPayload", "Payload", "Scheme", "SourceBatch", "create_scheme", "list_schemes", "register_scheme"]

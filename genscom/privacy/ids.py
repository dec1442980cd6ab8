"""Canonical bytes for an item id, so an authenticated item or header is bound to exactly one id.

``int``, ``str`` and ``bytes`` ids are encoded with a type tag and a length, so ``7``, ``"7"`` and
``b"7"`` bind differently and no two ids share an encoding.
"""

from __future__ import annotations

import numbers

ItemId = int | str | bytes
"""What identifies an item: a dataset index (``int``, numpy/torch integers accepted), a name (``str``)
or raw bytes. Its canonical encoding goes into the associated data of every seal and header."""


def encode_item_id(item_id: ItemId) -> bytes:
    """``tag (1 byte) || length (4 bytes, big-endian) || value`` for ``item_id``.

    Integers are written in decimal ASCII (any size, negative allowed); strings as UTF-8.

    Raises:
        TypeError: for ``bool``, ``float`` or any other type.
    """
    if isinstance(item_id, bool) or not isinstance(item_id, (numbers.Integral, str, bytes, bytearray)):
        raise TypeError(f"item_id must be an int, str or bytes, got {type(item_id).__name__} ({item_id!r}); "
                        "pass the item's dataset index or name")
    if isinstance(item_id, numbers.Integral):
        tag, value = b"i", str(int(item_id)).encode("ascii")
    elif isinstance(item_id, str):
        tag, value = b"s", item_id.encode("utf-8")
    else:
        tag, value = b"b", bytes(item_id)
    return tag + len(value).to_bytes(4, "big") + value


__all__ = ["ItemId", "encode_item_id"]

"""genscom: LLM-native generative semantic communication toolkit.

The agent API (see README "Python API: agents")::

    import genscom
    genscom.list_cards()                                 # card names on the card search path
    agent = genscom.load_agent("smollm2-generating")     # a card name or a card file
    agent.caption(clips, channel="awgn", snr_db=5.0)     # .embed(clips), .retrieve(queries, clips)

Heavy dependencies load on first use: ``import genscom`` is cheap.
"""

from typing import Any

from genscom._version import __version__

__all__ = ["__version__", "list_cards", "load_agent"]


def __getattr__(name: str) -> Any:  # lazy: importing genscom must not import torch/transformers
    if name == "load_agent":
        from genscom.schemes.agent_link import load_agent

        return load_agent
    if name == "list_cards":
        from genscom.agents.card import list_cards

        return list_cards
    raise AttributeError(f"module 'genscom' has no attribute {name!r}")

"""LLM agents: understanding (content -> embedding) and generating (embedding -> task content), with LoRA.

``genscom.load_agent(card)`` (:mod:`genscom.schemes.agent_link`, above the schemes it uses) returns
an ``AgentLink`` that captions, embeds and retrieves clips over a channel; ``list_cards()`` / ``find_card(name)``
look cards up on the card search path; ``load_card(path or name)`` reads an agent card;
``Agent.from_card(card)`` builds one role; ``load_agent_pair(card)`` builds both roles on one
LLM (two LoRA adapters);
``finetune_agents(FinetuneConfig(...))`` trains them across a channel; 4-bit
edge variants come from cards with ``quantization: nf4`` (:mod:`genscom.agents.quant`).
Heavy dependencies (transformers, peft, bitsandbytes) load lazily.
"""

from genscom.agents.card import AgentCard, LoraSpec, card_search_path, find_card, list_cards, load_card
from genscom.agents.prompts import ChannelSensing, TaskRequirement, load_prompt, render_prompt

__all__ = [
    "Agent", "AgentCard", "ChannelSensing", "FinetuneConfig", "LoraSpec", "TaskRequirement",
    "card_search_path", "find_card", "finetune_agents", "list_cards", "load_agent_pair", "load_card",
    "load_prompt", "render_prompt",
]


def __getattr__(name: str):  # lazy: importing genscom.agents must not import transformers/peft
    if name in ("Agent", "load_agent_pair"):
        from genscom.agents import agent

        return getattr(agent, name)
    if name in ("FinetuneConfig", "finetune_agents"):
        from genscom.agents import finetune

        return getattr(finetune, name)
    raise AttributeError(f"module 'genscom.agents' has no attribute {name!r}")

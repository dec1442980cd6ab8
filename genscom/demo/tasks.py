"""Which schemes can serve each task of the demo, and why a task cannot be served.

* ``retrieval``: every offered scheme (each delivers an embedding the receiver ranks its gallery with);
* ``caption``: the ``agent`` scheme (its generating agent writes the caption); it needs an agent card;
* ``image regeneration``: the ``regen`` scheme (a diffusion decoder draws the frame from the received
  embedding); it needs an image decoder trained on the demo's encoder profile (:mod:`genscom.demo.regen`).

The panel offers only :func:`schemes_for_task` for the chosen task and preselects :func:`preferred_scheme`;
the transmitter refuses a scheme that cannot serve the task (:func:`check_task`), so a send never ends
with "no caption" or "no image".
"""

from __future__ import annotations

from genscom.demo.options import TASKS, DemoConfig, offered_schemes

#: the scheme that serves each generating task
TASK_SCHEME: dict[str, str] = {"caption": "agent", "image regeneration": "regen"}


def task_unavailable(task: str, config: DemoConfig) -> str | None:
    """``None`` when ``task`` can be served with ``config``, else the reason in plain words (with the fix)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    need = TASK_SCHEME.get(task)
    if need is None or need in offered_schemes(config):
        return None
    if need == "agent":
        if not config.agent_card:
            return ("captions come from the agent scheme, which needs an agent card: start the demo with "
                    "--agent-card smollm2-generating (or another card)")
        from genscom.demo.options import optional_features

        return f"captions come from the agent scheme, which is not installed ({optional_features().get('agent')})"
    from genscom.demo.regen import regen_unavailable

    return regen_unavailable(config) or "the regen scheme is not registered (genscom.schemes.regen)"


def schemes_for_task(task: str, config: DemoConfig) -> list[str]:
    """The offered schemes that can serve ``task`` (empty when none can: see :func:`task_unavailable`)."""
    offered = offered_schemes(config)
    need = TASK_SCHEME.get(task)
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return offered if need is None else [n for n in offered if n == need]


def preferred_scheme(task: str, config: DemoConfig) -> str | None:
    """The scheme the panel selects for ``task``: its generating scheme, ``semantic-analog`` for retrieval."""
    allowed = schemes_for_task(task, config)
    if not allowed:
        return None
    return "semantic-analog" if "semantic-analog" in allowed else allowed[0]


def check_task(task: str, scheme: str, config: DemoConfig) -> None:
    """Raise ``ValueError`` (one line, with the fix) when ``scheme`` cannot serve ``task``."""
    why = task_unavailable(task, config)
    if why is not None:
        raise ValueError(f"the task {task!r} is unavailable here: {why}")
    allowed = schemes_for_task(task, config)
    if scheme not in allowed:
        raise ValueError(f"the task {task!r} needs the scheme {', '.join(allowed)}; {scheme!r} cannot serve it "
                         "(choose it in the scheme list)")


__all__ = ["TASK_SCHEME", "check_task", "preferred_scheme", "schemes_for_task", "task_unavailable"]

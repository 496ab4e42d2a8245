"""Extension points for apps built on agents (workflows): extra tools for an agent, a say at the
end of its turn, a signal when it finishes, and a sweep the reaper runs. Apps register in their
AppConfig.ready(); agents never imports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.dispatch import Signal

if TYPE_CHECKING:
    from agents.models import Agent
    from agents.tools.base import Tool

# Sent after the transaction that finished an agent (completed, failed or cancelled) commits.
# Arguments: agent_id, status.
agent_finished = Signal()


@dataclass(frozen=True)
class EndOfTurn:
    """What a hook says when the model ends its turn: carry on with a message, or fail."""

    nudge: str | None = None
    fail: str | None = None


EXTRA_TOOLS: list[Callable[[Agent], list[Tool]]] = []
END_OF_TURN: list[Callable[[Agent], EndOfTurn | None]] = []
REAPERS: list[Callable[[], None]] = []

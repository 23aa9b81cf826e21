"""Persisted state machines as data: the states, the allowed moves, and the check the store applies.

A capability that persists a state machine (rollouts in :mod:`mloop.rollout.states`, loop cycles in
:mod:`mloop.control.states`) describes it once as a :class:`StateMachine` — a ``StrEnum`` of states
and a transition table — and hands it to the store's repository for that table. The repository's
``transition`` calls :meth:`StateMachine.check` inside the same transaction as its compare-and-set,
so no move the table lacks is ever written, whichever process asks. The machine lives with its
capability and is passed down, because the store sits below every capability and imports none.

    >>> from enum import StrEnum
    >>> class Light(StrEnum):
    ...     RED = "red"
    ...     GREEN = "green"
    >>> light = StateMachine("light", Light, Light.RED, {Light.RED: {Light.GREEN}, Light.GREEN: {Light.RED}})
    >>> light.check("light:1", "red", "green")
    <Light.GREEN: 'green'>
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from mloop.errors import StoreError, TransitionError

__all__ = ["StateMachine"]

S = TypeVar("S", bound=StrEnum)


@dataclass(frozen=True)
class StateMachine(Generic[S]):
    """States ``states``, the one a new record starts in, and ``transitions[state]`` → allowed next states.

    A state with no outgoing move is terminal. ``active`` names the states in which the record owns
    something (a rollout: the model's traffic); it defaults to none.
    """

    name: str
    states: type[S]
    initial: S
    transitions: Mapping[S, Iterable[S]]
    active: frozenset[S] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        table = {
            self.states(s): frozenset(self.states(t) for t in nxt) for s, nxt in self.transitions.items()
        }
        missing = set(self.states) - set(table)
        if missing:
            raise ValueError(f"{self.name} state machine: no row for {sorted(missing)} in its table")
        object.__setattr__(self, "transitions", table)

    @property
    def terminal(self) -> frozenset[S]:
        """States a record never leaves."""
        return frozenset(s for s, nxt in self.transitions.items() if not nxt)

    def parse(self, value: str) -> S:
        """``value`` as a member of :attr:`states`; StoreError for a value the machine does not know."""
        try:
            return self.states(value)
        except ValueError:
            known = ", ".join(s.value for s in self.states)
            raise StoreError(
                f"{value!r} is not a {self.name} state; known: {known}. The store holds a state this "
                "version of mloop does not know: upgrade mloop."
            ) from None

    def allowed(self, state: str) -> frozenset[S]:
        """Where a record in ``state`` may go next."""
        return frozenset(self.transitions[self.parse(state)])

    def check(self, subject: str, source: str, target: str) -> S:
        """``target`` as a state if ``source`` → ``target`` is in the table, else :class:`TransitionError`."""
        to = self.parse(target)
        allowed = self.allowed(source)
        if to not in allowed:
            raise TransitionError(self.name, subject, str(source), to.value, (s.value for s in allowed))
        return to

"""Stop a diverged run loudly instead of letting NaN weights finish ``learn()`` and score zeros.

One NaN observation or reward, or a learning rate that blows up, turns every weight into NaN within a few update
rounds; SB3 then trains on silently. :class:`FiniteGuard` records on the losses' device, without any host
synchronisation, the first update round at which each named loss was not finite, and :meth:`FiniteGuard.check` reads
that record (one synchronisation) every ``check_every`` rounds and at the end of ``learn()``, then raises
:class:`DivergenceError` naming the loss, its value and the round. On a GPU the round can therefore stay one graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch as th


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or parameter: the run diverged and its model is unusable.

    A ``FloatingPointError``, so that ``sb3-dmash bench`` (and ``aib.evaluate``'s non-finite action check) can tell
    a diverged run from a crash.
    """


class FiniteGuard:
    """First non-finite update round of each named loss, kept on the device and read every ``check_every`` rounds.

    :param owner: who trains these losses (used in the error message, e.g. ``"DMASHSAC"``).
    :param names: the losses that :meth:`observe` will be given.
    :param check_every: read the record every this many rounds (:meth:`end_round` returns True then); 0 never reads
        it there (only explicit :meth:`check` calls do); ``None`` switches the guard off entirely (every method is a
        no-op), only to measure its cost (``benchmarks/throughput.py``).
    :param first_round: the number of the first round observed (the update rounds done before, e.g. after a load).
    """

    def __init__(self, owner: str, names: Sequence[str], check_every: int | None = 100, first_round: int = 0) -> None:
        self.check_every = check_every  # validated by the property
        self.owner = owner
        self.names = tuple(names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self._round: th.Tensor | None = None  # device counter of the rounds seen (no host value to copy each round)
        self._first_round: th.Tensor | None = None  # -1 while finite
        self._first_value: th.Tensor | None = None
        self._n_rounds = int(first_round)  # host-side count, for the schedule and the messages only

    @property
    def check_every(self) -> int | None:
        return self._check_every

    @check_every.setter
    def check_every(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(
                f"check_every={value!r} must be an integer >= 0 (0: only at explicit checks) or None (no checks at all)"
            )
        self._check_every = value

    def _allocate(self, device: th.device) -> None:
        self._round = th.full((), self._n_rounds, dtype=th.int64, device=device)
        self._first_round = th.full((len(self.names),), -1, dtype=th.int64, device=device)
        self._first_value = th.zeros(len(self.names), dtype=th.float32, device=device)

    def observe(self, name: str, loss: th.Tensor) -> None:
        """Remember the current round if ``loss`` is not finite and no earlier round was (device ops only)."""
        if self._check_every is None:
            return
        if self._first_round is None:
            self._allocate(loss.device)
        assert self._round is not None and self._first_round is not None and self._first_value is not None
        i = self._index[name]
        value = loss.detach().float().reshape(-1)[:1].reshape(())
        first = (~th.isfinite(loss.detach()).all()) & (self._first_round[i] < 0)
        self._first_round[i] = th.where(first, self._round, self._first_round[i])
        self._first_value[i] = th.where(first, value, self._first_value[i])

    def end_round(self) -> bool:
        """Advance the round counter; True when this round should be followed by a :meth:`check`."""
        if self._round is not None:
            self._round.add_(1)
        self._n_rounds += 1
        return bool(self._check_every) and self._n_rounds % self._check_every == 0  # type: ignore[operator]

    def check(self, parameters: Iterable[tuple[str, th.nn.Parameter | th.Tensor]] = ()) -> None:
        """Raise :class:`DivergenceError` if a loss was non-finite or a parameter is (one host synchronisation).

        :param parameters: ``(name, tensor)`` pairs to check as well, e.g. ``module.named_parameters()``.
        """
        if self._check_every is None:
            return
        problems = []
        if self._first_round is not None:
            assert self._first_value is not None
            first_round = self._first_round.tolist()
            first_value = self._first_value.tolist()
            for name, round_, value in zip(self.names, first_round, first_value, strict=True):
                if round_ >= 0:
                    problems.append(f"{name} was {value} in update round {round_ + 1}")
        named = [(name, tensor) for name, tensor in parameters]
        if named:
            norms = th.stack(th._foreach_norm([tensor.detach() for _, tensor in named]))
            bad = (~th.isfinite(norms)).nonzero().flatten().tolist()
            if bad:
                shown = ", ".join(named[i][0] for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                problems.append(f"non-finite parameters after update round {self._n_rounds}: {shown}")
        if problems:
            raise DivergenceError(
                f"{self.owner} diverged: " + "; ".join(problems) + ". The model is unusable. Usual causes: a NaN or inf "
                "in the observations or rewards (wrap the env in SB3's VecCheckNan to find it) or a learning rate that "
                "is too large."
            )

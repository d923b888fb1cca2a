"""Tables that make an SDE, a predictor, a corrector or a network selectable by name from a config."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """Lower-case name -> object, filled by the `register` decorator; `lookup` names what is known."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator storing its argument under ``name`` (case-insensitive); each name is taken once."""

        def register(obj: T) -> T:
            key = name.lower()
            if key in self:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self[key]!r})")
            self[key] = obj
            return obj

        return register

    def lookup(self, name: str, source: str | None = None) -> T:
        """The object registered as ``name``. An unknown name raises ValueError naming it, ``source`` (where it
        came from, e.g. the config key) and the registered names, the closest first:
        ``unknown sampler 'dpmpp_2m' (config.sampling.method); known: dpm_solver++:2m, ...``."""
        try:
            return self[str(name).lower()]
        except KeyError:
            key = str(name).lower()

            def closeness(known: str):  # names it begins, then names holding it, then by similarity
                return not known.startswith(key), key not in known, -difflib.SequenceMatcher(None, key, known).ratio()

            known = sorted(self, key=closeness)
            where = f" ({source})" if source else ""
            raise ValueError(f"unknown {self.kind} {str(name)!r}{where}; known: {', '.join(known)}") from None

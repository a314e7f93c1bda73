"""``Registry``: the one way a name chosen in a config or a saved spec (a dataset, a segmenter, an image
codec, a text encoder, a denoiser backbone) finds what builds it, so that a user's own entry works
everywhere a built-in one does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> objects, each with keyword info (e.g. ``needs_root`` for a dataset).

    ``subject`` is what a name names, as the errors say it ("dataset", "image codec kind"); ``error`` the
    exception type for an unknown name (a ``KeyError`` unless the caller's users expect their own)."""

    def __init__(self, subject: str, *, error: Callable[[str], Exception] = KeyError, valid: str = "names"):
        self.subject = subject
        self._error = error
        self._valid = valid  # the plural in "valid names: ..." ("kinds" for a spec's kind)
        self._entries: dict[str, tuple[T, dict[str, Any]]] = {}

    @overload
    def register(self, name: str, obj: None = None, *, overwrite: bool = False,
                 **info: Any) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = False, **info: Any) -> T: ...

    def register(self, name, obj=None, *, overwrite=False, **info):
        """Add ``obj`` under ``name`` (with ``info``) and return it; without ``obj``, a decorator that does.
        A name already taken is refused unless ``overwrite``, so two entries cannot shadow each other."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.subject} is registered under a non-empty string, got {name!r}")

        def add(value: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.subject} '{name}' is already registered (pass overwrite=True to replace it)")
            self._entries[name] = (value, dict(info))
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name``; a name that is not registered is ignored."""
        self._entries.pop(name, None)

    def get(self, name: Any) -> T:
        """The object registered under ``name``; an unknown name raises ``error`` listing the valid ones."""
        return self._entry(name)[0]

    def info(self, name: Any) -> dict[str, Any]:
        """The keyword info ``name`` was registered with (a copy)."""
        return dict(self._entry(name)[1])

    def names(self) -> tuple[str, ...]:
        """Every registered name, in the order they were registered (built-in ones first)."""
        return tuple(self._entries)

    def values(self) -> tuple[T, ...]:
        return tuple(value for value, _ in self._entries.values())

    def _entry(self, name: Any) -> tuple[T, dict[str, Any]]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name read from a file
            raise self._error(f"unknown {self.subject} {name!r}; valid {self._valid}: "
                              f"{', '.join(sorted(self._entries))}") from None

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.subject!r}: {', '.join(self._entries)})"

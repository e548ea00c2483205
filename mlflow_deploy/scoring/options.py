"""How a scoring server scores: one frozen object, its defaults declared here once.

The control plane's deployment settings, the server's config file, the testing helpers and the
batch drivers all read their defaults from ``ScoringOptions()``; nothing else spells them out.
Azure's own defaults are kept: a 5000 ms scoring timeout (request_settings.request_timeout_ms),
a 100 MiB body (its front proxy's limit), one worker (azmlinfsrv's WORKER_COUNT).
"""
import enum
from dataclasses import dataclass, fields, replace
from typing import Any, Dict

__all__ = ["Validation", "MODES", "ScoringOptions", "DEFAULTS"]


class Validation(str, enum.Enum):
    """``compatible`` does Azure's silent coercions and reports each in a response header;
    ``strict`` answers 400 instead. A str enum: it compares equal to its value and writes to
    JSON as it."""

    COMPATIBLE = "compatible"
    STRICT = "strict"

    @classmethod
    def parse(cls, value: Any) -> "Validation":
        """A Validation from itself or its name; ValueError names the allowed values."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError("validation must be one of: " + ", ".join(MODES)) from None


MODES = tuple(v.value for v in Validation)


@dataclass(frozen=True)
class ScoringOptions:
    validation: Validation = Validation.COMPATIBLE
    request_timeout_ms: int = 5000
    max_request_mb: float = 100.0
    error_details: bool = True  # a model's own exception line in 400 answers
    workers: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "validation", Validation.parse(self.validation))

    @classmethod
    def taken_from(cls, source: Any, **overrides: Any) -> "ScoringOptions":
        """The options ``source`` has attributes of the same names for (a server config, a
        deployment's settings), then ``overrides``."""
        values = {f.name: getattr(source, f.name) for f in fields(cls) if hasattr(source, f.name)}
        values.update(overrides)
        return cls(**values)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    @property
    def timeout_s(self) -> float:
        return self.request_timeout_ms / 1000.0

    def with_(self, **changes: Any) -> "ScoringOptions":
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        return {"validation": self.validation.value, "request_timeout_ms": self.request_timeout_ms,
                "max_request_mb": self.max_request_mb, "error_details": self.error_details,
                "workers": self.workers}


DEFAULTS = ScoringOptions()

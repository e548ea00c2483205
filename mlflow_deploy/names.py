"""Endpoint and deployment names follow Azure ML's rules, which also makes them safe as directory
names: a letter first, then letters, digits or hyphens, 3 to 32 characters, no trailing hyphen."""

import re
from typing import Optional

from mlflow_deploy.errors import InvalidParameter

__all__ = ["check_name"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")


def check_name(name, what: str, argument: Optional[str] = None) -> str:
    """Return ``name`` if valid; the error says ``what`` it is (and which ``argument`` gave it),
    not the value."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidParameter(
            f"Invalid {what}: use 3-32 letters, digits or hyphens, starting with a letter and not "
            "ending with a hyphen.", argument=argument
        )
    return name

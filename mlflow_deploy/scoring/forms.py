"""What a request's envelope says before anything is decoded into numpy or pandas: whether its
content type is JSON, and which form its ``input_data`` takes.

Apart from payload.py because the endpoint's gateway needs these two answers to decide what it
may batch, and must start without importing pandas (a fifth of a second here, on every
endpoint's creation)."""
from typing import Any, Optional

JSON_TYPES = ("application/json", "text/json")


def is_json(content_type: Optional[str]) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() in JSON_TYPES


def form_of(data: Any) -> str:
    """"split" (a dict with data or columns), "named" (any other dict), "records" (a list of
    dicts) or "tensor" (anything else: a nested list, a scalar)."""
    if isinstance(data, dict):
        return "split" if "data" in data or "columns" in data else "named"
    if isinstance(data, list) and data and all(isinstance(row, dict) for row in data):
        return "records"
    return "tensor"

"""The batch settings a deployment's config and a job's overrides both take, parsed alike so
that a value a deployment accepts is one a job accepts (and the other way round): each parser
checks one key and names it, never its value, when it refuses."""

from typing import Any, Callable, Dict, Optional

from mlflow_deploy.batch.computes import check_compute_name
from mlflow_deploy.errors import InvalidParameter
from mlflow_deploy.settings import choice, integer

__all__ = ["LEVELS", "OUTPUT_ACTIONS", "RETRY_KEYS", "RETRY_PARSERS", "BATCH_PARSERS",
           "output_action", "output_file_name", "compute"]

LARGE = 2 ** 31 - 1
LEVELS = ("debug", "info", "warning", "error", "critical")
OUTPUT_ACTIONS = ("append_row", "summary_only")
RETRY_KEYS = ("max_retries", "timeout")


def output_action(value: Any) -> str:
    """append_row or summary_only, also as Azure's SDK spells them (AppendRow, SummaryOnly)."""
    text = str(value).strip().lower().replace("_", "")
    for action in OUTPUT_ACTIONS:
        if text == action.replace("_", ""):
            return action
    raise InvalidParameter("Config 'output_action' must be one of: "
                           + ", ".join(OUTPUT_ACTIONS) + ".")


def output_file_name(value: Any) -> str:
    """A file in the output folder: a path elsewhere would write outside it."""
    text = str(value).strip() if value is not None else ""
    if text in ("", ".", "..") or any(char in text for char in "/\\\0"):
        raise InvalidParameter("Config 'output_file_name' must be a plain file name, with no "
                               "folder.")
    return text


def compute(value: Any) -> Optional[str]:
    """A registered compute's name, given as NAME or azureml:NAME (the YAML's form); None for
    this machine's processes."""
    text = str(value).strip() if value is not None else ""
    if text.startswith("azureml:"):
        text = text[len("azureml:"):]
    return check_compute_name(text, "config 'compute'") if text else None


#: retry_settings' fields: tries after the first, and seconds per try
RETRY_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "max_retries": integer("retry_settings.max_retries", 0, LARGE),
    "timeout": integer("retry_settings.timeout", 1, LARGE),
}

#: the other settings both take, by key
BATCH_PARSERS: Dict[str, Callable[[Any], Any]] = {
    "mini_batch_size": integer("mini_batch_size", 1, LARGE),
    "max_concurrency_per_instance": integer("max_concurrency_per_instance", 1, 1000),
    "instance_count": integer("instance_count", 1, 1000),
    "output_action": output_action,
    "output_file_name": output_file_name,
    "error_threshold": integer("error_threshold", -1, LARGE),
    "logging_level": choice("logging_level", LEVELS),
}

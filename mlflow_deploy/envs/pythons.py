"""Find an interpreter with the Python version a model asks for.

uv only finds the active interpreter on some machines and would otherwise try to download one,
so we look ourselves (pyenv, uv-managed pythons, PATH, the current one) and always hand uv a
full path. Only the chosen candidate is executed (one fast ``-I -S`` call), so discovery stays
cheap enough for the reuse path.
"""
import glob
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from mlflow_deploy.envs.errors import PythonNotFound, RequirementsError

__all__ = ["Interpreter", "PythonVersionWarning", "POLICIES", "find_interpreters",
           "choose_interpreter", "parse_python_version"]

POLICIES = ("exact", "nearest")
_MINOR_NAME = re.compile(r"^python(3\.\d+)$")


class PythonVersionWarning(UserWarning):
    """python_version_policy nearest picked another minor version than the model asks for."""


@dataclass(frozen=True)
class Interpreter:
    path: str  # absolute, symlinks resolved
    version: str  # full, e.g. "3.10.13"
    implementation: str = "cpython"

    @property
    def minor(self) -> Tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    @property
    def minor_str(self) -> str:
        return "{}.{}".format(*self.minor)

    def identity(self) -> str:
        """What the cache keys hash: the same path and version mean the same interpreter."""
        return "{} {} {}".format(self.implementation, self.version, self.path)


def parse_python_version(text: str, source: str) -> Tuple[int, int]:
    """'3.10.11', '3.10', '3.10.*', '>=3.10' (first number wins) -> (3, 10)."""
    match = re.search(r"(\d+)\.(\d+)", str(text))
    if not match:
        raise RequirementsError("{}: cannot read a Python version from 'python' (expected e.g. "
                                "3.10.11)".format(source))
    return int(match.group(1)), int(match.group(2))


def _candidates() -> Dict[Tuple[int, int], List[str]]:
    """(major, minor) -> candidate executables, best first (pyenv and uv: highest patch first)."""
    found: Dict[Tuple[int, int], List[str]] = {}

    def add(minor: Tuple[int, int], path: str) -> None:
        if os.access(path, os.X_OK) and path not in found.setdefault(minor, []):
            found[minor].append(path)

    def by_patch(paths):
        def key(p):
            nums = re.findall(r"\d+", os.path.basename(os.path.dirname(os.path.dirname(p))))
            return [int(n) for n in nums]
        return sorted(paths, key=key, reverse=True)

    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    pattern = os.path.join(pyenv_root, "versions", "*", "bin", "python3.*")
    uv_root = os.environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python")
    uv_pattern = os.path.join(uv_root, "cpython-*", "bin", "python3.*")
    for path in by_patch(glob.glob(pattern)) + by_patch(glob.glob(uv_pattern)):
        match = _MINOR_NAME.match(os.path.basename(path))
        if match:
            add(_as_tuple(match.group(1)), path)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for path in glob.glob(os.path.join(directory, "python3.*")):
            match = _MINOR_NAME.match(os.path.basename(path))
            if match:
                add(_as_tuple(match.group(1)), path)
    current = getattr(sys, "_base_executable", None) or sys.executable
    add(sys.version_info[:2], current)
    return found


def _as_tuple(minor: str) -> Tuple[int, int]:
    major, minor_ = minor.split(".")
    return int(major), int(minor_)


def _inspect(path: str) -> Optional[Interpreter]:
    """Run the candidate once to learn its exact version (and that it works)."""
    code = ("import sys,platform;print(platform.python_version());"
            "print(sys.implementation.name)")
    try:
        out = subprocess.run([path, "-I", "-S", "-c", code], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=20, check=True).stdout.decode()
    except (OSError, subprocess.SubprocessError):
        return None
    version, implementation = out.split()[:2]
    return Interpreter(path=os.path.realpath(path), version=version, implementation=implementation)


def find_interpreters() -> Dict[str, List[str]]:
    """'3.10' -> candidate paths: what this machine offers (for messages and ``env`` verbs)."""
    return {"{}.{}".format(*minor): paths for minor, paths in sorted(_candidates().items())}


def choose_interpreter(wanted: Optional[Tuple[int, int]], policy: str = "exact",
                       progress: Callable[[str], None] = lambda msg: None) -> Interpreter:
    """The interpreter for ``wanted`` (major, minor); None means the current one.

    ``exact``: that minor version or PythonNotFound naming what was found. ``nearest``: the closest
    minor version found (ties go to the newer), with a PythonVersionWarning.
    """
    if policy not in POLICIES:
        raise RequirementsError("python_version_policy must be one of {}, not '{}'".format(
            "|".join(POLICIES), policy))
    if wanted is None:
        wanted = sys.version_info[:2]
    candidates = _candidates()
    for path in candidates.get(wanted, []):
        interpreter = _inspect(path)
        if interpreter and interpreter.minor == wanted:
            return interpreter
    available = sorted(candidates)
    found = ", ".join("{}.{}".format(*m) for m in available) or "none"
    wanted_str = "{}.{}".format(*wanted)
    if policy == "exact" or not available:
        raise PythonNotFound(
            "the model needs Python {} but no interpreter of that version was found (found: {}; "
            "looked in pyenv, uv-managed pythons and PATH). Install it (e.g. `pyenv install {}`) "
            "or allow python_version_policy: nearest".format(wanted_str, found, wanted_str))
    ordered = sorted(available, key=lambda m: (abs((m[0] * 100 + m[1]) - (wanted[0] * 100 + wanted[1])),
                                               -m[1]))
    for minor in ordered:
        for path in candidates[minor]:
            interpreter = _inspect(path)
            if interpreter:
                message = ("the model needs Python {} which is not installed here; using the "
                           "nearest, Python {} ({})".format(wanted_str, interpreter.version,
                                                            interpreter.path))
                progress("warning: " + message)
                warnings.warn(message, PythonVersionWarning, stacklevel=3)
                return interpreter
    raise PythonNotFound("no working Python interpreter found (found: {})".format(found))



"""Where packages come from: the machine's pip configuration, handed to uv.

uv does not read pip.conf or PIP_* variables, so a machine that adds local indexes or find-links
for pip (as ours does) would resolve differently under uv. We read pip's configuration the way pip
does (files in pip's order, [global] then [install], then PIP_* variables) and pass the same
sources to uv, with pip's "best version across all indexes" strategy. A wheelhouse instead means
offline: no index, no network, only the wheelhouse.

``exclude_newer`` (uv's ``--exclude-newer``) resolves as the indexes were on that date, so a lock
made months later is the same; ``$MLFLOW_DEPLOY_EXCLUDE_NEWER`` is its default. uv drops files
that have no upload time under it, as files in local folders (find-links, ``file://`` indexes) are.
"""
import configparser
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["IndexOptions", "read_pip_config", "EXCLUDE_NEWER_ENV"]

EXCLUDE_NEWER_ENV = "MLFLOW_DEPLOY_EXCLUDE_NEWER"

_KEYS = ("index-url", "extra-index-url", "find-links", "no-index", "constraint")


def _config_files() -> List[Path]:
    """pip's configuration files, lowest priority first (pip's own order)."""
    if os.environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    files = [Path(d) / "pip" / "pip.conf" for d in reversed(xdg_dirs) if d]
    files.append(Path("/etc/pip.conf"))
    files.append(Path.home() / ".pip" / "pip.conf")
    xdg_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files.append(Path(xdg_home) / "pip" / "pip.conf")
    if sys.prefix != sys.base_prefix:
        files.append(Path(sys.prefix) / "pip.conf")
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    return files


def read_pip_config() -> Dict[str, str]:
    """The index-related settings pip would use for ``pip install`` on this machine."""
    settings: Dict[str, str] = {}
    for path in _config_files():
        parser = configparser.RawConfigParser()
        try:
            parser.read(str(path), encoding="utf-8")
        except (OSError, configparser.Error):
            continue
        for section in ("global", "install"):
            if parser.has_section(section):
                for key in _KEYS:
                    if parser.has_option(section, key):
                        settings[key] = parser.get(section, key)
    for key in _KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value is not None:
            settings[key] = value
    return settings


@dataclass(frozen=True)
class IndexOptions:
    index_url: Optional[str] = None
    extra_index_urls: Tuple[str, ...] = ()
    find_links: Tuple[str, ...] = ()
    constraints: Tuple[str, ...] = ()
    no_index: bool = False
    offline: bool = False
    exclude_newer: Optional[str] = None  # a date or timestamp uv's --exclude-newer accepts

    @classmethod
    def from_pip_config(cls, exclude_newer: Optional[str] = None) -> "IndexOptions":
        settings = read_pip_config()
        no_index = settings.get("no-index", "").lower() in ("1", "true", "yes", "on")
        index_urls = settings.get("index-url", "").split()
        return cls(index_url=index_urls[0] if index_urls else None,
                   extra_index_urls=tuple(settings.get("extra-index-url", "").split()),
                   find_links=tuple(settings.get("find-links", "").split()),
                   constraints=tuple(c for c in settings.get("constraint", "").split()
                                     if os.path.isfile(c)),
                   no_index=no_index,
                   exclude_newer=exclude_newer or os.environ.get(EXCLUDE_NEWER_ENV) or None)

    @classmethod
    def wheelhouse(cls, folder: os.PathLike) -> "IndexOptions":
        """Install and resolve from ``folder`` only, without touching the network."""
        return cls(find_links=(str(Path(folder).resolve()),), no_index=True, offline=True)

    def uv_args(self, constraints: bool = False) -> List[str]:
        """Flags for uv pip compile / install / sync and uv build; ``constraints``: for the
        resolver (the constraint files and the date)."""
        args: List[str] = []
        if self.offline:
            args.append("--offline")
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        if (self.extra_index_urls or self.find_links) and not self.no_index:
            args += ["--index-strategy", "unsafe-best-match"]  # pip's semantics
        if constraints:
            for path in self.constraints:
                args += ["--constraint", path]
            if self.exclude_newer:
                args += ["--exclude-newer", self.exclude_newer]
        return args

    def pip_args(self) -> List[str]:
        """Flags for pip: it reads the machine's configuration itself; only offline differs."""
        if not self.offline:
            return []
        args = ["--no-index"]
        for link in self.find_links:
            args += ["--find-links", link]
        return args

    def uv_env(self) -> Dict[str, str]:
        """Never let uv download a Python (it would try, and fail after seconds of DNS errors
        here, instead of our own message naming the missing version); offline when asked."""
        env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
        if self.offline:
            env["UV_OFFLINE"] = "1"
        return env

    def identity(self) -> str:
        """Part of the resolution memo: other sources may resolve to other versions."""
        contents = []
        for path in self.constraints:
            try:
                contents.append(Path(path).read_text(encoding="utf-8"))
            except OSError:
                contents.append("")
        return repr((self.index_url, self.extra_index_urls, self.find_links, self.no_index,
                     self.constraints, contents, self.exclude_newer))

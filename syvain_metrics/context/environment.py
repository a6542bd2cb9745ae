"""The environment a run was started in, captured once at creation under one metadata key
(``environment``): git commit and dirty flag, host, command line, Python, the SDK, the
versions of the ML frameworks the program has already imported, and the visible
accelerators.

Never captured: environment variables, git remotes (their URLs may hold credentials), and
the values of command-line options whose name says they are secret (``--api-key``,
``--token``, ``password=...``): those read ``"***"``, as does the user:password part of a
URL on the command line. Capturing costs a few milliseconds (one ``git status`` with a 2 s
timeout) and never raises: what cannot be read is simply absent. Turned off by
``capture_environment=False`` at creation or ``SYVAIN_METRICS_CAPTURE_ENV=0``.

Example:
    >>> env = capture_environment(argv=["train.py", "--api-key=abc", "--lr", "0.1"])
    >>> env["argv"]
    ['train.py', '--api-key=***', '--lr', '0.1']
"""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from syvain_metrics._version import __version__

logger = logging.getLogger("syvain_metrics")

CAPTURE_ENV = "SYVAIN_METRICS_CAPTURE_ENV"
"""Set to ``0`` (or ``false``, ``no``, ``off``) to capture no environment by default."""

GIT_TIMEOUT_S = 2.0
"""The longest the ``git`` call may take (a network file system, a huge work tree)."""

FRAMEWORKS = (
    "torch",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "keras",
    "tensorflow",
    "jax",
    "accelerate",
    "xgboost",
    "lightgbm",
    "optuna",
    "sklearn",
    "numpy",
)
"""Modules whose version is recorded when the program has imported them (never imported
here)."""

ARGV_ITEMS = 64
ARGV_ITEM_CHARS = 300
"""The command line is kept to this many arguments of at most this many characters."""

_SECRET_NAME = re.compile(r"key|token|secret|passw|credential|auth|cookie", re.IGNORECASE)
# Values that are credentials whatever option carries them (GitHub, Hugging Face, OpenAI-style,
# Slack, AWS access key ids, GitLab), wherever they appear in an argument.
_TOKEN_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(?:ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|hf_|sk-|xox[a-z]?-|AKIA|glpat-)"
    r"[A-Za-z0-9_\-]*"
)
_PASSWORD_FLAGS = frozenset({"-p"})
"""Short options whose next argument is a password (``mysql -p secret``, ``-p`` of many CLIs)."""
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
REDACTED = "***"
_NVIDIA_GPUS = "/proc/driver/nvidia/gpus"


def capture_enabled(flag: bool | None = None) -> bool:
    """Whether to capture: ``flag`` when given, else not when ``SYVAIN_METRICS_CAPTURE_ENV``
    says ``0`` / ``false`` / ``no`` / ``off``.

    Example:
        >>> capture_enabled(False)
        False
    """
    if flag is not None:
        return flag
    setting = os.environ.get(CAPTURE_ENV, "").strip().lower()
    return setting not in ("0", "false", "no", "off")


def _strip_userinfo(text: str) -> str:
    text = _TOKEN_VALUE.sub(REDACTED, text)
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of secret-named options replaced by ``***`` (``--token X``,
    ``--token=X``, ``db.password=X``, ``-p X``), credentials taken out of URLs, and values
    that look like tokens (``ghp_...``, ``hf_...``, ``sk-...``, ``AKIA...``) wherever they are.

    Example:
        >>> redact_argv(["--token", "abc", "--db", "https://u:p@host/x", "lr=0.1"])
        ['--token', '***', '--db', 'https://***@host/x', 'lr=0.1']
        >>> redact_argv(["--github_pat=ghp_x1", "-p", "hunter2"])
        ['--github_pat=***', '-p', '***']
    """
    out: list[str] = []
    hide_next = False
    for raw in argv:
        item = str(raw)
        if hide_next and not item.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, equals, _ = item.partition("=")
        if equals and _SECRET_NAME.search(name):
            out.append(f"{name}={REDACTED}")
        elif item in _PASSWORD_FLAGS or (item.startswith("-") and _SECRET_NAME.search(item)):
            out.append(item)
            hide_next = True  # its value is the next argument
        else:
            out.append(_strip_userinfo(item))
    return [item[:ARGV_ITEM_CHARS] for item in out[:ARGV_ITEMS]]


def _script_dirs() -> list[str]:
    """Where to look for the run's git work tree: the script's folder, then the current one."""
    dirs: list[str] = []
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if isinstance(script, str) and script:
        dirs.append(os.path.dirname(os.path.abspath(script)))
    try:
        cwd = os.getcwd()
    except OSError:
        return dirs
    if cwd not in dirs:
        dirs.append(cwd)
    return dirs


def _in_work_tree(path: str) -> bool:
    """Whether ``path`` or a folder above it has a ``.git``: no ``git`` process is started
    where there is no repository (most of the cost of a capture)."""
    here = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return True
        parent = os.path.dirname(here)
        if parent == here:
            return False
        here = parent


def git_state(cwd: str) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the work tree holding ``cwd`` (``dirty``: a tracked file
    differs from the commit), or ``None`` without git, a work tree or a commit.

    Example:
        >>> git_state("/")  # doctest: +SKIP
        None
    """
    if not _in_work_tree(cwd):
        return None
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            # Never a prompt for credentials, never a pager, whatever the user's git config says.
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if done.returncode != 0:
        return None
    commit = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split()[2]
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None or not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        return None  # "(initial)": a repository without a commit yet
    return {"commit": commit, "dirty": dirty}


def framework_versions() -> dict[str, str]:
    """Versions of the :data:`FRAMEWORKS` the program has imported (nothing is imported).

    Example:
        >>> isinstance(framework_versions(), dict)
        True
    """
    found: dict[str, str] = {}
    for name in FRAMEWORKS:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if isinstance(version, str):
            found[name] = version[:100]
    return found


def _driver_gpu_names() -> list[str]:
    """The GPUs' names as the NVIDIA driver lists them on Linux: a few small file reads,
    where starting NVML would cost tens of milliseconds."""
    names: list[str] = []
    try:
        for entry in sorted(os.scandir(_NVIDIA_GPUS), key=lambda e: e.name)[:64]:
            with open(os.path.join(entry.path, "information"), encoding="utf-8") as info:
                for line in info:
                    key, _, value = line.partition(":")
                    if key.strip() == "Model":
                        names.append(value.strip()[:200])
                        break
    except OSError:
        pass
    return names


def accelerators() -> dict[str, Any]:
    """``CUDA_VISIBLE_DEVICES`` when set, and the GPUs' names: torch's when it is already
    imported and sees CUDA, else the NVIDIA driver's (Linux).

    Example:
        >>> isinstance(accelerators(), dict)
        True
    """
    found: dict[str, Any] = {}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found["cuda_visible_devices"] = visible[:200]
    names: list[str] = []
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            names = [str(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
    except Exception:
        names = []
    if not names:
        names = _driver_gpu_names()
    if names:
        found["gpus"] = names[:64]
    return found


def capture_environment(
    *, cwd: str | None = None, argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """The ``environment`` metadata of a run; ``cwd`` is where to look for git (by default
    the script's folder, then the current one), ``argv`` the command line (``sys.argv``).
    Never raises.

    Example:
        >>> sorted(capture_environment(argv=[]))  # doctest: +SKIP
        ['accelerators', 'argv', 'git', 'host', 'packages', 'platform', 'python', 'sdk']
    """
    env: dict[str, Any] = {}
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("host", socket.gethostname),
        ("python", platform.python_version),
        ("platform", lambda: sys.platform),
        ("sdk", lambda: __version__),
        ("argv", lambda: redact_argv(sys.argv if argv is None else argv)),
        ("git", lambda: _first_git_state(cwd)),
        ("packages", framework_versions),
        ("accelerators", accelerators),
    ]
    for key, read in parts:
        try:
            value = read()
        except Exception as error:  # one part missing, never a failed creation
            logger.debug("syvain_metrics: no %s in the environment: %r", key, error)
            continue
        if value or key in ("argv",):
            env[key] = value
    return env


def _first_git_state(cwd: str | None) -> dict[str, Any] | None:
    for where in [cwd] if cwd is not None else _script_dirs():
        state = git_state(where)
        if state is not None:
            return state
    return None

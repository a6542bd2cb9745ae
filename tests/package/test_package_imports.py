"""What ``import syvain_metrics`` costs, and that every public name is still there.

The package's names are imported on first use, so the ``syvain-metrics`` command (which
must handle Ctrl-C and SIGTERM from its first instruction) and programs that only import
the package do not pay for HTTP, schemas and resources up front.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import syvain_metrics as sm


def test_importing_the_package_loads_no_http_or_schema_library() -> None:
    script = (
        "import sys, syvain_metrics\n"
        "heavy = {'requests', 'urllib3', 'marshmallow', 'cachetools', 'syvain_metrics.client.session'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", sorted(sm.__all__))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(sm, name) is not None


def test_dir_lists_the_public_names_only() -> None:
    assert sorted(dir(sm)) == sorted(sm.__all__)


def test_dir_star_import_and_tab_completion_show_the_public_api_only(tmp_path: Path) -> None:
    # In a fresh interpreter whose submodules were loaded (as using the SDK does): they
    # become attributes of the package, yet none is listed.
    script = (
        "import json, syvain_metrics as sm, syvain_metrics.testing, syvain_metrics.client\n"
        "sm.Experiment\n"
        "star = {}\n"
        "exec('from syvain_metrics import *', star)\n"
        "from IPython.core.completer import provisionalcompleter\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "shell.run_cell('import syvain_metrics as sm')\n"
        "with provisionalcompleter():\n"
        "    tab = [c.text for c in shell.Completer.completions('sm.', 3)]\n"
        "print(json.dumps([dir(sm), sorted(set(star) - {'__builtins__'}), tab]))\n"
    )
    pytest.importorskip("IPython", reason="tab completion is IPython's")
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}  # not the user's profile
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    ).stdout
    listed, star, tab = json.loads(out.splitlines()[-1])
    public = sorted(sm.__all__)
    assert sorted(listed) == public
    assert star == public
    # IPython hides dunder names until "__" is typed.
    assert sorted(tab) == [name for name in public if not name.startswith("__")]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        sm.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_a_name_imported_from_the_package_is_the_class_itself() -> None:
    from syvain_metrics import Experiment
    from syvain_metrics.resources.experiment import Experiment as Defined

    assert Experiment is Defined


def test_the_command_runs_without_the_server_extras() -> None:
    # `sync` and `--help` need no server: a user with the bare SDK (no `local` extra) has
    # them too.
    script = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['waitress', 'werkzeug', 'jinja2', 'gunicorn']))\n"
        "from syvain_metrics.cli import main\n"
        "sys.exit(main(['sync', '--help']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "sync" in done.stdout

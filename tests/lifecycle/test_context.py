"""``config=`` and the captured environment at creation, against the real local server: each
kind of config is stored flat (dotted keys) and found by ``Experiment.list(metadata=...)``;
what does not fit is named by one warning and never fails the creation; the environment
holds the git commit and dirty flag, host, command line and versions, never a secret, and
can be turned off.

pydantic and OmegaConf are not installed here: their configs are stand-ins with the same
methods (``model_dump()``, v1's ``dict()``) and, for OmegaConf, a module holding
``OmegaConf.to_container`` — the SDK recognises them by exactly that.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

import syvain_metrics as sm
from syvain_metrics.context import environment
from syvain_metrics.context.config import METADATA_BUDGET_BYTES
from syvain_metrics.server.limits import MAX_METADATA_BYTES

pytestmark = pytest.mark.usefixtures("metrics_session")


@pytest.fixture
def capture_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's default: no ``SYVAIN_METRICS_CAPTURE_ENV`` (the suite turns it off)."""
    monkeypatch.delenv("SYVAIN_METRICS_CAPTURE_ENV", raising=False)


def stored(slug: str) -> dict[str, Any]:
    """The metadata the server holds for ``slug`` (read back, not the creation's answer)."""
    (run,) = sm.Experiment.list(slug=slug)
    return run.metadata


def created_quietly(slug: str, **kwargs: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        sm.Experiment.create(slug, **kwargs)
    return stored(slug)


# -- config of each kind --------------------------------------------------------------


def test_a_dict_config_is_flattened_with_dots_and_found_by_list_filters() -> None:
    config = {"lr": 0.1, "model": {"width": 512, "act": "gelu"}, "layers": [2, 2]}
    assert created_quietly("run-dict", config=config) == {
        "lr": 0.1,
        "model.width": 512,
        "model.act": "gelu",
        "layers": [2, 2],
    }
    sm.Experiment.create("other", config={"lr": 0.2, "model": {"width": 256}})
    found = sm.Experiment.list(metadata={"model.width": 512})
    assert [run.slug for run in found] == ["run-dict"]
    table = sm.Experiment.list().to_pandas() if _has_pandas() else None
    if table is not None:
        assert set(table["model.width"]) == {512, 256}


def test_secret_named_config_text_is_masked_and_look_alikes_are_kept() -> None:
    config = {
        "hub_token": "hf_secret_value",
        "wandb": {"api_key": "0123abcd"},
        "db.password": "hunter2",
        "max_tokens": 512,  # a number, and not the secret's name
        "pad_token_id": 0,
        "monitor_key": "val_loss",
        "tokenizer": "bpe",
    }
    stored = created_quietly("run-secrets", config=config)
    assert stored == {
        "hub_token": "***",
        "wandb.api_key": "***",
        "db.password": "***",
        "max_tokens": 512,
        "pad_token_id": 0,
        "monitor_key": "val_loss",
        "tokenizer": "bpe",
    }
    assert "hf_secret_value" not in json.dumps(sm.Experiment.list()[0].metadata)


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def test_a_namespace_config() -> None:
    args = argparse.Namespace(lr=3e-4, optimizer="adamw", epochs=10, resume=None)
    assert created_quietly("run-ns", config=args) == {
        "lr": 3e-4,
        "optimizer": "adamw",
        "epochs": 10,
        "resume": None,
    }


@dataclasses.dataclass
class Optim:
    name: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.99)


@dataclasses.dataclass
class TrainConfig:
    seed: int = 7
    optim: Optim = dataclasses.field(default_factory=Optim)
    out: Path = Path("/runs/a")


def test_a_dataclass_config_with_a_nested_dataclass_and_a_path() -> None:
    assert created_quietly("run-dc", config=TrainConfig()) == {
        "seed": 7,
        "optim.name": "sgd",
        "optim.betas": [0.9, 0.99],
        "out": "/runs/a",
    }


class PydanticV2Like:
    """What the SDK looks for in a pydantic v2 model: ``model_dump()``."""

    def __init__(self, **values: Any) -> None:
        self._values = values

    def model_dump(self) -> dict[str, Any]:
        return dict(self._values)


class PydanticV1Like:
    """What the SDK looks for in a pydantic v1 model: ``dict()`` and ``__fields__``."""

    __fields__ = {"lr": None, "data": None}

    def __init__(self, **values: Any) -> None:
        self._values = values

    def dict(self) -> dict[str, Any]:
        return dict(self._values)


def test_pydantic_models_v2_and_v1() -> None:
    v2 = PydanticV2Like(lr=0.01, data={"path": "/d", "workers": 4})
    assert created_quietly("run-v2", config=v2) == {
        "lr": 0.01,
        "data.path": "/d",
        "data.workers": 4,
    }
    v1 = PydanticV1Like(lr=0.02, data={"workers": 2})
    assert created_quietly("run-v1", config=v1) == {"lr": 0.02, "data.workers": 2}


@pytest.fixture
def omegaconf_like(monkeypatch: pytest.MonkeyPatch) -> type:
    """A module named like OmegaConf's, holding ``OmegaConf.to_container`` and a config
    class whose interpolations it resolves."""
    module = types.ModuleType("omegaconf")

    class DictConfig:
        def __init__(self, content: dict[str, Any]) -> None:
            self.content = content

    class OmegaConf:
        @staticmethod
        def to_container(config: DictConfig, resolve: bool = False) -> dict[str, Any]:
            def walk(value: Any) -> Any:
                if isinstance(value, dict):
                    return {k: walk(v) for k, v in value.items()}
                if resolve and value == "${model.width}":
                    return config.content["model"]["width"]
                return value

            result: dict[str, Any] = walk(config.content)
            return result

    DictConfig.__module__ = "omegaconf.dictconfig"
    module.OmegaConf = OmegaConf  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omegaconf", module)
    return DictConfig


def test_an_omegaconf_config_is_resolved(omegaconf_like: type) -> None:
    config = omegaconf_like({"model": {"width": 64}, "head": {"width": "${model.width}"}})
    assert created_quietly("run-omega", config=config) == {
        "model.width": 64,
        "head.width": 64,
    }


def test_a_config_of_no_known_kind_is_refused_before_anything_is_created() -> None:
    with pytest.raises(sm.MetricsValidationError, match="config: Must be a dict"):
        sm.Experiment.create("run-bad", config=["lr", 0.1])
    assert sm.Experiment.list(slug="run-bad") == []


# -- what does not fit ----------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


class Opaque:
    def __str__(self) -> str:
        return "<opaque 7>"


def test_values_that_do_not_fit_are_named_by_one_warning_and_never_fail_the_creation() -> None:
    config = {
        "lr": float("nan"),
        "clip": float("inf"),
        "colour": Colour.RED,
        "thing": Opaque(),
        "prompt": "x" * (MAX_METADATA_BYTES + 10),
        "seed": 1,
        "ok": 0.5,
    }
    with pytest.warns(UserWarning, match="does not fit") as caught:
        run = sm.Experiment.create("run-unfit", config=config, metadata={"seed": 2})
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "stored as text: lr, clip, thing" in message
    assert "left out (metadata too large): prompt" in message
    assert "given in metadata= too, which wins: seed" in message
    assert run.status == "created"
    assert stored("run-unfit") == {
        "seed": 2,
        "lr": "nan",
        "clip": "inf",
        "colour": "red",
        "thing": "<opaque 7>",
        "ok": 0.5,
    }


def test_numpy_scalars_in_a_config_are_numbers() -> None:
    np = pytest.importorskip("numpy")
    config = {"lr": np.float32(0.5), "steps": np.int64(100), "mask": np.bool_(True)}
    assert created_quietly("run-np", config=config) == {"lr": 0.5, "steps": 100, "mask": True}


def test_a_large_config_fills_the_metadata_up_to_the_servers_bound() -> None:
    assert METADATA_BUDGET_BYTES == MAX_METADATA_BYTES
    config = {f"param_{i:04d}": "v" * 90 for i in range(400)}  # about 40 KB
    with pytest.warns(UserWarning, match="left out"):
        sm.Experiment.create("run-large", config=config, capture_environment=True)
    kept = stored("run-large")
    assert 100 < len(kept) < 400
    assert len(json.dumps(kept, separators=(",", ":")).encode()) <= MAX_METADATA_BYTES


# -- the environment ------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def script_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit, a remote carrying a token, holding the running
    script (``__main__``), which is also the current folder."""
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "train.py").write_text("print('train')\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-q", "-m", "first")
    _git(repo, "remote", "add", "origin", "https://user:tok-s3cret@host.example/x.git")
    main = types.ModuleType("__main__")
    main.__file__ = str(repo / "train.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.usefixtures("capture_on")
def test_the_environment_is_captured_by_default(
    script_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        sys, "argv", ["train.py", "--api-key=abc123", "--token", "xyz789", "--lr", "0.1"]
    )
    monkeypatch.setenv("SYVAIN_TEST_SECRET", "env-s3cret")
    commit = _git(script_repo, "rev-parse", "HEAD")

    env = created_quietly("run-env", metadata={"seed": 1})["environment"]
    assert env["git"] == {"commit": commit, "dirty": False}
    assert env["argv"] == ["train.py", "--api-key=***", "--token", "***", "--lr", "0.1"]
    assert env["host"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["sdk"] == sm.__version__
    if "numpy" in sys.modules:
        assert env["packages"]["numpy"] == sys.modules["numpy"].__version__
    text = json.dumps(stored("run-env"))
    for secret in ("abc123", "xyz789", "tok-s3cret", "host.example", "env-s3cret"):
        assert secret not in text

    (script_repo / "train.py").write_text("print('changed')\n")
    assert created_quietly("run-dirty")["environment"]["git"] == {"commit": commit, "dirty": True}


@pytest.mark.usefixtures("capture_on")
def test_without_a_repository_there_is_no_git_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = types.ModuleType("__main__")
    main.__file__ = str(tmp_path / "train.py")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.chdir(tmp_path)
    env = created_quietly("run-nogit")["environment"]
    assert "git" not in env
    assert env["host"]


@pytest.mark.usefixtures("capture_on")
def test_a_capture_that_fails_leaves_its_part_out_and_the_creation_goes_on(
    script_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hung(*args: Any, **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(["git"], environment.GIT_TIMEOUT_S)

    def broken() -> str:
        raise OSError("no host name")

    monkeypatch.setattr(environment.subprocess, "run", hung)
    monkeypatch.setattr(environment.socket, "gethostname", broken)
    env = created_quietly("run-broken")["environment"]
    assert "git" not in env
    assert "host" not in env
    assert env["sdk"] == sm.__version__


@pytest.mark.usefixtures("capture_on")
def test_the_capture_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert created_quietly("run-off", capture_environment=False) == {}
    monkeypatch.setenv("SYVAIN_METRICS_CAPTURE_ENV", "0")
    assert created_quietly("run-off-env", metadata={"a": 1}) == {"a": 1}
    assert "environment" in created_quietly("run-on", capture_environment=True)


@pytest.mark.usefixtures("capture_on")
def test_an_environment_key_of_the_callers_own_wins() -> None:
    assert created_quietly("run-own", metadata={"environment": "cluster-a"}) == {
        "environment": "cluster-a"
    }


def test_argv_redaction_rules() -> None:
    assert environment.redact_argv(
        [
            "train.py",
            "db.password=hunter2",
            "--secret",
            "--other",
            "--url",
            "postgres://me:pw@db:5432/x",
            "--auth-token=t",
        ]
    ) == [
        "train.py",
        "db.password=***",
        "--secret",
        "--other",
        "--url",
        "postgres://***@db:5432/x",
        "--auth-token=***",
    ]


class Unreadable:
    """A model whose dump fails (a validator that raises, say)."""

    def model_dump(self) -> dict[str, Any]:
        raise RuntimeError("validator failed")

    def __str__(self) -> str:
        return "<unreadable>"


def test_an_unreadable_config_is_refused_and_an_unreadable_value_kept_as_text() -> None:
    with pytest.raises(sm.MetricsValidationError, match="config: Could not be read"):
        sm.Experiment.create("run-unreadable", config=Unreadable())
    assert sm.Experiment.list(slug="run-unreadable") == []

    cyclic: dict[str, Any] = {"depth": 1}
    cyclic["again"] = cyclic
    with pytest.warns(UserWarning, match="stored as text: part, .*again"):
        sm.Experiment.create("run-odd", config={"part": Unreadable(), "loop": cyclic})
    kept = stored("run-odd")
    assert kept["part"] == "<unreadable>"
    assert kept["loop.depth"] == 1
    assert kept["loop.again.depth"] == 1


def test_small_arrays_are_lists_and_large_ones_text() -> None:
    np = pytest.importorskip("numpy")
    with pytest.warns(UserWarning, match="stored as text: large"):
        sm.Experiment.create(
            "run-arrays", config={"weights": np.array([0.5, 2.0]), "large": np.zeros(5000)}
        )
    kept = stored("run-arrays")
    assert kept["weights"] == [0.5, 2.0]
    assert kept["large"].startswith("[0. 0. 0.")


@pytest.mark.usefixtures("capture_on")
def test_imported_frameworks_and_visible_gpus_are_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = types.ModuleType("torch")
    torch.__version__ = "9.9.0+test"  # type: ignore[attr-defined]
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=lambda: True,
        device_count=lambda: 2,
        get_device_name=lambda i: f"Test GPU {i}",
    )
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    env = created_quietly("run-gpus")["environment"]
    assert env["packages"]["torch"] == "9.9.0+test"
    assert "transformers" not in env["packages"]  # not imported: not recorded
    assert env["accelerators"] == {
        "cuda_visible_devices": "2,3",
        "gpus": ["Test GPU 0", "Test GPU 1"],
    }


def test_argv_values_that_look_like_tokens_and_short_password_flags_are_redacted() -> None:
    argv = [
        "train.py",
        "--github_pat=ghp_abc123",
        "--model",
        "hf_AbCdEf",
        "--openai=sk-proj-xyz",
        "--aws",
        "AKIAIOSFODNN7EXAMPLE",
        "--slack=xoxb-1-2",
        "--gitlab=glpat-zz",
        "-p",
        "secret9",
        "--lr",
        "0.1",
        "--task-name=mask-rcnn",
    ]
    redacted = environment.redact_argv(argv)
    assert redacted == [
        "train.py",
        "--github_pat=***",
        "--model",
        "***",
        "--openai=***",
        "--aws",
        "***",
        "--slack=***",
        "--gitlab=***",
        "-p",
        "***",
        "--lr",
        "0.1",
        "--task-name=mask-rcnn",
    ]
    assert not any(secret in str(redacted) for secret in ("ghp_", "secret9", "AKIA", "sk-p"))

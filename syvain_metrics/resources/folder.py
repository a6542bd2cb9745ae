"""Folders: a tree that organises experiments.

Example:
    >>> import syvain_metrics as sm
    >>> root = sm.Folder.create("baselines")            # doctest: +SKIP
    >>> sub = root.create_subfolder("mamba")            # doctest: +SKIP
    >>> sub.path_name                                   # doctest: +SKIP
    'baselines/mamba'
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from syvain_metrics.client.registry import get_session
from syvain_metrics.client.session import Session
from syvain_metrics.contract import operations
from syvain_metrics.contract.schemas.base import load_request
from syvain_metrics.contract.schemas.folder import (
    FolderCreateRequest,
    FolderListQuery,
    FolderPatchRequest,
)
from syvain_metrics.contract.schemas.options import check_flag
from syvain_metrics.errors import MetricsApiError, MetricsApiRequestError, MetricsValidationError
from syvain_metrics.resources.base import Resource, wire
from syvain_metrics.resources.lists import ResourceList

if TYPE_CHECKING:
    from syvain_metrics.resources.experiment import Experiment
    from syvain_metrics.resources.experiment_list import ExperimentList


def folder_id_of(folder: Folder | str | None) -> str | None:
    """The id of a ``Folder``, an id string, or ``None`` (the root).

    Example:
        >>> folder_id_of("7b0f6a52"), folder_id_of(None)
        ('7b0f6a52', None)
    """
    if folder is None:
        return None
    if isinstance(folder, Folder):
        return folder.id
    if isinstance(folder, str) and folder:
        return folder
    raise MetricsValidationError(
        {"folder": [f"Must be a Folder, a non-empty folder id or None, got {folder!r}."]}
    )


_SHOWN = {"folder_id", "name", "path_name", "parent_id_path"}


def is_conflict(error: MetricsApiRequestError) -> bool:
    """Whether a create was refused because the name or slug is taken (a 409 that is not
    about an idempotency key)."""
    return error.status_code == 409 and not str(error.error_code or "").startswith("idempotency")


class Folder(Resource):
    """A folder. ``id`` is the wire ``folder_id``; ``path_name`` reads like ``"baselines/mamba"``.

    Example:
        >>> folder = sm.Folder.get("7b0f6a52-...")     # doctest: +SKIP
        >>> folder.subfolders, folder.experiments      # doctest: +SKIP
        ([<Folder baselines/mamba id=...>], [])
    """

    _id_field = "folder_id"
    _repr_fields = ("path_name",)
    _changes_hint = (
        "rename with folder.name = ...; folder.save() (or folder.rename(name)), "
        "move with folder.move(parent)."
    )

    id = wire[str]("folder_id")
    org_id = wire[str]()
    parent_id_path = wire[builtins.list[str]]()
    path_name = wire[str]()

    def __init__(self, data: Any, *, session: Session | None) -> None:
        super().__init__(data, session=session)
        self._contents: tuple[FolderList, ExperimentList] | None = None
        self._pending_name: str | None = None

    # -- fields -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The folder's name; assign a new one and call :meth:`save` to rename."""
        return self._pending_name if self._pending_name is not None else self._data["name"]

    @name.setter
    def name(self, value: str) -> None:
        self._pending_name = value

    @property
    def parent_id(self) -> str | None:
        """Id of the parent folder, or ``None`` at the root."""
        return self.parent_id_path[-1] if self.parent_id_path else None

    @property
    def subfolders(self) -> FolderList:
        """Child folders, as loaded by :meth:`get` or :meth:`refresh` (never a hidden request)."""
        return FolderList(self._loaded_contents()[0])

    @property
    def experiments(self) -> ExperimentList:
        """Experiments in this folder, newest first, as loaded by :meth:`get` or :meth:`refresh`."""
        from syvain_metrics.resources.experiment_list import ExperimentList

        return ExperimentList(self._loaded_contents()[1])

    def _loaded_contents(self) -> tuple[FolderList, ExperimentList]:
        if self._contents is None:
            raise MetricsApiError(
                "Folder contents are not loaded: call folder.refresh() or sm.Folder.get(id)."
            )
        return self._contents

    def open(self) -> str:
        """Open the dashboard's list of this folder's experiments in a web browser (the local
        server's ``/dashboard/?folder=<id>`` on the session's host); returns the URL.

        Example:
            >>> folder.open()  # doctest: +SKIP
            'http://127.0.0.1:8765/dashboard/?folder=7b0f6a52-...'
        """
        import webbrowser

        url = self._bind().host + operations.dashboard_folder_path(self.id)
        webbrowser.open(url)
        return url

    def _frame_row(self) -> dict[str, Any]:
        return {
            "path_name": self.path_name,
            "name": self.name,
            "id": self.id,
            "parent_id": self.parent_id,
            **{k: v for k, v in self._data.items() if k not in _SHOWN},
        }

    def _html_title(self) -> str:
        return f"Folder {self.path_name}"

    # -- class-level operations ---------------------------------------------------

    @classmethod
    def list(cls, path: str | None = None, *, session: Session | None = None) -> FolderList:
        """Every folder of the organization, or the one whose ``path_name`` is ``path``.

        Example:
            >>> sm.Folder.list(path="baselines/mamba")  # doctest: +SKIP
            [<Folder baselines/mamba id=...>]
        """
        bound = get_session(session)
        query = load_request(FolderListQuery(), {"path": path})
        data = bound.call(operations.LIST_FOLDERS, query=query)
        return FolderList(Folder._from_wire(item, bound) for item in data["folders"])

    @classmethod
    def create(
        cls,
        name: str,
        parent: Folder | str | None = None,
        *,
        exist_ok: bool = False,
        session: Session | None = None,
    ) -> Folder:
        """Create a folder under ``parent`` (a ``Folder``, an id, or ``None`` for the root).

        With ``exist_ok=True`` the folder of that name under that parent is returned when it
        already exists (one more request to find it) instead of raising the service's 409,
        so the cell that creates it can be run again.

        Example:
            >>> sm.Folder.create("baselines")  # doctest: +SKIP
            <Folder baselines id=...>
            >>> sm.Folder.create("baselines", exist_ok=True)  # doctest: +SKIP
            <Folder baselines id=...>
        """
        check_flag("exist_ok", exist_ok)
        bound = get_session(session)
        parent_id = folder_id_of(parent)
        body = load_request(FolderCreateRequest(), {"name": name, "parent_id": parent_id})
        try:
            data = bound.call(operations.CREATE_FOLDER, body=body)
        except MetricsApiRequestError as error:
            if not (exist_ok and is_conflict(error)):
                if error.error_code == "folder_exists":
                    raise error.with_hint(
                        f"To get the existing folder, write sm.Folder.create({name!r}, "
                        "exist_ok=True) with the same parent; for a new folder, choose "
                        "another name."
                    ) from None
                raise
            existing = cls._existing(name, parent_id, bound)
            if existing is None:
                raise
            return existing
        return cls._from_wire(data["folder"], bound)

    @classmethod
    def _existing(cls, name: str, parent_id: str | None, session: Session) -> Folder | None:
        """The folder called ``name`` under ``parent_id`` (``None``: the root), if any."""
        if parent_id is None:
            candidates: builtins.list[Folder] = cls.list(path=name, session=session)
        else:
            candidates = cls.get(parent_id, session=session).subfolders
        return next((f for f in candidates if f.name == name and f.parent_id == parent_id), None)

    @classmethod
    def get(cls, folder_id: str, *, session: Session | None = None) -> Folder:
        """Fetch a folder with its contents (``subfolders``, ``experiments``).

        Example:
            >>> sm.Folder.get("7b0f6a52-...").path_name  # doctest: +SKIP
            'baselines'
        """
        bound = get_session(session)
        folder = cls({"folder_id": folder_id}, session=bound)
        folder.refresh()
        return folder

    # -- instance operations ------------------------------------------------------

    def refresh(self) -> Folder:
        """Reload this folder and its contents.

        Example:
            >>> folder.refresh().experiments  # doctest: +SKIP
            [<Experiment mamba-run-001 running id=...>]
        """
        from syvain_metrics.resources.experiment import Experiment
        from syvain_metrics.resources.experiment_list import ExperimentList

        bound = self._bind()
        data = bound.call(operations.GET_FOLDER, self.id)
        self._update(data["folder"])
        self._session = bound
        self._pending_name = None
        self._contents = (
            FolderList(Folder._from_wire(item, bound) for item in data["folders"]),
            ExperimentList(Experiment._from_wire(item, bound) for item in data["experiments"]),
        )
        return self

    def _patch(self, changes: dict[str, Any]) -> Folder:
        bound = self._bind()
        body = load_request(FolderPatchRequest(), changes)
        data = bound.call(operations.PATCH_FOLDER, self.id, body=body)
        self._update(data["folder"])
        if "name" in changes:
            self._pending_name = None  # a move keeps a name assigned but not yet saved
        return self

    def rename(self, name: str) -> Folder:
        """Rename this folder (sends only ``{name}``; the parent is left alone).

        Example:
            >>> sub.rename("mamba-v2").path_name  # doctest: +SKIP
            'baselines/mamba-v2'
        """
        return self._patch({"name": name})

    def move(self, parent: Folder | str | None) -> Folder:
        """Move under ``parent`` (a ``Folder``, an id, or ``None`` for the root).

        Example:
            >>> sub.move(None).path_name  # doctest: +SKIP
            'mamba-v2'
        """
        return self._patch({"parent_id": folder_id_of(parent)})

    def save(self) -> Folder:
        """Send a ``name`` assigned since the last load (nothing to send: no request).

        Example:
            >>> sub.name = "mamba-v3"; sub.save()  # doctest: +SKIP
            <Folder baselines/mamba-v3 id=...>
        """
        if self._pending_name is None or self._pending_name == self._data.get("name"):
            self._pending_name = None
            return self
        return self._patch({"name": self._pending_name})

    def create_subfolder(self, name: str) -> Folder:
        """Create a folder inside this one.

        Example:
            >>> root.create_subfolder("mamba").path_name  # doctest: +SKIP
            'baselines/mamba'
        """
        return Folder.create(name, parent=self, session=self._bind())

    def create_experiment(self, slug: str, **kwargs: Any) -> Experiment:
        """Create an experiment in this folder; takes the arguments of ``Experiment.create``.

        Example:
            >>> sub.create_experiment("mamba-run-001", description="Baseline")  # doctest: +SKIP
            <Experiment mamba-run-001 created id=...>
        """
        from syvain_metrics.resources.experiment import Experiment

        return Experiment.create(slug, folder=self, session=self._bind(), **kwargs)


class FolderList(ResourceList[Folder]):
    """Folders, as ``sm.Folder.list()`` and ``folder.subfolders`` return them.

    Example:
        >>> sm.Folder.list().to_pandas()[["path_name", "id"]]  # doctest: +SKIP
    """

    _noun = "folders"
    _columns = ("path_name", "name", "id", "parent_id")

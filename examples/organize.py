"""Organising runs with folders: create, rename, move, and list what a folder holds.

Run it with ``python examples/organize.py`` (a local server is started when no
``SYVAIN_METRICS_API_KEY`` is set).
"""

from __future__ import annotations

import secrets
import time

from _connect import session_for_example

import syvain_metrics as sm


def main() -> None:
    with session_for_example() as session:
        # Unique per run: the local server keeps the runs of every earlier one.
        tag = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        projects = sm.Folder.create(f"projects-{tag}", session=session)
        vision = projects.create_subfolder("vision")
        # Moved to the root below, where folder names are unique: the tag keeps it apart.
        nlp = projects.create_subfolder(f"nlp-{tag}")
        print(f"created {vision.path_name} and {nlp.path_name}")

        run = vision.create_experiment(f"resnet-{tag}", description="ResNet-50 baseline")
        print(f"{run.slug} lives in {run.folder.path_name if run.folder else '/'}")

        vision.rename("computer-vision")
        print(f"renamed to {vision.path_name}")

        run.move(nlp)
        print(f"moved {run.slug} to {run.folder.path_name if run.folder else '/'}")

        nlp.move(None)
        print(f"moved {nlp.name} to the root: {nlp.path_name}")

        found = sm.Folder.list(path=f"projects-{tag}/computer-vision", session=session)
        print(f"looked up by path: {found}")

        for folder in (projects.refresh(), nlp.refresh()):
            names = [child.name for child in folder.subfolders]
            slugs = [exp.slug for exp in folder.experiments]
            print(f"{folder.path_name}: folders={names} experiments={slugs}")


if __name__ == "__main__":
    main()

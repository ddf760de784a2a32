"""What every command that takes a bag accepts, in one place (stdlib only).

``resolve_bag(path)`` turns any of these into the path a rosbag2 reader (rosbags' ``AnyReader``)
opens:

* a rosbag2 folder (``metadata.yaml`` + ``.mcap`` / ``.db3`` files);
* a drive folder that holds one (``geoloc sim drive --out D`` and ``geoloc data convert`` write
  ``D/bag/``);
* a single ``.mcap`` or ``.db3`` file (read without a ``metadata.yaml``);
* a folder without ``metadata.yaml`` that holds exactly one ``.mcap`` or ``.db3`` file.

Anything else is an ``InvalidArgument`` that says which of these it expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

from .errors import InvalidArgument

BAG_SUFFIXES = (".mcap", ".db3")
BAG_HELP = ("a rosbag2 folder (metadata.yaml + .mcap or .db3), a drive folder holding one in bag/ "
            "(geoloc sim drive --out), or a single .mcap/.db3 file")


def _storage_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in BAG_SUFFIXES)


def resolve_bag(path: Union[str, Path]) -> Path:
    """The rosbag2 folder or storage file ``path`` names (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InvalidArgument(f"bag {path} does not exist")
    if path.is_file():
        if path.suffix in BAG_SUFFIXES:
            return path
        if path.name == "metadata.yaml":
            return path.parent
        raise InvalidArgument(f"{path} is not a bag: expected {BAG_HELP}")
    for folder in (path, path / "bag"):
        if (folder / "metadata.yaml").is_file():
            return folder
    for folder in (path, path / "bag"):
        if folder.is_dir():
            files = _storage_files(folder)
            if len(files) == 1:
                return files[0]
            if len(files) > 1:
                raise InvalidArgument(f"{folder} holds {len(files)} bag files but no metadata.yaml: name one of "
                                      f"{', '.join(f.name for f in files)}")
    raise InvalidArgument(f"{path} is not a bag (no metadata.yaml, no .mcap or .db3 file, no bag/ folder): "
                          f"expected {BAG_HELP}")

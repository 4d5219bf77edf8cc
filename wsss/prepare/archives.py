"""Downloading and unpacking a dataset's published archives, resumably (torchvision's download helpers).

An archive is downloaded to `<name>.part` and renamed once complete, then checked against its published
MD5: a file under its final name is therefore whole, and a wrong checksum means a corrupt or foreign file
(an error that names it), never a download cut short. A `.part` left by a killed run is downloaded again.
Unpacking goes to a staging folder beside the target and is moved into place when complete: a killed
extraction leaves no half tree, and a finished one is not unpacked again.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from wsss.errors import UserError


@dataclass(frozen=True)
class Archive:
    url: str
    filename: str
    md5: str


class PrepareError(UserError):
    """Preparing a dataset failed in a way the user can fix; the message names the file and the fix."""


def fetch(archive: Archive, downloads: Path) -> Path:
    """The archive's path under `downloads`, downloaded first when absent, checked against its MD5."""
    from torchvision.datasets.utils import check_integrity, download_url

    path = Path(downloads) / archive.filename
    if not path.exists():
        part = path.with_name(path.name + ".part")
        part.unlink(missing_ok=True)
        try:
            download_url(archive.url, str(downloads), part.name)
        except Exception as e:  # noqa: BLE001 - network errors of every kind end here
            raise PrepareError(f"downloading {archive.url} failed ({e}); without internet access, place "
                               f"{archive.filename} in {downloads} yourself and run the command again") from e
        os.replace(part, path)
    if not check_integrity(str(path), archive.md5):
        raise PrepareError(f"{path} does not have the published MD5 {archive.md5}: the file is corrupt or not "
                           f"the published archive; delete it and run the command again (it is downloaded anew)")
    return path


def unpack(archive: Archive, downloads: Path, member: str, dest: Path) -> Path:
    """The archive's folder `member` (tar, tgz or zip) as `dest`, or merged into it when `dest` already holds
    another archive's files (COCO's train2014 and val2014 images go into one JPEGImages/). Resumable: the
    archive is unpacked into a staging folder beside `dest` (marked complete once whole), moved file by file,
    and a marker beside `dest` says it is done, so a second run does nothing and does not need the archive
    (it is fetched and checked only when there is something to unpack)."""
    from torchvision.datasets.utils import extract_archive

    dest = Path(dest)
    marker = dest.parent / f".{archive.filename}.unpacked"
    if marker.exists():
        return dest
    staging = dest.parent / f".unpacking-{archive.filename}"
    if not (staging / ".complete").exists():
        archive_path = fetch(archive, downloads)
        shutil.rmtree(staging, ignore_errors=True)  # a killed extraction's leftovers
        staging.mkdir(parents=True)
        try:
            extract_archive(str(archive_path), str(staging))
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:  # its MD5 matched: rare, but say what to do
            shutil.rmtree(staging, ignore_errors=True)
            raise PrepareError(f"unpacking {archive_path} failed ({e}); delete it and run the command again") from e
        except OSError as e:  # disk full, permissions: the archive is fine, keep it
            shutil.rmtree(staging, ignore_errors=True)
            raise PrepareError(f"unpacking {archive_path} into {staging} failed: {e}") from e
        (staging / ".complete").touch()
    inside = staging / member
    if not inside.is_dir() and dest.is_dir():  # moved into place by a run killed before it wrote the marker
        pass
    elif not inside.is_dir():
        raise PrepareError(f"{archive.filename} holds no folder {member}/; is it the right archive?")
    elif not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(inside, dest)
    else:  # merge: move what is not there yet (a killed merge resumes here)
        for path in sorted(inside.rglob("*")):
            target = dest / path.relative_to(inside)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif not target.exists():
                os.replace(path, target)
    marker.touch()
    shutil.rmtree(staging, ignore_errors=True)
    return dest

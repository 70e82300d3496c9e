"""Writing files so that nothing a user saved is ever half-written: write a temporary file in
the same folder, flush it to disk, then rename it over the target in one step. A write that
fails (a full disk, a read-only filesystem...) leaves no temporary file, leaves the target as it
was, and raises one `WriteError` naming the file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ganctl.errors import ConfigError, WriteError

_OS_ERROR = re.compile(r"os error (\d+)")  # how safetensors' (Rust) errors carry errno


def write_error(path: Path, exc: BaseException, temporary: Path | None = None) -> WriteError | None:
    """The `WriteError` an exception from writing `path` stands for: an OSError, or another
    library's error that carries an OS error number (safetensors says "os error 28"); None for
    anything else. An error on `temporary` (the file written in its place) names `path`: the
    user never typed the temporary's name."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError):
        named = exc.filename if exc.filename and str(exc.filename) != str(temporary) else path
        return WriteError(named, exc.errno, exc.strerror or str(exc))
    found = _OS_ERROR.search(str(exc))
    if found:
        code = int(found.group(1))
        return WriteError(path, code, os.strerror(code))
    return None


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` atomically, on any
    error it is removed and `path` is left as it was."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # the folder refuses a new file: name the file asked for, not the temporary
        raise WriteError(path, exc.errno, exc.strerror or str(exc)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _mode_for(path))
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        failed = write_error(path, exc, tmp_path)
        if failed is not None:  # one clear error naming the file, whatever library wrote it
            raise failed from exc
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def check_writable(path: Path, flag: str, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written: a file is made and removed
    in the folder that will hold `path` (`path` itself when `folder`, made if missing). A folder
    that refuses it is one `WriteError` (exit 74) naming `flag` and the path as typed; a parent
    folder that does not exist is bad usage."""
    path = Path(path)
    where = path if folder else path.parent
    try:
        if folder:
            where.mkdir(parents=True, exist_ok=True)
        elif not where.is_dir():
            raise ConfigError(f"{flag} {path}: is in a folder that does not exist ({where})")
        fd, probe = tempfile.mkstemp(prefix=".ganctl-write-test.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError(path, exc.errno, exc.strerror or str(exc), flag) from None


def _mode_for(path: Path) -> int:
    """The permissions `path` would get from a plain open(): its current ones when it exists,
    else 0o666 less the umask. (mkstemp makes 0o600 files, which would hide a user's pictures
    and checkpoints from their group.)"""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        write(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_safe(value: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """`value` as strict JSON allows it (RFC 8259 has no NaN or Infinity): every non-finite float
    becomes None, and the second result says where and why ({"metrics.kid_std": "NaN"}), so a
    reader is told that a number is undefined rather than handed a token its parser refuses."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, {path or ".": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, dict):
        out, undefined = {}, {}
        for k, v in value.items():
            out[k], more = json_safe(v, f"{path}.{k}" if path else str(k))
            undefined.update(more)
        return out, undefined
    if isinstance(value, (list, tuple)):
        pairs = [json_safe(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in pairs], {k: r for _, more in pairs for k, r in more.items()}
    return value, {}


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON of `value` (`json_safe`); a dict that held undefined numbers also says which,
    under "undefined"."""
    clean, undefined = json_safe(value)
    if undefined and isinstance(clean, dict):
        clean["undefined"] = {**clean.get("undefined", {}), **undefined}
    return json.dumps(clean, allow_nan=False, **kwargs)

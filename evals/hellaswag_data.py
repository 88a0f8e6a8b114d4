"""HellaSwag (Zellers et al. 2019) validation set: download, cache, parse, and render for a causal LM.

The file is the public `hellaswag_val.jsonl` (10,042 examples, about 11 MB) that llm.c and nanochat
download from the dataset's GitHub repository. Each line holds a context `ctx`, four `endings` and the
`label` of the right one. Rendering follows llm.c's completion-style eval: for each ending the model
reads `ctx` followed by `" " + ending` (GPT-2 tokens) and only the ending's tokens are scored.

Download (`ensure_val_file`): into `<cache>/hellaswag_val.jsonl.part` with `Range: bytes=N-`, so an
interrupted transfer resumes where it stopped (also across runs; a server that ignores Range restarts
the file), with a few in-process retries; the finished part is parsed and counted before it is renamed
to its final name, so a torn or wrong file never appears there. No network: one error line naming
`--data FILE` and the cache path to copy the file to.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
FILE_NAME = "hellaswag_val.jsonl"
VAL_EXAMPLES = 10042
CHUNK = 1 << 16


class HellaSwagError(RuntimeError):
    """The data cannot be obtained or read; the message says how to provide it."""


@dataclass(frozen=True)
class Example:
    ctx: str
    endings: tuple[str, str, str, str]
    label: int  # index of the right ending


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/nanogpt-speedrun/hellaswag (~/.cache/... when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "nanogpt-speedrun" / "hellaswag"


def parse_examples(path: Path) -> list[Example]:
    """Every example of a HellaSwag jsonl file; a malformed line is an error naming it."""
    examples = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise HellaSwagError(f"cannot read HellaSwag file {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            endings, label = tuple(str(e) for e in row["endings"]), int(row["label"])
            if len(endings) != 4 or not 0 <= label < 4:
                raise ValueError("needs 4 endings and a label in 0..3")
            examples.append(Example(str(row["ctx"]), endings, label))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError) as e:
            raise HellaSwagError(f"{path} line {n} is not a HellaSwag example (ctx, 4 endings, label): {e}") from None
    if not examples:
        raise HellaSwagError(f"{path} holds no HellaSwag examples")
    return examples


def render(example: Example, encode: Callable[[str], list[int]]) -> tuple[list[int], list[list[int]]]:
    """(context tokens, tokens of each of the four endings, each with its leading space)."""
    return encode(example.ctx), [encode(" " + ending) for ending in example.endings]


def ensure_val_file(cache_dir: Path, url: str = URL, *, retries: int = 3, timeout: float = 30.0,
                    progress: bool = True, expected_examples: int = VAL_EXAMPLES) -> Path:
    """The cached validation file, downloading it first if needed (see the module docstring); the download
    must parse into `expected_examples` examples before it takes the final name."""
    final = Path(cache_dir) / FILE_NAME
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(FILE_NAME + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except _Transient as e:
            if attempt == retries:
                raise HellaSwagError(f"downloading {url} failed {retries + 1} times ({e}); rerun to resume from "
                                     f"{part.stat().st_size if part.exists() else 0} bytes, or download it elsewhere "
                                     f"and pass --data FILE") from None
            time.sleep(min(2.0 ** attempt, 10.0))
    try:
        count = len(parse_examples(part))
    except HellaSwagError as e:
        count, why = 0, str(e)
    else:
        why = f"{count} examples, not HellaSwag val's {expected_examples}"
    if count != expected_examples:
        part.unlink()
        raise HellaSwagError(f"the download from {url} is not the HellaSwag val file ({why}); it was removed: "
                             "rerun to download it again, or pass --data FILE")
    os.replace(part, final)
    return final


class _Transient(Exception):
    """A dropped connection or a 5xx: worth retrying (resuming)."""


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    import requests  # imported here: parsing a local file needs no HTTP stack

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        r = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as e:
        if offset:  # it worked before: a drop, not a machine without network
            raise _Transient(_first_line(e)) from None
        raise HellaSwagError(f"cannot reach {url} ({_first_line(e)}): offline? Download {FILE_NAME} on a machine "
                             f"with network and pass --data FILE, or copy it to {part.with_name(FILE_NAME)}") from None
    with r:
        if r.status_code == 416:  # the part is not a prefix the server knows: start over
            part.unlink(missing_ok=True)
            raise _Transient("server refused the resume range (416); restarting")
        if r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise HellaSwagError(f"{url} answered HTTP {r.status_code}; pass a local copy with --data FILE")
        if r.status_code == 200:
            offset = 0  # the server ignored Range: the body is the whole file
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        bar = _bar(total, offset, progress)
        try:
            with open(part, "ab" if offset else "wb") as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except requests.RequestException as e:  # a dropped connection, a short body, a read timeout
            raise _Transient(_first_line(e)) from None
        finally:
            bar.close()
    if total is not None and part.stat().st_size != total:
        raise _Transient(f"got {part.stat().st_size} of {total} bytes")


def _bar(total: int | None, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, desc=FILE_NAME, disable=not enabled)


def _first_line(e: BaseException) -> str:
    """A short reason: urllib3's underlying one when requests wraps it (name resolution, refused, ...)."""
    reason = getattr(e.args[0], "reason", None) if e.args else None
    if isinstance(reason, BaseException):
        e = reason
    text = str(e).split(">: ", 1)[-1].strip().splitlines()  # drop urllib3's "<...Connection object at 0x..>: "
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__

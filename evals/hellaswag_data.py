"""HellaSwag (Zellers et al. 2019) validation set: download, cache, parse, and render for a causal LM.

The file is the public `hellaswag_val.jsonl` (10,042 examples, about 11 MB) that llm.c and nanochat
download from the dataset's GitHub repository. Each line holds a context `ctx`, four `endings` and the
`label` of the right one. Rendering follows llm.c's completion-style eval: for each ending the model
reads `ctx` followed by `" " + ending` (GPT-2 tokens) and only the ending's tokens are scored.

Download (`ensure_val_file`): the harness's one resumable transfer (data/prep/http_download.py: an
interrupted download resumes where it stopped, also across runs, with in-process retries); the finished
part is parsed and counted before it is renamed to its final name, so a torn or wrong file never appears
there. No network: one error line naming `--data FILE` and the cache path to copy the file to.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from data.prep.http_download import DownloadError, RemoteFile, Unreachable, download

URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
FILE_NAME = "hellaswag_val.jsonl"
VAL_EXAMPLES = 10042


class HellaSwagError(DownloadError):
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

    def verify(part: Path) -> None:
        try:
            count = len(parse_examples(part))
        except HellaSwagError as e:
            count, why = 0, str(e)
        else:
            why = f"{count} examples, not HellaSwag val's {expected_examples}"
        if count != expected_examples:
            raise HellaSwagError(f"the download from {url} is not the HellaSwag val file ({why}); it was removed: "
                                 "rerun to download it again, or pass --data FILE")

    bar = _bar(progress)
    try:
        download(RemoteFile(FILE_NAME, url, url, etag=None, size=None), final, timeout=timeout, verify=verify,
                 retries=retries, give_up_unreachable=True, progress=bar.update_to)
    except Unreachable as e:
        raise HellaSwagError(f"{e}: offline? Download {FILE_NAME} on a machine with network and pass --data FILE, "
                             f"or copy it to {final}") from None
    except DownloadError as e:
        raise HellaSwagError(f"{e}; or download it elsewhere and pass --data FILE") from None
    finally:
        bar.close()
        with contextlib.suppress(OSError):  # the transfer's work folder, once empty (kept while a part waits)
            (final.parent / ".download").rmdir()
    return final


def _bar(enabled: bool):
    """A tqdm byte counter fed by the transfer's progress(done, total) calls."""
    from tqdm import tqdm

    bar = tqdm(unit="B", unit_scale=True, desc=FILE_NAME, disable=not enabled)

    def update_to(done: int, total: int | None) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    bar.update_to = update_to
    return bar

"""Download the speedrun's pre-tokenized FineWeb shards from the Hugging Face hub.

    python -m data.prep.fineweb download --dataset fineweb10B --train-shards 9 --out DIR
    python -m data.prep.fineweb verify DIR

`download` fetches `{prefix}_val_000000.bin` and the first N train shards
(`{prefix}_train_000001.bin`, ...; 100M tokens, about 200 MB each; fineweb10B has
103). Files already complete in DIR are skipped without touching the network;
interrupted ones resume (see data/prep/hub_download.py); every file is verified (size,
sha256 against the hub's ETag, shard header: magic, version, token count vs file
size) before it gets its final name. Respects HF_ENDPOINT (mirrors), HF_TOKEN
(or a saved `hf auth login`) and HF_HUB_OFFLINE; when offline or the hub is out
of reach it says so in one line and exits 1.
"""
from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import exit_codes
from data.prefetch import check_vocab
from data.prep.hub_download import (
    DownloadError,
    HubUnreachable,
    RemoteFile,
    download,
    hub_endpoint,
    offline_mode,
    resolve,
)
from data.shards import ShardError, open_shard, read_header


@dataclass(frozen=True)
class Dataset:
    repo: str
    prefix: str  # file names: {prefix}_val_000000.bin, {prefix}_train_000001.bin, ...


DATASETS = {
    "fineweb10B": Dataset("kjj0/fineweb10B-gpt2", "fineweb"),
    "finewebedu10B": Dataset("kjj0/finewebedu10B-gpt2", "finewebedu"),
    "fineweb100B": Dataset("kjj0/fineweb100B-gpt2", "fineweb"),
}


def shard_names(prefix: str, train_shards: int) -> list[str]:
    return [f"{prefix}_val_{0:06d}.bin"] + [f"{prefix}_train_{i:06d}.bin" for i in range(1, train_shards + 1)]


def _complete(path: Path) -> bool:
    """True if `path` is a valid shard; a corrupt one is removed (with a note) so it gets downloaded again."""
    if not path.exists():
        return False
    try:
        read_header(path)
        return True
    except ShardError as e:
        print(f"{path.name} is not a valid shard ({e}); downloading it again", file=sys.stderr)
        path.unlink()
        return False


class _Progress:
    """One byte-progress bar over all files, fed from download threads."""

    def __init__(self, total: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="downloading",
                        disable=not enabled, dynamic_ncols=True)
        self.done: dict[str, int] = {}
        self.lock = threading.Lock()
        self.cancel = threading.Event()

    def callback(self, name: str):
        def update(done: int, total: int | None) -> None:
            if self.cancel.is_set():
                raise KeyboardInterrupt  # not an Exception: download() lets it through, keeping the part
            with self.lock:
                self.bar.update(done - self.done.get(name, 0))
                self.done[name] = done
        return update


def download_shards(dataset: str, train_shards: int, out: str | Path, *, revision: str = "main",
                    prefix: str | None = None, jobs: int = 4, retries: int = 5, retry_wait: float = 1.0,
                    progress: bool = True) -> dict:
    """Make `out` hold the val shard and the first `train_shards` train shards, verified.

    Returns {"present": [...], "downloaded": [...]}. Raises HubUnreachable (offline /
    no network) or DownloadError (a file failed; others are still completed).
    """
    if dataset not in DATASETS:
        raise DownloadError(f"unknown --dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if train_shards < 0:
        raise DownloadError(f"--train-shards must be >= 0, got {train_shards}")
    spec = DATASETS[dataset]
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    names = shard_names(prefix or spec.prefix, train_shards)
    present = [n for n in names if _complete(out / n)]
    missing = [n for n in names if n not in present]
    if missing and offline_mode():
        raise HubUnreachable(f"HF_HUB_OFFLINE is set and {len(missing)} of {len(names)} files are missing in {out} "
                             f"({missing[0]}, ...): unset HF_HUB_OFFLINE to download them, or copy them there")
    errors: list[str] = []
    downloaded: list[str] = []
    remotes: list[RemoteFile] = []
    pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="download")
    bar = None
    try:
        # one HEAD first: when the hub is out of reach, say so at once instead of timing out per file
        results = [_try(resolve, spec.repo, missing[0], revision)] if missing else []
        if results and isinstance(results[0], HubUnreachable):
            raise results[0]
        results += pool.map(lambda n: _try(resolve, spec.repo, n, revision), missing[1:])
        for result in results:
            if isinstance(result, HubUnreachable):
                raise result
            if isinstance(result, DownloadError):
                errors.append(str(result))
            else:
                remotes.append(result)
        bar = _Progress(sum(r.size or 0 for r in remotes), progress and bool(remotes))

        def fetch(remote: RemoteFile):
            return _try(download, remote, out / remote.filename, verify=read_header, retries=retries,
                        retry_wait=retry_wait, progress=bar.callback(remote.filename))

        for remote, result in zip(remotes, pool.map(fetch, remotes)):
            if isinstance(result, DownloadError):
                errors.append(str(result))
            else:
                downloaded.append(remote.filename)
                bar.bar.write(f"{remote.filename}: {read_header(result).num_tokens:,} tokens, verified")
    except BaseException:
        if bar is not None:
            bar.cancel.set()  # running transfers stop at their next chunk; their parts stay for resuming
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if bar is not None:
            bar.bar.close()
    try:
        (out / ".download").rmdir()  # only when empty: partial files stay for the next run
    except OSError:
        pass
    if errors:
        raise DownloadError("; ".join(errors) if len(errors) == 1 else
                            f"{len(errors)} files failed: " + " | ".join(errors))
    return {"present": present, "downloaded": downloaded, "out": str(out), "prefix": prefix or spec.prefix}


def _try(fn, *args, **kwargs):
    """Run fn; return a DownloadError instead of raising it (pool.map would stop at the first)."""
    try:
        return fn(*args, **kwargs)
    except DownloadError as e:
        return e


def verify_folder(folder: str | Path, vocab_size: int = 50257) -> list[str]:
    """Check every *.bin shard in `folder` (header, size, vocab sample); return the problems."""
    problems = []
    files = sorted(Path(folder).glob("*.bin"))
    if not files:
        return [f"{folder} holds no .bin shards"]
    for f in files:
        try:
            check_vocab(open_shard(f), vocab_size, f)
        except ShardError as e:
            problems.append(str(e))
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data.prep.fineweb", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download pre-tokenized shards from the hub")
    d.add_argument("--dataset", default="fineweb10B", choices=sorted(DATASETS))
    d.add_argument("--train-shards", type=int, default=9, help="how many train shards (100M tokens each)")
    d.add_argument("--out", required=True, help="folder for the shards (use it as data.dir)")
    d.add_argument("--revision", default="main", help="branch, tag or commit of the dataset repo")
    d.add_argument("--prefix", default=None, help="file name prefix, if not the dataset's usual one")
    d.add_argument("--jobs", type=int, default=4, help="parallel downloads (default 4)")
    d.add_argument("--retries", type=int, default=5, help="retries per file without progress (default 5)")
    d.add_argument("--no-progress", action="store_true")
    v = sub.add_parser("verify", help="check every shard in a folder")
    v.add_argument("dir")
    v.add_argument("--vocab-size", type=int, default=50257)
    args = p.parse_args(argv)
    if args.cmd == "verify":
        problems = verify_folder(args.dir, args.vocab_size)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        print("all shards valid" if not problems else f"{len(problems)} problem(s)")
        return exit_codes.ERROR if problems else exit_codes.OK

    def run() -> int:
        r = download_shards(args.dataset, args.train_shards, args.out, revision=args.revision, prefix=args.prefix,
                            jobs=args.jobs, retries=args.retries, progress=not args.no_progress)
        print(f"{len(r['present']) + len(r['downloaded'])} shards in {r['out']} ({len(r['downloaded'])} downloaded from "
              f"{hub_endpoint()}, {len(r['present'])} already there): train with data.dir={r['out']}"
              + ("" if r["prefix"] == "fineweb" else
                 f" data.train_pattern='{r['prefix']}_train_*.bin' data.val_pattern='{r['prefix']}_val_*.bin'"))
        return exit_codes.OK

    return exit_codes.run_command(run, (DownloadError,),
                                  f"partial files in {args.out}/.download resume on the next run")


if __name__ == "__main__":
    sys.exit(main())

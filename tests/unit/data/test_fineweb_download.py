"""`python -m data.prep.fineweb download` end to end against a fake hub on 127.0.0.1 (HF_ENDPOINT)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from data.prep.fineweb import download_shards, main
from data.prep.hub_download import DownloadError, HubUnreachable
from data.shards import write_shard
from tests.support.fake_hub import FakeHub

REPO = "kjj0/fineweb10B-gpt2"


def shard_bytes(tmp: Path, name: str, n_tokens: int, seed: int) -> bytes:
    tokens = np.random.default_rng(seed).integers(0, 50257, n_tokens).astype(np.uint16)
    return write_shard(tmp / "src" / name, tokens).path.read_bytes()


@pytest.fixture(autouse=True)
def no_user_hub_settings(monkeypatch):
    """The user's HF_HUB_OFFLINE / HF_ENDPOINT / HF_TOKEN must not reach these tests (the README tells offline
    users to set HF_HUB_OFFLINE=1). huggingface_hub also reads HF_HUB_OFFLINE and HF_ENDPOINT once, at import, into
    `constants`, which its URLs and HTTP layer use: those are reset too. Each test sets what it needs."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", constants._HF_DEFAULT_ENDPOINT)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        constants._HF_DEFAULT_ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as hub:
        names = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in (1, 2, 3)]
        hub.content = {n: shard_bytes(tmp_path, n, 150_000 + 1000 * i, i) for i, n in enumerate(names)}
        for n, c in hub.content.items():
            hub.add(REPO, n, c)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
        yield hub


def fetch(out, n=3, **kw):
    return download_shards("fineweb10B", n, out, retry_wait=0, progress=False, **kw)


def test_cli_downloads_verifies_then_skips(hub, tmp_path, capsys, monkeypatch):
    out = tmp_path / "shards"
    assert main(["download", "--dataset", "fineweb10B", "--train-shards", "2", "--out", str(out), "--no-progress"]) == 0
    for n in ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]:
        assert (out / n).read_bytes() == hub.content[n]
    assert not (out / "fineweb_train_000003.bin").exists() and not (out / ".download").exists()
    heads = hub.requests("HEAD", f"/datasets/{REPO}/resolve/main/")
    assert len(heads) == 3 and all(h[2].get("authorization") == "Bearer hf_testtoken" for h in heads)
    gets = hub.requests("GET", "/cdn/")
    assert len(gets) == 3 and all("authorization" not in {k.lower() for k in g[2]} for g in gets)  # not to the CDN
    assert "3 shards" in capsys.readouterr().out
    # complete files are skipped without a single request, even offline
    n_requests = len(hub.log)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "--train-shards", "2", "--out", str(out), "--no-progress"]) == 0
    assert len(hub.log) == n_requests and "0 downloaded" in capsys.readouterr().out


def test_transfer_cut_halfway_resumes_with_range(hub, tmp_path):
    name = "fineweb_train_000002.bin"
    hub.cut[name] = 1
    fetch(tmp_path / "o")
    size = len(hub.content[name])
    gets = hub.requests("GET", f"/cdn/{name}/")
    assert [g[2].get("Range") for g in gets] == [None, f"bytes={size // 2}-"]
    assert (tmp_path / "o" / name).read_bytes() == hub.content[name]


def test_interrupted_run_resumes_in_the_next_run(hub, tmp_path):
    name = "fineweb_train_000001.bin"
    hub.cut[name], hub.fail[name] = 1, 100  # half the file arrives, then the server keeps failing
    out = tmp_path / "o"
    with pytest.raises(DownloadError, match=f"{name} interrupted at byte .* run the same command again to resume"):
        fetch(out, retries=1)
    assert not (out / name).exists()  # never a partial file under the final name
    part = out / ".download" / f"{name}.part"
    half = len(hub.content[name]) // 2
    assert part.stat().st_size == half
    assert (out / "fineweb_train_000002.bin").exists()  # the other files completed
    hub.fail[name] = 0
    fetch(out)
    assert hub.requests("GET", f"/cdn/{name}/")[-1][2].get("Range") == f"bytes={half}-"
    assert (out / name).read_bytes() == hub.content[name] and not (out / ".download").exists()


def test_part_of_another_version_is_discarded(hub, tmp_path):
    name = "fineweb_train_000001.bin"
    work = tmp_path / "o" / ".download"
    work.mkdir(parents=True)
    (work / f"{name}.part").write_bytes(b"x" * 1000)
    (work / f"{name}.part.json").write_text('{"etag": "an-older-version"}')
    fetch(tmp_path / "o", n=1)
    assert hub.requests("GET", f"/cdn/{name}/")[-1][2].get("Range") is None
    assert (tmp_path / "o" / name).read_bytes() == hub.content[name]


def test_server_ignoring_range_restarts_cleanly(hub, tmp_path):
    name = "fineweb_val_000000.bin"
    hub.cut[name], hub.ignore_range = 1, True
    fetch(tmp_path / "o", n=0)
    assert (tmp_path / "o" / name).read_bytes() == hub.content[name]


def test_corrupt_transfer_never_gets_the_final_name(hub, tmp_path):
    name = "fineweb_train_000003.bin"
    good = hub.content[name]
    hub.serve[name] = good[:2000] + bytes(len(good) - 2000)  # same size, wrong bytes
    with pytest.raises(DownloadError, match=f"{name}: sha256 of the downloaded bytes does not match"):
        fetch(tmp_path / "o")
    assert not (tmp_path / "o" / name).exists() and not (tmp_path / "o" / ".download" / f"{name}.part").exists()
    del hub.serve[name]
    fetch(tmp_path / "o")  # a rerun repairs it
    assert (tmp_path / "o" / name).read_bytes() == good


def test_corrupt_file_on_the_hub_is_rejected(hub, tmp_path):
    name = "fineweb_train_000002.bin"
    hub.add(REPO, name, hub.content[name][:-10])  # header promises more tokens than the file holds
    with pytest.raises(DownloadError, match=f"{name} from .* is not a valid file: .*header promises"):
        fetch(tmp_path / "o")
    assert not (tmp_path / "o" / name).exists()


def test_corrupt_local_file_is_downloaded_again(hub, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    name = "fineweb_val_000000.bin"
    (out / name).write_bytes(hub.content[name][:5000])  # e.g. a copy that was cut short
    fetch(out, n=0)
    assert (out / name).read_bytes() == hub.content[name]
    assert "not a valid shard" in capsys.readouterr().err


def test_missing_file_and_missing_repo(hub, tmp_path):
    with pytest.raises(DownloadError, match="has no file fineweb_train_000005.bin .*lower --train-shards"):
        fetch(tmp_path / "o", n=5)
    assert (tmp_path / "o" / "fineweb_train_000003.bin").exists()
    with pytest.raises(DownloadError, match="kjj0/fineweb100B-gpt2@main is not accessible"):
        download_shards("fineweb100B", 1, tmp_path / "p", progress=False)


def test_offline_is_one_clear_line(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "--train-shards", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HF_HUB_OFFLINE is set and 3 of 3 files are missing" in err
    assert hub.log == []


def test_unreachable_hub_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["download", "--train-shards", "50", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the Hugging Face hub at http://127.0.0.1:9" in err
    with pytest.raises(HubUnreachable):
        fetch(tmp_path / "o")


def test_fake_hub_speaks_the_protocol_huggingface_hub_expects(hub, tmp_path):
    """huggingface_hub's own hf_hub_download accepts the fake hub: the stand-in is faithful."""
    from huggingface_hub import hf_hub_download

    name = "fineweb_train_000001.bin"
    path = hf_hub_download(REPO, name, repo_type="dataset", local_dir=tmp_path / "hf", endpoint=hub.endpoint)
    assert Path(path).read_bytes() == hub.content[name]

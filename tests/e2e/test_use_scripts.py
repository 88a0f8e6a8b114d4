"""As a user runs them: train a GPT-2-vocabulary model on the FineWeb sample, then `python -m inference.sample`
and `python -m evals.hellaswag` on its run folder (subprocesses; needs ../shared)."""
import json
import subprocess
import sys

import pytest

from tests.conftest import FINEWEB_TOKENS, REPO, SHARED, needs_fineweb, run_train

BPE = SHARED / "tokenizer" / "gpt2.tiktoken"
pytestmark = [pytest.mark.e2e, needs_fineweb,
              pytest.mark.skipif(not BPE.is_file(), reason="../shared GPT-2 tokenizer not present")]

# Three HellaSwag-style examples (our own text, the val file's format).
EXAMPLES = [
    {"ctx": "She poured the coffee into the cup and", "label": 0,
     "endings": ["added some milk.", "threw the car.", "the mountain sang.", "blue seven quickly."]},
    {"ctx": "The man put on his running shoes and", "label": 1,
     "endings": ["ate the door.", "went for a run in the park.", "the sky is fork.", "swam in the toaster."]},
    {"ctx": "After the rain stopped, the children", "label": 2,
     "endings": ["melted into soup.", "is a green.", "ran outside to play in the puddles.", "of the the."]},
]


def module(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": "/tmp"})


@pytest.fixture(scope="module")
def fineweb_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fineweb") / "run"
    proc = run_train("experiment=cpu_fineweb", f"data.dir={FINEWEB_TOKENS}", "model=tiny", "train.max_steps=3",
                     "train.val_every=0", "train.val_tokens=8192", "train.global_batch_tokens=1024",
                     "train.micro_batch_seqs=4", f"data.tokenizer_bpe={BPE}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_sample_prints_text_continuing_the_prompt(fineweb_run):
    proc = module("inference.sample", str(fineweb_run), "--prompt", "The weather today", "--max-new-tokens", "12",
                  "--num-samples", "2", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "--- sample 1/2" and lines[1].startswith("The weather today") and len(lines[1]) > 17
    assert f"model: {fineweb_run / 'final_weights.pt'} (step 3, " in proc.stderr
    again = module("inference.sample", str(fineweb_run), "--prompt", "The weather today", "--max-new-tokens", "12",
                   "--num-samples", "2", "--seed", "3")
    assert again.stdout == proc.stdout


def test_eval_hellaswag_on_a_local_file_and_offline(fineweb_run, tmp_path):
    data = tmp_path / "hs.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    out = tmp_path / "hs.json"
    proc = module("evals.hellaswag", str(fineweb_run), "--data", str(data), "--batch-size", "2",
                  "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["examples"] == 3 and result["correct"] in range(4) and result["acc"] == result["correct"] / 3
    assert proc.stdout.strip() == (f"hellaswag: 3 examples | acc {result['acc']:.4f} | acc_norm "
                                   f"{result['acc_norm']:.4f} | model {fineweb_run / 'final_weights.pt'} (step 3)")
    offline = module("evals.hellaswag", str(fineweb_run), "--cache-dir", str(tmp_path / "cache"),
                     "--url", "http://127.0.0.1:9/hellaswag_val.jsonl", "--no-progress")
    assert offline.returncode == 2
    errors = [line for line in offline.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "--data FILE" in errors[0]

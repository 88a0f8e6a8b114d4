"""HellaSwag eval: accuracy on a hand-counted fixture (a stub model whose losses are known), the scoring
against a direct per-ending computation on a real tiny GPT, and the download (resume, atomic, offline)."""
import http.server
import json
import threading

import pytest
import torch

from evals.hellaswag import batch_rows, ending_losses, evaluate
from evals.hellaswag_data import FILE_NAME, Example, HellaSwagError, ensure_val_file, parse_examples
from model.config import ModelConfig
from model.gpt import GPT

# Character tokens: ' ' -> 0, 'a' -> 1, ..., 'z' -> 26.
encode = lambda text: [0 if ch == " " else ord(ch) - 96 for ch in text]  # noqa: E731
V = 27


class StubModel:
    """Logits -v for token v at every position: token v costs v + c nats, c = log(sum_u e^-u) ~ 0.4587,
    whatever the context. An ending e (scored with its leading space, token 0) has summed loss
    sum(ids(e)) + c (len(e) + 1) and per-token loss that divided by len(e) + 1."""

    def __call__(self, idx):
        return (-torch.arange(V, dtype=torch.float32)).expand(*idx.shape, V).clone()


# (endings, label), and what the stub picks by summed loss (acc) and by per-token loss (acc_norm):
#   a/b/c/d:             sums 1+2c < 2+2c < ...                   -> sum a, mean a
#   aaaa/c/bb/d:         sums 4+5c=6.29, 3+2c=3.92, 4+3c=5.38, 4+2c=4.92 -> sum c;
#                        means 1.26, 1.96, 1.79, 2.46              -> mean aaaa
#   z/y/x/w:             smallest id w                             -> sum w, mean w
#   b/a/c/e:                                                       -> sum a, mean a
#   dddd/aaaaaaaa/zz/m:  sums 18.3, 12.1, 53.4, 13.9; means 3.66, 1.35, 17.8, 6.96 -> aaaaaaaa both
FIXTURE = [
    (["a", "b", "c", "d"], 0),              # acc yes, acc_norm yes
    (["aaaa", "c", "bb", "d"], 0),          # acc no (c),   acc_norm yes
    (["aaaa", "c", "bb", "d"], 1),          # acc yes,      acc_norm no (aaaa)
    (["z", "y", "x", "w"], 2),              # acc no (w),   acc_norm no (w)
    (["b", "a", "c", "e"], 1),              # acc yes,      acc_norm yes
    (["dddd", "aaaaaaaa", "zz", "m"], 1),   # acc yes,      acc_norm yes
    (["aaaa", "c", "bb", "d"], 0),          # acc no (c),   acc_norm yes
]
HAND_COUNT = {"correct": 4, "correct_norm": 5}  # column sums of the comments above


def write_fixture(path, contexts=("the cat sat on", "a man is"), repeat=1):
    lines = [json.dumps({"ctx": contexts[i % len(contexts)], "endings": endings, "label": label,
                         "ind": i, "split": "val"}) for i, (endings, label) in enumerate(FIXTURE * repeat)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_accuracy_on_the_fixture_equals_the_hand_count(tmp_path):
    examples = parse_examples(write_fixture(tmp_path / "hs.jsonl"))
    for batch_size in (1, 3, 7):  # batching and padding change nothing
        result = evaluate(StubModel(), examples, encode, block_size=64, batch_size=batch_size, progress=False)
        assert (result["correct"], result["correct_norm"]) == (HAND_COUNT["correct"], HAND_COUNT["correct_norm"])
        assert result["acc"] == pytest.approx(4 / 7) and result["acc_norm"] == pytest.approx(5 / 7)
    # the context is never scored: another context gives the same answers
    other = parse_examples(write_fixture(tmp_path / "hs2.jsonl", contexts=("zzzzzzzzzzzz",)))
    assert evaluate(StubModel(), other, encode, block_size=64, progress=False)["correct_norm"] == 5


def test_scores_match_a_direct_per_ending_computation_on_a_real_model():
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=V, block_size=32)).eval()
    examples = [Example("the cat sat", ("on the mat", "up", "a b c d e f", "zz"), 0),
                Example("a much longer context here", ("x", "yy", "z", "quiet"), 3)]
    idx, mask = batch_rows(examples, encode, block_size=32)
    summed, mean = ending_losses(model, idx, mask)
    for row, (ex, k) in enumerate((ex, k) for ex in examples for k in range(4)):
        ctx, end = encode(ex.ctx), encode(" " + ex.endings[k])
        tokens = torch.tensor([ctx + end])
        with torch.no_grad():
            logp = torch.log_softmax(model(tokens)[0], dim=-1)  # alone: no batch, no padding
        direct = -sum(logp[len(ctx) + j - 1, tok] for j, tok in enumerate(end))
        assert summed[row] == pytest.approx(float(direct), abs=1e-4)
        assert mean[row] == pytest.approx(float(direct) / len(end), abs=1e-4)


def test_rows_longer_than_the_model_lose_context_from_the_left():
    idx, mask = batch_rows([Example("abcdefghij", ("xy", "x", "x", "x"), 0)], encode, block_size=6)
    assert idx[0].tolist() == encode("hij xy") and mask[0].tolist() == [False, False, True, True, True]


def test_bad_lines_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"ctx": "a", "endings": ["b", "c", "d", "e"], "label": 1}) + "\n"
                    + json.dumps({"ctx": "a", "endings": ["b"], "label": 0}) + "\n")
    with pytest.raises(HellaSwagError, match="bad.jsonl line 2 is not a HellaSwag example"):
        parse_examples(path)


# ---- download ------------------------------------------------------------------------------------

class Server(http.server.BaseHTTPRequestHandler):
    """Serves `payload`, honouring `Range: bytes=N-`; the first `drops` responses stop halfway."""
    payload, drops, seen = b"", 0, []

    def do_GET(self):  # noqa: N802
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        Server.seen.append(start)
        body = Server.payload[start:]
        self.send_response(206 if start else 200)
        if start:  # RFC 9110: a 206 names the range it holds
            self.send_header("Content-Range", f"bytes {start}-{len(Server.payload) - 1}/{len(Server.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if Server.drops:
            Server.drops -= 1
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    # 3,000 x 7 examples, ~400 KB: a drop halfway has several 64 KiB reads on disk to resume from
    Server.payload, Server.drops, Server.seen = write_fixture(tmp_path / "src.jsonl", repeat=3000).read_bytes(), 0, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/{FILE_NAME}"
    httpd.shutdown()


def test_download_resumes_after_a_drop_and_appears_only_complete(tmp_path, server):
    Server.drops = 1
    path = ensure_val_file(tmp_path / "cache", server, progress=False, expected_examples=3000 * len(FIXTURE))
    assert path.read_bytes() == Server.payload
    assert len(Server.seen) == 2 and Server.seen[0] == 0 and 0 < Server.seen[1] <= len(Server.payload) // 2
    assert sorted(p.name for p in path.parent.iterdir()) == [FILE_NAME]
    assert ensure_val_file(tmp_path / "cache", server, progress=False) == path and len(Server.seen) == 2  # cached


def test_a_download_that_is_not_the_val_set_never_takes_the_name(tmp_path, server):
    with pytest.raises(HellaSwagError, match="not the HellaSwag val file .21000 examples, not HellaSwag val's 10042"):
        ensure_val_file(tmp_path / "cache", server, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_is_one_line_naming_data_and_the_cache(tmp_path):
    with pytest.raises(HellaSwagError) as err:
        ensure_val_file(tmp_path / "cache", "http://127.0.0.1:9/hellaswag_val.jsonl", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "--data FILE" in msg and str(tmp_path / "cache" / FILE_NAME) in msg

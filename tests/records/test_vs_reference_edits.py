"""benchmarks/vs_reference's edits apply to every record script a track-1 reference: block names (skipped
without ../shared): stop after N steps, set the validation tokens, the GPU plan."""
import ast
import warnings

import pytest

from analysis.records import experiments_with_reference, reference_of
from benchmarks.vs_reference.run import VsReferenceError, edit_script, gpu_plan, script_field
from tests.records.expected import EXPECTED
from tests.support.reference_scripts import REF_DIR

RECORDS = [r for r in experiments_with_reference(track=1) if EXPECTED[r].script is not None]


@pytest.mark.skipif(not REF_DIR.is_dir(), reason="../shared reference scripts not present")
@pytest.mark.parametrize("record", RECORDS)
def test_edits_apply_to_every_record_script(record):
    text = (REF_DIR / reference_of(record).script).read_text()
    script = EXPECTED[record].script
    edited, edits = edit_script(text, 100, 393216)
    assert len(edits) == 2 and edited.count("or step == 100  # vs_reference") == 1
    assert script_field(edited, "val_tokens") == 393216 and script_field(edited, "num_iterations") > 100
    with warnings.catch_warnings():  # the scripts' own docstrings hold escapes like '\s'
        warnings.simplefilter("ignore")
        ast.parse(edited)
    plan = gpu_plan(text, 1)
    assert script.one_gpu_plan in plan
    with pytest.raises(VsReferenceError, match="--gpus 3: use 1, 2, 4 or 8"):
        gpu_plan(text, 3)
    if script.passes_compile_kw:  # a torch whose create_block_mask lost `_compile`: one more edit
        edited, edits = edit_script(text, 100, None, compile_kw=False)
        assert "_compile" not in edited and "no `_compile` argument" in edits[0]

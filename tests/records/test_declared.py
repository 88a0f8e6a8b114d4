"""A record is declared once: the experiment files' `reference:` blocks and the test data (expected.py) name the
same results, the blocks survive composition unchanged, and what they point at exists."""
import pytest

from analysis.records import EXPERIMENTS_DIR, experiments_with_reference, reference_of
from tests.conftest import SHARED
from tests.records.expected import EXPECTED, Track1, Track3
from tests.support.inprocess import compose_config

RECORDS = experiments_with_reference()
EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
SCRIPTS = SHARED / "reference" / "modded-nanogpt"


def test_every_reference_has_test_data_and_all_test_data_a_reference():
    declared, expected = set(RECORDS), set(EXPECTED)
    assert not declared - expected, f"experiments with a reference: block but no entry in tests/records/expected.py: " \
                                    f"{sorted(declared - expected)}"
    assert not expected - declared, f"entries in tests/records/expected.py without a reference: block in " \
                                    f"configs/experiment/: {sorted(expected - declared)}"


@pytest.mark.parametrize("experiment", RECORDS)
def test_test_data_is_of_the_records_track(experiment):
    assert isinstance(EXPECTED[experiment], {1: Track1, 3: Track3}[reference_of(experiment).track])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_composed_config_carries_the_files_reference(experiment):
    """What train.py composes (defaults included: the proxies inherit track3_muon's file) is the file's block."""
    assert compose_config(f"experiment={experiment}").reference == reference_of(experiment)


@pytest.mark.parametrize("experiment", RECORDS)
def test_reference_names_its_curve_and_script_and_the_configs_steps(experiment):
    ref = reference_of(experiment)
    assert ref.curve_path.is_file(), ref.curve_path
    if ref.script is not None and SCRIPTS.is_dir():
        assert (SCRIPTS / ref.script).is_file(), SCRIPTS / ref.script
    train = compose_config(f"experiment={experiment}").train
    # the published step ends the run: the schedule's end, or a prefix of it (track 3's #46: 2690 of 2900)
    assert (train.stop_after_step if train.stop_after_step is not None else train.max_steps) == ref.steps

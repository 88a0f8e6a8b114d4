"""analysis/records.py: the experiment files' reference: blocks are read, typed and checked, and a bad one is
one error naming the file and the key (in a folder of made-up experiment files)."""
import pytest

from analysis import records
from analysis.curves import CurveError, record_curve
from analysis.records import ReferenceBlockError, ReferenceInfo, experiments_with_reference, reference_of
from harness.config.schema import ConfigError
from tests.support.inprocess import compose_config

BLOCK = "reference:\n  track: {track}\n  curve: {curve}\n  val_loss: 3.2785\n  steps: 1393\n{extra}"


@pytest.fixture
def experiments(tmp_path, monkeypatch):
    """Write configs/experiment-like files: name -> YAML text; returns the writer."""
    monkeypatch.setattr(records, "EXPERIMENTS_DIR", tmp_path)

    def write(name: str, text: str) -> None:
        (tmp_path / f"{name}.yaml").write_text(f"# @package _global_\nexperiment: {name}\n{text}")
    return write


def test_blocks_are_read_typed_and_listed_by_track(experiments):
    experiments("b_track3", BLOCK.format(track=3, curve="b.csv", extra="  runs: 10\n  train_time_ms: 503523\n"))
    experiments("a_track1", BLOCK.format(track=1, curve="a.csv", extra="  script: a.py\n"))
    experiments("c_none", "seed: 0\n")
    experiments("d_null", "reference: null\n")
    assert experiments_with_reference() == ["a_track1", "b_track3"]
    assert experiments_with_reference(track=3) == ["b_track3"]
    assert reference_of("a_track1") == ReferenceInfo(track=1, curve="a.csv", val_loss=3.2785, steps=1393,
                                                     script="a.py")
    b = reference_of("b_track3")
    assert (b.runs, b.train_time_ms, b.script) == (10, 503523.0, None)
    assert b.curve_path == records.RECORD_CURVES / "b.csv"
    assert reference_of("c_none") is None and reference_of("d_null") is None


@pytest.mark.parametrize("extra,message", [("  trak: 1\n", "trak"),
                                           ("  runs: many\n", "runs"),
                                           ("  runs: 0\n", "reference.runs must be > 0"),
                                           ("  script: ../x.py\n", "reference.script must be a file name")])
def test_a_bad_block_is_one_error_naming_the_file_and_the_key(experiments, extra, message):
    experiments("bad", BLOCK.format(track=1, curve="a.csv", extra=extra))
    with pytest.raises(ReferenceBlockError, match=message) as err:
        reference_of("bad")
    assert "bad.yaml" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("track,curve,message", [(2, "a.csv", r"reference.track must be one of \(1, 3\)"),
                                                 (1, "records/a.csv", "reference.curve must be a CSV file name")])
def test_track_and_curve_are_checked(experiments, track, curve, message):
    experiments("bad", BLOCK.format(track=track, curve=curve, extra=""))
    with pytest.raises(ReferenceBlockError, match=message):
        reference_of("bad")


def test_unknown_experiment_names_the_known_ones(experiments):
    experiments("a_track1", BLOCK.format(track=1, curve="a.csv", extra=""))
    with pytest.raises(ReferenceBlockError, match=r"known experiments: \['a_track1'\]"):
        reference_of("nope")


def test_record_curve_reports_a_bad_block_as_a_curve_error(experiments):
    experiments("bad", BLOCK.format(track=2, curve="a.csv", extra=""))
    with pytest.raises(CurveError, match="reference.track must be one of"):
        record_curve("bad")


def test_the_composed_config_checks_the_block():
    with pytest.raises(ConfigError, match=r"reference.track must be one of \(1, 3\)"):
        compose_config("experiment=record04_muon", "reference.track=2")
    assert compose_config("experiment=smoke").reference is None

"""Where the repository is: tools and benchmarks find configs/, results/ and train.py from here."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
RECORD_CURVES = CONFIGS / "records"  # the published records' val-loss curves (inputs to compare/significance)

"""tools.describe as a user calls it: --help is usage (not a Hydra override)."""
import pytest

import tools.describe as describe


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_describe_help_prints_usage(flag, capsys):
    """`--help` is usage, not an override handed to Hydra's lexer (LexerNoViableAltException)."""
    assert describe.main([flag]) == 0
    captured = capsys.readouterr()
    assert "python -m tools.describe experiment=" in captured.out and captured.err == ""

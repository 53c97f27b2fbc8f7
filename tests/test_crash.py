"""Crash safety: a real `relay run` process SIGKILLed at 100 random points against relay's own
fake Mastodon server, which also answers some posts with a 500 (before or after accepting
them); then every item reaches every account exactly once. (The exact stages
are also hit one by one in test_mastodon.py and test_bluesky.py with tests/support/killpoint.)"""

from pathlib import Path

import pytest

from tests.support.crash import ACCOUNTS, sweep


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_hundred_random_sigkills_then_exactly_once(tmp_path: Path) -> None:
    result = sweep(tmp_path, kills=100, seed=20261128)
    print(f"\ncrash sweep: {result}")
    assert result.kills == 100
    assert result.server_errors >= 10  # 500s in the middle of batches, refused or after accepting
    assert len(result.stages) >= 3, result.stages
    assert result.duplicates == 0
    assert result.missing == 0 and result.unexpected == []
    assert result.statuses == result.items * len(ACCOUNTS)

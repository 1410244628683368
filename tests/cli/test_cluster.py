"""`rd-engine run --cluster ray`: its flags (the runs themselves are in tests/batch)."""

from rd_engine import cli


def test_cluster_flags_offer_the_runners_choices():
    """The CLI spells them out (so that `--help` starts without torch); they must not drift."""
    from rd_engine.batch import SPLIT_MIN_FRAMES, SPLITS
    from rd_engine.cli.cluster import SPLIT_CHOICES
    from rd_engine.cli.cluster import SPLIT_MIN_FRAMES as CLI_MIN

    assert SPLIT_CHOICES == list(SPLITS) and CLI_MIN == SPLIT_MIN_FRAMES


def test_single_machine_modes_are_refused_in_one_line(tmp_path, capsys):
    for flag in ("--stream", "--demo"):
        code = cli.main(["run", "x.mp4", flag, "-o", str(tmp_path / "o"), "--cluster", "ray"])
        err = capsys.readouterr().err
        assert code == 1 and f"{flag} runs on one machine" in err and len(err.strip().splitlines()) == 1

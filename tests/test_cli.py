from typer.testing import CliRunner

from genscom.cli import app

runner = CliRunner()


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("bench", "train", "version"):
        assert cmd in res.output
    res = runner.invoke(app, ["bench", "--help"])
    assert "retrieval" in res.output and "channel" in res.output


def test_bad_snr_list_is_a_clear_error():
    res = runner.invoke(app, ["bench", "retrieval", "--snrs", "low,high"])
    assert res.exit_code != 0
    assert "--snrs must be comma-separated numbers" in res.output


def test_unknown_profile_and_channel_are_clear_errors(tmp_path):
    res = runner.invoke(app, ["bench", "retrieval", "--profile", "no-such-profile-xyz", "--n-items", "4",
                              "--snrs", "0", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "error:" in res.output
    res = runner.invoke(app, ["bench", "channel", "--channels", "awgn,telepathy", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "telepathy" in res.output


def test_train_encoder_rejects_bad_yaml(tmp_path):
    bad = tmp_path / "cfg.yaml"
    bad.write_text("steps: [1, 2\n")
    res = runner.invoke(app, ["train", "encoder", "--config", str(bad)])
    assert res.exit_code == 2 and "could not parse the YAML" in res.output and str(bad) in res.output
    bad.write_text("stepz: 3\n")
    res = runner.invoke(app, ["train", "encoder", "--config", str(bad)])
    assert res.exit_code == 2 and "unknown field(s) ['stepz']" in res.output

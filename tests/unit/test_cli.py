from pathlib import Path

from service.settings import DEFAULT_RULES_DIR
from training.cli import main


def test_bad_input_is_a_message_and_exit_2_not_a_traceback(capsys, tmp_path):
    assert main(["train", "--log", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert "no transaction log at" in err
    assert "Traceback" not in err


def test_rules_check_passes_the_shipped_packs_and_fails_a_broken_one(capsys, tmp_path):
    assert main(["rules", "check", str(DEFAULT_RULES_DIR)]) == 0
    assert "valid" in capsys.readouterr().out
    broken = tmp_path / "rules"
    broken.mkdir()
    (broken / "common.yaml").write_text(
        "pack: common\nrules:\n  - id: BAD_RULE\n    description: x\n"
        "    when: nope_feature > 1\n    action: review\n    message: x\n"
    )
    assert main(["rules", "check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "common.yaml" in err and "BAD_RULE" in err and "nope_feature" in err


def test_simulate_writes_a_log_and_reports_json(capsys, tmp_path: Path):
    out = tmp_path / "log.csv"
    assert main(["simulate", "--out", str(out), "--rows", "500", "--seed", "3", "--json"]) == 0
    assert out.exists()
    assert '"rows": 500' in capsys.readouterr().out

"""``riskscore export`` and ``train`` reading the archive: options checked, periods read."""

from __future__ import annotations

import json

import pytest

from training.cli import main


def test_from_archive_without_a_database_url_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("RISKSCORE_DATABASE_URL", raising=False)
    assert main(["export", "--from-archive", "--out", str(tmp_path)]) == 2
    assert "--database-url" in capsys.readouterr().err
    assert main(["export", "--database-url", "mysql://x", "--out", str(tmp_path)]) == 2
    assert "postgresql://" in capsys.readouterr().err
    assert main(["export", "--until", "2026-12-01T00:00:00Z", "--out", str(tmp_path)]) == 2
    assert "--until needs --from-archive" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--log PATH or --from-archive" in capsys.readouterr().err


def test_export_from_an_empty_archive_writes_empty_files(archive_url, capsys, tmp_path):
    code = main(
        [
            "export",
            "--database-url",
            archive_url,
            "--since",
            "2026-11-01T00:00:00Z",
            "--until",
            "2026-12-01T00:00:00Z",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decisions"] == 0 and result["source"] == "archive"
    assert (tmp_path / "transactions.parquet").exists()


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01"])
def test_a_bad_period_names_the_option(archive_url, capsys, tmp_path, bad):
    code = main(["export", "--database-url", archive_url, "--until", bad, "--out", str(tmp_path)])
    assert code == 2

"""The UI files the pages load are shipped, pinned and licensed.

The update tool fetches exactly what the pins say (an npm stand-in here: the test never
reaches a registry).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from service.api.schema_pages import (
    ASSETS_DIR,
    REDOC_JS,
    SOURCES_FILE,
    SWAGGER_CSS,
    SWAGGER_JS,
    SWAGGER_PRESET_JS,
)
from training.assets import AssetError, check, load_sources, update


def test_the_shipped_files_are_the_pinned_ones() -> None:
    assert check() == []


def test_every_package_ships_its_licence_and_every_page_file_is_shipped() -> None:
    sources = load_sources()
    for name, pin in sources["packages"].items():
        shipped = set(pin["files"].values())
        assert any(Path(f).name == "LICENSE" for f in shipped), name
        assert re.fullmatch(r"\d+\.\d+\.\d+", pin["version"]), name  # pinned, not a range
        assert pin["integrity"].startswith("sha512-") and pin["license"]
    for url in (REDOC_JS, SWAGGER_JS, SWAGGER_PRESET_JS, SWAGGER_CSS):
        assert url.removeprefix("/assets/") in sources["sha256"]


def test_the_stylesheets_name_no_other_host() -> None:
    for css in ASSETS_DIR.rglob("*.css"):
        urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css.read_text())
        assert [u for u in urls if not u.startswith("data:")] == [], css


def test_a_hand_edited_file_is_reported(tmp_path: Path) -> None:
    sources = load_sources()
    assets = tmp_path / "assets"
    for name in sources["sha256"]:
        (assets / name).parent.mkdir(parents=True, exist_ok=True)
        (assets / name).write_bytes((ASSETS_DIR / name).read_bytes())
    pins = tmp_path / "sources.json"
    pins.write_text(SOURCES_FILE.read_text())
    assert check(pins, assets) == []
    (assets / "swagger-ui" / "swagger-ui.css").write_text("body { color: red }")
    assert check(pins, assets) == [
        "swagger-ui/swagger-ui.css: differs from the pinned file (run `riskscore assets update`)"
    ]


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fake_npm(tmp_path: Path, packages: dict[str, bytes]) -> str:
    """An ``npm`` that answers ``npm pack`` from ``packages``, as npm does.

    ``npm pack NAME@VERSION --json --pack-destination DIR``, from ``name@version`` → tarball.
    """
    store = tmp_path / "registry"
    store.mkdir()
    for spec, data in packages.items():
        (store / spec).write_bytes(data)
    script = tmp_path / "npm"
    script.write_text(
        f"""#!{sys.executable}
import base64, hashlib, json, sys
from pathlib import Path
spec, dest = sys.argv[2], Path(sys.argv[sys.argv.index("--pack-destination") + 1])
source = Path({str(store)!r}) / spec
if not source.exists():
    sys.exit(f"npm error 404 {{spec}}")
data = source.read_bytes()
name, version = spec.rsplit("@", 1)
filename = f"{{name}}-{{version}}.tgz"
(dest / filename).write_bytes(data)
integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
info = {{"name": name, "version": version, "filename": filename, "integrity": integrity}}
print(json.dumps([info]))
"""
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_update_fetches_the_pins_applies_the_patches_and_refuses_a_changed_tarball(
    tmp_path: Path,
) -> None:
    manifest = json.dumps({"name": "viewer", "license": "MIT"}).encode()
    v1 = tarball(
        {
            "package.json": manifest,
            "LICENSE": b"MIT",
            "dist/v.js": b"load('https://cdn.example/x.png')",
        }
    )
    v2 = tarball(
        {
            "package.json": manifest,
            "LICENSE": b"MIT",
            "dist/v.js": b"v2 load('https://cdn.example/x.png')",
        }
    )
    npm = fake_npm(tmp_path, {"viewer@1.0.0": v1, "viewer@2.0.0": v2})
    pins = tmp_path / "sources.json"
    pins.write_text(
        json.dumps(
            {
                "packages": {
                    "viewer": {
                        "version": "1.0.0",
                        "files": {"dist/v.js": "viewer/v.js", "LICENSE": "viewer/LICENSE"},
                    }
                },
                "own": {},
                "patches": [
                    {
                        "file": "viewer/v.js",
                        "find": "https://cdn.example/x.png",
                        "replace": "/x.png",
                    }
                ],
                "sha256": {},
            }
        )
    )
    assets = tmp_path / "assets"
    assert update(sources_file=pins, assets_dir=assets, npm=npm) == ["viewer 1.0.0"]
    assert (assets / "viewer" / "v.js").read_bytes() == b"load('/x.png')"
    pinned = json.loads(pins.read_text())
    assert pinned["packages"]["viewer"]["integrity"] == (
        "sha512-" + base64.b64encode(hashlib.sha512(v1).digest()).decode()
    )
    assert pinned["packages"]["viewer"]["license"] == "MIT"
    assert check(pins, assets) == []

    assert update({"viewer": "2.0.0"}, sources_file=pins, assets_dir=assets, npm=npm) == [
        "viewer 2.0.0 (was 1.0.0)"
    ]
    assert (assets / "viewer" / "v.js").read_bytes() == b"v2 load('/x.png')"

    # the registry now serves other bytes under the pinned version: refused
    (tmp_path / "registry" / "viewer@2.0.0").write_bytes(v1)
    with pytest.raises(AssetError, match="not the pinned one"):
        update(sources_file=pins, assets_dir=assets, npm=npm)
    with pytest.raises(AssetError, match=r"npm pack viewer@9\.9\.9 failed"):
        update({"viewer": "9.9.9"}, sources_file=pins, assets_dir=assets, npm=npm)


def test_the_pages_and_their_files_stay_out_of_the_api_document() -> None:
    from service.app import create_app
    from service.settings import Settings

    paths = create_app(Settings(secret=b"assets-test-secret")).openapi_schema.paths or {}
    assert not [p for p in paths if p.startswith(("/schema", "/assets"))]

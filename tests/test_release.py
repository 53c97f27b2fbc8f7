"""The release (issue 12, part 5): the wheel built from this tree carries the templates, the
starter files and the licence, and, installed in a fresh venv, previews the offline example
from outside the source tree. (scripts/test also runs `python -m build` and `twine check`.)"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_installed_alone_previews_the_offline_example(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = dist.glob("relay_feeds-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "relay/templates/news.j2",
        "relay/templates/appel.j2",
        "relay/starter/feeds.yaml",
        "relay/pages/preview.html.j2",
        "relay/pages/preview.css",
        "relay/py.typed",
    ):
        assert shipped in names, shipped
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Name: relay-feeds" in metadata and "License-Expression: AGPL-3.0-or-later" in metadata
    assert any(n.endswith("licenses/LICENSE") for n in names)
    # a fresh venv: relay from the wheel alone; its dependencies borrowed from this venv
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], check=True)
    packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (packages / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    example = tmp_path / "example"
    shutil.copytree(ROOT / "examples" / "offline", example)
    where = subprocess.run(
        [str(python), "-c", "import relay; print(relay.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # not the source tree

    def installed(*args: str) -> subprocess.CompletedProcess[str]:
        """The wheel's relay, outside the source tree, with a bare environment."""
        return subprocess.run(
            [str(venv / "bin" / "relay"), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RELAY_STATE_DIR": str(tmp_path / "state")},
        )

    preview = installed("preview", "-c", str(example / "feeds.yaml"))
    assert preview.returncode == 0, preview.stderr
    assert "== mastodon (mastodon):" in preview.stdout and "📣 Signez la pétition" in preview.stdout
    page = installed("preview", "-c", str(example / "feeds.yaml"), "--html", "page.html")
    assert page.returncode == 0, page.stderr
    assert "Signez la pétition" in (tmp_path / "page.html").read_text(encoding="utf-8")  # the page's template ships
    init = subprocess.run(
        [str(venv / "bin" / "relay"), "init", str(tmp_path / "new")], capture_output=True, text=True, check=False
    )
    assert init.returncode == 0 and (tmp_path / "new" / "feeds.yaml").exists(), init.stderr

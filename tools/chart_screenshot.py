"""The DVC charts as a user sees them: `dvc plots show` of this workspace, rendered by headless Chromium with no
network. `python -m tools.chart_screenshot docs/images/charts.png` takes the docs' screenshot;
tests/test_charts.py reads the rendered page (`rendered_dom`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]  # no name, no route out


def plots_page(out: Path, repo: Path = ROOT) -> Path:
    """`dvc plots show` of `repo`'s workspace into `out`; its index.html."""
    dvc = Path(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "plots", "show", "-o", str(out)], cwd=repo, check=True, capture_output=True,
                   timeout=300)
    return out / "index.html"


def chromium(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on `page`, with no network, after 10 s of the page's virtual time."""
    assert CHROMIUM, "needs Debian's chromium"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *OFFLINE, "--virtual-time-budget=10000", *flags,
                           page.as_uri()], capture_output=True, text=True, timeout=120, check=True)


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM once Vega has drawn it (SVG, with an aria-label on every mark)."""
    return chromium(page, profile, "--dump-dom").stdout


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as folder:
        page = plots_page(Path(folder) / "plots")
        chromium(page, Path(folder) / "profile", "--window-size=1400,1100", f"--screenshot={out}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

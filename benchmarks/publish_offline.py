"""Make asv's published dashboard render without internet.

``asv publish`` writes ``index.html`` (and ``regressions``/``error`` pages) that load jQuery,
flot, bootstrap, stupidtable and blueimp-md5 from CDNs. This copies the same libraries,
vendored in ``benchmarks/vendor`` (see its README), into ``<html_dir>/vendor`` and points every
CDN ``src``/``href`` at them, dropping the ``integrity``/``crossorigin`` attributes (the
vendored flot is the unminified build of the same version, so its hash differs).

    asv publish && python benchmarks/publish_offline.py [html_dir, default .asv/html]

Fails if a page still references an unknown remote script or stylesheet (a newer asv).
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"

#: last path component of each CDN URL asv 0.6 uses -> vendored file
ASSETS = {
    "jquery-3.3.1.min.js": "jquery.min.js",
    "jquery.flot.min.js": "jquery.flot.js",
    "jquery.flot.time.min.js": "jquery.flot.time.js",
    "jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.min.js",
    "md5.min.js": "md5.min.js",
    "bootstrap.min.js": "bootstrap.min.js",
    "bootstrap.min.css": "bootstrap.min.css",
}
REMOTE = re.compile(r'(src|href)="(https?://[^"]+\.(?:js|css))"')
ATTRS = re.compile(r'\s+(integrity|crossorigin|referrerpolicy)="[^"]*"')


def localise(page: Path) -> int:
    """Rewrite one page's CDN references; returns how many were rewritten."""
    text = page.read_text()
    count = 0

    def swap(m: re.Match) -> str:
        nonlocal count
        name = m.group(2).rsplit("/", 1)[-1]
        if name not in ASSETS:
            raise SystemExit(f"{page}: no vendored copy of {m.group(2)}; add it to benchmarks/vendor")
        count += 1
        return f'{m.group(1)}="vendor/{ASSETS[name]}"'

    lines = [ATTRS.sub("", line) if REMOTE.search(line) else line for line in text.splitlines(True)]
    page.write_text(REMOTE.sub(swap, "".join(lines)))
    return count


def main(html_dir: str = ".asv/html") -> None:
    html = Path(html_dir)
    if not (html / "index.html").exists():
        raise SystemExit(f"{html}/index.html not found: run `asv publish` first")
    (html / "vendor").mkdir(exist_ok=True)
    for name in set(ASSETS.values()):
        shutil.copy2(VENDOR / name, html / "vendor" / name)
    total = sum(localise(page) for page in html.glob("*.html"))
    print(f"{html}: {total} CDN references now load from vendor/")


if __name__ == "__main__":
    main(*sys.argv[1:])

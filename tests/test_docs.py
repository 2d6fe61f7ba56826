"""The documentation site, built at smoke size and opened in a real browser.

The site is built as ``make docs`` builds it (Sphinx, warnings as errors), from the tutorials'
smoke-size notebooks that the tutorial tests execute too (the ``smoke_notebooks`` fixture), into
the test's temporary directory. Debian's Chromium, driven by Playwright, then visits the landing
page, the guide, every tutorial page and the API index over a local HTTP server, with every request
that leaves the site refused, and saves a screenshot of each page under the test's temporary
directory (printed at the end, ``pytest -s`` shows it).
"""

import functools
import html.parser
import http.server
import json
import os
import posixpath
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KATEX = os.path.join(os.environ.get("KATEX_DIR", "/usr/share/javascript/katex"), "katex.min.js")
# A closed network otherwise fills the console with the browser's own failed requests.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
]


@pytest.fixture(scope="module")
def site(smoke_notebooks, tmp_path_factory):
    """The built site's folder."""
    if not os.path.exists(KATEX):
        pytest.skip(f"KaTeX is not installed ({KATEX}): apt-get install libjs-katex")
    smoke_notebooks.build()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "CI": "1", "PYRO_VAE_NOTEBOOKS": smoke_notebooks.folder}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    command = ["-W", "--keep-going", "-q", "-b", "html", "-d", str(out / "doctrees")]
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", *command, os.path.join(ROOT, "docs"), str(out / "html")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return str(out / "html")


def pages_to_visit(site):
    tutorials = sorted(
        f"tutorials/{name}"
        for name in os.listdir(os.path.join(site, "tutorials"))
        if name[:2].isdigit()
    )
    guide = sorted(f"guide/{name}" for name in os.listdir(os.path.join(site, "guide")))
    api = sorted(
        f"api/{name}" for name in os.listdir(os.path.join(site, "api")) if name != "index.html"
    )
    return ["index.html", "tutorials/index.html", *tutorials, "api/index.html", *api, *guide]


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.hrefs.append(attrs["href"])


@functools.cache
def _parse(path):
    parser = _Links()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser


def test_internal_links_resolve(site):
    """Every link between the site's pages (and to its downloads) reaches a file, and an anchor."""
    broken = []
    for folder, _, files in os.walk(site):
        for name in files:
            if not name.endswith(".html"):
                continue
            page = os.path.join(folder, name)
            for href in _parse(page).hrefs:
                url = urllib.parse.urlsplit(href)
                if url.scheme or url.netloc:
                    continue  # external: not followed offline
                target = (
                    page if not url.path else os.path.join(folder, urllib.parse.unquote(url.path))
                )
                target = os.path.normpath(target)
                if os.path.isdir(target):
                    target = os.path.join(target, "index.html")
                if not os.path.isfile(target):
                    broken.append(f"{os.path.relpath(page, site)}: {href} (no file)")
                elif url.fragment and target.endswith(".html"):
                    if urllib.parse.unquote(url.fragment) not in _parse(target).ids:
                        broken.append(f"{os.path.relpath(page, site)}: {href} (no anchor)")
    assert not broken, "\n".join(broken)


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=site)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Text that KaTeX left untypeset: a TeX delimiter outside code, formulas and scripts.
LEFTOVER_MATH = """() => {
  const skip = "pre, code, script, style, textarea, .katex, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const found = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest(skip)) continue;
    const text = node.textContent;
    if (/\\\\\\(|\\\\\\[|\\$\\$|\\$[^\\s$][^$]*\\$/.test(text)) found.push(text.trim().slice(0, 80));
  }
  return found;
}"""


def test_pages_in_a_browser(site, server, tmp_path):
    """Each page loads without a console error or an outside request, its images and maths render."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    shots = tmp_path / "screenshots"
    shots.mkdir()
    problems, outside = [], []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )

        def only_the_site(route):
            if route.request.url.startswith(server):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", only_the_site)
        for path in pages_to_visit(site):
            page = context.new_page()
            errors = []
            page.on("console", lambda m, e=errors: m.type == "error" and e.append(m.text))
            page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
            page.on("requestfailed", lambda r, e=errors: e.append(f"failed: {r.url}"))
            # "load" waits for every image; KaTeX typesets on DOMContentLoaded, before it.
            response = page.goto(server + path, wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.currentSrc, i.naturalWidth])"
            )
            maths = page.evaluate(
                "() => [document.querySelectorAll('.math').length,"
                " document.querySelectorAll('.math .katex').length]"
            )
            leftover = page.evaluate(LEFTOVER_MATH)
            # The whole page for the landing page, the tutorials and the API index; the
            # first screen elsewhere: full-page shots of every page cost more than they show.
            whole = path in ("index.html", "api/index.html") or path.startswith("tutorials/")
            page.screenshot(path=str(shots / (path.replace("/", "--") + ".png")), full_page=whole)
            page.close()
            if response is None or response.status != 200:
                problems.append(f"{path}: HTTP {response and response.status}")
            problems += [f"{path}: console: {e}" for e in errors]
            problems += [f"{path}: image not loaded: {src}" for src, width in images if width == 0]
            if maths[0] != maths[1]:
                problems.append(f"{path}: {maths[0] - maths[1]} of {maths[0]} formulas not typeset")
            problems += [f"{path}: raw maths left: {text!r}" for text in leftover]
            if path.startswith("tutorials/0") and not images:
                problems.append(f"{path}: a tutorial page without figures")
        context.close()
    print(f"\nscreenshots: {shots}")
    assert not outside, f"requests that left the site: {outside}"
    assert not problems, "\n".join(problems)


def test_tutorial_pages_offer_notebook_and_script(site):
    """Each tutorial page links its executed notebook (outputs and figures) and its script."""
    for path in pages_to_visit(site):
        if not path.startswith("tutorials/0"):
            continue
        name = os.path.splitext(os.path.basename(path))[0]
        page = os.path.join(site, path)
        downloads = [h for h in _parse(page).hrefs if "_downloads/" in h]
        notebook = [h for h in downloads if h.endswith(f"/{name}.ipynb")]
        script = [h for h in downloads if h.endswith(f"/{name}.py")]
        assert notebook and script, f"{path} offers {downloads}"
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), notebook[0]))
        with open(os.path.join(site, target), encoding="utf-8") as f:
            nb = json.load(f)
        outputs = [o for cell in nb["cells"] for o in cell.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}.ipynb has no figure"
        assert nb["metadata"]["pyro_vae"]["smoke"] is True


def test_a_smoke_site_says_so_on_every_page_and_leaves_out_the_landing_figure(site):
    """A smoke-size site looked authoritative: its landing page showed tutorial 6's decoded
    manifold as random tiles, and prose quoting the full run sat above a tiny run's numbers."""
    unmarked = []
    for folder, _, files in os.walk(site):
        for name in files:
            if name.endswith(".html"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    if "Built at <strong>smoke size</strong>" not in f.read():
                        unmarked.append(os.path.relpath(os.path.join(folder, name), site))
    assert not unmarked, f"pages without the smoke-size banner: {unmarked}"
    with open(os.path.join(site, "index.html"), encoding="utf-8") as f:
        landing = f.read()
    assert "landing.png" not in landing and "leaves it out" in landing


def test_the_api_reference_covers_what_the_tutorials_call(site):
    """``pyro_vae.families.make_family``, ``semi.baseline_classifier`` and the like were missing:
    the reference held ``pyro_vae.__all__`` only."""
    import glob
    import re

    sys.path.insert(0, os.path.join(ROOT, "docs"))
    try:
        import tutorial_notebooks
    finally:
        sys.path.pop(0)
    names = tutorial_notebooks.tutorial_api_names()
    assert ("families", "make_family") in names and ("semi", "baseline_classifier") in names
    pages = "".join(open(p).read() for p in glob.glob(os.path.join(site, "api", "*.html")))
    missing = [
        f"{module}.{name}"
        for module, name in sorted(names)
        if not re.search(rf'id="pyro_vae\.[\w.]*\b{re.escape(name)}"', pages)
    ]
    assert not missing, f"no API reference entry for {missing}"

"""Maths in the HTML pages, typeset in the browser by KaTeX copied into the site: no CDN.

KaTeX comes from Debian's ``libjs-katex`` (``/usr/share/javascript/katex``, or the folder in
``KATEX_DIR``); ``make docs`` installs it where it is missing. Sphinx's math nodes are written as
``\\(...\\)`` and ``\\[...\\]`` inside ``span.math`` / ``div.math`` (as for MathJax), and KaTeX's
auto-render typesets only those elements. A formula KaTeX cannot parse is left as it is and
reported on the browser's console, where the site's browser test looks for errors.
"""

import os
import shutil

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.math import get_node_equation_number

KATEX_DIR = os.environ.get("KATEX_DIR", "/usr/share/javascript/katex")
FILES = ("katex.min.js", "katex.min.css", os.path.join("contrib", "auto-render.js"))

RENDER = """\
document.addEventListener("DOMContentLoaded", function () {
  var options = {
    delimiters: [
      {left: "\\\\[", right: "\\\\]", display: true},
      {left: "\\\\(", right: "\\\\)", display: false}
    ],
    throwOnError: true
  };
  document.querySelectorAll(".math").forEach(function (el) {
    renderMathInElement(el, options);
  });
});
"""


def visit_math(self, node):
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate nohighlight"))
    self.body.append(r"\(" + self.encode(node.astext()) + r"\)</span>")
    raise nodes.SkipNode


def visit_displaymath(self, node):
    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node.get("nowrap", False) or node.get("no-wrap", False):
        self.body.append(self.encode(node.astext()) + "</div>")
        raise nodes.SkipNode
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, "Link to this equation")
        self.body.append("</span>")
    # Blank-line separated equations are aligned together, as Sphinx does for MathJax.
    parts = [self.encode(p) for p in node.astext().split("\n\n") if p.strip()]
    parts = [r"\begin{split}" + p + r"\end{split}" if r"\\" in p else p for p in parts]
    body = (
        parts[0] if len(parts) == 1 else r"\begin{aligned}" + r"\\".join(parts) + r"\end{aligned}"
    )
    self.body.append(r"\[" + body + r"\]</div>" + "\n")
    raise nodes.SkipNode


def check_katex(app):
    missing = [f for f in FILES if not os.path.exists(os.path.join(KATEX_DIR, f))]
    if missing:
        raise ExtensionError(
            f"KaTeX is not in {KATEX_DIR} (missing {', '.join(missing)}); "
            "install Debian's libjs-katex (apt-get install libjs-katex) or set KATEX_DIR"
        )


def add_katex(app, pagename, templatename, context, doctree):
    if context.get("has_maths_elements", False):
        app.builder.add_css_file("katex/katex.min.css")
        app.builder.add_js_file("katex/katex.min.js", defer="defer")
        app.builder.add_js_file("katex/contrib/auto-render.js", defer="defer")
        app.builder.add_js_file("katex/render.js", defer="defer")


def copy_katex(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    target = os.path.join(app.outdir, "_static", "katex")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(KATEX_DIR, target, ignore=shutil.ignore_patterns("*.mjs", "*.ttf", "*.woff"))
    with open(os.path.join(target, "render.js"), "w") as f:
        f.write(RENDER)


def setup(app):
    app.add_html_math_renderer("katex", (visit_math, None), (visit_displaymath, None))
    app.connect("builder-inited", check_katex)
    app.connect("html-page-context", add_katex)
    app.connect("build-finished", copy_katex)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

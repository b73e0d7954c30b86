"""The page `dvc plots show/diff` fill, with Vega inlined from the pinned vl-convert-python: no network.

    python -m mnist_pipeline.evaluation.vega_page .venv/dvc-plots.html

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN and draws nothing offline. The
Makefile writes this page where it builds the venv, and .dvc/config's `plots.html_template` names it.
"""

import argparse

import vl_convert

from mnist_pipeline import cli
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.files import atomic_path

VEGA_LITE = "5.21"  # DVC's plot templates are Vega-Lite 5 specs: vega-embed warns when its version is another

# DVC's page calls vegaEmbed from a script of each plot's own: the libraries must be globals.
GLOBALS = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
# DVC fills {plot_divs} (and {refresh_tag}); with no {scripts} here it adds no CDN script of its own.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script>BUNDLE</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template: vl-convert's bundle of Vega, Vega-Lite and vega-embed inlined."""
    bundle = vl_convert.javascript_bundle(GLOBALS, vl_version=VEGA_LITE)
    if "</script" in bundle or "{plot_divs}" in bundle:  # would end the script early, or be filled by DVC
        raise PipelineError("vl-convert's bundle cannot be inlined in a <script>")
    return PAGE.replace("BUNDLE", bundle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="the HTML template to write")
    args = parser.parse_args(argv)

    def write() -> None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(page(), encoding="utf8")

    return cli.run(write)


if __name__ == "__main__":
    raise SystemExit(main())

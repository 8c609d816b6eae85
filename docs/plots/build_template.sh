#!/usr/bin/env bash
# Rebuild offline.html: DVC's plots page with vega, vega-lite and vega-embed inlined, so the charts of
# `dvc plots show` / `dvc plots diff` render with no network (DVC's own page loads them from a CDN).
# Needs npm once, to fetch the pinned packages; the page itself needs nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0 >/dev/null
for archive in *.tgz; do mkdir "${archive%.tgz}" && tar -xzf "$archive" -C "${archive%.tgz}"; done
{
    printf '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n{refresh_tag}\n<title>DVC plots</title>\n'
    printf '<!-- vega 5.33.1, vega-lite 5.23.0, vega-embed 6.29.0: BSD-3-Clause, see docs/plots/LICENSES.md in this project -->\n'
    for library in vega-5.33.1/package/build/vega.min.js vega-lite-5.23.0/package/build/vega-lite.min.js \
                   vega-embed-6.29.0/package/build/vega-embed.min.js; do
        printf '<script>\n'
        cat "$library"
        printf '\n</script>\n'
    done
    # SVG rather than canvas: crisp at any zoom, and every mark is an element of the page (the tests count them)
    printf '<script>\nconst embedOnCanvas = vegaEmbed;\n'
    printf 'window.vegaEmbed = (element, spec, options) => embedOnCanvas(element, spec, {renderer: "svg", ...options});\n</script>\n'
    printf '<style>\n  table { border-spacing: 15px; }\n</style>\n</head>\n<body>\n{plot_divs}\n</body>\n</html>\n'
} > "$here/offline.html"

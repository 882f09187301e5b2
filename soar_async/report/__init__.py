"""Seeing a run: a self-contained HTML report of its grids, programs, lineage and curves (`soar report`),
and tasks drawn to PNG (`soar tasks show --png`).

- `build`: gathers what the report shows from a run's archive, read-only;
- `html`: renders it as one HTML file (inline CSS, SVG and JS: it opens from disk, offline);
- `highlight`: Python syntax highlighting as HTML spans;
- `charts`: small SVG charts;
- `png`: ARC grids drawn with Pillow.

Nothing is imported here, so that drawing a PNG does not load the archive readers.
"""

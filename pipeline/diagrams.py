"""Entity-relationship diagrams, one image per schema, for ``mapshell erd``.

DataJoint draws with Graphviz when its ``dot`` program is installed; pip cannot install it, so
without it we lay the same dependency graph out ourselves (matplotlib, layered by dependency
depth), and always write the Mermaid text as well.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import datajoint as dj
import networkx as nx

TIER_COLOURS = {"Manual": "#E8F0E9", "Lookup": "#EEEEEE", "Imported": "#E3ECF8", "Computed": "#F8E8E3", "Part": "#FFFFFF"}


def _tier(table: type[dj.Table]) -> str:
    for tier in ("Part", "Lookup", "Manual", "Imported", "Computed"):
        if issubclass(table, getattr(dj, tier)):
            return tier
    return "Manual"


def _draw_png(module, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .status import pipeline_tables

    tables = list(pipeline_tables(module))
    names = {t.full_table_name: (t.__name__ if not issubclass(t, dj.Part) else f"{t._master.__name__}.{t.__name__}") for t in tables}
    deps = module.schema.connection.dependencies
    deps.load()
    graph = nx.DiGraph()
    graph.add_nodes_from(names.values())
    for parent, child in deps.edges():
        if parent in names and child in names:
            graph.add_edge(names[parent], names[child])
    for layer, nodes in enumerate(nx.topological_generations(graph)):
        for node in nodes:
            graph.nodes[node]["layer"] = layer
    layout = nx.multipartite_layout(graph, subset_key="layer", align="horizontal", scale=-1)
    colour = {names[t.full_table_name]: TIER_COLOURS[_tier(t)] for t in tables}
    fig, ax = plt.subplots(figsize=(max(8, len(tables) * 0.9), max(5, len(tables) * 0.45)))
    nx.draw_networkx_edges(graph, layout, ax=ax, arrows=True, edge_color="#555555", node_size=2500)
    for node, (x, y) in layout.items():
        ax.text(x, y, node, ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", facecolor=colour[node], edgecolor="#333333"))
    ax.set_title(module.schema.database)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_schema_diagrams(modules: dict[str, object], out: Path) -> list[Path]:
    """Write ``<schema>.png`` (or ``.svg`` through Graphviz) and ``<schema>.mmd`` per module."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module in modules.items():
        diagram = dj.Diagram(module.schema)
        mermaid = out / f"{name}.mmd"
        mermaid.write_text(diagram.make_mermaid())
        written.append(mermaid)
        if shutil.which("dot"):
            image = out / f"{name}.svg"
            image.write_text(diagram.svg_string())
        else:
            image = out / f"{name}.png"
            _draw_png(module, image)
        written.append(image)
    return written

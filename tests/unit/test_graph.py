"""agent.graph: the one module for dependency-graph walks (runbook steps, depends_on, critical
paths, report layout)."""

from __future__ import annotations

from agent.graph import depths, find_cycle, longest_path, topological_order


def test_topological_order_puts_needs_first_and_refuses_cycles() -> None:
    order = topological_order({"app": ["db", "net"], "db": ["net"], "net": [], "x": ["unknown"]})
    assert order is not None
    assert order.index("net") < order.index("db") < order.index("app")
    assert set(order) == {"app", "db", "net", "x"}  # edges to unknown nodes are ignored
    assert topological_order({"a": ["b"], "b": ["a"]}) is None


def test_find_cycle_names_the_same_cycle_every_time() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]
    assert find_cycle({"z": ["y"], "y": ["x"], "x": ["y"], "w": []}) == ["x", "y", "x"]  # sorted roots: x first
    assert find_cycle({"s1": ["s1"]}) == ["s1", "s1"]


def test_longest_path_weighs_chains_and_breaks_ties_by_listing_order() -> None:
    g = {"net": [], "db": ["net"], "app": ["db", "net"], "web": ["app"], "mail": ["net"]}
    w = {"net": 2.0, "db": 3.0, "app": 1.0, "web": 1.0, "mail": 10.0}
    assert longest_path(g, w) == (12.0, ["net", "mail"])
    assert longest_path(g, {**w, "mail": 1.0}) == (7.0, ["net", "db", "app", "web"])
    assert longest_path({"b": [], "a": []}, {"a": 1.0, "b": 1.0}) == (1.0, ["b"])  # larger id ends
    assert longest_path({"a": ["b"], "b": ["a"]}, {}) is None
    assert longest_path({}, {}) == (0.0, [])


def test_depths_tolerate_cycles() -> None:
    assert depths(["a", "b", "c"], {"b": ["a"], "c": ["b", "a"]}) == {"a": 0, "b": 1, "c": 2}
    d = depths(["x", "y"], {"x": ["y"], "y": ["x"]})
    assert set(d) == {"x", "y"} and min(d.values()) == 0

"""Graph rewrites as rules, in the manner of onnxscript's rewriter: a pattern finds a candidate
anchored at one node, a check returns why the candidate is rejected (None accepts it), and the
replacement rewrites it. `apply` runs a rule over a graph and keeps what it did and why it left
the rest in `gm.meta[REPORTS_KEY]`, so a part left in float is never left unexplained.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

import torch.fx as fx

REPORTS_KEY = "rewrites"   # gm.meta: rule name -> RewriteReport
Match = TypeVar("Match")


@dataclass(frozen=True)
class RewriteRule(Generic[Match]):
    name: str
    pattern: Callable[[fx.GraphModule, fx.Node], Match | None]  # a candidate at this node, or None
    check: Callable[[fx.GraphModule, Match], str | None]        # why not, or None to rewrite
    replace: Callable[[fx.GraphModule, Match], None]


@dataclass
class RewriteReport:
    """What one rule did to one graph: the anchors it rewrote, and the reason for each rejection."""
    rule: str
    rewritten: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)


def apply(gm: fx.GraphModule, rule: RewriteRule) -> RewriteReport:
    """Rewrite every accepted match of `rule` in graph order, then lint and recompile."""
    report = RewriteReport(rule.name)
    live = set(gm.graph.nodes)
    for node in list(gm.graph.nodes):
        if node not in live:
            continue  # erased by an earlier replacement
        match = rule.pattern(gm, node)
        if match is None:
            continue
        reason = rule.check(gm, match)
        if reason is not None:
            report.rejected[node.name] = reason
            continue
        rule.replace(gm, match)
        report.rewritten.append(node.name)
        live = set(gm.graph.nodes)
    gm.graph.lint()
    gm.recompile()
    gm.meta.setdefault(REPORTS_KEY, {})[rule.name] = report
    return report

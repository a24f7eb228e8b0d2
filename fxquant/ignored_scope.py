"""Parts of a model kept in float on request: NNCF's `ignored_scope`, onnxruntime's
`nodes_to_exclude`, torchao's `set_module_name(name, None)`.

The user names parts as they know them: module paths as `model.named_modules()` gives them (a
module and everything inside it), regular expressions over those paths, module classes or op
kinds, and tensor roles. Passes still find structure; the names only say where not to apply it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx as fx

from fxquant import patterns, roles
from fxquant.errors import FxQuantError

IGNORABLE_ROLES = roles.ACTIVATION_ROLES + roles.FULLY_QUANTIZED_ROLES


@dataclass(frozen=True)
class IgnoredScope:
    """What stays float.

    names: module paths ("blocks.11", "encoder.layer.0.attention"): the module and all inside it.
    patterns: regular expressions matched in full against those paths ("blocks\\.1[01]\\..*").
    types: module classes ("Linear", "Conv2d", "Mlp": a node of that class, a subclass, or inside
        one) or
        product kinds ("matmul": every product of two activations, such as Q·Kᵀ and A·V).
    roles: tensor roles left unquantized wherever they are read (e.g. "post_softmax").
    validate: refuse an entry that matches nothing (a misspelt name would silently do nothing).
    """
    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    validate: bool = True

    def __post_init__(self):
        for field in ("names", "patterns", "types", "roles"):
            value = getattr(self, field)
            if isinstance(value, str):
                raise FxQuantError(f"IgnoredScope {field} must be a list of strings, got the string {value!r}")
            object.__setattr__(self, field, tuple(value))
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise FxQuantError(f"IgnoredScope pattern {pattern!r} is not a regular expression: {e}") from e
        unknown = [r for r in self.roles if r not in IGNORABLE_ROLES]
        if unknown:
            raise FxQuantError(f"IgnoredScope role {unknown[0]!r} is not a role: use one of "
                               f"{', '.join(IGNORABLE_ROLES)}")

    def __bool__(self) -> bool:
        return bool(self.names or self.patterns or self.types or self.roles)

    def matches(self, gm: fx.GraphModule, node: fx.Node) -> list[str]:
        """The entries ("name 'blocks.0'", "type 'Mlp'", ...) that keep `node` float."""
        paths = patterns.scope_paths(node)
        classes = {c.__name__ for _, kind in patterns.scope(node) for c in kind.__mro__} | {
            patterns.product_kind(gm, node)}  # "Linear" covers its subclasses too
        return ([f"name {name!r}" for name in self.names if name in paths]
                + [f"pattern {p!r}" for p in self.patterns if any(re.fullmatch(p, path) for path in paths)]
                + [f"type {kind!r}" for kind in self.types if kind in classes])

    def labels(self) -> list[str]:
        """Every entry as `matches` names it ("role 'post_softmax'" for roles)."""
        return [f"{field[:-1]} {value!r}" for field in ("names", "patterns", "types", "roles")
                for value in getattr(self, field)]

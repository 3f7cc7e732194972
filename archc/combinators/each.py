"""`for`: a layer written once and repeated over the items of a list, in sequence (RegNet's
stages, one per width of a computed list)."""

from __future__ import annotations

from dataclasses import replace

from archc.combinators import combinator
from archc.combinators.seq import Seq
from archc.ir import Node
from archc.spec.schema import For as Options


@combinator
class For(Seq):
    kind = "for"
    options = Options
    syntax = "`for: {each, as, names, start, body}`"
    meaning = (
        "`body` once per item of the list `each` (a `${}` list, e.g. `range(len(widths))`), in "
        "sequence, the item read as the variable `as`; children named by the `names` pattern "
        '(`"{i}"` from `start`, or any whole-number variable: `"block{s}"`)'
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        from archc.expand import MAX_NODES, PositionEnv

        if not isinstance(raw, dict):
            raise scope.error("for takes a mapping with each, as and body", path)
        value = {k: (v if k == "body" else x.resolve(v, path + (k,), scope)) for k, v in raw.items()}
        spec = x.validate(Options, value, path, scope, "for", raw)
        if not spec.each:
            raise scope.error("for goes over an empty list", path + ("each",))
        children: list[Node] = []
        in_shape = shape
        for index, item in enumerate(spec.each):
            env = {**scope.env, spec.var: item}
            if isinstance(scope.env, PositionEnv):
                env = PositionEnv(env, x)
            here = replace(scope, env=env)
            child_name = x.pattern(spec.names, path + ("names",), here, spec.start + index)
            before = x.count
            child = x.node(spec.body, path + ("body",), child_name, here, shape)
            if index == 0 and x.count + (len(spec.each) - 1) * (x.count - before) > MAX_NODES:
                raise scope.error(f"network would have more than {MAX_NODES:,} layers", path)
            if child is None:
                continue
            children.append(child)
            shape = child.out_shape
        if not children:
            raise scope.error("every copy of this for's body is switched off by 'if'", path + ("body",))
        return self.finish(Node(name, self.kind, children=children), in_shape, shape)

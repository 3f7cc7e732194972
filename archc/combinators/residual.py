"""`residual`: post(body(x) + shortcut(x)), the shortcut automatic, identity, a projection or
custom, or conditional: `if_shapes_match` adds the input only where the body keeps its shape
(torchvision's `use_res_connect`: stride 1 and the same channels), and is post(body(x)) elsewhere."""

from __future__ import annotations

import math
from dataclasses import replace

from archc import infer
from archc.combinators import CodegenForm, Combinator, combinator, program, shares_input
from archc.ir import Node, runs
from archc.primitives import ShapeError
from archc.spec.schema import Projection, check_module_name
from archc.spec.schema import Residual as Options

ROLES = ("body", "shortcut", "post")
CONDITIONAL = "if_shapes_match"  # the shortcut value of a conditional skip
USE_RES_CONNECT = "use_res_connect"  # its setting on the node: whether the sum happens


def connected(node: Node) -> bool:
    """Whether the residual adds its shortcut (False: a conditional skip whose shapes differ)."""
    return node.settings.get(USE_RES_CONNECT, True)


def by_role(children: list[Node]) -> list[tuple[str, list[Node]]]:
    """Consecutive children of one role together, in order (body, post, shortcut)."""
    groups: list[tuple[str, list[Node]]] = []
    for child in children:
        if groups and groups[-1][0] == child.role:
            groups[-1][1].append(child)
        else:
            groups.append((child.role, [child]))
    return groups


def forward(w) -> None:
    """out = post(body(x) + shortcut(x)), the shortcut being x itself when there is none; a
    conditional skip adds x only `if self.use_res_connect` (where instances differ)."""
    w.chain("body", "x", "out")
    if "shortcut" in w.groups:
        w.chain("shortcut", "x", "identity")
        w.line("out = out + identity")
    else:
        use = w.setting(USE_RES_CONNECT, True)
        if use is True:
            w.line("out = out + x")
        elif use is not False:
            w.line(f"if {use}:")
            w.line("    out = out + x")
    w.chain("post", "out", "out")
    w.line("return out")


@combinator
class Residual(Combinator):
    kind = "residual"
    syntax = "`residual: {body, shortcut, post}`"
    meaning = (
        "`post(body(x) + shortcut(x))`; body layers are the "
        "block's own children. `shortcut`: `auto` (default: a 1x1 conv + batch norm named "
        "`downsample`, only when the shape changes), `identity`, `if_shapes_match` (the input "
        "added only where the body keeps its shape, no sum elsewhere: MobileNet's "
        "`use_res_connect`), `{projection: {name, batchnorm, bias, always}}`, or "
        "`{custom: {name: node}}`; `post`: an activation or `none`"
    )
    options = Options
    fill = "#9fc5e8"
    codegen = CodegenForm(
        base="nn.Module",
        groups=lambda node: by_role(node.children),
        doc="A residual connection: the body's output plus the input (or its projection).",
        forward=forward,
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        spec = x.validate(
            self.options, resolve_options(x, raw, path, scope, ("post",)), path, scope, "residual"
        )
        body = x.children(
            spec.body, path + ("body",), scope, shape, chain=True, role="body", parameters=True
        )
        if not body:
            raise scope.error("residual body is empty", path + ("body",))
        body_out = body[-1].out_shape
        settings = {}
        mode = spec.shortcut
        if isinstance(mode, str):
            mode = x.resolve(mode, path + ("shortcut",), scope)
        if mode == CONDITIONAL:
            settings[USE_RES_CONNECT] = body_out == shape
            shortcut = None
        else:
            shortcut = self.shortcut(x, spec.shortcut, path + ("shortcut",), scope, shape, body_out)
        if settings.get(USE_RES_CONNECT, True):
            shares_input(scope, body[0], "the shortcut")
        children = list(body)
        if spec.post is not None and spec.post != "none":
            post = x.node(spec.post, path + ("post",), spec.post, scope, body_out)
            if post is None or not post.is_primitive or post.param_count:
                raise scope.error(
                    "post must be a parameter-free layer such as relu", path + ("post",)
                )
            post.role = "post"
            children.append(post)
        if shortcut is not None:
            shortcut.role = "shortcut"
            # registered where the spec writes it: after the body (ResNet's downsample), or
            # first when `shortcut:` comes before `body:` (RegNet's proj, then f)
            keys = list(raw) if isinstance(raw, dict) else []
            first = "shortcut" in keys and keys.index("shortcut") < keys.index("body")
            children = [shortcut, *children] if first else [*children, shortcut]
        if settings.get(USE_RES_CONNECT, True):
            try:
                infer.residual_sum(body_out, shortcut.out_shape if shortcut else shape)
            except ShapeError as exc:
                raise scope.error(f"{name}: {exc}", path) from None
        node = Node(name, self.kind, children=children, settings=settings)
        return self.finish(node, shape, body_out)

    def shortcut(self, x, raw, path, scope, shape, body_out) -> Node | None:
        raw = x.resolve(raw, path, scope) if not isinstance(raw, dict) else raw
        if raw == "identity":
            return None
        if raw == "auto":
            raw = {"projection": {}}
        if (
            not isinstance(raw, dict)
            or len(raw) != 1
            or next(iter(raw)) not in ("projection", "custom")
        ):
            raise scope.error(
                f"shortcut is identity, auto, {CONDITIONAL}, {{projection: {{...}}}} or "
                "{custom: {name: layer}}",
                path,
            )
        ((form, value),) = raw.items()
        if form == "custom":
            if not isinstance(value, dict) or len(value) != 1:
                raise scope.error(
                    "custom shortcut is one named layer: {custom: {name: layer}}", path + (form,)
                )
            ((child_name, child_raw),) = value.items()
            problem = check_module_name(child_name)
            if problem:
                raise scope.error(problem, path + (form, child_name), key=True)
            return x.node(child_raw, path + (form, child_name), child_name, scope, shape)
        proj = x.validate(
            Projection,
            x.resolve(value or {}, path + (form,), scope),
            path + (form,),
            scope,
            "projection",
        )
        if body_out == shape and not proj.always:
            return None
        try:
            stride = infer.projection_stride(shape, body_out)
        except ShapeError as exc:
            raise scope.error(str(exc), path) from None
        conv = {"conv": {"out": body_out[0], "kernel": 1, "stride": stride, "bias": proj.bias}}
        layer = [conv, "batchnorm"] if proj.batchnorm else conv
        problem = check_module_name(proj.name)
        if problem:
            raise scope.error(problem, path + (form, "name"))
        return x.node(layer, path + (form,), proj.name, replace(scope, env={}), shape)

    def activations(self, node):
        return math.prod(node.out_shape) if connected(node) else 0  # the sum

    def chains(self, node):
        return [run for role in ROLES for run in runs(node.role_children(role))]

    def depth(self, node, of):
        longest = max(sum(of(c) for c in node.role_children(r)) for r in ("body", "shortcut"))
        return longest + sum(of(c) for c in node.role_children("post"))

    def build(self, node, modules):
        from archc.backends.torch_modules import Residual

        roles = {r: program(node.role_children(r)) for r in ROLES}
        return Residual(modules, roles["body"], roles["shortcut"], roles["post"], connected(node))

    def draw(self, d, node, src, level, into):
        body = d.chain(node.role_children("body"), src, level, into)
        if not connected(node):  # a conditional skip whose shapes differ: no sum
            return d.chain(node.role_children("post"), body, level, into)
        add = d.place(into, node.path + "/add", "add")
        d.edge(body, add)
        shortcut = node.role_children("shortcut")
        if shortcut:
            d.edge(d.chain(shortcut, src, level, into), add, skip=True)
        else:
            d.edge(src, add, skip=True)
        return d.chain(node.role_children("post"), d.port(add, body.shape), level, into)


def resolve_options(x, raw, path, scope, keys):
    """Resolve `${}` in a combinator's own scalar options, leaving nested layers alone."""
    if not isinstance(raw, dict):
        return raw
    return {k: x.resolve(v, path + (k,), scope) if k in keys else v for k, v in raw.items()}

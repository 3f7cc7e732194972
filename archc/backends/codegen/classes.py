"""Class grouping: which instances share a generated class, and the classes' names.

Instances are grouped innermost first (a class's arguments feed the classes around it), by
block type or combinator, then split where anti-unification fails (`partition`). Each group is
generalised into one `ClassDef` whose holes `arguments.Resolver` turns into constructor
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archc.backends.codegen.arguments import Param, Resolver
from archc.backends.codegen.generalize import AntiUnifier, Unmergeable, merge_orders
from archc.backends.codegen.lower import Instance, RepeatedBlocks
from archc.backends.codegen.names import MISSING, Namespace, camel
from archc.backends.codegen.runs import skeleton
from archc.backends.codegen.terms import INLINE, Hole
from archc.combinators import CodegenForm
from archc.spec.schema import Template


@dataclass(eq=False)
class ClassDef:
    """Child generated class: its name, pattern (code with holes) and constructor arguments."""

    name: str
    kind: str
    groups: list[tuple[str, list]]
    params: list[Param]
    instances: list[Instance]
    positional: bool
    doc: str = ""
    form: CodegenForm = CodegenForm()  # how its combinator is written
    settings: dict[str, Hole] = field(default_factory=dict)  # the nodes' settings, by name
    locals: list[str] = field(default_factory=list)  # lets __init__ computes (`padding = ...`)


def build_classes(instances: list[Instance], templates: dict[str, Template]) -> list[ClassDef]:
    """Group instances into classes, innermost first (a class's arguments feed the outer ones)."""
    classes: list[ClassDef] = []
    pending = sorted(instances, key=lambda i: (i.height, i.order))
    heights = sorted({i.height for i in pending})
    for height in heights:
        level = [i for i in pending if i.height == height]
        by_key: dict[tuple, list[Instance]] = {}
        for inst in level:
            by_key.setdefault(inst.key, []).append(inst)
        for key, group in by_key.items():
            template = templates.get(key[1]) if key[0] == "block" else None
            for members in partition(group, template):
                classes.append(define(members, template))
    return classes


def instance_skeleton(inst: Instance) -> tuple:
    parts = []
    for role, items in inst.groups:
        parts.append((role, tuple(
            ("rep", e.head) if isinstance(e, RepeatedBlocks) else (e.name if not inst.positional else "", skeleton(e.term))
            for e in items
        )))  # fmt: skip
    return (inst.kind, inst.positional, tuple(parts))


def partition(group: list[Instance], template: Template | None = None) -> list[list[Instance]]:
    """Instances of one block type, split where their structures cannot share a class.

    Instances with the same skeleton usually merge at once; only odd ones are placed one by one.
    """
    by_shape: dict[tuple, list[Instance]] = {}
    for inst in group:
        by_shape.setdefault(instance_skeleton(inst), []).append(inst)
    classes: list[list[Instance]] = []
    for members in by_shape.values():
        batches = [members] if mergeable(members, template) else [[inst] for inst in members]
        for batch in batches:
            home = next((cls for cls in classes if mergeable(cls + batch, template)), None)
            if home is None:
                classes.append(list(batch))
            else:
                home.extend(batch)
    return [sorted(cls, key=lambda i: i.order) for cls in classes]


def mergeable(instances: list[Instance], template: Template | None = None) -> bool:
    try:  # with the arguments' names: an optional numbered layer needs a named flag
        unify_groups(AntiUnifier(Resolver(instances, template), slots=template is not None), instances)
    except Unmergeable:
        return False
    return True


def unify_groups(unifier: AntiUnifier, instances: list[Instance]) -> list[tuple[str, list]]:
    first = instances[0]
    if any(i.kind != first.kind or i.positional != first.positional for i in instances):
        raise Unmergeable
    roles = merge_orders([[role for role, _ in i.groups] for i in instances])
    optional = first.key[0] == "block"  # a block's `if` and automatic projection add layers
    out = []
    for role in roles:  # a residual without a shortcut has no shortcut group: all optional there
        lists = [dict(i.groups).get(role, []) for i in instances]
        out.append((role, unifier.entries(lists, first.positional, "", optional=optional)))
    if first.form.every_group:
        for _, entries in out:
            if all(e.flag is not None for e in entries):
                raise Unmergeable  # e.g. a branch must exist in every instance
    return out


def define(
    instances: list[Instance], template: Template | None, model_params: dict | None = None
) -> ClassDef:
    resolver = Resolver(instances, template, model_params)
    unifier = AntiUnifier(resolver, slots=template is not None)
    groups = unify_groups(unifier, instances)
    names = list(dict.fromkeys(k for i in instances for k in i.settings))
    settings = {  # a setting the instances differ in becomes a flag argument of that name
        name: unifier.hole([i.settings.get(name, MISSING) for i in instances], name, "flag")
        for name in names
    }
    params = resolver.ordered()
    for index, inst in enumerate(instances):
        inst.args = {p.name: p.column[index] for p in params}
    first = instances[0]
    klass = ClassDef(
        "", first.kind, groups, params, instances, first.positional, form=first.form,
        settings=settings, locals=resolver.local_lines(),
    )  # fmt: skip
    if template is not None:
        klass.doc = template.doc
    for inst in instances:
        inst.klass = klass
    return klass


def name_classes(classes: list[ClassDef], module: Namespace) -> None:
    """Classes after their block type (`dense_layer` → DenseLayer) or combinator kind (Residual,
    Gate); inline blocks' functions after the block type itself. Where one block type needs
    several classes, each is named after the switches that set it apart (`fused: true` →
    FusedMBConv), numbered only where none does."""
    ordered = sorted(classes, key=lambda k: k.instances[0].order)
    by_type: dict[str, list[ClassDef]] = {}
    for klass in ordered:
        by_type.setdefault(klass.instances[0].key[1], []).append(klass)
    names: dict[int, str] = {}
    for word, group in by_type.items():
        inline = group[0].kind == INLINE
        base = word if inline else camel(word)
        switches = [distinction(klass, group) for klass in group]
        if len(set(switches)) < len(group):  # nothing tells them apart: numbered
            switches = [(str(n + 1),) if n else () for n in range(len(group))]
            for klass, switch in zip(group, switches):
                names[id(klass)] = base + "".join(switch)
            continue
        for klass, switch in zip(group, switches):
            names[id(klass)] = "_".join([*switch, base]) if inline else "".join(
                [*(camel(s) for s in switch), base]
            )
    for klass in ordered:
        klass.name = module.create_name(names[id(klass)])


def distinction(klass: ClassDef, group: list[ClassDef]) -> tuple[str, ...]:
    """The true/false block parameters whose value is the same in all of `klass`'s instances
    but not in all of `group`'s: those true in `klass` (the words of its name)."""
    args = [inst.block_args or {} for other in group for inst in other.instances]
    if not args:
        return ()
    words = []
    for name in args[0]:
        values = [a.get(name, MISSING) for a in args]
        if not all(type(v) is bool for v in values) or all(v == values[0] for v in values):
            continue
        own = {(inst.block_args or {}).get(name) for inst in klass.instances}
        if own == {True}:
            words.append(name)
    return tuple(words)

"""Automatic column lineage from Spark logical plans.

Nothing here is written by hand per table: ``derive_lineage(df, lake_root)`` reads the
*analyzed* logical plan of the DataFrame that an asset publishes and traces every output
column back to the columns of the plan's leaves. A leaf that reads a lake table (a
``LogicalRelation`` over a ``HadoopFsRelation`` -- a Delta table's too -- whose root path is
``<lake>/<layer>/<table>``)
becomes the upstream asset ``[layer, table]``; so ``silver/orders`` points at ``bronze/orders``
and ``silver/rates`` columns, and ``gold/customer_360`` at silver and gold columns.

How it works (plan walking only, no Spark job):

1. ``df._jdf.queryExecution().analyzed().toJSON()`` -- one py4j call -- gives the whole plan,
   each node with its expressions, every attribute with its ``exprId``.
2. Every ``Alias`` (in ``Project``, ``Aggregate``, ``Window``, ...) defines a new ``exprId`` from
   the attributes its expression references; ``Union`` maps its output positionally to each
   child's output; ``Generate`` and ``Expand`` define their outputs from their generators and
   projections. Attributes that pass through a node unchanged keep their ``exprId``.
3. The leaves' root paths come from py4j (``collectLeaves()``, ``relation().location()
   .rootPaths()``); the JSON does not carry them.
4. Each output column's ``exprId`` is followed through those definitions to leaf attributes.

**The dependency rule** (what "column X comes from column Y" means here): Y is an upstream
column of X when Y's value flows into the expression that computes X -- including the
conditions of ``CASE WHEN``/``coalesce`` branches inside that expression (``revenue_usd`` =
``sum(amount_usd) where is_revenue`` depends on both). Columns used *only* to choose rows --
``WHERE`` filters, join conditions, window partitioning/ordering, grouping keys -- are not
upstream columns of the values they select (so a ``row_number()`` used to keep one row per key
has none). Two exceptions keep every column traceable: an aggregate with no column argument
(``count(*)``) depends on the grouping keys it counts per, and a constant coming from the
optional side of an outer join (a "matched" flag) depends on the join's key columns. Other
constants have no upstream column.

Each materialization carries ``dagster/column_lineage`` (a ``TableColumnLineage``, what Dagster's
API and Dagster+ column lineage read) and ``column_lineage``, the same as a Markdown table that
the open-source UI shows on the asset page (it does not draw ``dagster/column_lineage``).

Spark Connect DataFrames have no JVM plan in this process (no ``_jdf``): lineage is then
skipped with a log line; nothing fails. Any unexpected plan shape is also logged and skipped,
never failing a materialization.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

log = logging.getLogger(__name__)

#: (table, column): table is ``"layer/name"``, e.g. ``("bronze/orders", "amount")``
Upstream = tuple[str, str]


# -- the plan JSON as trees -------------------------------------------------------------------


@dataclass
class Node:
    cls: str  # short class name, e.g. "Project", "AttributeReference"
    fields: dict
    children: list["Node"] = field(default_factory=list)

    @property
    def expr_id(self) -> int | None:
        e = self.fields.get("exprId")
        return e.get("id") if isinstance(e, dict) else None


def _tree(flat: list[dict], i: int = 0) -> tuple[Node, int]:
    """The tree of a pre-order flat list (Spark's TreeNode JSON); returns (node, next index)."""
    raw = flat[i]
    node = Node(cls=raw.get("class", "").rsplit(".", 1)[-1], fields=raw)
    i += 1
    for _ in range(int(raw.get("num-children", 0))):
        child, i = _tree(flat, i)
        node.children.append(child)
    return node, i


def _is_flat_expr(v) -> bool:
    return isinstance(v, list) and bool(v) and isinstance(v[0], dict) and "num-children" in v[0] and "class" in v[0]


def _expressions(value) -> list[Node]:
    """The expression trees in one field of a plan node: one expression or a (nested) list."""
    if _is_flat_expr(value):
        return [_tree(value)[0]]
    if isinstance(value, list):
        out = []
        for v in value:
            out.extend(_expressions(v))
        return out
    return []


def _plan_expressions(plan: Node, name: str) -> list[Node]:
    return _expressions(plan.fields.get(name))


# -- references and definitions ---------------------------------------------------------------


def _refs(e: Node) -> set[int]:
    """exprIds of the attributes whose values flow into expression ``e`` (see the module rule)."""
    if e.cls == "AttributeReference":
        return {e.expr_id} if e.expr_id is not None else set()
    if e.cls == "WindowExpression" and e.children:
        return _refs(e.children[0])  # the function's arguments, not the partitioning/ordering
    out: set[int] = set()
    for c in e.children:
        out |= _refs(c)
    return out


def _output_ids(exprs: Iterable[Node]) -> list[int]:
    """exprIds of named expressions (Alias / AttributeReference) in order."""
    return [e.expr_id for e in exprs if e.expr_id is not None]


class _Analysis:
    def __init__(self, root: Node):
        self.defs: dict[int, set[int]] = defaultdict(set)  # exprId -> exprIds it is computed from
        # exprId -> join-condition exprIds, for attributes of the optional side of an outer join:
        # used only when the attribute itself has no upstream column (a constant marking a match)
        self.weak: dict[int, set[int]] = defaultdict(set)
        self.leaves: list[tuple[Node, list[tuple[int, str]]]] = []  # leaf node, [(exprId, name)]
        self._outputs: dict[int, list[int]] = {}
        self.root_output = self._walk(root)

    def _aliases(self, exprs: list[Node], fallback: set[int] | None = None) -> None:
        for e in exprs:
            self._define_aliases(e, fallback)

    def _define_aliases(self, e: Node, fallback: set[int] | None) -> None:
        if e.cls == "Alias" and e.expr_id is not None and e.children:
            refs = _refs(e.children[0])
            if not refs and fallback:
                refs = set(fallback)
            self.defs[e.expr_id] |= refs
        for c in e.children:
            self._define_aliases(c, fallback)

    def _walk(self, plan: Node) -> list[int]:
        """Register definitions of ``plan``'s subtree; return its output exprIds."""
        child_out = [self._walk(c) for c in plan.children]
        f = plan.fields
        cls = plan.cls
        if not plan.children:
            attrs = _plan_expressions(plan, "output")
            self.leaves.append((plan, [(a.expr_id, a.fields.get("name", "")) for a in attrs if a.expr_id is not None]))
            return _output_ids(attrs)
        if cls == "Project":
            exprs = _plan_expressions(plan, "projectList")
            self._aliases(exprs)
            return _output_ids(exprs)
        if cls == "Aggregate":
            grouping: set[int] = set()
            for g in _plan_expressions(plan, "groupingExpressions"):
                grouping |= _refs(g)
            exprs = _plan_expressions(plan, "aggregateExpressions")
            self._aliases(exprs, fallback=grouping)
            return _output_ids(exprs)
        if cls == "Window":
            exprs = _plan_expressions(plan, "windowExpressions")
            self._aliases(exprs)
            return child_out[0] + _output_ids(exprs)
        if cls == "Join":
            jt = json.dumps(f.get("joinType"))
            if "LeftSemi" in jt or "LeftAnti" in jt:
                return child_out[0]
            if "ExistenceJoin" in jt:
                return child_out[0] + _output_ids(_expressions(f.get("joinType", {}).get("exists")))
            cond: set[int] = set()
            for e in _expressions(f.get("condition")):
                cond |= _refs(e)
            optional = []
            if "LeftOuter" in jt or "FullOuter" in jt:
                optional += child_out[1]
            if "RightOuter" in jt or "FullOuter" in jt:
                optional += child_out[0]
            for a in optional:
                self.weak[a] |= cond
            return child_out[0] + child_out[1]
        if cls == "Union":
            first = child_out[0]
            for other in child_out[1:]:
                for out_id, in_id in zip(first, other):
                    if in_id != out_id:
                        self.defs[out_id].add(in_id)
            return first
        if cls == "Generate":
            gen_refs: set[int] = set()
            for g in _plan_expressions(plan, "generator"):
                gen_refs |= _refs(g)
            gen_out = _output_ids(_plan_expressions(plan, "generatorOutput"))
            for o in gen_out:
                self.defs[o] |= gen_refs
            unrequired = set(f.get("unrequiredChildIndex") or [])
            kept = [a for i, a in enumerate(child_out[0]) if i not in unrequired]
            return kept + gen_out
        if cls == "Expand":
            out = _output_ids(_plan_expressions(plan, "output"))
            for projection in f.get("projections") or []:
                for out_id, e in zip(out, _expressions(projection)):
                    self.defs[out_id] |= _refs(e)
            return out
        if "output" in f and _plan_expressions(plan, "output"):
            # a node that declares its output (e.g. some commands): take it, define from children
            return _output_ids(_plan_expressions(plan, "output"))
        # Filter, Sort, SubqueryAlias, Repartition*, ResolvedHint, Distinct, Deduplicate, limits,
        # Sample, ...: the child's attributes pass through unchanged.
        out: list[int] = []
        for o in child_out:
            out.extend(o)
        return out


# -- leaves -> tables --------------------------------------------------------------------------


def _norm_path(p: str) -> str:
    if p.startswith("file:"):
        p = p[len("file:"):]
        while p.startswith("//"):
            p = p[1:]
        return os.path.realpath(p)
    return p.rstrip("/")


def lake_table_resolver(lake_root: str) -> Callable[[list[str]], str | None]:
    """Maps a leaf's root paths to ``"layer/table"`` when they are ``<lake_root>/<layer>/<table>``."""
    from etl_assets.storage import parse_uri

    scheme, location = parse_uri(str(lake_root))
    root = os.path.realpath(location) if scheme == "file" else str(lake_root).rstrip("/")

    def resolve(paths: list[str]) -> str | None:
        tables = set()
        for p in paths:
            rel = _norm_path(p)
            if not rel.startswith(root.rstrip("/") + "/"):
                return None
            parts = rel[len(root.rstrip("/")) + 1:].split("/")
            if len(parts) < 2:
                return None
            tables.add(f"{parts[0]}/{parts[1]}")
        return tables.pop() if len(tables) == 1 else None

    return resolve


def _is_fs_relation(rel) -> bool:
    cls = rel.getClass()
    while cls is not None:
        if cls.getName().endswith("HadoopFsRelation"):
            return True
        cls = cls.getSuperclass()
    return False


def _jvm_leaf_paths(jplan) -> list[tuple[int | None, list[str]]]:
    """(first output exprId, root paths) of every leaf of the JVM plan, in pre-order."""
    out = []
    leaves = jplan.collectLeaves()
    for i in range(leaves.size()):
        leaf = leaves.apply(i)
        first = None
        outputs = leaf.output()
        if outputs.size() > 0:
            first = int(outputs.apply(0).exprId().id())
        paths: list[str] = []
        if leaf.getClass().getName().endswith("LogicalRelation"):
            rel = leaf.relation()
            # a HadoopFsRelation: Parquet files, or a Delta table (Delta's own anonymous
            # subclass, over its log's file index, whose root path is the table's)
            if _is_fs_relation(rel):
                roots = rel.location().rootPaths()
                paths = [str(roots.apply(j).toString()) for j in range(roots.size())]
        out.append((first, paths))
    return out


# -- public API --------------------------------------------------------------------------------


class LineageUnavailable(RuntimeError):
    """The DataFrame has no JVM plan here (Spark Connect) or the plan could not be read."""


def jvm_plan(df):
    """The analyzed JVM logical plan of a classic DataFrame; raises LineageUnavailable otherwise."""
    try:
        jdf = df._jdf
    except Exception as e:  # Spark Connect: no _jdf attribute (raises its own error type)
        raise LineageUnavailable(f"{type(df).__module__}.{type(df).__name__} has no JVM plan ({e})") from None
    if jdf is None:
        raise LineageUnavailable("DataFrame has no JVM plan")
    return jdf.queryExecution().analyzed()


def derive_lineage(df, resolve_table: Callable[[list[str]], str | None]) -> dict[str, list[Upstream]]:
    """Output column -> sorted upstream ``(table, column)`` pairs, from ``df``'s analyzed plan.

    ``resolve_table`` maps a leaf's root paths to ``"layer/table"`` (None: not a known table;
    such leaves and constants contribute nothing)."""
    jplan = jvm_plan(df)
    flat = json.loads(jplan.toJSON())
    root, _ = _tree(flat)
    analysis = _Analysis(root)

    leaf_cols: dict[int, Upstream] = {}
    jvm_leaves = _jvm_leaf_paths(jplan)
    by_first = {first: paths for first, paths in jvm_leaves if first is not None}
    for i, (leaf, attrs) in enumerate(analysis.leaves):
        if not attrs:
            continue
        paths = by_first.get(attrs[0][0])
        if paths is None and i < len(jvm_leaves):
            paths = jvm_leaves[i][1]
        table = resolve_table(paths) if paths else None
        if table is None:
            continue
        for expr_id, name in attrs:
            leaf_cols[expr_id] = (table, name)

    memo: dict[int, frozenset] = {}

    def trace(expr_id: int, stack: frozenset = frozenset()) -> frozenset:
        if expr_id in memo:
            return memo[expr_id]
        if expr_id in stack:
            return frozenset()
        if expr_id in leaf_cols and not analysis.defs.get(expr_id):
            result = frozenset([leaf_cols[expr_id]])
        else:
            # a leaf column may also be defined further: a Union's output is its first child's
            # attribute, fed positionally by the other children too
            acc: set = {leaf_cols[expr_id]} if expr_id in leaf_cols else set()
            for src in analysis.defs.get(expr_id, ()):
                acc |= trace(src, stack | {expr_id})
            if not acc:  # a constant on the optional side of an outer join: its join keys
                for src in analysis.weak.get(expr_id, ()):
                    acc |= trace(src, stack | {expr_id})
            result = frozenset(acc)
        memo[expr_id] = result
        return result

    names = list(df.columns)
    ids = analysis.root_output
    if len(ids) != len(names):  # pragma: no cover - a plan shape this walker does not know
        raise LineageUnavailable(f"plan output has {len(ids)} attributes, DataFrame {len(names)} columns")
    return {name: sorted(trace(i)) for name, i in zip(names, ids)}


def to_dagster(lineage: dict[str, list[Upstream]]):
    """A ``TableColumnLineage`` (columns without upstream columns are left out)."""
    from dagster import AssetKey, TableColumnDep, TableColumnLineage

    return TableColumnLineage(
        deps_by_column={
            col: [TableColumnDep(asset_key=AssetKey(t.split("/")), column_name=c) for t, c in deps]
            for col, deps in lineage.items()
            if deps
        }
    )


def column_lineage_metadata(df, lake_root: str, logger=None) -> dict:
    """``{"dagster/column_lineage": TableColumnLineage}`` for ``df``, or ``{}`` (logged) when the
    plan cannot be read (Spark Connect, an unexpected plan). Plan walking only: no Spark job."""
    logger = logger or log
    try:
        lineage = derive_lineage(df, lake_table_resolver(lake_root))
    except LineageUnavailable as e:
        logger.info(f"column lineage skipped: {e}")
        return {}
    except Exception as e:  # never fail a materialization for its lineage
        logger.warning(f"column lineage skipped: could not read the Spark plan: {type(e).__name__}: {e}")
        return {}
    return {"dagster/column_lineage": to_dagster(lineage), "column_lineage": lineage_markdown(lineage)}


def lineage_markdown(lineage: dict[str, list[Upstream]]):
    """The same lineage as a Markdown table: Dagster OSS's UI does not draw
    ``dagster/column_lineage``, so this entry makes it readable there (asset page -> Metadata)."""
    from dagster import MetadataValue

    rows = ["| column | upstream columns |", "| --- | --- |"]
    for col, deps in lineage.items():
        rows.append(f"| `{col}` | {', '.join(f'{t}.{c}' for t, c in deps) or '(constant)'} |")
    return MetadataValue.md("\n".join(rows))

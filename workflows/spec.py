"""Workflow templates: parse and check the YAML, and evaluate what it says while a workflow runs.

A template is a YAML mapping::

    name: feature                    # required
    description: optional text
    steps:                           # required, at least one; the order written is kept
      - id: plan                     # required: [a-z][a-z0-9_-]*, unique (templates can only
                                     # name an id without "-": {{ steps.my-step }} does not parse)
        role: planner                # required: the name of an existing role
        needs: [spec]                # the steps this one waits for: a list, or a single id
        prompt: |                    # required: a Django template (see "What a step sees")
          Plan {{ input }} from {{ steps.spec.result }}.
        budget_share: 0.1            # its share of the workflow's budget: 0 < share <= 1, default 0.1;
                                     # all the steps' shares add up to at most 1
        output_schema: {...}         # a JSON Schema of type object: the step submits a structured
                                     # result with the SubmitResult tool
        for_each: steps.plan.output.tasks   # run once per element of a list in an earlier output
        condition: "steps.review.output.verdict == 'approve'"   # run only if true, else skipped
        branch_from: spec            # start its worktree from the branch of this earlier step
        loop:                        # after this step, maybe send earlier steps round again
          when: "steps.review.output.verdict == 'changes_requested'"   # required
          back_to: [implement, test] # required: steps this one needs (directly or not)
          max_rounds: 2              # required, 1 to 10: how many extra rounds at most
          items: steps.review.output.changes   # only these items go round: each element is an
                                               # index (from 0) or a mapping with an index "task"

What a step sees, in its prompt, its condition and its loop (all Django template syntax):

- `input`: the workflow's input; `workflow.id`, `workflow.name`;
- `item` and `item_index` (from 0): the element of its `for_each` list it runs for;
- `round` (1, then 2, ... when a loop sends it round again) and `feedback` (why it went round);
- `steps.<id>` for every step it needs, directly or through others, as `output` (the submitted
  result; only for a step with an `output_schema`), `result` (its final message), `branch` and
  `item`. A step that runs for each item, seen from a step that does not run over the same list,
  is seen as lists instead: `outputs`, `results`, `branches`, `items`. A step's own `loop.when` and
  `loop.items` also see the step itself.

Conditions are `{% if %}` expressions. `for_each` and `loop.items` are dotted references
(`steps.plan.output.tasks`, list indexes as digits) resolved with `resolve_reference`.

`parse` checks all of this and raises a `TemplateError` that names the line and the step.
Nothing here touches the database: the caller passes the names of the roles that exist.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml
from django.template import Context, Engine, Template, TemplateSyntaxError
from django.template.base import FilterExpression, NodeList, Variable, VariableNode
from django.template.defaulttags import ForNode, IfNode, TemplateLiteral, WithNode
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

TEMPLATE_KEYS = ("name", "description", "steps")
STEP_KEYS = (
    "id",
    "role",
    "needs",
    "prompt",
    "budget_share",
    "output_schema",
    "for_each",
    "condition",
    "branch_from",
    "loop",
)
LOOP_KEYS = ("when", "back_to", "max_rounds", "items")
VARIABLES = ("steps", "input", "item", "item_index", "round", "feedback", "workflow")
STEP_VIEW = ("output", "result", "branch", "item")
FAN_OUT_VIEW = ("outputs", "results", "branches", "items")
DEFAULT_BUDGET_SHARE = Decimal("0.1")
MAX_LOOP_ROUNDS = 10
SLUG = re.compile(r"[a-z][a-z0-9_-]*\Z")
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[\w-]+)*\Z")
FOR_EACH = re.compile(r"steps\.([a-z][a-z0-9_-]*)\.output(\.[\w-]+)+\Z")
# Django puts these in every context; a template may compare with them.
DJANGO_CONSTANTS = frozenset({"True", "False", "None"})

# autoescape only matters when rendering, where `render_prompt` turns it off in the Context too.
ENGINE = Engine(debug=False, autoescape=False)


class TemplateError(Exception):
    """A template problem, with where it is: 'line 12, step "plan": unknown role "planer" (roles: ...)'."""

    def __init__(self, message: str, *, line: int | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.step = step

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.step is not None:
            where.append(f'step "{self.step}"')
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass(frozen=True)
class Loop:
    """After its step completes: if `when`, send `back_to` round again, at most `max_rounds` times."""

    when: str
    back_to: list[str]
    max_rounds: int
    items: str | None = None


@dataclass(frozen=True)
class Step:
    """One step of a template, as written (see the module docstring); `line` is where it starts."""

    id: str
    role: str
    prompt: str
    needs: list[str]
    budget_share: Decimal
    output_schema: dict | None
    for_each: str | None
    condition: str | None
    branch_from: str | None
    loop: Loop | None
    line: int


@dataclass(frozen=True)
class Spec:
    """A checked template: its steps in the order written."""

    name: str
    description: str
    steps: list[Step]

    def step(self, id: str) -> Step:
        for step in self.steps:
            if step.id == id:
                return step
        raise KeyError(f'workflow template "{self.name}" has no step "{id}"')

    def ancestors(self, id: str) -> set[str]:
        """The steps this one needs, directly or through others."""
        found: set[str] = set()
        pending = list(self.step(id).needs)
        while pending:
            step_id = pending.pop()
            if step_id not in found:
                found.add(step_id)
                pending.extend(self.step(step_id).needs)
        return found

    def order(self) -> list[str]:
        """Every step after the steps it needs; otherwise in the order written."""
        ordered: list[str] = []
        while len(ordered) < len(self.steps):
            ordered.append(
                next(s.id for s in self.steps if s.id not in ordered and set(s.needs) <= set(ordered))
            )
        return ordered

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "steps": [
                {
                    "id": s.id,
                    "role": s.role,
                    "prompt": s.prompt,
                    "needs": list(s.needs),
                    "budget_share": str(s.budget_share),
                    "output_schema": s.output_schema,
                    "for_each": s.for_each,
                    "condition": s.condition,
                    "branch_from": s.branch_from,
                    "loop": None
                    if s.loop is None
                    else {
                        "when": s.loop.when,
                        "back_to": list(s.loop.back_to),
                        "max_rounds": s.loop.max_rounds,
                        "items": s.loop.items,
                    },
                    "line": s.line,
                }
                for s in self.steps
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Spec:
        """The inverse of `to_dict`; optional fields may be absent (snapshots outlive code changes)."""
        steps = []
        for s in data["steps"]:
            loop = s.get("loop")
            steps.append(
                Step(
                    id=s["id"],
                    role=s["role"],
                    prompt=s["prompt"],
                    needs=list(s.get("needs") or []),
                    budget_share=Decimal(s.get("budget_share") or DEFAULT_BUDGET_SHARE),
                    output_schema=s.get("output_schema"),
                    for_each=s.get("for_each"),
                    condition=s.get("condition"),
                    branch_from=s.get("branch_from"),
                    loop=None
                    if loop is None
                    else Loop(
                        when=loop["when"],
                        back_to=list(loop["back_to"]),
                        max_rounds=loop["max_rounds"],
                        items=loop.get("items"),
                    ),
                    line=s.get("line", 0),
                )
            )
        return cls(name=data["name"], description=data.get("description", ""), steps=steps)


# --- at run time ----------------------------------------------------------------------------


def render_prompt(template: str, context: dict) -> str:
    return _render(template, context, what="prompt")


def evaluate_condition(expression: str, context: dict) -> bool:
    """Whether a `{% if %}` expression is true in this context."""
    return _render(_condition_template(expression), context, what="condition") == "1"


def resolve_reference(reference: str, context: dict) -> Any:
    """The value a dotted reference such as `steps.plan.output.tasks.0` names in the context."""
    value: Any = context
    walked: list[str] = []
    for part in reference.split("."):
        where = ".".join(walked) or "the context"
        if isinstance(value, dict):
            if part not in value:
                keys = ", ".join(sorted(map(str, value))) or "nothing"
                raise TemplateError(f'cannot resolve {reference}: {where} has no "{part}" (it has {keys})')
            value = value[part]
        elif isinstance(value, list):
            if not (part.isdigit() and int(part) < len(value)):
                raise TemplateError(
                    f'cannot resolve {reference}: {where} is a list of {len(value)}, with no index "{part}"'
                )
            value = value[int(part)]
        else:
            shown = json.dumps(value, default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise TemplateError(f'cannot resolve {reference}: {where} is {shown}, with no "{part}"')
        walked.append(part)
    return value


def _render(source: str, context: dict, *, what: str) -> str:
    return _compile(source, what=what).render(Context(context, autoescape=False, use_l10n=False))


def _compile(source: str, *, what: str) -> Template:
    try:
        return ENGINE.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{what} does not compile: {exc}") from None


def _condition_template(expression: str) -> str:
    if "{%" in expression or "%}" in expression:
        raise TemplateError("a condition is the expression of an {% if %}, without {% %} of its own")
    return "{% if " + expression.replace("\n", " ") + " %}1{% endif %}"


# --- parsing --------------------------------------------------------------------------------


def parse(text: str, *, roles: set[str]) -> Spec:
    """The spec a template describes, checked against the roles that exist."""
    root, data = _load_yaml(text)
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise TemplateError("a template is a mapping with a name and steps", line=1)
    top = _Mapping(root, data)
    _check_keys(top, TEMPLATE_KEYS, what="template")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TemplateError("the template needs a name", line=top.line_of("name"))
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise TemplateError("description must be text", line=top.line_of("description"))
    steps_node, steps_data = top.nodes.get("steps"), data.get("steps")
    if not isinstance(steps_node, yaml.SequenceNode) or not isinstance(steps_data, list) or not steps_data:
        raise TemplateError(
            "the template needs steps: a list of at least one step", line=top.line_of("steps")
        )

    sources: dict[str, _Mapping] = {}
    steps: list[Step] = []
    for node, value in zip(steps_node.value, steps_data, strict=True):
        if not isinstance(node, yaml.MappingNode) or not isinstance(value, dict):
            raise TemplateError("a step is a mapping with an id, a role and a prompt", line=_line(node))
        source = _Mapping(node, value)
        step = _read_step(source, roles=roles, seen=sources)
        sources[step.id] = source
        steps.append(step)
    spec = Spec(name=name.strip(), description=description.strip(), steps=steps)

    _check_budget(spec, line=top.line_of("steps"))
    _check_graph(spec, sources)
    for step in steps:
        _check_meaning(spec, step, sources[step.id])
    return spec


class _Mapping:
    """A YAML mapping's values with the line of each key, for error messages."""

    def __init__(self, node: yaml.MappingNode, data: dict) -> None:
        self.line = _line(node)
        self.data = data
        self.nodes: dict[str, yaml.Node] = {}
        self.lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                self.nodes[key_node.value] = value_node
                self.lines[key_node.value] = _line(key_node)

    def line_of(self, key: str) -> int:
        return self.lines.get(key, self.line)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise TemplateError("the template is empty", line=1)
        _check_unique_keys(root, set())
        return root, loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark:
            message = f"{exc.context} on line {exc.context_mark.line + 1}, {exc.problem}"
        raise TemplateError(message, line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise TemplateError(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_unique_keys(node: yaml.Node, seen: set[int]) -> None:
    """PyYAML keeps the last of two equal keys; a template that says `prompt:` twice is a mistake."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in lines:
                    raise TemplateError(
                        f'duplicate key "{key_node.value}" (also on line {lines[key_node.value]})',
                        line=_line(key_node),
                    )
                lines[key_node.value] = _line(key_node)
            _check_unique_keys(value_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _check_unique_keys(child, seen)


def _check_keys(mapping: _Mapping, allowed: tuple[str, ...], *, what: str, step: str | None = None) -> None:
    for key in mapping.data:
        if key not in allowed:
            raise TemplateError(
                f'unknown key "{key}" in a {what} (keys: {", ".join(allowed)})',
                line=mapping.line_of(str(key)),
                step=step,
            )


def _read_step(source: _Mapping, *, roles: set[str], seen: dict[str, _Mapping]) -> Step:
    """A step from its mapping, each field checked on its own (references come later)."""
    data = source.data
    step_id = data.get("id")
    if step_id is None:
        raise TemplateError("a step needs an id", line=source.line)
    if not isinstance(step_id, str) or not SLUG.match(step_id):
        raise TemplateError(
            f'id "{step_id}" is not a slug (lowercase letters, digits, "-" and "_", starting with a letter)',
            line=source.line_of("id"),
        )
    if step_id in seen:
        raise TemplateError(
            f'duplicate step id "{step_id}" (also on line {seen[step_id].line_of("id")})',
            line=source.line_of("id"),
        )

    def fail(key: str, message: str) -> TemplateError:
        return TemplateError(message, line=source.line_of(key), step=step_id)

    _check_keys(source, STEP_KEYS, what="step", step=step_id)
    known_roles = ", ".join(sorted(roles)) or "none exist yet"
    role = data.get("role")
    if role is None:
        raise fail("role", f"the step needs a role (roles: {known_roles})")
    if not isinstance(role, str) or role not in roles:
        raise fail("role", f'unknown role "{role}" (roles: {known_roles})')
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise fail("prompt", "the step needs a prompt (text)")
    needs = _ids(data.get("needs"))
    if needs is None:
        raise fail("needs", "needs is a step id or a list of step ids")
    share = _budget_share(data.get("budget_share"))
    if share is None:
        raise fail("budget_share", "budget_share must be a number above 0 and at most 1")
    schema = data.get("output_schema")
    if schema is not None:
        _check_output_schema(schema, source, step_id)
    for key in ("for_each", "condition", "branch_from"):
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise fail(key, f"{key} must be text")
    loop = _read_loop(source, step_id) if data.get("loop") is not None else None
    return Step(
        id=step_id,
        role=role,
        prompt=prompt,
        needs=needs,
        budget_share=share,
        output_schema=schema,
        for_each=_stripped(data.get("for_each")),
        condition=_stripped(data.get("condition")),
        branch_from=_stripped(data.get("branch_from")),
        loop=loop,
        line=source.line,
    )


def _stripped(text: str | None) -> str | None:
    return text.strip() if text is not None else None


def _ids(value: Any) -> list[str] | None:
    """Step ids given as a list or a single string, without repeats; None if they are not."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return None
    return list(dict.fromkeys(values))


def _budget_share(value: Any) -> Decimal | None:
    """The share given (the default if none), or None if it is not a number in (0, 1]."""
    if value is None:
        return DEFAULT_BUDGET_SHARE
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    share = Decimal(str(value))
    return share if 0 < share <= 1 else None


def _check_output_schema(schema: Any, source: _Mapping, step_id: str) -> None:
    line = source.line_of("output_schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise TemplateError("output_schema must be a JSON Schema with type: object", line=line, step=step_id)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(map(str, exc.path))
        raise TemplateError(
            f"output_schema is not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else ""),
            line=_line(_node_at(source.nodes["output_schema"], list(exc.path))),
            step=step_id,
        ) from None
    try:
        json.dumps(schema)
    except (TypeError, ValueError):
        raise TemplateError(
            "output_schema must be plain JSON (quote dates and other special values)", line=line, step=step_id
        ) from None


def _node_at(node: yaml.Node, path: list[Any]) -> yaml.Node:
    """The deepest YAML node along a path of keys and indexes."""
    for part in path:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        else:
            child = None
        if child is None:
            break
        node = child
    return node


def _read_loop(source: _Mapping, step_id: str) -> Loop:
    node, data = source.nodes["loop"], source.data["loop"]
    if not isinstance(node, yaml.MappingNode) or not isinstance(data, dict):
        raise TemplateError(
            f"loop is a mapping ({', '.join(LOOP_KEYS)})", line=source.line_of("loop"), step=step_id
        )
    loop = _Mapping(node, data)
    _check_keys(loop, LOOP_KEYS, what="loop", step=step_id)
    line = source.line_of("loop")
    when = data.get("when")
    if not isinstance(when, str) or not when.strip():
        raise TemplateError("loop needs when: the condition to go round again", line=line, step=step_id)
    back_to = _ids(data.get("back_to"))
    if not back_to:
        raise TemplateError(
            "loop needs back_to: the step or steps to send round again", line=line, step=step_id
        )
    rounds = data.get("max_rounds")
    if rounds is None:
        raise TemplateError(
            f"a cycle without a loop bound: loop needs max_rounds (1 to {MAX_LOOP_ROUNDS}), "
            "how many extra rounds at most",
            line=line,
            step=step_id,
        )
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_LOOP_ROUNDS:
        raise TemplateError(
            f"loop max_rounds must be a whole number from 1 to {MAX_LOOP_ROUNDS}",
            line=loop.line_of("max_rounds"),
            step=step_id,
        )
    items = data.get("items")
    if items is not None and (not isinstance(items, str) or not REFERENCE.match(items.strip())):
        raise TemplateError(
            "loop items must be a reference such as steps.review.output.changes",
            line=loop.line_of("items"),
            step=step_id,
        )
    return Loop(when=when.strip(), back_to=back_to, max_rounds=rounds, items=items and items.strip())


def _check_budget(spec: Spec, *, line: int) -> None:
    total = sum((s.budget_share for s in spec.steps), Decimal(0))
    if total > 1:
        raise TemplateError(
            f"budget shares add up to {total.normalize():f}; at most 1 "
            f"(a step without budget_share gets {DEFAULT_BUDGET_SHARE})",
            line=line,
        )


def _check_graph(spec: Spec, sources: dict[str, _Mapping]) -> None:
    ids = [s.id for s in spec.steps]
    for step in spec.steps:
        for other in step.needs:
            if other not in ids:
                raise TemplateError(
                    f'needs unknown step "{other}" (steps: {", ".join(ids)})',
                    line=sources[step.id].line_of("needs"),
                    step=step.id,
                )
    cycle = _find_cycle(spec)
    if cycle:
        raise TemplateError(
            f"cycle: {' → '.join(cycle)}; to go back to an earlier step use `loop` with max_rounds",
            line=sources[cycle[0]].line_of("needs"),
            step=cycle[0],
        )


def _find_cycle(spec: Spec) -> list[str] | None:
    """The first cycle in `needs` (in the order written), as a path back to its start."""
    done: set[str] = set()

    def visit(step_id: str, path: list[str]) -> list[str] | None:
        if step_id in path:
            return [*path[path.index(step_id) :], step_id]
        if step_id in done:
            return None
        for other in spec.step(step_id).needs:
            if cycle := visit(other, [*path, step_id]):
                return cycle
        done.add(step_id)
        return None

    for step in spec.steps:
        if cycle := visit(step.id, []):
            return cycle
    return None


def _check_meaning(spec: Spec, step: Step, source: _Mapping) -> None:
    """References to other steps, and the prompt and conditions as Django templates."""
    ancestors = spec.ancestors(step.id)

    def check(path: str, *, line: int, itself: bool = False) -> None:
        problem = _reference_problem(spec, step, ancestors, path.split("."), itself=itself)
        if problem:
            raise TemplateError(problem, line=line, step=step.id)

    if step.branch_from is not None and step.branch_from not in ancestors:
        raise TemplateError(
            f'branch_from "{step.branch_from}" is not a step this one needs (directly or through others)',
            line=source.line_of("branch_from"),
            step=step.id,
        )
    if step.for_each is not None:
        line = source.line_of("for_each")
        match = FOR_EACH.match(step.for_each)
        if not match:
            raise TemplateError(
                "for_each must name a list in an earlier step's output, such as steps.plan.output.tasks",
                line=line,
                step=step.id,
            )
        if match[1] in ancestors and spec.step(match[1]).for_each is not None:
            raise TemplateError(
                f"for_each can't go through {match[1]}, which itself runs for each item",
                line=line,
                step=step.id,
            )
        check(step.for_each, line=line)
    if step.condition is not None:
        line = source.line_of("condition")
        for path in _condition_variables(step.condition, line=line, step=step.id):
            check(path, line=line)
    if step.loop is not None:
        loop = _Mapping(source.nodes["loop"], source.data["loop"])
        for other in step.loop.back_to:
            if other not in ancestors:
                raise TemplateError(
                    f'loop back_to "{other}" is not a step this one needs (directly or through others)',
                    line=loop.line_of("back_to"),
                    step=step.id,
                )
        for path in _condition_variables(step.loop.when, line=loop.line_of("when"), step=step.id):
            check(path, line=loop.line_of("when"), itself=True)
        if step.loop.items is not None:
            check(step.loop.items, line=loop.line_of("items"), itself=True)

    prompt_node = source.nodes["prompt"]
    try:
        template = ENGINE.from_string(step.prompt)
    except TemplateSyntaxError as exc:
        token = getattr(exc, "token", None)
        raise TemplateError(
            f"prompt does not compile: {exc}",
            line=_prompt_line(prompt_node, token.lineno if token else None),
            step=step.id,
        ) from None
    for path, template_line in _template_variables(template.nodelist, frozenset()):
        check(path, line=_prompt_line(prompt_node, template_line))


def _prompt_line(node: yaml.Node, template_line: int | None) -> int:
    """The YAML line of a line of the prompt: exact in a `|` block, else where the prompt starts."""
    if node.style == "|" and template_line is not None:
        return _line(node) + template_line
    return _line(node)


def _reference_problem(
    spec: Spec, step: Step, ancestors: set[str], path: list[str], *, itself: bool
) -> str | None:
    """What is wrong with a step reading this path from its context, if anything."""
    root = path[0]
    if root not in VARIABLES:
        return f'unknown variable "{root}" (variables: {", ".join(sorted(VARIABLES))})'
    if root in ("item", "item_index") and step.for_each is None:
        return f"{root} is only set in a step with for_each"
    if root != "steps" or len(path) < 2:
        return None
    other_id, reference = path[1], ".".join(path[:3])
    if other_id not in {s.id for s in spec.steps}:
        return f'uses {reference} but there is no step "{other_id}"'
    other = spec.step(other_id)
    if other_id == step.id:
        if not itself:
            return f"uses {reference}, its own step: only its loop's when and items see the step itself"
        view = STEP_VIEW
    elif other_id not in ancestors:
        return f"uses {reference} but {other_id} is not a step it needs (directly or through others)"
    elif other.for_each is not None and other.for_each != step.for_each:
        view = FAN_OUT_VIEW
    else:
        view = STEP_VIEW
    if len(path) < 3:
        return None
    if path[2] not in view:
        if view == FAN_OUT_VIEW and path[2] in STEP_VIEW:
            return (
                f"uses {reference} but {other_id} runs for each item, so this step sees lists: "
                + ", ".join(f"steps.{other_id}.{name}" for name in FAN_OUT_VIEW)
            )
        return f"uses {reference}: a step is seen as " + ", ".join(f"steps.{other_id}.{n}" for n in view)
    if path[2] in ("output", "outputs") and other.output_schema is None:
        return f"uses {reference} but {other_id} has no output_schema"
    return None


def _condition_variables(expression: str, *, line: int, step: str) -> list[str]:
    try:
        template = _compile(_condition_template(expression), what="condition")
    except TemplateError as exc:
        raise TemplateError(exc.message, line=line, step=step) from None
    return [path for path, _ in _template_variables(template.nodelist, frozenset())]


def _template_variables(nodelist: NodeList, bound: frozenset[str]) -> Iterator[tuple[str, int | None]]:
    """The dotted path and line of each context variable a compiled template reads.

    Covers `{{ }}` with its filters' arguments, `{% if %}`, `{% for %}` and `{% with %}` (whose
    names are not context variables inside them), and the bodies of every other tag.
    """
    for node in nodelist:
        token = getattr(node, "token", None)
        line = token.lineno if token else None
        if isinstance(node, VariableNode):
            expressions, bodies = [node.filter_expression], []
        elif isinstance(node, IfNode):
            expressions = [
                e for condition, _ in node.conditions_nodelists for e in _if_expressions(condition)
            ]
            bodies = [(body, bound) for _, body in node.conditions_nodelists]
        elif isinstance(node, ForNode):
            expressions = [node.sequence]
            bodies = [
                (node.nodelist_loop, bound | {*node.loopvars, "forloop"}),
                (node.nodelist_empty, bound),
            ]
        elif isinstance(node, WithNode):
            expressions = list(node.extra_context.values())
            bodies = [(node.nodelist, bound | set(node.extra_context))]
        else:
            expressions = []
            bodies = [(getattr(node, name, None), bound) for name in node.child_nodelists]
        for expression in expressions:
            for path in _expression_variables(expression):
                if path.split(".")[0] not in bound | DJANGO_CONSTANTS:
                    yield path, line
        for body, names in bodies:
            if body:
                yield from _template_variables(body, names)


def _if_expressions(condition: Any) -> Iterator[FilterExpression]:
    """The operands of an `{% if %}` condition (a tree of operators over literals)."""
    if condition is None:
        return
    if isinstance(condition, TemplateLiteral):
        yield condition.value
        return
    for operand in (getattr(condition, "first", None), getattr(condition, "second", None)):
        yield from _if_expressions(operand)


def _expression_variables(expression: FilterExpression) -> Iterator[str]:
    candidates = [expression.var] + [arg for _, args in expression.filters for lookup, arg in args if lookup]
    for variable in candidates:
        if isinstance(variable, Variable) and variable.lookups:
            yield ".".join(variable.lookups)

"""Workflow templates: what parses, every check naming its line, and evaluation at run time."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from workflows.spec import (
    Loop,
    Spec,
    TemplateError,
    evaluate_condition,
    parse,
    render_prompt,
    resolve_reference,
)

ROLES = {"spec-writer", "planner", "implementer", "tester", "reviewer", "git-agent"}

FEATURE = """\
name: feature
description: From a request to a reviewed change.
steps:
  - id: spec
    role: spec-writer
    prompt: "Write SPEC.md for: {{ input }}"
  - id: plan
    role: planner
    needs: spec
    budget_share: 0.05
    prompt: "Split SPEC.md into tasks for {{ input }} ({{ workflow.name }})"
    output_schema:
      type: object
      properties:
        tasks: {type: array, items: {type: object, properties: {title: {type: string}}}}
      required: [tasks]
  - id: implement
    role: implementer
    needs: [plan]
    for_each: steps.plan.output.tasks
    branch_from: spec
    budget_share: 0.4
    prompt: |
      Implement task {{ item_index|add:1 }}: {{ item.title }}
      {% if feedback %}Round {{ round }}: {{ feedback }}{% endif %}
  - id: test
    role: tester
    needs: [implement]
    for_each: steps.plan.output.tasks
    branch_from: implement
    prompt: "Test {{ item.title }}; the implementer said: {{ steps.implement.result }}"
  - id: review
    role: reviewer
    needs: [test]
    prompt: |
      Review round {{ round }} of {{ input }}.
      {% for branch in steps.implement.branches %}{{ branch }} {% endfor %}
      {% for result in steps.test.results %}- {{ result }} ({{ forloop.counter }}){% endfor %}
    output_schema:
      type: object
      properties:
        verdict: {type: string, enum: [approve, changes_requested]}
        changes:
          type: array
          items: {type: object, properties: {task: {type: integer}, feedback: {type: string}}}
      required: [verdict]
    loop:
      when: "steps.review.output.verdict == 'changes_requested'"
      back_to: [implement, test]
      max_rounds: 2
      items: steps.review.output.changes
  - id: ship
    role: git-agent
    needs: [review]
    branch_from: spec
    condition: "steps.review.output.verdict == 'approve'"
    prompt: "Merge and open a pull request for {{ input }}"
"""


def error(text: str, roles: set[str] = ROLES) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        parse(text, roles=roles)
    return caught.value


# --- what parses ----------------------------------------------------------------------------


def test_feature_template_parses_into_its_steps_in_order():
    spec = parse(FEATURE, roles=ROLES)

    assert spec.name == "feature"
    assert spec.description == "From a request to a reviewed change."
    assert [s.id for s in spec.steps] == ["spec", "plan", "implement", "test", "review", "ship"]
    assert spec.order() == ["spec", "plan", "implement", "test", "review", "ship"]
    assert [s.line for s in spec.steps] == [4, 7, 17, 26, 32, 52]

    plan = spec.step("plan")
    assert plan.needs == ["spec"]  # a single id is a list of one
    assert plan.budget_share == Decimal("0.05")
    assert plan.output_schema["required"] == ["tasks"]

    implement = spec.step("implement")
    assert implement.role == "implementer"
    assert implement.for_each == "steps.plan.output.tasks"
    assert implement.branch_from == "spec"
    assert implement.prompt.startswith("Implement task {{ item_index|add:1 }}")

    review = spec.step("review")
    assert review.budget_share == Decimal("0.1")  # the default
    assert review.loop == Loop(
        when="steps.review.output.verdict == 'changes_requested'",
        back_to=["implement", "test"],
        max_rounds=2,
        items="steps.review.output.changes",
    )
    assert spec.step("ship").condition == "steps.review.output.verdict == 'approve'"
    assert spec.ancestors("ship") == {"spec", "plan", "implement", "test", "review"}
    assert spec.ancestors("spec") == set()


def test_order_puts_each_step_after_what_it_needs():
    spec = parse(
        """\
name: backwards
steps:
  - {id: last, role: tester, needs: [middle], prompt: "3"}
  - {id: middle, role: tester, needs: [first], prompt: "2"}
  - {id: first, role: tester, prompt: "1"}
  - {id: alone, role: tester, prompt: "0"}
""",
        roles=ROLES,
    )
    assert spec.order() == ["first", "middle", "last", "alone"]


def test_to_dict_round_trips_through_json():
    spec = parse(FEATURE, roles=ROLES)
    snapshot = json.loads(json.dumps(spec.to_dict()))

    assert snapshot["steps"][1]["budget_share"] == "0.05"
    assert Spec.from_dict(snapshot) == spec


# --- what does not, and where ---------------------------------------------------------------


def test_malformed_yaml_names_the_line_and_the_problem():
    exc = error("name: broken\nsteps:\n  - id: plan: planner\n")
    assert exc.line == 3
    assert str(exc) == "line 3: mapping values are not allowed here"


def test_unknown_role_lists_the_known_roles():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planer
    prompt: Plan it.
"""
    )
    assert (exc.line, exc.step) == (4, "plan")
    assert str(exc) == (
        'line 4, step "plan": unknown role "planer" '
        "(roles: git-agent, implementer, planner, reviewer, spec-writer, tester)"
    )


def test_unknown_step_key_lists_the_allowed_keys():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: Plan it.
    depends_on: [spec]
"""
    )
    assert exc.line == 6
    assert 'unknown key "depends_on" in a step (keys: id, role, needs, prompt,' in str(exc)


def test_unknown_top_level_key_is_an_error():
    exc = error("name: t\nversion: 2\nsteps:\n  - {id: a, role: planner, prompt: hi}\n")
    assert exc.line == 2
    assert str(exc) == 'line 2: unknown key "version" in a template (keys: name, description, steps)'


def test_duplicate_step_id():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: Plan it.
  - id: plan
    role: planner
    prompt: Plan it again.
"""
    )
    assert exc.line == 6
    assert str(exc) == 'line 6: duplicate step id "plan" (also on line 3)'


def test_step_id_must_be_a_slug():
    exc = error("name: t\nsteps:\n  - {id: Plan It, role: planner, prompt: hi}\n")
    assert exc.line == 3
    assert 'id "Plan It" is not a slug' in str(exc)


def test_needs_naming_an_unknown_step():
    exc = error(
        """\
name: t
steps:
  - id: spec
    role: spec-writer
    prompt: Write it.
  - id: plan
    role: planner
    needs: [spce]
    prompt: Plan it.
"""
    )
    assert (exc.line, exc.step) == (8, "plan")
    assert str(exc) == 'line 8, step "plan": needs unknown step "spce" (steps: spec, plan)'


def test_cycle_in_needs_is_named_and_points_to_loop():
    exc = error(
        """\
name: t
steps:
  - id: a
    role: planner
    needs: [b]
    prompt: A.
  - id: b
    role: planner
    needs: a
    prompt: B.
"""
    )
    assert (exc.line, exc.step) == (5, "a")
    assert str(exc) == (
        'line 5, step "a": cycle: a → b → a; to go back to an earlier step use `loop` with max_rounds'
    )


def test_loop_without_max_rounds_is_a_cycle_without_a_bound():
    exc = error(
        """\
name: t
steps:
  - id: implement
    role: implementer
    prompt: Build it.
  - id: review
    role: reviewer
    needs: [implement]
    prompt: Review it.
    loop:
      when: "round < 3"
      back_to: [implement]
"""
    )
    assert (exc.line, exc.step) == (10, "review")
    assert "a cycle without a loop bound: loop needs max_rounds (1 to 10)" in str(exc)


def test_loop_back_to_must_be_an_earlier_step():
    exc = error(
        """\
name: t
steps:
  - id: implement
    role: implementer
    prompt: Build it.
  - id: review
    role: reviewer
    prompt: Review it.
    loop: {when: "round < 3", back_to: [implement], max_rounds: 2}
"""
    )
    assert exc.line == 9
    assert 'loop back_to "implement" is not a step this one needs' in str(exc)


def test_reference_to_a_step_that_is_not_needed():
    exc = error(
        """\
name: t
steps:
  - id: spec
    role: spec-writer
    prompt: Write it.
  - id: plan
    role: planner
    prompt: |
      Plan it.
      Spec: {{ steps.spec.result }}
"""
    )
    assert (exc.line, exc.step) == (10, "plan")  # the prompt's own line, inside the `|` block
    assert str(exc) == (
        'line 10, step "plan": uses steps.spec.result but spec is not a step it needs (directly or through others)'
    )


def test_reference_to_the_output_of_a_step_without_output_schema():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: Plan it.
  - id: implement
    role: implementer
    needs: [plan]
    for_each: steps.plan.output.tasks
    prompt: "Build {{ item }}"
"""
    )
    assert (exc.line, exc.step) == (9, "implement")
    assert str(exc) == 'line 9, step "implement": uses steps.plan.output but plan has no output_schema'


def test_condition_referencing_a_later_step():
    exc = error(
        """\
name: t
steps:
  - id: ship
    role: git-agent
    condition: "steps.review.output.verdict == 'approve'"
    prompt: Ship it.
  - id: review
    role: reviewer
    needs: [ship]
    prompt: Review it.
"""
    )
    assert (exc.line, exc.step) == (5, "ship")
    assert "uses steps.review.output but review is not a step it needs" in str(exc)


def test_fan_out_step_is_seen_as_lists_from_outside_its_list():
    exc = error(
        FEATURE.replace(
            "{% for branch in steps.implement.branches %}", "{% for branch in steps.implement.branch %}"
        )
    )
    assert (exc.line, exc.step) == (37, "review")
    assert "uses steps.implement.branch but implement runs for each item, so this step sees lists" in str(exc)


def test_unknown_variable_in_a_prompt():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: |
      Plan it.

      {% if inptu %}{{ input }}{% endif %}
"""
    )
    assert (exc.line, exc.step) == (8, "plan")
    assert str(exc) == (
        'line 8, step "plan": unknown variable "inptu" '
        "(variables: feedback, input, item, item_index, round, steps, workflow)"
    )


def test_loop_variables_are_known_only_inside_the_loop():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: "{% for word in input %}{{ word }}{% endfor %}{{ word }}"
"""
    )
    assert exc.line == 5
    assert 'unknown variable "word"' in str(exc)


def test_item_is_only_set_in_a_for_each_step():
    exc = error("name: t\nsteps:\n  - {id: plan, role: planner, prompt: 'Plan {{ item.title }}'}\n")
    assert str(exc) == 'line 3, step "plan": item is only set in a step with for_each'


def test_template_syntax_error_in_a_prompt():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: |
      Plan it.
      {% for task in input %}
      {{ task }}
"""
    )
    assert (exc.line, exc.step) == (7, "plan")
    assert str(exc) == (
        'line 7, step "plan": prompt does not compile: '
        "Unclosed tag on line 2: 'for'. Looking for one of: empty, endfor."
    )


def test_condition_that_does_not_compile():
    exc = error(
        "name: t\nsteps:\n  - id: plan\n    role: planner\n    prompt: hi\n    condition: 'round >'\n"
    )
    assert exc.line == 6
    assert "condition does not compile" in str(exc)


def test_budget_shares_over_one():
    exc = error(
        """\
name: t
steps:
  - {id: a, role: planner, prompt: A, budget_share: 0.7}
  - {id: b, role: planner, prompt: B, budget_share: 0.4}
  - {id: c, role: planner, prompt: C}
"""
    )
    assert exc.line == 2
    assert str(exc) == "line 2: budget shares add up to 1.2; at most 1 (a step without budget_share gets 0.1)"


def test_budget_share_out_of_range():
    exc = error("name: t\nsteps:\n  - {id: a, role: planner, prompt: A, budget_share: 0}\n")
    assert str(exc) == 'line 3, step "a": budget_share must be a number above 0 and at most 1'


def test_bad_output_schema_points_into_the_schema():
    exc = error(
        """\
name: t
steps:
  - id: plan
    role: planner
    prompt: Plan it.
    output_schema:
      type: object
      properties:
        tasks: {type: arry}
"""
    )
    assert (exc.line, exc.step) == (9, "plan")
    assert "output_schema is not a valid JSON Schema: 'arry' is not valid" in str(exc)
    assert "(at properties.tasks.type)" in str(exc)


def test_output_schema_must_be_of_type_object():
    exc = error(
        "name: t\nsteps:\n  - id: plan\n    role: planner\n    prompt: hi\n    output_schema: {type: array}\n"
    )
    assert exc.line == 6
    assert "output_schema must be a JSON Schema with type: object" in str(exc)


def test_branch_from_must_be_an_earlier_step():
    exc = error(
        """\
name: t
steps:
  - {id: spec, role: spec-writer, prompt: Write it.}
  - {id: plan, role: planner, prompt: Plan it., branch_from: spec}
"""
    )
    assert exc.line == 4
    assert 'branch_from "spec" is not a step this one needs' in str(exc)


def test_duplicate_yaml_key():
    exc = error("name: t\nsteps:\n  - id: plan\n    role: planner\n    prompt: one\n    prompt: two\n")
    assert str(exc) == 'line 6: duplicate key "prompt" (also on line 5)'


def test_document_must_name_itself_and_have_steps():
    assert str(error("- just a list\n")) == "line 1: a template is a mapping with a name and steps"
    assert (
        str(error("steps:\n  - {id: a, role: planner, prompt: hi}\n")) == "line 1: the template needs a name"
    )
    assert (
        str(error("name: t\nsteps: []\n")) == "line 2: the template needs steps: a list of at least one step"
    )


# --- at run time ----------------------------------------------------------------------------

CONTEXT = {
    "input": "Build <a> & b",
    "round": 2,
    "steps": {
        "review": {
            "output": {"verdict": "changes_requested", "changes": [{"task": 1, "feedback": "Fix it"}]}
        },
        "test": {"results": ["ok", "failed"]},
    },
}


def test_evaluate_condition():
    assert evaluate_condition("steps.review.output.verdict == 'changes_requested'", CONTEXT)
    assert not evaluate_condition("steps.review.output.verdict == 'approve'", CONTEXT)
    assert evaluate_condition("round > 1 and 'failed' in steps.test.results", CONTEXT)
    assert not evaluate_condition("steps.missing.output", CONTEXT)  # a missing value is false


def test_evaluate_condition_rejects_a_broken_expression():
    with pytest.raises(TemplateError, match="condition does not compile"):
        evaluate_condition("round >", CONTEXT)


def test_render_prompt_does_not_escape_html():
    rendered = render_prompt(
        "{{ input }}, round {{ round }}:{% for r in steps.test.results %} {{ r }}{% endfor %}", CONTEXT
    )
    assert rendered == "Build <a> & b, round 2: ok failed"


def test_resolve_reference_walks_mappings_and_list_indexes():
    assert resolve_reference("steps.review.output.changes.0.task", CONTEXT) == 1
    assert resolve_reference("steps.test.results", CONTEXT) == ["ok", "failed"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("steps.review.output.tasks", 'steps.review.output has no "tasks" (it has changes, verdict)'),
        ("steps.test.results.2", 'steps.test.results is a list of 2, with no index "2"'),
        ("steps.review.output.verdict.x", 'steps.review.output.verdict is "changes_requested", with no "x"'),
    ],
)
def test_resolve_reference_says_what_is_missing(reference, message):
    with pytest.raises(TemplateError) as caught:
        resolve_reference(reference, CONTEXT)
    assert str(caught.value) == f"cannot resolve {reference}: {message}"

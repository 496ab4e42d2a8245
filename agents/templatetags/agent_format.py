import json
from typing import Any

from django import template

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Tool inputs as the model wrote them (JSON), not as Python reprs."""
    return json.dumps(value, indent=2, ensure_ascii=False)

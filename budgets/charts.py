"""Cost charts drawn on the server as inline SVG.

Server-side SVG needs no JavaScript and no CDN: the charts work offline, render in any browser and
in a page that has JavaScript turned off, and can be tested by parsing the markup. Colours are
presentation attributes, which any CSS rule on the `chart-*` classes overrides, so the charts look
fine without our stylesheet and can still be themed by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from math import ceil

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

Amount = Decimal | int

MAX_X_LABELS = 8
BAR_FILL = "#4f7cc4"
ROW_HEIGHT = 24
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def column_chart(
    points: Sequence[tuple[str, Amount]],
    *,
    label: str,
    width: int = 640,
    height: int = 200,
    value_format: str = "${:.2f}",
) -> SafeString:
    """Vertical bars, one per point (e.g. cost per day), scaled to the largest value."""
    bars = _clamped(points)
    peak = max((value for _, value in bars), default=Decimal(0))
    if not peak:
        return _no_spending(label=label, width=width)
    top, baseline, side = 20, height - 20, 32
    slot = (width - 2 * side) / len(bars)
    label_step = ceil(len(bars) / MAX_X_LABELS)
    parts = [
        f'<text class="chart-axis-label" x="{side}" y="12" fill="currentColor">'
        f"{escape(value_format.format(peak))}</text>",
        f'<line class="chart-gridline" x1="{side}" y1="{top}" x2="{width - side}" y2="{top}" '
        f'stroke="currentColor" stroke-opacity="0.15" stroke-dasharray="4 4"/>',
    ]
    for index, (name, value) in enumerate(bars):
        bar_height = (baseline - top) * float(value / peak)
        x = side + index * slot
        parts.append(
            f'<rect class="chart-bar" x="{x + slot * 0.1:.1f}" y="{baseline - bar_height:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{bar_height:.1f}" fill="{BAR_FILL}">'
            f"<title>{escape(name)}: {escape(value_format.format(value))}</title></rect>"
        )
        if index % label_step == 0:
            parts.append(
                f'<text class="chart-x-label" x="{x + slot / 2:.1f}" y="{height - 4}" '
                f'text-anchor="middle" fill="currentColor">{escape(name)}</text>'
            )
    parts.append(
        f'<line class="chart-baseline" x1="{side}" y1="{baseline}" x2="{width - side}" y2="{baseline}" '
        f'stroke="currentColor" stroke-opacity="0.6"/>'
    )
    return _svg(parts, label=label, width=width, height=height)


def bar_chart(
    rows: Sequence[tuple[str, Amount]],
    *,
    label: str,
    width: int = 480,
    value_format: str = "${:.2f}",
) -> SafeString:
    """Horizontal bars, one row per label (e.g. cost by role), scaled to the largest value."""
    bars = _clamped(rows)
    peak = max((value for _, value in bars), default=Decimal(0))
    if not peak:
        return _no_spending(label=label, width=width)
    label_width, value_width = round(width * 0.35), 72
    longest = width - label_width - value_width
    parts = []
    for index, (name, value) in enumerate(bars):
        y = 4 + index * ROW_HEIGHT
        text_y = y + ROW_HEIGHT / 2 + 4
        bar_length = longest * float(value / peak)
        formatted = escape(value_format.format(value))
        parts.append(
            f'<text class="chart-row-label" x="{label_width - 8}" y="{text_y:.1f}" text-anchor="end" '
            f'fill="currentColor">{escape(_shortened(name, limit=label_width // 7))}</text>'
            f'<rect class="chart-bar" x="{label_width}" y="{y + 3}" width="{bar_length:.1f}" '
            f'height="{ROW_HEIGHT - 6}" fill="{BAR_FILL}"><title>{escape(name)}: {formatted}</title></rect>'
            f'<text class="chart-value" x="{label_width + bar_length + 6:.1f}" y="{text_y:.1f}" '
            f'fill="currentColor">{formatted}</text>'
        )
    return _svg(parts, label=label, width=width, height=len(bars) * ROW_HEIGHT + 8)


def _clamped(points: Sequence[tuple[str, Amount]]) -> list[tuple[str, Decimal]]:
    """Labels as text and amounts as Decimal; a negative amount (a refund, say) draws as nothing."""
    return [(str(name), max(Decimal(value), Decimal(0))) for name, value in points]


def _shortened(text: str, *, limit: int) -> str:
    """Long labels are cut to fit the label column; the bar's tooltip keeps the whole label."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_spending(*, label: str, width: int) -> SafeString:
    parts = [
        f'<text class="chart-empty" x="{width // 2}" y="24" text-anchor="middle" fill="currentColor" '
        f'fill-opacity="0.6">No spending yet</text>'
    ]
    return _svg(parts, label=f"{label}: no spending yet", width=width, height=40)


def _svg(parts: list[str], *, label: str, width: int, height: int) -> SafeString:
    # Safe because every label and value in parts, and the label here, has been escaped.
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{escape(label)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" {FONT} '
        f'style="max-width:100%;height:auto">{"".join(parts)}</svg>'
    )

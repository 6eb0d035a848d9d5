"""Plain-text tables for the console: the run summary and the side-by-side comparison share them."""

from __future__ import annotations


def fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:  # first column left-aligned, numbers right-aligned
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


HEADERS = ["mode", "conc", "reqs", "err", "tok/s", "speedup", "tau", "req tok/s p50", "lat p50 ms",
           "lat p90 ms", "ttft p50 ms"]


def summary_rows(report: dict) -> list[list[str]]:
    rows = []
    for s in report["summaries"]:
        speedup = (report["by_concurrency"].get(str(s["concurrency"])) or {}).get("speedup")
        rows.append([s["mode"], str(s["concurrency"]), str(s["requests"]), str(s["errors"]),
                     fmt(s["tokens_per_s"], 1), fmt(speedup, 2, "x") if s["mode"] == "dflash" else "",
                     fmt(s["acceptance_length"]), fmt(s["request_tokens_per_s_p50"], 1), ms(s["latency_s_p50"]),
                     ms(s["latency_s_p90"]), ms(s["ttft_s_p50"])])
    return rows


def render_report(report: dict) -> str:
    models = report["models"]
    env = report["environment"]
    head = (f"{report['backend']} on {report['dataset']} ({report['settings'].get('num_prompts')} prompts, "
            f"max {report['settings'].get('max_new_tokens')} new tokens, T={report['settings'].get('temperature')})"
            f" | target {models.get('target')} | draft {models.get('draft')} | {env.get('device_name')}")
    lines = [head, format_table(HEADERS, summary_rows(report))]
    # sampled answers differ from AR's by design (same distribution, other draws): 'identical to AR on 0%' read as
    # a broken engine
    sampled = (report["settings"].get("temperature") or 0) > 0
    for conc, cmp in report["by_concurrency"].items():
        if cmp.get("identical_outputs") is not None and sampled:
            lines.append(f"concurrency {conc}: sampled answers (T > 0) differ from AR's by design; "
                         "compare outputs at --temperature 0")
        elif cmp.get("identical_outputs") is not None:
            line = (f"concurrency {conc}: DFlash output identical to AR on {cmp['identical_outputs']:.0%} of "
                    f"{cmp.get('compared_outputs', '')} requests with the same prompt")
            if cmp.get("differing_agree_chars_p50") is not None:
                line += f" (the others agree on their first {cmp['differing_agree_chars_p50']:.0f} characters, median)"
            lines.append(line)
    for s in report["summaries"]:
        if s.get("profile"):
            parts = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in s["profile"].items())
            lines.append(f"profile ({s['mode']}, c={s['concurrency']}, untimed pass, per step): {parts}")
    return "\n".join(lines)

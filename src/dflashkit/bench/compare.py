"""Two bench reports side by side: setup first (differences marked), then each mode and concurrency."""

from __future__ import annotations

from .table import fmt, format_table, ms

_SETUP = (("backend", lambda r: r.get("backend")), ("dataset", lambda r: r.get("dataset")),
          ("prompts", lambda r: r["settings"].get("num_prompts")),
          ("max new tokens", lambda r: r["settings"].get("max_new_tokens")),
          ("temperature", lambda r: r["settings"].get("temperature")),
          ("target", lambda r: r["models"].get("target")), ("draft", lambda r: r["models"].get("draft")),
          ("block size", lambda r: r.get("backend_info", {}).get("block_size")),
          ("device", lambda r: r["environment"].get("device_name")),
          ("dflashkit", lambda r: r["environment"].get("dflashkit")),
          ("torch", lambda r: r["environment"].get("torch")),
          ("commit", lambda r: r["environment"].get("git_commit")), ("created", lambda r: r.get("created")))
_IGNORED = {"created", "commit"}  # expected to differ; not flagged


def render_comparison(a: dict, b: dict, name_a: str = "A", name_b: str = "B") -> str:
    setup = []
    for label, get in _SETUP:
        va, vb = get(a), get(b)
        mark = "*" if va != vb and label not in _IGNORED else ""
        setup.append([label + mark, _short(va), _short(vb)])
    blocks = [format_table(["setting", name_a, name_b], setup)]
    rows = []
    for (mode_a, mode_b), conc in _pairs(a, b):
        sa, sb = _summary(a, mode_a, conc), _summary(b, mode_b, conc)
        ta, tb = (s["tokens_per_s"] if s else None for s in (sa, sb))
        label = mode_a if mode_a == mode_b else f"{mode_a} vs {mode_b}"
        rows.append([label, str(conc), fmt(ta, 1), fmt(tb, 1), fmt(tb / ta if ta and tb else None, 2, "x"),
                     fmt(_get(sa, "acceptance_length")), fmt(_get(sb, "acceptance_length")),
                     fmt(_speedup(a, mode_a, conc), 2, "x"), fmt(_speedup(b, mode_b, conc), 2, "x"),
                     ms(_get(sa, "latency_s_p50")), ms(_get(sb, "latency_s_p50"))])
    headers = ["mode", "conc", f"tok/s {name_a}", f"tok/s {name_b}", f"{name_b}/{name_a}", f"tau {name_a}",
               f"tau {name_b}", f"speedup {name_a}", f"speedup {name_b}", f"lat p50 ms {name_a}",
               f"lat p50 ms {name_b}"]
    blocks.append(format_table(headers, rows))
    if any(r[0].endswith("*") for r in setup):
        blocks.append("* differs between the runs: compare with care")
    return "\n\n".join(blocks)


def _pairs(a: dict, b: dict) -> list[tuple[tuple[str, str], int]]:
    """Rows to line up: same mode and concurrency; two single-mode runs (hf vs openai) pair by concurrency."""
    modes_a = list(dict.fromkeys(s["mode"] for s in a["summaries"]))
    modes_b = list(dict.fromkeys(s["mode"] for s in b["summaries"]))
    keys = [(s["mode"], s["concurrency"]) for r in (a, b) for s in r["summaries"]]
    if len(modes_a) == len(modes_b) == 1 and modes_a != modes_b:
        concs = dict.fromkeys(c for _, c in keys)
        return [((modes_a[0], modes_b[0]), c) for c in concs]
    return [((mode, mode), conc) for mode, conc in dict.fromkeys(keys)]


def _summary(report: dict, mode: str, conc: int) -> dict | None:
    return next((s for s in report["summaries"] if s["mode"] == mode and s["concurrency"] == conc), None)


def _speedup(report: dict, mode: str, conc: int) -> float | None:
    if mode != "dflash":
        return None
    return (report["by_concurrency"].get(str(conc)) or {}).get("speedup")


def _get(summary: dict | None, key: str):
    return summary.get(key) if summary else None


def _short(value, width: int = 40) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else "..." + text[-(width - 3):]

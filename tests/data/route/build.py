"""Expand the hand-written seeds into labelled.jsonl (see README.md). Deterministic: same seeds, same file.

Run: python tests/data/route/build.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

HERE = Path(__file__).parent

CATEGORIES = {
    "faq": ("faq_support", "cheap"),
    "cls": ("classification", "cheap"),
    "sum": ("short_summary", "cheap"),
    "boil": ("code_boilerplate", "cheap"),
    "copy": ("short_copy", "cheap"),
    "tr": ("translation", "cheap"),
    "fact": ("factual_question", "cheap"),
    "reason": ("multi_step_reasoning", "flagship"),
    "synth": ("long_doc_synthesis", "flagship"),
    "expl": ("explanation", "flagship"),
    "creative": ("creative_longform", "flagship"),
    "debug": ("debugging", "flagship"),
    "arch": ("architecture_review", "flagship"),
    "extract": ("messy_extraction", "flagship"),
}
# Pasted documents for {DOC}: the language's paragraphs, numbered as sections and repeated
# in a rotating order up to a length drawn per prompt, so long pastes vary in size.
DOC_MIN_CHARS = 2_500
DOC_MAX_CHARS = 9_000


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def split_of(prompt_id: str) -> str:
    """The split rule, fixed before training (README.md)."""
    bucket = _hash(prompt_id) % 100
    if bucket < 60:
        return "train"
    if bucket < 80:
        return "validation"
    return "test"


def _document(paragraphs: list[str], key: str) -> str:
    h = _hash(key)
    target = DOC_MIN_CHARS + h % (DOC_MAX_CHARS - DOC_MIN_CHARS)
    parts: list[str] = []
    size, n = 0, 0
    while size < target:
        paragraph = paragraphs[(h + n) % len(paragraphs)]
        parts.append(f"{n + 1}. {paragraph}")
        size += len(parts[-1]) + 2
        n += 1
    return "\n\n".join(parts)


def build() -> list[dict[str, str]]:
    rows = []
    for seed in sorted((HERE / "seed").glob("*.tsv")):
        lang = seed.stem
        paragraphs = [p for p in (HERE / "docs" / f"{lang}.txt").read_text("utf-8").splitlines() if p.strip()]
        for number, line in enumerate(seed.read_text("utf-8").splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            code, text = line.split("\t", 1)
            category, tier = CATEGORIES[code]
            prompt_id = f"{lang}-{number}"
            text = text.replace("\\n", "\n").replace("\\t", "\t")
            if "{DOC}" in text:
                text = text.replace("{DOC}", _document(paragraphs, prompt_id))
            if "{SHORTDOC}" in text:
                text = text.replace("{SHORTDOC}", paragraphs[_hash(prompt_id) % len(paragraphs)])
            rows.append(
                {
                    "id": prompt_id,
                    "lang": lang,
                    "category": category,
                    "tier": tier,
                    "split": split_of(prompt_id),
                    "prompt": text,
                }
            )
    return rows


def build_heldout2() -> list[dict[str, str]]:
    """The second held-out set: lang<TAB>category<TAB>text lines, never trained or tuned on."""
    rows = []
    for number, line in enumerate((HERE / "heldout2.tsv").read_text("utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        lang, code, text = line.split("\t", 2)
        category, tier = CATEGORIES[code]
        prompt_id = f"h2-{lang}-{number}"
        paragraphs = [p for p in (HERE / "docs" / f"{lang}.txt").read_text("utf-8").splitlines() if p.strip()]
        text = text.replace("\\n", "\n")
        if "{DOC}" in text:
            text = text.replace("{DOC}", _document(paragraphs, prompt_id))
        rows.append(
            {"id": prompt_id, "lang": lang, "category": category, "tier": tier, "split": "heldout2", "prompt": text}
        )
    return rows


def _write(rows: list[dict[str, str]], name: str) -> None:
    with (HERE / name).open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} prompts written to {HERE / name}")


def main() -> None:
    _write(build(), "labelled.jsonl")
    _write(build_heldout2(), "heldout2.jsonl")


if __name__ == "__main__":
    main()

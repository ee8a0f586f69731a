"""Few-shot prompts as token ids: the :class:`Task` registry (``icl-verify llm --task``) and a
:class:`Prompt` ``shot_1 .. shot_K query`` built piece by piece, ``(1, T)``."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..registry import Registry


@dataclass(frozen=True)
class Task:
    """A few-shot task: ``template`` formats one example ``{x} .. {y}``; the query is the
    template up to ``{y}`` (trailing spaces stripped), and the answer starts the next token."""

    name: str
    shots: tuple[tuple[str, str], ...]
    query: tuple[str, str]
    template: str = "{x} -> {y}\n"


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` available to ``icl-verify llm --task`` under ``task.name``."""
    return TASKS.add(task.name, task, replace=replace)


for _task in (
    Task("capitals", (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
                      ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow")),
         ("Greece", "Athens")),
    Task("antonyms", (("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"),
                      ("happy", "sad"), ("light", "dark"), ("early", "late"), ("open", "closed")),
         ("tall", "short")),
    Task("plural", (("cat", "cats"), ("box", "boxes"), ("city", "cities"), ("child", "children"),
                    ("mouse", "mice"), ("dog", "dogs"), ("leaf", "leaves"), ("car", "cars")),
         ("bird", "birds")),
    Task("linreg", tuple((str(x), str(3 * x + 2)) for x in (1, 4, 2, 7, 5, 3, 8, 6)), ("9", "29"),
         template="x={x}, y={y}\n"),
):
    register_task(_task)


@dataclass
class Prompt:
    """Token ids of a few-shot prompt built piece by piece (so every piece tokenises alike).

    Attributes:
        shots: per shot, ``(prefix_ids, answer_ids, suffix_ids)``.
        query: the query's ids (the template up to the answer).
        answer: the expected answer's ids (may be empty for a user prompt).
    """

    shots: list[tuple[list[int], list[int], list[int]]]
    query: list[int]
    answer: list[int] = field(default_factory=list)

    def ids(self, k: int | None = None) -> torch.Tensor:
        """The prompt with the first ``k`` shots (all by default) and the query: ``(1, T)``."""
        ids: list[int] = []
        for pre, ans, suf in self.shots[: len(self.shots) if k is None else k]:
            ids += pre + ans + suf
        return torch.tensor([ids + self.query])

    def shot_sequences(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each shot alone: ``(ids (1, n), loss mask (1, n))``, True on the answer tokens."""
        out = []
        for pre, ans, suf in self.shots:
            ids = torch.tensor([pre + ans + suf])
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[0, len(pre): len(pre) + len(ans)] = True
            out.append((ids, mask))
        return out


def _tok(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def task_prompt(tokenizer, task: Task, shots: int | None = None) -> Prompt:
    """The :class:`Prompt` of ``task`` with its first ``shots`` examples."""
    pre_t, suf_t = task.template.split("{y}")
    pieces = []
    for x, y in task.shots[:shots]:
        pre = pre_t.format(x=x)
        stripped = pre.rstrip(" ")
        pieces.append((_tok(tokenizer, stripped), _tok(tokenizer, pre[len(stripped):] + y), _tok(tokenizer, suf_t)))
    q = pre_t.format(x=task.query[0])
    stripped = q.rstrip(" ")
    return Prompt(pieces, _tok(tokenizer, stripped), _tok(tokenizer, q[len(stripped):] + task.query[1]))


def text_prompt(tokenizer, text: str) -> Prompt:
    """A user prompt: every line but the last is a shot (its loss covers all its tokens after
    the first), the last line is the query."""
    lines = text.split("\n")
    pieces = []
    for line in lines[:-1]:
        ids = _tok(tokenizer, line + "\n")
        pieces.append((ids[:1], ids[1:], []))
    return Prompt(pieces, _tok(tokenizer, lines[-1]))

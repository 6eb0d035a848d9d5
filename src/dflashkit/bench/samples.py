"""One benchmark prompt: a list of user turns, asked in order, each after the model's previous answer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    id: str
    turns: list[str]  # user messages; turn k is asked after the model's own answers to turns 0..k-1
    system: str | None = None
    meta: dict = field(default_factory=dict)

    def messages(self, answers: list[str]) -> list[dict]:
        """The chat for the next turn: earlier turns with the model's own answers, then the next question."""
        k = len(answers)
        chat = [{"role": "system", "content": self.system}] if self.system else []
        for question, answer in zip(self.turns[:k], answers, strict=True):
            chat += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return chat + [{"role": "user", "content": self.turns[k]}]

    def to_json(self) -> dict:
        row = {"id": self.id, "turns": self.turns}
        if self.system:
            row["system"] = self.system
        return row
